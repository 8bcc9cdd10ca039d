package data

import (
	"bytes"
	"testing"
)

func TestSyntheticShapeAndDeterminism(t *testing.T) {
	tests := []struct {
		name string
		opt  SyntheticOptions
	}{
		{"gray 28", SyntheticOptions{Classes: 6, PerClass: 3, C: 1, H: 28, W: 28, Seed: 1}},
		{"rgb odd shape", SyntheticOptions{Classes: 3, PerClass: 2, C: 3, H: 5, W: 7, Seed: 9}},
		{"1x1 pixels", SyntheticOptions{Classes: 2, PerClass: 4, C: 2, H: 1, W: 1, Seed: 2}},
		{"noiseless", SyntheticOptions{Classes: 2, PerClass: 3, C: 1, H: 6, W: 6, Seed: 2, Noise: -1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := mustSynthetic(t, tc.opt)
			b := mustSynthetic(t, tc.opt)
			if err := a.Validate(); err != nil {
				t.Fatal(err)
			}
			if len(a.Classes) != tc.opt.Classes || a.C != tc.opt.C || a.H != tc.opt.H || a.W != tc.opt.W {
				t.Fatalf("got %d classes of %dx%dx%d", len(a.Classes), a.C, a.H, a.W)
			}
			for i := range a.Classes {
				if a.Classes[i].N != tc.opt.PerClass || !bytes.Equal(a.Classes[i].Pixels, b.Classes[i].Pixels) {
					t.Fatalf("class %d differs between runs or has %d images", i, a.Classes[i].N)
				}
			}
			if tc.opt.Noise < 0 {
				img0, img1 := a.Image(0, 0), a.Image(0, 1)
				if !bytes.Equal(img0, img1) {
					t.Error("noiseless images of one class differ")
				}
			}
			other := tc.opt
			other.Seed++
			c := mustSynthetic(t, other)
			if bytes.Equal(a.Classes[0].Pixels, c.Classes[0].Pixels) {
				t.Error("another seed gave the same pixels")
			}
		})
	}
}

func TestSyntheticClassesIndependentOfCount(t *testing.T) {
	opt := SyntheticOptions{Classes: 3, PerClass: 2, C: 1, H: 4, W: 4, Seed: 5}
	a := mustSynthetic(t, opt)
	opt.Classes = 10
	b := mustSynthetic(t, opt)
	for i := range a.Classes {
		if !bytes.Equal(a.Classes[i].Pixels, b.Classes[i].Pixels) {
			t.Fatalf("class %d depends on the number of classes", i)
		}
	}
	sp, err := SyntheticSplit(opt, 4, 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(sp.Train.Classes) != 10 || len(sp.Val.Classes) != 4 || len(sp.Test.Classes) != 5 {
		t.Fatalf("split %d/%d/%d", len(sp.Train.Classes), len(sp.Val.Classes), len(sp.Test.Classes))
	}
	if !bytes.Equal(sp.Train.Classes[2].Pixels, b.Classes[2].Pixels) {
		t.Error("train split differs from Synthetic")
	}
	if bytes.Equal(sp.Val.Classes[0].Pixels, sp.Train.Classes[0].Pixels) || bytes.Equal(sp.Test.Classes[0].Pixels, sp.Val.Classes[0].Pixels) {
		t.Error("splits share classes")
	}
}

// nearestCentroidAccuracy classifies each query by the closest support
// class mean (squared distance) and returns the fraction correct.
func nearestCentroidAccuracy(task Task) float64 {
	sz := task.C * task.H * task.W
	means := make([][]float64, task.N)
	for l := range means {
		means[l] = make([]float64, sz)
	}
	for i, y := range task.SupportY {
		for j := 0; j < sz; j++ {
			means[y][j] += float64(task.SupportX[i*sz+j]) / float64(task.K)
		}
	}
	correct := 0
	for i, y := range task.QueryY {
		best, bestD := -1, 0.0
		for l, m := range means {
			d := 0.0
			for j := 0; j < sz; j++ {
				e := float64(task.QueryX[i*sz+j]) - m[j]
				d += e * e
			}
			if best < 0 || d < bestD {
				best, bestD = l, d
			}
		}
		if int64(best) == y {
			correct++
		}
	}
	return float64(correct) / float64(len(task.QueryY))
}

// TestSyntheticLearnable checks that the classes carry signal (a nearest
// class mean classifier is far above chance) and that very strong noise
// brings the same classifier down towards chance.
func TestSyntheticLearnable(t *testing.T) {
	tests := []struct {
		name     string
		noise    float64
		min, max float64
	}{
		{"default noise", 0, 0.9, 1.0000001},
		{"overwhelming noise", 20, 0, 0.45},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ds := mustSynthetic(t, SyntheticOptions{Classes: 40, PerClass: 10, C: 1, H: 12, W: 12, Seed: 3, Noise: tc.noise})
			s, err := NewSampler(ds, 5, 5, 5, 1)
			if err != nil {
				t.Fatal(err)
			}
			sum := 0.0
			const tasks = 40
			for i := uint64(0); i < tasks; i++ {
				sum += nearestCentroidAccuracy(s.Task(i))
			}
			acc := sum / tasks
			t.Logf("nearest class mean accuracy %.3f (chance 0.2)", acc)
			if acc < tc.min || acc > tc.max {
				t.Errorf("accuracy %.3f outside [%.2f, %.2f] (chance 0.2)", acc, tc.min, tc.max)
			}
		})
	}
}

func TestSyntheticErrors(t *testing.T) {
	for _, opt := range []SyntheticOptions{
		{Classes: 0, PerClass: 1, C: 1, H: 1, W: 1},
		{Classes: 1, PerClass: 0, C: 1, H: 1, W: 1},
		{Classes: 1, PerClass: 1, C: 0, H: 1, W: 1},
		{Classes: 1, PerClass: 1, C: 1, H: -1, W: 1},
	} {
		if _, err := Synthetic(opt); err == nil {
			t.Errorf("%+v: no error", opt)
		}
	}
	if _, err := SyntheticSplit(SyntheticOptions{Classes: 1, PerClass: 1, C: 1, H: 1, W: 1}, -1, 0); err == nil {
		t.Error("negative val classes: no error")
	}
}
