package data

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Canonical Omniglot set names; the archives are these names plus ".zip".
const (
	OmniglotBackground = "images_background"
	OmniglotEvaluation = "images_evaluation"
)

// OmniglotOptions configures LoadOmniglot. The zero value is valid but
// turns rotations off; DefaultOmniglotOptions gives the reference
// protocol.
type OmniglotOptions struct {
	// Size is the output side length; 0 means 28.
	Size int
	// Resize is the resampling filter; "" means ResizeArea.
	Resize ResizeMode
	// Rotations adds every character rotated by 90, 180 and 270 degrees
	// (counter-clockwise) as three new classes, in every split.
	Rotations bool
	// Invert stores 255-v, i.e. white strokes (1.0) on black (0.0).
	// Without it the decoded polarity is kept: strokes 0.0, background
	// 1.0. (torchmeta inverts the images when it builds its HDF5 file, so
	// Invert matches the torchmeta-based reference.)
	Invert bool

	// ValCharacters moves this many meta-train characters (with all their
	// rotations) to the validation split. Use it or ValFraction, not both.
	ValCharacters int
	// ValFraction moves round(ValFraction * number of meta-train
	// characters) characters to the validation split (0 <= f < 1).
	ValFraction float64
	// ValByAlphabet moves whole alphabets instead of single characters:
	// alphabets are taken in a seeded random order until at least the
	// requested number of characters is reached (so it may overshoot).
	ValByAlphabet bool
	// ValSeed seeds the random choice of validation characters or
	// alphabets. The choice depends only on the seed and the sorted
	// character list, so it is the same on every run.
	ValSeed uint64

	// Vinyals replaces the background/evaluation split by the split of
	// Vinyals et al. (2016): the union of both sets in canonical order
	// (all background characters sorted by alphabet and character, then
	// all evaluation characters sorted the same way); the first
	// VinyalsTrain characters are meta-train (and the source of the
	// validation split), the rest meta-test.
	Vinyals bool
	// VinyalsTrain is the number of meta-train characters of the Vinyals
	// split; 0 means 1200.
	VinyalsTrain int

	// CacheDir holds the decoded-image cache; "" means DefaultCacheDir().
	CacheDir string
	// NoCache disables reading and writing the cache.
	NoCache bool
}

// DefaultOmniglotOptions returns the reference protocol: 28x28 area
// resize, rotation classes on, no validation split.
func DefaultOmniglotOptions() OmniglotOptions {
	return OmniglotOptions{Size: 28, Resize: ResizeArea, Rotations: true}
}

// omniChar identifies one character (before rotation).
type omniChar struct {
	set, alphabet, character string
}

func (c omniChar) name() string { return c.set + "/" + c.alphabet + "/" + c.character }

// omniSet is one decoded Omniglot set.
type omniSet struct {
	chars   []omniChar
	classes []Class // rotation-major, 4*len(chars) with rotations
	cached  bool
}

// LoadOmniglot loads Omniglot from dir, which must hold
// images_background.zip and images_evaluation.zip or the extracted folders
// images_background/ and images_evaluation/ (a folder is preferred over
// the archive of the same name). See the package documentation for the
// protocol and the cache.
func LoadOmniglot(dir string, opt OmniglotOptions) (*Split, error) {
	if opt.Size == 0 {
		opt.Size = 28
	}
	if opt.Size < 0 {
		return nil, fmt.Errorf("omniglot: invalid size %d", opt.Size)
	}
	if err := opt.Resize.check(); err != nil {
		return nil, err
	}
	opt.Resize = opt.Resize.orDefault()
	if opt.VinyalsTrain == 0 {
		opt.VinyalsTrain = 1200
	}
	cache := newCacheStore(opt.CacheDir, opt.NoCache)

	split := &Split{FromCache: true}
	sets := map[string]*omniSet{}
	for _, set := range []string{OmniglotBackground, OmniglotEvaluation} {
		s, cerr, err := loadOmniglotSet(dir, set, opt, cache)
		if err != nil {
			return nil, err
		}
		if cerr != nil && split.CacheErr == nil {
			split.CacheErr = cerr
		}
		split.FromCache = split.FromCache && s.cached
		sets[set] = s
	}

	type ref struct {
		set *omniSet
		idx int
	}
	var train, test []ref
	for i := range sets[OmniglotBackground].chars {
		train = append(train, ref{sets[OmniglotBackground], i})
	}
	for i := range sets[OmniglotEvaluation].chars {
		test = append(test, ref{sets[OmniglotEvaluation], i})
	}
	prefix := "omniglot"
	if opt.Vinyals {
		prefix = "omniglot-vinyals"
		all := append(train, test...)
		if opt.VinyalsTrain < 0 || opt.VinyalsTrain >= len(all) {
			return nil, fmt.Errorf("omniglot: Vinyals split: VinyalsTrain=%d, but there are %d characters", opt.VinyalsTrain, len(all))
		}
		train, test = all[:opt.VinyalsTrain:opt.VinyalsTrain], all[opt.VinyalsTrain:]
	}

	trainChars := make([]omniChar, len(train))
	for i, r := range train {
		trainChars[i] = r.set.chars[r.idx]
	}
	isVal, err := chooseValidation(trainChars, opt)
	if err != nil {
		return nil, err
	}
	var trainKeep, val []ref
	for i, r := range train {
		if isVal[i] {
			val = append(val, r)
		} else {
			trainKeep = append(trainKeep, r)
		}
	}

	nrot := 1
	if opt.Rotations {
		nrot = 4
	}
	build := func(name string, refs []ref) *Dataset {
		d := &Dataset{Name: prefix + "/" + name, C: 1, H: opt.Size, W: opt.Size}
		d.Classes = make([]Class, 0, nrot*len(refs))
		for r := 0; r < nrot; r++ {
			for _, rf := range refs {
				d.Classes = append(d.Classes, rf.set.classes[r*len(rf.set.chars)+rf.idx])
			}
		}
		return d
	}
	split.Train = build("train", trainKeep)
	split.Val = build("val", val)
	split.Test = build("test", test)
	return split, nil
}

// chooseValidation marks the meta-train characters that go to the
// validation split.
func chooseValidation(chars []omniChar, opt OmniglotOptions) ([]bool, error) {
	n := len(chars)
	isVal := make([]bool, n)
	if opt.ValCharacters != 0 && opt.ValFraction != 0 {
		return nil, errors.New("omniglot: set ValCharacters or ValFraction, not both")
	}
	if opt.ValCharacters < 0 || opt.ValFraction < 0 || opt.ValFraction >= 1 || math.IsNaN(opt.ValFraction) {
		return nil, fmt.Errorf("omniglot: invalid validation size (ValCharacters=%d, ValFraction=%g)", opt.ValCharacters, opt.ValFraction)
	}
	target := opt.ValCharacters
	if opt.ValFraction > 0 {
		target = int(math.Round(opt.ValFraction * float64(n)))
	}
	if target == 0 {
		return isVal, nil
	}
	if target >= n {
		return nil, fmt.Errorf("omniglot: validation split of %d characters leaves no meta-train characters (there are %d)", target, n)
	}
	src := newPCG(streamValSplit, opt.ValSeed, 0)
	if !opt.ValByAlphabet {
		perm := make([]int, n)
		for i := range perm {
			perm[i] = i
		}
		shuffleInts(src, perm)
		for _, i := range perm[:target] {
			isVal[i] = true
		}
		return isVal, nil
	}
	// Group characters by alphabet (set and name) in first-seen order.
	var groups [][]int
	gi := map[[2]string]int{}
	for i, c := range chars {
		k := [2]string{c.set, c.alphabet}
		g, ok := gi[k]
		if !ok {
			g = len(groups)
			gi[k] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	order := make([]int, len(groups))
	for i := range order {
		order[i] = i
	}
	shuffleInts(src, order)
	count := 0
	for _, g := range order {
		if count >= target {
			break
		}
		for _, i := range groups[g] {
			isVal[i] = true
		}
		count += len(groups[g])
	}
	if count >= n {
		return nil, fmt.Errorf("omniglot: validation split by alphabet of at least %d characters takes all %d meta-train characters", target, n)
	}
	return isVal, nil
}

// omniglotMissing builds the error for a missing set.
func omniglotMissing(dir, set string) error {
	return fmt.Errorf("omniglot: %s: found neither %s.zip nor the folder %s/ in %q; "+
		"put the canonical archives images_background.zip and images_evaluation.zip "+
		"(github.com/brendenlake/omniglot, folder python/) into that directory: %w",
		set, set, set, dir, ErrNotFound)
}

// loadOmniglotSet decodes (or reads from the cache) one set. cerr is a
// non-fatal cache write error.
func loadOmniglotSet(dir, set string, opt OmniglotOptions, cache cacheStore) (s *omniSet, cerr, err error) {
	folder := filepath.Join(dir, set)
	archive := folder + ".zip"
	var (
		fingerprint string
		list        func() ([]omniChar, []classSpec, func() error, error)
	)
	if st, err := os.Stat(folder); err == nil && st.IsDir() {
		chars, specs, fp, err := listOmniglotFolder(folder, set)
		if err != nil {
			return nil, nil, err
		}
		fingerprint = "dir:" + fp
		list = func() ([]omniChar, []classSpec, func() error, error) {
			return chars, specs, func() error { return nil }, nil
		}
	} else if st, err := os.Stat(archive); err == nil && st.Mode().IsRegular() {
		fingerprint = "zip:" + strconv.FormatInt(st.Size(), 10) + ":" + strconv.FormatInt(st.ModTime().UnixNano(), 10)
		list = func() ([]omniChar, []classSpec, func() error, error) {
			return listOmniglotZip(archive, set)
		}
	} else {
		return nil, nil, omniglotMissing(dir, set)
	}

	key := cacheKey("omniglot", cacheFormatVersion, set, fingerprint,
		"size="+strconv.Itoa(opt.Size), "resize="+string(opt.Resize),
		"invert="+strconv.FormatBool(opt.Invert), "rot="+strconv.FormatBool(opt.Rotations))
	prefix := "omniglot-" + set
	if classes, ok := cache.load(prefix, key, 1, opt.Size, opt.Size); ok {
		if chars, ok := charsFromClasses(classes, set, opt.Rotations); ok {
			return &omniSet{chars: chars, classes: classes, cached: true}, nil, nil
		}
	}

	chars, specs, closeFn, err := list()
	if err != nil {
		return nil, nil, err
	}
	defer closeFn()
	if len(chars) == 0 {
		return nil, nil, fmt.Errorf("omniglot: %s holds no <alphabet>/<character>/ image folders: %w", set, ErrNotFound)
	}
	classes, err := decodeClasses(specs, decodeSpec{c: 1, size: opt.Size, mode: opt.Resize, invert: opt.Invert, rotate: opt.Rotations})
	if err != nil {
		return nil, nil, err
	}
	cerr = cache.store(prefix, key, 1, opt.Size, opt.Size, classes)
	return &omniSet{chars: chars, classes: classes}, cerr, nil
}

// charsFromClasses recovers the character list from cached class names.
func charsFromClasses(classes []Class, set string, rot bool) ([]omniChar, bool) {
	nb := len(classes)
	if rot {
		if nb%4 != 0 {
			return nil, false
		}
		nb /= 4
	}
	chars := make([]omniChar, nb)
	for i := 0; i < nb; i++ {
		name := classes[i].Name
		if rot {
			name = strings.TrimSuffix(name, "/"+rotationSuffix[0])
		}
		p := strings.Split(name, "/")
		if len(p) != 3 || p[0] != set {
			return nil, false
		}
		chars[i] = omniChar{p[0], p[1], p[2]}
	}
	return chars, true
}

// skipName reports names that are not data (macOS metadata, hidden files).
func skipName(p string) bool {
	if strings.HasPrefix(p, "__MACOSX/") {
		return true
	}
	base := p
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		base = p[i+1:]
	}
	return strings.HasPrefix(base, ".")
}

// groupOmniglot turns (relative path, file) pairs into sorted characters.
// rel is "<alphabet>/<character>/<file>" (a leading "<set>/" is removed);
// paths of other depths are ignored.
func groupOmniglot(set string, rels []string, refs []fileRef) ([]omniChar, []classSpec) {
	byChar := map[omniChar][]int{}
	for i, rel := range rels {
		p := strings.Split(rel, "/")
		if len(p) > 0 && p[0] == set {
			p = p[1:]
		}
		if len(p) != 3 || p[0] == "" || p[1] == "" || p[2] == "" {
			continue
		}
		c := omniChar{set, p[0], p[1]}
		byChar[c] = append(byChar[c], i)
	}
	chars := make([]omniChar, 0, len(byChar))
	for c := range byChar {
		chars = append(chars, c)
	}
	sort.Slice(chars, func(i, j int) bool {
		if chars[i].alphabet != chars[j].alphabet {
			return chars[i].alphabet < chars[j].alphabet
		}
		return chars[i].character < chars[j].character
	})
	specs := make([]classSpec, len(chars))
	for ci, c := range chars {
		idx := byChar[c]
		sort.Slice(idx, func(a, b int) bool { return rels[idx[a]] < rels[idx[b]] })
		files := make([]fileRef, len(idx))
		for k, i := range idx {
			files[k] = refs[i]
		}
		specs[ci] = classSpec{name: c.name(), files: files}
	}
	return chars, specs
}

// listOmniglotZip lists the images of one set archive. The returned close
// function closes the archive after decoding.
func listOmniglotZip(archive, set string) ([]omniChar, []classSpec, func() error, error) {
	zr, err := zip.OpenReader(archive)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("omniglot: open %s: %v: %w", archive, err, ErrBadImage)
	}
	base := filepath.Base(archive)
	var rels []string
	var refs []fileRef
	for _, f := range zr.File {
		if f.FileInfo().IsDir() || strings.HasSuffix(f.Name, "/") || skipName(f.Name) {
			continue
		}
		f := f
		rels = append(rels, f.Name)
		refs = append(refs, fileRef{
			name: base + ":" + f.Name,
			open: func() (io.ReadCloser, error) { return f.Open() },
		})
	}
	chars, specs := groupOmniglot(set, rels, refs)
	return chars, specs, zr.Close, nil
}

// listOmniglotFolder lists the images of one extracted set folder and
// fingerprints it (relative paths, sizes and modification times).
func listOmniglotFolder(folder, set string) ([]omniChar, []classSpec, string, error) {
	var rels []string
	var refs []fileRef
	h := sha256.New()
	err := filepath.WalkDir(folder, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(folder, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if skipName(rel) {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\n", rel, info.Size(), info.ModTime().UnixNano())
		rels = append(rels, rel)
		p := path
		refs = append(refs, fileRef{
			name: filepath.Join(set, filepath.FromSlash(rel)),
			open: func() (io.ReadCloser, error) { return os.Open(p) },
		})
		return nil
	})
	if err != nil {
		return nil, nil, "", fmt.Errorf("omniglot: list %s: %w", folder, err)
	}
	chars, specs := groupOmniglot(set, rels, refs)
	return chars, specs, hex.EncodeToString(h.Sum(nil)), nil
}
