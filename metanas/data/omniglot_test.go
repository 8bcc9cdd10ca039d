package data

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeOmniglotLayout lists the fake sets: set -> alphabet -> characters.
var fakeOmniglotLayout = []struct {
	set       string
	alphabets []string
	chars     []int // characters per alphabet
}{
	{OmniglotBackground, []string{"Alpha", "Beta", "Delta"}, []int{3, 2, 2}},
	{OmniglotEvaluation, []string{"Gamma", "Omega"}, []int{2, 1}},
}

// fakeImage is a binary (0/255) size x size image that depends on seed.
func fakeImage(size, seed int) *image.Gray {
	img := image.NewGray(image.Rect(0, 0, size, size))
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			if (x*x+3*y+seed*7+x*y*seed)%5 < 2 {
				img.Pix[y*img.Stride+x] = 0
			} else {
				img.Pix[y*img.Stride+x] = 255
			}
		}
	}
	return img
}

func pngBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// fakeOmniglotFiles returns path -> PNG bytes of a fake Omniglot, paths
// "<set>/<Alphabet>/characterNN/<id>_<drawer>.png".
func fakeOmniglotFiles(t testing.TB, drawers, size int) map[string][]byte {
	files := map[string][]byte{}
	id := 0
	for _, s := range fakeOmniglotLayout {
		for ai, a := range s.alphabets {
			for c := 1; c <= s.chars[ai]; c++ {
				id++
				for d := 1; d <= drawers; d++ {
					p := fmt.Sprintf("%s/%s/character%02d/%04d_%02d.png", s.set, a, c, id, d)
					files[p] = pngBytes(t, fakeImage(size, id*100+d))
				}
			}
		}
	}
	return files
}

func writeZip(t testing.TB, path string, files map[string][]byte, dirEntries bool) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := zip.NewWriter(f)
	seenDir := map[string]bool{}
	for p, b := range files {
		if dirEntries {
			d := p[:strings.LastIndexByte(p, '/')+1]
			if !seenDir[d] {
				seenDir[d] = true
				if _, err := zw.Create(d); err != nil {
					t.Fatal(err)
				}
			}
		}
		w, err := zw.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeFakeOmniglot writes the fake Omniglot into dir as the two
// canonical archives, or as extracted folders.
func writeFakeOmniglot(t testing.TB, dir string, drawers, size int, folders bool) {
	t.Helper()
	files := fakeOmniglotFiles(t, drawers, size)
	if folders {
		for p, b := range files {
			full := filepath.Join(dir, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(full, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	for _, s := range fakeOmniglotLayout {
		part := map[string][]byte{}
		for p, b := range files {
			if strings.HasPrefix(p, s.set+"/") {
				part[p] = b
			}
		}
		part["__MACOSX/"+s.set+"/._junk"] = []byte("not an image, skipped")
		writeZip(t, filepath.Join(dir, s.set+".zip"), part, true)
	}
}

// blockMean2 halves a binary-or-gray image by exact 2x2 means, rounding
// half up: the hand-computed area resize.
func blockMean2(img *image.Gray) []uint8 {
	n := img.Rect.Dx() / 2
	out := make([]uint8, n*n)
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			s := int(img.GrayAt(2*x, 2*y).Y) + int(img.GrayAt(2*x+1, 2*y).Y) +
				int(img.GrayAt(2*x, 2*y+1).Y) + int(img.GrayAt(2*x+1, 2*y+1).Y)
			out[y*n+x] = uint8((s + 2) / 4)
		}
	}
	return out
}

func TestOmniglotFake(t *testing.T) {
	for _, folders := range []bool{false, true} {
		t.Run(fmt.Sprintf("folders=%v", folders), func(t *testing.T) {
			dir := t.TempDir()
			writeFakeOmniglot(t, dir, 4, 8, folders)
			opt := OmniglotOptions{Size: 4, Rotations: true, CacheDir: t.TempDir()}
			sp, err := LoadOmniglot(dir, opt)
			if err != nil {
				t.Fatal(err)
			}
			if sp.FromCache || sp.CacheErr != nil {
				t.Fatalf("FromCache=%v CacheErr=%v", sp.FromCache, sp.CacheErr)
			}
			if len(sp.Train.Classes) != 7*4 || len(sp.Test.Classes) != 3*4 || len(sp.Val.Classes) != 0 {
				t.Fatalf("classes %d/%d/%d, want 28/0/12", len(sp.Train.Classes), len(sp.Val.Classes), len(sp.Test.Classes))
			}
			wantNames := []string{
				"images_background/Alpha/character01/rot000",
				"images_background/Alpha/character02/rot000",
				"images_background/Alpha/character03/rot000",
				"images_background/Beta/character01/rot000",
			}
			for i, w := range wantNames {
				if got := sp.Train.Classes[i].Name; got != w {
					t.Errorf("class %d named %q, want %q", i, got, w)
				}
			}
			if got := sp.Train.Classes[7].Name; got != "images_background/Alpha/character01/rot090" {
				t.Errorf("class 7 named %q", got)
			}
			// Background character 2 (Alpha/character02) has id 2;
			// drawer 3 is image 2. Its pixels are the 2x2 means.
			src := fakeImage(8, 2*100+3)
			want := blockMean2(src)
			if got := sp.Train.Image(1, 2); !bytes.Equal(got, want) {
				t.Fatalf("decoded pixels %v, want %v", got, want)
			}
			// Rotated class: rotating the source first.
			rot, _ := Rotate(src.Pix, 1, 8, 1)
			want = blockMean2(&image.Gray{Pix: rot, Stride: 8, Rect: image.Rect(0, 0, 8, 8)})
			if got := sp.Train.Image(7+1, 2); !bytes.Equal(got, want) {
				t.Fatalf("rot090 pixels %v, want %v", got, want)
			}
			// The evaluation set's first class is Gamma/character01 (id 8).
			if got, want := sp.Test.Image(0, 0), blockMean2(fakeImage(8, 8*100+1)); !bytes.Equal(got, want) {
				t.Fatalf("test pixels %v, want %v", got, want)
			}

			// Second load: from the cache, identical.
			sp2, err := LoadOmniglot(dir, opt)
			if err != nil {
				t.Fatal(err)
			}
			if !sp2.FromCache {
				t.Fatal("second load did not use the cache")
			}
			for i := range sp.Train.Classes {
				if sp.Train.Classes[i].Name != sp2.Train.Classes[i].Name || !bytes.Equal(sp.Train.Classes[i].Pixels, sp2.Train.Classes[i].Pixels) {
					t.Fatalf("cached class %d differs", i)
				}
			}
			// Other settings miss the cache and give other pixels.
			opt2 := opt
			opt2.Invert = true
			sp3, err := LoadOmniglot(dir, opt2)
			if err != nil {
				t.Fatal(err)
			}
			if sp3.FromCache {
				t.Fatal("inverted load hit the plain cache entry")
			}
			// Inversion happens before resizing (as torchmeta stores
			// inverted full-size images), so halves round the other way.
			inv := fakeImage(8, 2*100+3)
			for i := range inv.Pix {
				inv.Pix[i] = 255 - inv.Pix[i]
			}
			if got, want := sp3.Train.Image(1, 2), blockMean2(inv); !bytes.Equal(got, want) {
				t.Fatalf("inverted pixels %v, want %v", got, want)
			}
		})
	}
}

func TestOmniglotZipAndFolderAgree(t *testing.T) {
	zdir, fdir := t.TempDir(), t.TempDir()
	writeFakeOmniglot(t, zdir, 3, 10, false)
	writeFakeOmniglot(t, fdir, 3, 10, true)
	for _, mode := range []ResizeMode{ResizeArea, ResizeBilinear} {
		opt := OmniglotOptions{Size: 4, Resize: mode, Rotations: true, NoCache: true}
		a, err := LoadOmniglot(zdir, opt)
		if err != nil {
			t.Fatal(err)
		}
		b, err := LoadOmniglot(fdir, opt)
		if err != nil {
			t.Fatal(err)
		}
		for i := range a.Train.Classes {
			if a.Train.Classes[i].Name != b.Train.Classes[i].Name || !bytes.Equal(a.Train.Classes[i].Pixels, b.Train.Classes[i].Pixels) {
				t.Fatalf("%s: zip and folder differ at class %d", mode, i)
			}
		}
	}
}

func TestOmniglotCacheInvalidation(t *testing.T) {
	dir, cache := t.TempDir(), t.TempDir()
	writeFakeOmniglot(t, dir, 2, 4, false)
	opt := OmniglotOptions{Size: 2, CacheDir: cache}
	if _, err := LoadOmniglot(dir, opt); err != nil {
		t.Fatal(err)
	}
	// Touching an archive changes its fingerprint.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "images_evaluation.zip"), later, later); err != nil {
		t.Fatal(err)
	}
	sp, err := LoadOmniglot(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	if sp.FromCache {
		t.Error("a touched archive still hit the cache")
	}
	// A corrupted cache file is ignored and rewritten.
	files, _ := filepath.Glob(filepath.Join(cache, "omniglot-images_background-*.bin"))
	if len(files) != 1 {
		t.Fatalf("cache files %v", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0xff
	if err := os.WriteFile(files[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	sp, err = LoadOmniglot(dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	if sp.FromCache {
		t.Error("a corrupt cache file was used")
	}
	sp, err = LoadOmniglot(dir, opt)
	if err != nil || !sp.FromCache {
		t.Errorf("cache not rewritten: FromCache=%v err=%v", sp != nil && sp.FromCache, err)
	}
}

func TestOmniglotErrors(t *testing.T) {
	t.Run("missing", func(t *testing.T) {
		dir := t.TempDir()
		_, err := LoadOmniglot(dir, OmniglotOptions{NoCache: true})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("got %v, want ErrNotFound", err)
		}
		for _, w := range []string{"images_background.zip", "images_evaluation.zip", dir} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	})
	t.Run("missing evaluation", func(t *testing.T) {
		dir := t.TempDir()
		writeFakeOmniglot(t, dir, 2, 4, false)
		os.Remove(filepath.Join(dir, "images_evaluation.zip"))
		_, err := LoadOmniglot(dir, OmniglotOptions{NoCache: true})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "images_evaluation") {
			t.Fatalf("got %v", err)
		}
	})
	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"corrupt png", []byte("\x89PNG\r\n\x1a\nthis is not really a png")},
		{"text file", []byte("hello")},
		{"truncated png", nil}, // filled below
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := fakeOmniglotFiles(t, 2, 4)
			bad := "images_background/Beta/character02/0005_02.png"
			if _, ok := files[bad]; !ok {
				t.Fatalf("fake layout lacks %s", bad)
			}
			content := tc.content
			if content == nil {
				content = files[bad][:len(files[bad])/2]
			}
			files[bad] = content
			for _, s := range fakeOmniglotLayout {
				part := map[string][]byte{}
				for p, b := range files {
					if strings.HasPrefix(p, s.set+"/") {
						part[p] = b
					}
				}
				writeZip(t, filepath.Join(dir, s.set+".zip"), part, false)
			}
			_, err := LoadOmniglot(dir, OmniglotOptions{NoCache: true, Rotations: true})
			if !errors.Is(err, ErrBadImage) {
				t.Fatalf("got %v, want ErrBadImage", err)
			}
			if want := "images_background.zip:" + bad; !strings.Contains(err.Error(), want) {
				t.Fatalf("error %q does not name %q", err, want)
			}
		})
	}
	t.Run("not a zip", func(t *testing.T) {
		dir := t.TempDir()
		writeFakeOmniglot(t, dir, 2, 4, false)
		os.WriteFile(filepath.Join(dir, "images_background.zip"), []byte("garbage"), 0o644)
		_, err := LoadOmniglot(dir, OmniglotOptions{NoCache: true})
		if err == nil || !strings.Contains(err.Error(), "images_background.zip") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bad options", func(t *testing.T) {
		dir := t.TempDir()
		writeFakeOmniglot(t, dir, 2, 4, false)
		for _, opt := range []OmniglotOptions{
			{Resize: "nearest"},
			{Size: -1},
			{ValCharacters: 1, ValFraction: 0.1},
			{ValFraction: 1},
			{ValCharacters: 7},
			{Vinyals: true, VinyalsTrain: 10},
		} {
			opt.NoCache = true
			if _, err := LoadOmniglot(dir, opt); err == nil {
				t.Errorf("options %+v: no error", opt)
			}
		}
	})
}

func TestOmniglotValidationSplit(t *testing.T) {
	dir := t.TempDir()
	writeFakeOmniglot(t, dir, 2, 4, false)
	base := OmniglotOptions{Size: 2, Rotations: true, NoCache: true}
	tests := []struct {
		name                string
		mod                 func(*OmniglotOptions)
		train, val, test    int // characters (classes / 4)
		alphabetsWhole      bool
		vinyalsTestContains string
	}{
		{"none", func(o *OmniglotOptions) {}, 7, 0, 3, false, ""},
		{"2 characters", func(o *OmniglotOptions) { o.ValCharacters = 2 }, 5, 2, 3, false, ""},
		{"fraction 0.3 of 7 rounds to 2", func(o *OmniglotOptions) { o.ValFraction = 0.3 }, 5, 2, 3, false, ""},
		{"by alphabet", func(o *OmniglotOptions) { o.ValCharacters = 2; o.ValByAlphabet = true }, -1, -1, 3, true, ""},
		{"vinyals 8 train", func(o *OmniglotOptions) { o.Vinyals = true; o.VinyalsTrain = 8 }, 8, 0, 2, false, "images_evaluation/Gamma/character02"},
		{"vinyals with val", func(o *OmniglotOptions) { o.Vinyals = true; o.VinyalsTrain = 8; o.ValCharacters = 3 }, 5, 3, 2, false, "images_evaluation/Omega/character01"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opt := base
			tc.mod(&opt)
			sp, err := LoadOmniglot(dir, opt)
			if err != nil {
				t.Fatal(err)
			}
			nt, nv, ns := len(sp.Train.Classes)/4, len(sp.Val.Classes)/4, len(sp.Test.Classes)/4
			if (tc.train >= 0 && nt != tc.train) || (tc.val >= 0 && nv != tc.val) || ns != tc.test {
				t.Fatalf("characters %d/%d/%d, want %d/%d/%d", nt, nv, ns, tc.train, tc.val, tc.test)
			}
			// Splits are disjoint, all rotations of a character together.
			where := map[string]string{}
			for _, d := range []*Dataset{sp.Train, sp.Val, sp.Test} {
				if len(d.Classes)%4 != 0 {
					t.Fatalf("%s has %d classes", d.Name, len(d.Classes))
				}
				for _, c := range d.Classes {
					ch := c.Name[:strings.LastIndexByte(c.Name, '/')]
					if w, ok := where[ch]; ok && w != d.Name {
						t.Fatalf("%s in %s and %s", ch, w, d.Name)
					}
					where[ch] = d.Name
				}
			}
			if tc.alphabetsWhole {
				if nv < 2 || nt+nv != 7 {
					t.Fatalf("by alphabet: %d train, %d val", nt, nv)
				}
				alph := map[string]map[string]bool{}
				for ch, d := range where {
					a := ch[:strings.LastIndexByte(ch, '/')]
					if alph[a] == nil {
						alph[a] = map[string]bool{}
					}
					alph[a][d] = true
				}
				for a, ds := range alph {
					if len(ds) != 1 {
						t.Errorf("alphabet %s split over %v", a, ds)
					}
				}
			}
			if tc.vinyalsTestContains != "" && where[tc.vinyalsTestContains] != sp.Test.Name {
				t.Errorf("%s is in %q, want the test split", tc.vinyalsTestContains, where[tc.vinyalsTestContains])
			}
			// Deterministic: loading again gives the same split.
			sp2, err := LoadOmniglot(dir, opt)
			if err != nil {
				t.Fatal(err)
			}
			for i := range sp.Val.Classes {
				if sp.Val.Classes[i].Name != sp2.Val.Classes[i].Name {
					t.Fatal("validation split not deterministic")
				}
			}
		})
	}
}
