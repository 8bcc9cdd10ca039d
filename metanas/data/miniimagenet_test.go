package data

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// miniPNG is an NRGBA image with R = (x+seed)%256, G = (y*2)%256, B = seed.
func miniPNG(size, seed int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, size, size))
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			img.SetNRGBA(x, y, color.NRGBA{uint8((x + seed) % 256), uint8((y * 2) % 256), uint8(seed), 255})
		}
	}
	return img
}

// miniPlanar is the expected CHW form of miniPNG.
func miniPlanar(size, seed int) []uint8 {
	plane := size * size
	out := make([]uint8, 3*plane)
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			i := y*size + x
			out[i] = uint8((x + seed) % 256)
			out[plane+i] = uint8((y * 2) % 256)
			out[2*plane+i] = uint8(seed)
		}
	}
	return out
}

func jpegBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// miniFixture describes the generated dataset: split -> label -> images.
// Each image is PNG unless its name ends in .jpg (a solid colour JPEG).
type miniFile struct {
	name string
	data []byte
}

func miniFixture(t testing.TB) map[string]map[string][]miniFile {
	solid := func(c color.Color, size int) image.Image {
		img := image.NewRGBA(image.Rect(0, 0, size, size))
		for i := 0; i < size*size; i++ {
			r, g, b, a := c.RGBA()
			img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = uint8(r>>8), uint8(g>>8), uint8(b>>8), uint8(a>>8)
		}
		return img
	}
	gray := image.NewGray(image.Rect(0, 0, 84, 84))
	for i := range gray.Pix {
		gray.Pix[i] = 90
	}
	fx := map[string]map[string][]miniFile{
		"train": {
			"n02": {{"n0200000001.png", pngBytes(t, miniPNG(84, 1))}, {"n0200000002.png", pngBytes(t, miniPNG(84, 2))}, {"n0200000003.jpg", jpegBytes(t, solid(color.RGBA{200, 40, 10, 255}, 84))}},
			"n01": {{"n0100000001.png", pngBytes(t, miniPNG(84, 3))}, {"n0100000002.jpg", jpegBytes(t, gray)}, {"n0100000003.png", pngBytes(t, miniPNG(84, 4))}},
		},
		"val": {
			"n03": {{"n0300000001.png", pngBytes(t, miniPNG(168, 5))}, {"n0300000002.png", pngBytes(t, miniPNG(84, 6))}},
		},
		"test": {
			"n04": {{"n0400000001.png", pngBytes(t, miniPNG(84, 7))}, {"n0400000002.png", pngBytes(t, miniPNG(84, 8))}},
			"n05": {{"n0500000001.png", pngBytes(t, miniPNG(84, 9))}, {"n0500000002.png", pngBytes(t, miniPNG(84, 10))}},
		},
	}
	return fx
}

func writeMiniFolders(t testing.TB, dir string, fx map[string]map[string][]miniFile) {
	t.Helper()
	for split, labels := range fx {
		for label, files := range labels {
			d := filepath.Join(dir, split, label)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			for _, f := range files {
				if err := os.WriteFile(filepath.Join(d, f.name), f.data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

func writeMiniCSV(t testing.TB, dir string, fx map[string]map[string][]miniFile) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	for split, labels := range fx {
		var b strings.Builder
		b.WriteString("filename,label\n")
		// Write labels in reverse order to check that classes get sorted.
		for _, label := range []string{"n05", "n04", "n03", "n02", "n01"} {
			for _, f := range labels[label] {
				fmt.Fprintf(&b, "%s,%s\n", f.name, label)
				if err := os.WriteFile(filepath.Join(dir, "images", f.name), f.data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := os.WriteFile(filepath.Join(dir, split+".csv"), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMiniImagenetLayouts(t *testing.T) {
	fx := miniFixture(t)
	tests := []struct {
		name  string
		write func(testing.TB, string, map[string]map[string][]miniFile)
	}{
		{"folders", writeMiniFolders},
		{"csv", writeMiniCSV},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.write(t, dir, fx)
			opt := MiniImagenetOptions{CacheDir: t.TempDir()}
			sp, err := LoadMiniImagenet(dir, opt)
			if err != nil {
				t.Fatal(err)
			}
			for _, d := range []*Dataset{sp.Train, sp.Val, sp.Test} {
				if err := d.Validate(); err != nil {
					t.Fatal(err)
				}
				if d.C != 3 || d.H != 84 || d.W != 84 {
					t.Fatalf("%s shape %dx%dx%d", d.Name, d.C, d.H, d.W)
				}
			}
			if len(sp.Train.Classes) != 2 || len(sp.Val.Classes) != 1 || len(sp.Test.Classes) != 2 {
				t.Fatalf("classes %d/%d/%d", len(sp.Train.Classes), len(sp.Val.Classes), len(sp.Test.Classes))
			}
			if sp.Train.Classes[0].Name != "n01" || sp.Train.Classes[1].Name != "n02" || sp.Train.Classes[0].N != 3 {
				t.Fatalf("train classes %q (%d) %q", sp.Train.Classes[0].Name, sp.Train.Classes[0].N, sp.Train.Classes[1].Name)
			}
			// Exact planar RGB of a PNG.
			if got, want := sp.Train.Image(1, 1), miniPlanar(84, 2); !bytes.Equal(got, want) {
				t.Fatal("n02 image 1 is not the planar RGB of its PNG")
			}
			if got, want := sp.Test.Image(1, 0), miniPlanar(84, 9); !bytes.Equal(got, want) {
				t.Fatal("n05 image 0 is not the planar RGB of its PNG")
			}
			// A 168x168 image is area-resized: 2x2 block means.
			big := miniPlanar(168, 5)
			want := make([]uint8, 3*84*84)
			for c := 0; c < 3; c++ {
				for y := 0; y < 84; y++ {
					for x := 0; x < 84; x++ {
						s := 0
						for _, d := range [][2]int{{0, 0}, {0, 1}, {1, 0}, {1, 1}} {
							s += int(big[c*168*168+(2*y+d[0])*168+2*x+d[1]])
						}
						want[c*84*84+y*84+x] = uint8((s + 2) / 4)
					}
				}
			}
			if got := sp.Val.Image(0, 0); !bytes.Equal(got, want) {
				t.Fatal("168x168 image not resized to its 2x2 block means")
			}
			// Solid colour JPEG: close to (200, 40, 10) in each plane.
			img := sp.Train.Image(1, 2)
			for c, v := range []int{200, 40, 10} {
				for _, p := range img[c*84*84 : (c+1)*84*84] {
					if d := int(p) - v; d < -4 || d > 4 {
						t.Fatalf("JPEG channel %d value %d, want about %d", c, p, v)
					}
				}
			}
			// Gray JPEG: replicated to three equal channels near 90.
			img = sp.Train.Image(0, 1)
			for i := 0; i < 84*84; i++ {
				if img[i] != img[84*84+i] || img[i] != img[2*84*84+i] || img[i] < 86 || img[i] > 94 {
					t.Fatalf("gray JPEG pixel %d: %d %d %d", i, img[i], img[84*84+i], img[2*84*84+i])
				}
			}
			sp2, err := LoadMiniImagenet(dir, opt)
			if err != nil {
				t.Fatal(err)
			}
			if !sp2.FromCache || !bytes.Equal(sp2.Val.Classes[0].Pixels, sp.Val.Classes[0].Pixels) {
				t.Fatalf("second load: FromCache=%v", sp2.FromCache)
			}
			// A sampler works on the loaded data.
			s, err := NewSampler(sp.Train, 2, 2, 1, 1)
			if err != nil {
				t.Fatal(err)
			}
			checkTask(t, sp.Train, s.Task(0), 2, 2, 1)
			if _, err := NewSampler(sp.Val, 2, 1, 1, 1); !errors.Is(err, ErrTooFewClasses) ||
				!strings.Contains(err.Error(), "has 1 classes, but 2 ways") {
				t.Fatalf("too few classes error: %v", err)
			}
		})
	}
}

func TestMiniImagenetSize(t *testing.T) {
	dir := t.TempDir()
	writeMiniFolders(t, dir, miniFixture(t))
	sp, err := LoadMiniImagenet(dir, MiniImagenetOptions{Size: 42, Resize: ResizeBilinear, NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	if sp.Train.H != 42 || sp.Train.W != 42 || len(sp.Train.Classes[0].Pixels) != 3*3*42*42 {
		t.Fatalf("shape %dx%d, %d pixels", sp.Train.H, sp.Train.W, len(sp.Train.Classes[0].Pixels))
	}
	// The blue plane of miniPNG is constant, so it stays constant.
	img := sp.Test.Image(0, 1)
	for _, v := range img[2*42*42:] {
		if v != 8 {
			t.Fatalf("constant plane changed to %d", v)
		}
	}
}

func TestMiniImagenetErrors(t *testing.T) {
	t.Run("no layout", func(t *testing.T) {
		dir := t.TempDir()
		_, err := LoadMiniImagenet(dir, MiniImagenetOptions{NoCache: true})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "train.csv") || !strings.Contains(err.Error(), "train/") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("csv lists a missing image", func(t *testing.T) {
		dir := t.TempDir()
		writeMiniCSV(t, dir, miniFixture(t))
		os.Remove(filepath.Join(dir, "images", "n0400000002.png"))
		_, err := LoadMiniImagenet(dir, MiniImagenetOptions{NoCache: true})
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "n0400000002.png") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("bad csv header", func(t *testing.T) {
		dir := t.TempDir()
		writeMiniCSV(t, dir, miniFixture(t))
		os.WriteFile(filepath.Join(dir, "val.csv"), []byte("file,class\nn0300000001.png,n03\n"), 0o644)
		_, err := LoadMiniImagenet(dir, MiniImagenetOptions{NoCache: true})
		if err == nil || !strings.Contains(err.Error(), `"filename,label"`) {
			t.Fatalf("got %v", err)
		}
	})
	for _, layout := range []string{"folders", "csv"} {
		t.Run("corrupt image "+layout, func(t *testing.T) {
			dir := t.TempDir()
			fx := miniFixture(t)
			fx["test"]["n05"][1].data = []byte("not an image at all")
			want := filepath.Join("test", "n05", "n0500000002.png")
			if layout == "csv" {
				writeMiniCSV(t, dir, fx)
				want = "images/n0500000002.png"
			} else {
				writeMiniFolders(t, dir, fx)
				want = filepath.ToSlash(want)
			}
			_, err := LoadMiniImagenet(dir, MiniImagenetOptions{NoCache: true})
			if !errors.Is(err, ErrBadImage) || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want ErrBadImage naming %s", err, want)
			}
		})
	}
}
