package data

import (
	"fmt"
	"runtime"
	"sync"
)

// DefaultSyntheticNoise is the per-pixel noise standard deviation (in
// [0,1] intensity units) used when SyntheticOptions.Noise is 0.
const DefaultSyntheticNoise = 0.15

// SyntheticOptions describes a synthetic dataset.
type SyntheticOptions struct {
	// Name of the dataset; "" means "synthetic".
	Name string
	// Classes is the number of classes and PerClass the number of images
	// of each.
	Classes, PerClass int
	// C, H, W give the image shape.
	C, H, W int
	// Seed determines every pixel.
	Seed uint64
	// Noise is the standard deviation of the Gaussian pixel noise in
	// [0,1] units; 0 means DefaultSyntheticNoise and a negative value
	// gives noiseless copies of the prototypes.
	Noise float64
}

// Synthetic generates a learnable dataset: each class has a smooth random
// prototype (per channel, a 4x4 grid of uniform values bilinearly
// upsampled to H x W) and its images are the prototype plus independent
// Gaussian noise, clipped to [0,1] and stored as uint8. Class k depends
// only on (Seed, k, shape, Noise), not on the number of classes.
func Synthetic(opt SyntheticOptions) (*Dataset, error) {
	if err := opt.check(); err != nil {
		return nil, err
	}
	name := opt.Name
	if name == "" {
		name = "synthetic"
	}
	return synthRange(name, opt, 0, opt.Classes), nil
}

// SyntheticSplit generates a Split whose Train, Val and Test datasets have
// opt.Classes, valClasses and testClasses disjoint classes (class indices
// 0.., then the following ones, of the same generator).
func SyntheticSplit(opt SyntheticOptions, valClasses, testClasses int) (*Split, error) {
	if err := opt.check(); err != nil {
		return nil, err
	}
	if valClasses < 0 || testClasses < 0 {
		return nil, fmt.Errorf("data: synthetic: negative class count (val %d, test %d)", valClasses, testClasses)
	}
	name := opt.Name
	if name == "" {
		name = "synthetic"
	}
	n := opt.Classes
	return &Split{
		Train:     synthRange(name+"/train", opt, 0, n),
		Val:       synthRange(name+"/val", opt, n, n+valClasses),
		Test:      synthRange(name+"/test", opt, n+valClasses, n+valClasses+testClasses),
		FromCache: false,
	}, nil
}

func (opt SyntheticOptions) check() error {
	if opt.Classes <= 0 || opt.PerClass <= 0 || opt.C <= 0 || opt.H <= 0 || opt.W <= 0 {
		return fmt.Errorf("data: synthetic: classes, per-class count and shape must be positive (got %d classes x %d, %dx%dx%d)",
			opt.Classes, opt.PerClass, opt.C, opt.H, opt.W)
	}
	return nil
}

// synthRange builds the classes [from, to) of the generator.
func synthRange(name string, opt SyntheticOptions, from, to int) *Dataset {
	d := &Dataset{Name: name, C: opt.C, H: opt.H, W: opt.W, Classes: make([]Class, to-from)}
	noise := opt.Noise
	if noise == 0 {
		noise = DefaultSyntheticNoise
	}
	if noise < 0 {
		noise = 0
	}
	workers := runtime.NumCPU()
	var wg sync.WaitGroup
	for wi := 0; wi < workers; wi++ {
		wg.Add(1)
		go func(wi int) {
			defer wg.Done()
			for k := from + wi; k < to; k += workers {
				d.Classes[k-from] = synthClass(opt, k, noise)
			}
		}(wi)
	}
	wg.Wait()
	return d
}

// synthClass generates class k.
func synthClass(opt SyntheticOptions, k int, noise float64) Class {
	src := newPCG(streamSynthetic, opt.Seed, uint64(k))
	const g = 4
	plane := opt.H * opt.W
	proto := make([]float64, opt.C*plane)
	var grid [g * g]float64
	for ch := 0; ch < opt.C; ch++ {
		for i := range grid {
			grid[i] = float64Unit(src)
		}
		for y := 0; y < opt.H; y++ {
			gy, fy := gridPos(y, opt.H, g)
			for x := 0; x < opt.W; x++ {
				gx, fx := gridPos(x, opt.W, g)
				v00 := grid[gy*g+gx]
				v01 := grid[gy*g+min(gx+1, g-1)]
				v10 := grid[min(gy+1, g-1)*g+gx]
				v11 := grid[min(gy+1, g-1)*g+min(gx+1, g-1)]
				top := v00 + fx*(v01-v00)
				bot := v10 + fx*(v11-v10)
				proto[ch*plane+y*opt.W+x] = top + fy*(bot-top)
			}
		}
	}
	pix := make([]uint8, opt.PerClass*len(proto))
	for i := 0; i < opt.PerClass; i++ {
		img := pix[i*len(proto) : (i+1)*len(proto)]
		for j, p := range proto {
			v := p
			if noise > 0 {
				v += noise * normal(src)
			}
			img[j] = roundUint8(v * 255)
		}
	}
	return Class{Name: fmt.Sprintf("class%05d", k), N: opt.PerClass, Pixels: pix}
}

// gridPos maps pixel i of n onto a grid of g cells (corners aligned) and
// returns the cell and the fractional position inside it.
func gridPos(i, n, g int) (int, float64) {
	if n == 1 {
		return 0, 0
	}
	p := float64(i) * float64(g-1) / float64(n-1)
	c := int(p)
	if c >= g-1 {
		return g - 1, 0
	}
	return c, p - float64(c)
}
