package data

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// realOmniglotDir is where the shared copy of Omniglot lives relative to
// this package's directory.
const realOmniglotDir = "../../../shared/data/omniglot"

// TestOmniglotReal loads the real archives (skipped when absent): it
// decodes once into a temporary cache, reloads from the cache and checks
// the protocol's counts, shapes, value range, rotations and splits.
func TestOmniglotReal(t *testing.T) {
	for _, name := range []string{"images_background.zip", "images_evaluation.zip"} {
		if _, err := os.Stat(filepath.Join(realOmniglotDir, name)); err != nil {
			t.Skipf("real Omniglot not available: %v", err)
		}
	}
	cacheDir := t.TempDir()
	opt := DefaultOmniglotOptions()
	opt.CacheDir = cacheDir

	start := time.Now()
	sp, err := LoadOmniglot(realOmniglotDir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("decode: %v", time.Since(start))
	if sp.FromCache || sp.CacheErr != nil {
		t.Fatalf("first load: FromCache=%v CacheErr=%v", sp.FromCache, sp.CacheErr)
	}

	start = time.Now()
	sp2, err := LoadOmniglot(realOmniglotDir, opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("cached load: %v", time.Since(start))
	if !sp2.FromCache {
		t.Fatal("second load did not use the cache")
	}

	for _, tc := range []struct {
		ds      *Dataset
		classes int
	}{
		{sp.Train, 964 * 4},
		{sp.Test, 659 * 4},
		{sp2.Train, 964 * 4},
		{sp2.Test, 659 * 4},
		{sp.Val, 0},
	} {
		if err := tc.ds.Validate(); err != nil {
			t.Fatal(err)
		}
		if len(tc.ds.Classes) != tc.classes {
			t.Errorf("%s: %d classes, want %d", tc.ds.Name, len(tc.ds.Classes), tc.classes)
		}
		if tc.ds.C != 1 || tc.ds.H != 28 || tc.ds.W != 28 {
			t.Errorf("%s: shape %dx%dx%d, want 1x28x28", tc.ds.Name, tc.ds.C, tc.ds.H, tc.ds.W)
		}
		for i, cl := range tc.ds.Classes {
			if cl.N != 20 {
				t.Fatalf("%s: class %d (%s) has %d images, want 20", tc.ds.Name, i, cl.Name, cl.N)
			}
		}
	}
	for i := range sp.Train.Classes {
		a, b := sp.Train.Classes[i], sp2.Train.Classes[i]
		if a.Name != b.Name || !bytes.Equal(a.Pixels, b.Pixels) {
			t.Fatalf("cached class %d differs: %s vs %s", i, a.Name, b.Name)
		}
	}
	if got := sp.Train.Classes[0].Name; got != "images_background/Alphabet_of_the_Magi/character01/rot000" {
		t.Errorf("first class %q", got)
	}
	if got := sp.Train.Classes[964].Name; got != "images_background/Alphabet_of_the_Magi/character01/rot090" {
		t.Errorf("class 964 %q", got)
	}

	// Mostly white background (polarity kept), strokes present.
	var sum, n float64
	dark := 0
	for _, cl := range sp.Train.Classes[:964] {
		for _, v := range cl.Pixels {
			sum += float64(v) / 255
			n++
			if v < 128 {
				dark++
			}
		}
	}
	if mean := sum / n; mean < 0.8 || mean > 0.98 || dark == 0 {
		t.Errorf("mean intensity %.3f, %d dark pixels: polarity or decoding wrong", mean, dark)
	}

	// With the area filter on binary 105x105 images, rotating before
	// resizing equals rotating the resized image.
	for _, k := range []int{0, 500, 963} {
		for r := 1; r < 4; r++ {
			for _, i := range []int{0, 19} {
				want, err := Rotate(sp.Train.Image(k, i), 1, 28, r)
				if err != nil {
					t.Fatal(err)
				}
				if got := sp.Train.Image(r*964+k, i); !bytes.Equal(got, want) {
					t.Fatalf("class %d rotation %d image %d differs from the rotated unrotated image", k, r, i)
				}
			}
		}
	}

	// Tasks are in [0,1].
	s, err := NewSampler(sp.Test, 20, 5, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	task := s.Task(0)
	for _, v := range task.SupportX {
		if v < 0 || v > 1 {
			t.Fatalf("value %v outside [0,1]", v)
		}
	}

	// Vinyals and validation splits regroup the cached classes.
	vopt := opt
	vopt.Vinyals = true
	vopt.ValCharacters = 172
	vs, err := LoadOmniglot(realOmniglotDir, vopt)
	if err != nil {
		t.Fatal(err)
	}
	if !vs.FromCache {
		t.Error("Vinyals load did not use the cache")
	}
	if len(vs.Train.Classes) != 1028*4 || len(vs.Val.Classes) != 172*4 || len(vs.Test.Classes) != 423*4 {
		t.Errorf("Vinyals split: %d/%d/%d classes, want %d/%d/%d",
			len(vs.Train.Classes), len(vs.Val.Classes), len(vs.Test.Classes), 1028*4, 172*4, 423*4)
	}
}
