package data

import (
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// MiniImagenetOptions configures LoadMiniImagenet.
type MiniImagenetOptions struct {
	// Size is the output side length; 0 means 84. Images of another size
	// are resized (to Size x Size, without keeping the aspect ratio).
	Size int
	// Resize is the resampling filter; "" means ResizeArea.
	Resize ResizeMode
	// CacheDir holds the decoded-image cache; "" means DefaultCacheDir().
	CacheDir string
	// NoCache disables reading and writing the cache.
	NoCache bool
}

// miniSplits are the split names, in the order of Split's fields.
var miniSplits = [3]string{"train", "val", "test"}

// LoadMiniImagenet loads MiniImagenet (RGB, C=3) from dir in one of two
// layouts:
//
//   - CSV layout: dir/train.csv, dir/val.csv, dir/test.csv (the Ravi &
//     Larochelle split files, header "filename,label") and all images in
//     dir/images/;
//   - folder layout: dir/train/<label>/*, dir/val/<label>/*,
//     dir/test/<label>/* (JPEG or PNG).
//
// The CSV layout is used when dir/train.csv exists. Classes are sorted by
// label; images keep their CSV order (CSV layout) or are sorted by file
// name (folder layout). Every regular, non-hidden file in a class folder
// must be an image.
func LoadMiniImagenet(dir string, opt MiniImagenetOptions) (*Split, error) {
	if opt.Size == 0 {
		opt.Size = 84
	}
	if opt.Size < 0 {
		return nil, fmt.Errorf("miniimagenet: invalid size %d", opt.Size)
	}
	if err := opt.Resize.check(); err != nil {
		return nil, err
	}
	opt.Resize = opt.Resize.orDefault()
	cache := newCacheStore(opt.CacheDir, opt.NoCache)

	_, csvErr := os.Stat(filepath.Join(dir, "train.csv"))
	useCSV := csvErr == nil
	if !useCSV {
		if st, err := os.Stat(filepath.Join(dir, "train")); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("miniimagenet: %q holds neither train.csv (with val.csv, test.csv and images/) "+
				"nor train/ (with val/ and test/, one sub-folder per class): %w", dir, ErrNotFound)
		}
	}

	split := &Split{FromCache: true}
	var ds [3]*Dataset
	for i, name := range miniSplits {
		var (
			specs []classSpec
			fp    string
			err   error
		)
		if useCSV {
			specs, fp, err = listMiniCSV(dir, name)
		} else {
			specs, fp, err = listMiniFolder(dir, name)
		}
		if err != nil {
			return nil, err
		}
		if len(specs) == 0 {
			return nil, fmt.Errorf("miniimagenet: split %q has no classes: %w", name, ErrNotFound)
		}
		key := cacheKey("miniimagenet", cacheFormatVersion, name, fp,
			"size="+strconv.Itoa(opt.Size), "resize="+string(opt.Resize))
		prefix := "miniimagenet-" + name
		classes, ok := cache.load(prefix, key, 3, opt.Size, opt.Size)
		if !ok {
			split.FromCache = false
			classes, err = decodeClasses(specs, decodeSpec{c: 3, size: opt.Size, mode: opt.Resize})
			if err != nil {
				return nil, err
			}
			if cerr := cache.store(prefix, key, 3, opt.Size, opt.Size, classes); cerr != nil && split.CacheErr == nil {
				split.CacheErr = cerr
			}
		}
		ds[i] = &Dataset{Name: "miniimagenet/" + name, C: 3, H: opt.Size, W: opt.Size, Classes: classes}
	}
	split.Train, split.Val, split.Test = ds[0], ds[1], ds[2]
	return split, nil
}

// fingerprintFile adds a file's path, size and modification time to h.
func fingerprintFile(h hash.Hash, path, rel string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(h, "%s\x00%d\x00%d\n", rel, st.Size(), st.ModTime().UnixNano())
	return nil
}

func osFile(path, name string) fileRef {
	return fileRef{name: name, open: func() (io.ReadCloser, error) { return os.Open(path) }}
}

// listMiniCSV reads dir/<split>.csv and maps its rows to dir/images/.
func listMiniCSV(dir, split string) ([]classSpec, string, error) {
	csvPath := filepath.Join(dir, split+".csv")
	f, err := os.Open(csvPath)
	if err != nil {
		return nil, "", fmt.Errorf("miniimagenet: %v: %w", err, ErrNotFound)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = 2
	rows, err := r.ReadAll()
	if err != nil {
		return nil, "", fmt.Errorf("miniimagenet: %s: %v", csvPath, err)
	}
	if len(rows) == 0 || strings.TrimSpace(rows[0][0]) != "filename" || strings.TrimSpace(rows[0][1]) != "label" {
		return nil, "", fmt.Errorf("miniimagenet: %s: want the header \"filename,label\"", csvPath)
	}
	h := sha256.New()
	if err := fingerprintFile(h, csvPath, split+".csv"); err != nil {
		return nil, "", err
	}
	byLabel := map[string][]fileRef{}
	for _, row := range rows[1:] {
		name, label := strings.TrimSpace(row[0]), strings.TrimSpace(row[1])
		if name == "" || label == "" || strings.Contains(name, "..") {
			return nil, "", fmt.Errorf("miniimagenet: %s: bad row %q", csvPath, row)
		}
		rel := "images/" + name
		path := filepath.Join(dir, "images", filepath.FromSlash(name))
		if err := fingerprintFile(h, path, rel); err != nil {
			return nil, "", fmt.Errorf("miniimagenet: %s lists %s: %v: %w", csvPath, rel, err, ErrNotFound)
		}
		byLabel[label] = append(byLabel[label], osFile(path, rel))
	}
	return sortedSpecs(byLabel), hex.EncodeToString(h.Sum(nil)), nil
}

// listMiniFolder lists dir/<split>/<label>/<image>.
func listMiniFolder(dir, split string) ([]classSpec, string, error) {
	root := filepath.Join(dir, split)
	labels, err := os.ReadDir(root)
	if err != nil {
		return nil, "", fmt.Errorf("miniimagenet: %v: %w", err, ErrNotFound)
	}
	h := sha256.New()
	byLabel := map[string][]fileRef{}
	for _, l := range labels {
		if !l.IsDir() || skipName(l.Name()) {
			continue
		}
		entries, err := os.ReadDir(filepath.Join(root, l.Name()))
		if err != nil {
			return nil, "", fmt.Errorf("miniimagenet: %w", err)
		}
		var files []fileRef
		for _, e := range entries { // ReadDir sorts by name
			if e.IsDir() || skipName(e.Name()) {
				continue
			}
			rel := split + "/" + l.Name() + "/" + e.Name()
			path := filepath.Join(root, l.Name(), e.Name())
			if err := fingerprintFile(h, path, rel); err != nil {
				return nil, "", fmt.Errorf("miniimagenet: %w", err)
			}
			files = append(files, osFile(path, rel))
		}
		if len(files) > 0 {
			byLabel[l.Name()] = files
		}
	}
	return sortedSpecs(byLabel), hex.EncodeToString(h.Sum(nil)), nil
}

func sortedSpecs(byLabel map[string][]fileRef) []classSpec {
	labels := make([]string, 0, len(byLabel))
	for l := range byLabel {
		labels = append(labels, l)
	}
	sort.Strings(labels)
	specs := make([]classSpec, len(labels))
	for i, l := range labels {
		specs[i] = classSpec{name: l, files: byLabel[l]}
	}
	return specs
}
