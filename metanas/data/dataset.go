package data

import (
	"errors"
	"fmt"
)

// Sentinel errors. Errors returned by this package wrap one of these where
// it applies, so callers can test them with errors.Is.
var (
	// ErrNotFound reports that a data directory, archive or file is missing.
	ErrNotFound = errors.New("data not found")
	// ErrTooFewClasses reports that a split has fewer classes than a task
	// needs ways.
	ErrTooFewClasses = errors.New("too few classes")
	// ErrTooFewImages reports that a class has fewer images than a task
	// needs shots plus queries.
	ErrTooFewImages = errors.New("too few images in class")
	// ErrBadImage reports a file that could not be read or decoded as an
	// image.
	ErrBadImage = errors.New("unreadable image")
	// ErrClosed is returned by Prefetcher.Next after Close.
	ErrClosed = errors.New("prefetcher closed")
)

// Class is one class of a Dataset: N images of the dataset's shape, stored
// as uint8 intensities (0..255) in Pixels, image after image, each image in
// channel-major (CHW) order. Image i occupies
// Pixels[i*C*H*W : (i+1)*C*H*W].
type Class struct {
	// Name identifies the class, e.g.
	// "images_background/Latin/character01/rot090".
	Name string
	// Pixels holds N*C*H*W intensities.
	Pixels []uint8
	// N is the number of images.
	N int
}

// Dataset is a set of classes of images that all have C channels and
// H x W pixels. Datasets are read-only after construction and safe for
// concurrent use by any number of samplers.
type Dataset struct {
	// Name describes the dataset, e.g. "omniglot/train".
	Name string
	// C, H, W give the image shape.
	C, H, W int
	// Classes lists the classes.
	Classes []Class
}

// Split groups the meta-train, meta-validation and meta-test datasets.
// Val is never nil; it has no classes when no validation split was asked
// for.
type Split struct {
	// Train is the meta-train dataset.
	Train *Dataset
	// Val is the meta-validation dataset (possibly without classes).
	Val *Dataset
	// Test is the meta-test dataset.
	Test *Dataset
	// FromCache reports whether every decoded set came from the cache.
	FromCache bool
	// CacheErr records a failure to write the cache. It is not fatal: the
	// data were decoded and are complete; only the next load is slower.
	CacheErr error
}

// ImageSize returns C*H*W, the number of values of one image.
func (d *Dataset) ImageSize() int { return d.C * d.H * d.W }

// NumImages returns the total number of images over all classes.
func (d *Dataset) NumImages() int {
	n := 0
	for i := range d.Classes {
		n += d.Classes[i].N
	}
	return n
}

// Image returns the pixels of image i of class c (a sub-slice of the class
// storage; do not modify it). It returns nil when c or i is out of range.
func (d *Dataset) Image(c, i int) []uint8 {
	if c < 0 || c >= len(d.Classes) {
		return nil
	}
	cl := &d.Classes[c]
	if i < 0 || i >= cl.N {
		return nil
	}
	sz := d.ImageSize()
	return cl.Pixels[i*sz : (i+1)*sz]
}

// Validate checks that the shape is positive and that every class holds
// exactly N*C*H*W pixels.
func (d *Dataset) Validate() error {
	if d == nil {
		return errors.New("data: nil dataset")
	}
	if d.C <= 0 || d.H <= 0 || d.W <= 0 {
		return fmt.Errorf("data: dataset %q has invalid shape %dx%dx%d", d.Name, d.C, d.H, d.W)
	}
	sz := d.ImageSize()
	for i := range d.Classes {
		cl := &d.Classes[i]
		if cl.N < 0 || len(cl.Pixels) != cl.N*sz {
			return fmt.Errorf("data: dataset %q class %d (%q): %d pixels for %d images of %d values",
				d.Name, i, cl.Name, len(cl.Pixels), cl.N, sz)
		}
	}
	return nil
}
