package data

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // register the JPEG decoder for image.Decode
	_ "image/png"  // register the PNG decoder for image.Decode
	"io"
	"runtime"
	"sync"
	"sync/atomic"
)

// fileRef is one image file of a source: a name for error messages (for a
// zip member "archive.zip:path/inside") and a way to read it.
type fileRef struct {
	name string
	open func() (io.ReadCloser, error)
}

// classSpec lists the files of one class before decoding.
type classSpec struct {
	name  string
	files []fileRef
}

// decodeSpec says how to turn files into dataset images.
type decodeSpec struct {
	c      int // 1: grayscale (ITU-R 601-2 luma, as PIL's convert("L")), 3: RGB
	size   int // output is size x size
	mode   ResizeMode
	invert bool // 255 - v before resizing
	rotate bool // add the 90/180/270 degree rotations as new classes
}

// rotationSuffix names the rotation r (0..3) of a class.
var rotationSuffix = [4]string{"rot000", "rot090", "rot180", "rot270"}

// decodeClasses decodes the files of all classes with runtime.NumCPU()
// goroutines. With spec.rotate the result holds 4*len(specs) classes in
// rotation-major order: all classes unrotated, then all rotated by 90
// degrees counter-clockwise, then 180, then 270 (the order torchmeta's
// class augmentations use). A source image is rotated before it is
// resized, as in the reference pipeline; for ResizeArea, which commutes
// with quarter turns, the resized image is rotated instead (same pixels).
func decodeClasses(specs []classSpec, spec decodeSpec) ([]Class, error) {
	nrot := 1
	if spec.rotate {
		nrot = 4
	}
	imgSize := spec.c * spec.size * spec.size
	nb := len(specs)
	classes := make([]Class, nrot*nb)
	type job struct{ class, img int }
	var jobs []job
	for ci, cs := range specs {
		for r := 0; r < nrot; r++ {
			name := cs.name
			if spec.rotate {
				name += "/" + rotationSuffix[r]
			}
			classes[r*nb+ci] = Class{Name: name, N: len(cs.files), Pixels: make([]uint8, len(cs.files)*imgSize)}
		}
		for i := range cs.files {
			jobs = append(jobs, job{ci, i})
		}
	}

	var (
		next    atomic.Int64
		failed  atomic.Bool
		mu      sync.Mutex
		firstJ  = len(jobs)
		firstE  error
		wg      sync.WaitGroup
		workers = runtime.NumCPU()
	)
	if workers > len(jobs) {
		workers = len(jobs)
	}
	for wi := 0; wi < workers; wi++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resizers := map[[2]int]*resizer{}
			var rot, buf []uint8
			for !failed.Load() {
				j := int(next.Add(1) - 1)
				if j >= len(jobs) {
					return
				}
				jb := jobs[j]
				f := specs[jb.class].files[jb.img]
				err := func() error {
					pix, h, w, err := readPlanar(f, spec.c, &buf)
					if err != nil {
						return err
					}
					if spec.invert {
						for k := range pix {
							pix[k] = 255 - pix[k]
						}
					}
					if spec.rotate && h != w {
						return fmt.Errorf("data: %s: image is %dx%d; rotations need square images: %w", f.name, w, h, ErrBadImage)
					}
					rz := resizers[[2]int{h, w}]
					if rz == nil {
						var err error
						if rz, err = newResizer(h, w, spec.size, spec.size, spec.mode); err != nil {
							return err
						}
						resizers[[2]int{h, w}] = rz
					}
					if spec.mode.orDefault() == ResizeArea {
						// The area average commutes with quarter turns
						// (the weights are mirror-symmetric and the value
						// is rounded once), so resizing once and rotating
						// the small result gives the same pixels as
						// rotating first, 4x cheaper.
						dst0 := classes[jb.class].Pixels[jb.img*imgSize : (jb.img+1)*imgSize]
						rz.run(dst0, pix, spec.c)
						for r := 1; r < nrot; r++ {
							dst := classes[r*nb+jb.class].Pixels[jb.img*imgSize : (jb.img+1)*imgSize]
							rotateInto(dst, dst0, spec.c, spec.size, r)
						}
						return nil
					}
					for r := 0; r < nrot; r++ {
						src := pix
						if r > 0 {
							if cap(rot) < len(pix) {
								rot = make([]uint8, len(pix))
							}
							rot = rot[:len(pix)]
							rotateInto(rot, pix, spec.c, h, r)
							src = rot
						}
						dst := classes[r*nb+jb.class].Pixels[jb.img*imgSize : (jb.img+1)*imgSize]
						rz.run(dst, src, spec.c)
					}
					return nil
				}()
				if err != nil {
					mu.Lock()
					if j < firstJ {
						firstJ, firstE = j, err
					}
					mu.Unlock()
					failed.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstE != nil {
		return nil, firstE
	}
	return classes, nil
}

// readPlanar reads and decodes one image file and converts it to c planar
// channels. buf is reused between calls for the file contents.
func readPlanar(f fileRef, c int, buf *[]uint8) (pix []uint8, h, w int, err error) {
	rc, err := f.open()
	if err != nil {
		return nil, 0, 0, fmt.Errorf("data: open %s: %v: %w", f.name, err, ErrBadImage)
	}
	b := bytes.NewBuffer((*buf)[:0])
	_, err = io.Copy(b, rc)
	cerr := rc.Close()
	*buf = b.Bytes()
	if err == nil {
		err = cerr
	}
	if err != nil {
		return nil, 0, 0, fmt.Errorf("data: read %s: %v: %w", f.name, err, ErrBadImage)
	}
	img, _, err := image.Decode(bytes.NewReader(*buf))
	if err != nil {
		return nil, 0, 0, fmt.Errorf("data: decode %s: %v: %w", f.name, err, ErrBadImage)
	}
	pix, h, w = toPlanar(img, c)
	if h == 0 || w == 0 {
		return nil, 0, 0, fmt.Errorf("data: decode %s: empty image: %w", f.name, ErrBadImage)
	}
	return pix, h, w, nil
}

// luma converts 8-bit RGB to grayscale with the ITU-R 601-2 weights in the
// fixed-point form PIL's convert("L") uses.
func luma(r, g, b uint8) uint8 {
	return uint8((uint32(r)*19595 + uint32(g)*38470 + uint32(b)*7471 + 0x8000) >> 16)
}

// toPlanar converts an image to c planar channels (1: gray, 3: RGB). Gray
// images are replicated into RGB; colour images are converted to gray with
// luma. Alpha is ignored (the colour values are used un-premultiplied
// where the image type stores them that way).
func toPlanar(img image.Image, c int) (pix []uint8, h, w int) {
	b := img.Bounds()
	w, h = b.Dx(), b.Dy()
	plane := w * h
	pix = make([]uint8, c*plane)
	put := func(i int, r, g, bl uint8) {
		if c == 1 {
			pix[i] = luma(r, g, bl)
			return
		}
		pix[i], pix[plane+i], pix[2*plane+i] = r, g, bl
	}
	switch m := img.(type) {
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+w]
			for x, v := range row {
				i := y*w + x
				if c == 1 {
					pix[i] = v
				} else {
					put(i, v, v, v)
				}
			}
		}
	case *image.YCbCr:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				yi := m.YOffset(b.Min.X+x, b.Min.Y+y)
				ci := m.COffset(b.Min.X+x, b.Min.Y+y)
				// Go through RGB even for gray output, as PIL does for a
				// colour JPEG converted to "L".
				r, g, bl := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				put(y*w+x, r, g, bl)
			}
		}
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+4*w]
			for x := 0; x < w; x++ {
				put(y*w+x, row[4*x], row[4*x+1], row[4*x+2])
			}
		}
	case *image.RGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride : y*m.Stride+4*w]
			for x := 0; x < w; x++ {
				put(y*w+x, row[4*x], row[4*x+1], row[4*x+2])
			}
		}
	default:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				nc := color.NRGBAModel.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA)
				put(y*w+x, nc.R, nc.G, nc.B)
			}
		}
	}
	return pix, h, w
}
