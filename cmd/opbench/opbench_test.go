package main

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/torch"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{7}, 7}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing should be NaN")
	}
}

func TestParseLines(t *testing.T) {
	out := "noise\n{\"impl\":\"cpp\",\"case\":\"chain\",\"threads\":2,\"wall_us_per_op\":7.1,\"cpu_us_per_op\":7}\n{broken\n"
	ls := parseLines(out)
	if len(ls) != 1 || ls[0].Case != "chain" || ls[0].Threads != 2 || ls[0].Wall != 7.1 || ls[0].CPU != 7 {
		t.Fatalf("parseLines = %+v", ls)
	}
}

func TestSeriesAndRatios(t *testing.T) {
	s := series{skipped: "binary missing"}
	if v, ok := s.value().(string); !ok || v != "skipped: binary missing" {
		t.Errorf("value = %v, want the skip reason", s.value())
	}
	if r := pairedRatio([]float64{2}, []float64{1}, "", s.skipped); r != nil {
		t.Errorf("ratio with a skipped side = %v, want nil", r)
	}
	// Paired: trial i of one against trial i of the other, then the median.
	if r := pairedRatio([]float64{3, 20, 4}, []float64{2, 10, 4}, "", ""); r != 1.5 {
		t.Errorf("paired ratio = %v, want 1.5", r)
	}
}

// TestGoBench runs both cases briefly through the torch package.
func TestGoBench(t *testing.T) {
	for _, c := range []string{"chain", "conv"} {
		for _, eager := range []bool{false, true} {
			g, err := newGoBench(c, torch.CPU, eager)
			if err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			if err := g.warm(1); err != nil {
				t.Fatalf("%s: %v", c, err)
			}
			wall, cpu, err := g.trial(1)
			g.close()
			if err != nil || wall <= 0 || cpu < 0 {
				t.Errorf("%s: trial = %v, %v, %v", c, wall, cpu, err)
			}
		}
	}
	if n := torch.LiveTensors(); n != 0 {
		t.Errorf("%d tensors still live after the cases", n)
	}
}

// TestChildren drives the C++ and Python versions through their serving mode when present.
func TestChildren(t *testing.T) {
	o := options{device: "cpu"}
	root := findRoot()
	for _, e := range []*external{newCpp(root, o), newPython(root, o)} {
		if e.skipped != "" {
			t.Logf("%s skipped: %s", e.impl, e.skipped)
			continue
		}
		e.start(1)
		wall, cpu, ok := e.trial("chain", 1, 1)
		if !ok || wall <= 0 || cpu <= 0 {
			t.Errorf("%s: trial = %v, %v, %v (%s)", e.impl, wall, cpu, ok, e.skipped)
		}
		if _, _, ok := e.trial("nonesuch", 1, 0); ok || e.skipped == "" {
			t.Errorf("%s: an unknown case should fail the child", e.impl)
		}
		e.stop()
	}
	// --cpp-pool: the C++ child with the shim preloaded still serves trials.
	if e := newCpp(root, options{device: "cpu", cppPool: true}); e.skipped == "" {
		e.start(1)
		if wall, cpu, ok := e.trial("chain", 1, 1); !ok || wall <= 0 || cpu <= 0 {
			t.Errorf("cpp with --cpp-pool: trial = %v, %v, %v (%s; %s)", wall, cpu, ok, e.skipped, e.stderr.String())
		}
		e.stop()
		if strings.Contains(e.stderr.String(), "LD_PRELOAD") {
			t.Errorf("cpp with --cpp-pool: the shim was not preloaded: %s", e.stderr.String())
		}
	}
}

// BenchmarkCgoCall is the cost of the cheapest call into the shim (an atomic load): the
// floor of what any op pays for crossing from Go to C.
func BenchmarkCgoCall(b *testing.B) {
	for i := 0; i < b.N; i++ {
		torch.LiveTensors()
	}
}

// BenchmarkAliasOp is an op whose LibTorch part is nearly free (a second handle to the same
// tensor): what the torch package adds per op (checks, cgo call, handle, Tensor, adopt),
// with a Reset every 600 ops as in the chain.
func BenchmarkAliasOp(b *testing.B) {
	in := torch.NewScope()
	defer in.Close()
	x := in.Zeros([]int64{64, 28}, torch.CPU)
	s := torch.NewScope()
	defer s.Close()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s.Alias(x)
		if i%600 == 599 {
			s.Reset()
		}
	}
}

// BenchmarkChainIter is one iteration of the chain case (600 forward ops and backward).
func BenchmarkChainIter(b *testing.B) {
	g, err := newGoBench("chain", torch.CPU, false)
	if err != nil {
		b.Fatal(err)
	}
	defer g.close()
	b.ResetTimer()
	if _, _, err := g.trial(b.N); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBatchNormTrain is training-mode batch norm of an og_metanas-sized activation
// (20x28x28x28, no affine, running statistics), forward alone and forward with backward.
// METANAS_FAST_CPU_OPS=0 measures LibTorch's own kernel for comparison.
func BenchmarkBatchNormTrain(b *testing.B) {
	torch.SetNumThreads(1)
	in := torch.NewScope()
	defer in.Close()
	x := in.Randn([]int64{20, 28, 28, 28}, torch.CPU, true)
	rm, rv := in.Zeros([]int64{28}, torch.CPU), in.Ones([]int64{28}, torch.CPU)
	grad := in.Ones([]int64{20, 28, 28, 28}, torch.CPU)
	for _, backward := range []bool{false, true} {
		name := "forward"
		if backward {
			name = "forward+backward"
		}
		b.Run(name, func(b *testing.B) {
			benchSteps(b, in.Child(), func(s *torch.Scope) error {
				y := s.BatchNorm(x, nil, nil, rm, rv, true, 0.1, 1e-5)
				if !backward {
					return nil
				}
				// sum(y * grad) gives the backward pass a contiguous gradient, as in a network.
				return s.Sum(s.Mul(y, grad)).Backward()
			})
		})
	}
}

// BenchmarkDepthwiseConv is a 3x3 depthwise convolution (padding 1, no bias) of an
// og_metanas-sized activation (20x28x28x28) at strides 1 and 2 and with dilation 2 (DARTS's
// sep_conv and dil_conv), forward and backward to the input and the weight.
// METANAS_FAST_CPU_OPS=0 measures LibTorch's own convolution for comparison.
func BenchmarkDepthwiseConv(b *testing.B) {
	torch.SetNumThreads(1)
	in := torch.NewScope()
	defer in.Close()
	x := in.Randn([]int64{20, 28, 28, 28}, torch.CPU, true)
	w := in.Randn([]int64{28, 1, 3, 3}, torch.CPU, true)
	for _, c := range []struct {
		name string
		geom torch.Conv
	}{
		{"s1", torch.Conv{Padding: [2]int64{1, 1}, Groups: 28}},
		{"s2", torch.Conv{Stride: [2]int64{2, 2}, Padding: [2]int64{1, 1}, Groups: 28}},
		{"dil2", torch.Conv{Padding: [2]int64{2, 2}, Dilation: [2]int64{2, 2}, Groups: 28}},
	} {
		b.Run(c.name, func(b *testing.B) { benchConv(b, in.Child(), x, w, c.geom) })
	}
}

// benchSteps runs step b.N times in scope s, resetting it after each, and closes it.
func benchSteps(b *testing.B, s *torch.Scope, step func(*torch.Scope) error) {
	defer s.Close()
	for i := 0; i < b.N; i++ {
		if err := step(s); err != nil {
			b.Fatal(err)
		}
		s.Reset()
	}
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
}

// benchConv times b.N convolutions of x with w in scope s (closed at the end), each with
// the backward pass of sum(y*y) to the input and the weight.
func benchConv(b *testing.B, s *torch.Scope, x, w *torch.Tensor, geom torch.Conv) {
	benchSteps(b, s, func(s *torch.Scope) error {
		y := s.Conv2d(x, w, nil, geom)
		return s.Sum(s.Mul(y, y)).Backward()
	})
}

// BenchmarkDenseConv is a dense stride-1 "same" convolution (no bias) of og_metanas's
// activations (20x28xHxW, 28 output channels) with the kernels of its cells (1x1, 1x5,
// 5x1) at the two resolutions of its cells, and FactorizedReduce's strided 1x1, forward and
// backward to the input and the weight. METANAS_FAST_CPU_OPS=0 measures LibTorch's own convolution for comparison.
func BenchmarkDenseConv(b *testing.B) {
	torch.SetNumThreads(1)
	in := torch.NewScope()
	defer in.Close()
	for _, c := range []struct {
		name     string
		size     int64
		kh, kw   int64
		pad      [2]int64
		inputCh  int64
		outputCh int64
		stride   int64
	}{
		{"1x1_28", 28, 1, 1, [2]int64{0, 0}, 28, 28, 1},
		{"1x5_28", 28, 1, 5, [2]int64{0, 2}, 28, 28, 1},
		{"5x1_28", 28, 5, 1, [2]int64{2, 0}, 28, 28, 1},
		{"1x1_14", 14, 1, 1, [2]int64{0, 0}, 28, 28, 1},
		{"1x5_14", 14, 1, 5, [2]int64{0, 2}, 28, 28, 1},
		{"1x1_84to28_28", 28, 1, 1, [2]int64{0, 0}, 84, 28, 1},
		{"1x1_s2_28to14", 28, 1, 1, [2]int64{0, 0}, 28, 14, 2}, // FactorizedReduce
	} {
		b.Run(c.name, func(b *testing.B) {
			d := in.Child()
			defer d.Close()
			x := d.Randn([]int64{20, c.inputCh, c.size, c.size}, torch.CPU, true)
			w := d.Randn([]int64{c.outputCh, c.inputCh, c.kh, c.kw}, torch.CPU, true)
			benchConv(b, d.Child(), x, w, torch.Conv{Padding: c.pad, Stride: [2]int64{c.stride, c.stride}})
		})
	}
}

// BenchmarkMaxPool is a 3x3 max pool (padding 1) of an og_metanas-sized activation
// (20x28x28x28) at strides 1 and 2, forward alone and with backward.
// METANAS_FAST_CPU_OPS=0 measures LibTorch's own pool for comparison.
func BenchmarkMaxPool(b *testing.B) {
	torch.SetNumThreads(1)
	in := torch.NewScope()
	defer in.Close()
	x := in.Randn([]int64{20, 28, 28, 28}, torch.CPU, true)
	for _, stride := range []int64{1, 2} {
		for _, backward := range []bool{false, true} {
			name := fmt.Sprintf("s%d/forward", stride)
			if backward {
				name += "+backward"
			}
			b.Run(name, func(b *testing.B) {
				benchSteps(b, in.Child(), func(s *torch.Scope) error {
					y := s.MaxPool2d(x, 3, stride, 1)
					if !backward {
						return nil
					}
					return s.Sum(s.Mul(y, y)).Backward()
				})
			})
		}
	}
}

// chainInputs returns the chain's x (requiring grad), and w near 1 and b small so that the
// gradient of x (the product of w over the steps where the chain stays positive) varies
// from element to element.
func chainInputs(t testing.TB, in *torch.Scope) (x, w, b *torch.Tensor) {
	torch.ManualSeed(3)
	x = in.Randn([]int64{64, 28}, torch.CPU, true)
	w = in.AddScalar(in.MulScalar(in.Rand([]int64{64, 28}, torch.CPU), 0.1), 0.95)
	b = in.Full([]int64{64, 28}, 0.01, torch.CPU)
	if err := in.Err(); err != nil {
		t.Fatal(err)
	}
	return x, w, b
}

// TestDiagChainsMatch: every variant of BenchmarkChainSplit does the chain's work: one
// iteration of each gives x the gradient the torch package's chain gives it, and leaves no
// tensor handle behind.
func TestDiagChainsMatch(t *testing.T) {
	in := torch.NewScope()
	defer in.Close()
	x, w, b := chainInputs(t, in)
	grad := func(run func() error) []float32 {
		t.Helper()
		if err := torch.ZeroGrad([]*torch.Tensor{x}, true); err != nil {
			t.Fatal(err)
		}
		live := torch.LiveTensors()
		if err := run(); err != nil {
			t.Fatal(err)
		}
		if d := torch.LiveTensors() - live; d != 0 {
			t.Fatalf("%d tensor handles left behind", d)
		}
		s := torch.NewScope()
		defer s.Close()
		g, err := s.Grad(x).Float32s()
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	s := torch.NewScope()
	defer s.Close()
	vs := chainVariants(s, x, w, b)
	ref := vs[len(vs)-1]
	want := grad(func() error { return ref.run(1) })
	lo, hi := float32(math.Inf(1)), float32(0)
	for _, v := range want {
		if v != 0 {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	if !(hi > 10*lo) {
		t.Fatalf("the reference gradient hardly varies (nonzero from %g to %g)", lo, hi)
	}
	for _, v := range vs[:len(vs)-1] {
		got := grad(func() error { return v.run(1) })
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: grad[%d] = %g, want %s's %g", v.name, i, got[i], ref.name, want[i])
			}
		}
	}
	if err := torch.DiagChainGo(x, w, b, chainSteps, 1, 7); err == nil {
		t.Errorf("DiagChainGo with k = 7 (not a divisor of %d) should fail", chainSteps)
	}
	if err := torch.DiagChainCPP(x, w, b, 0, 1, true); err == nil {
		t.Error("DiagChainCPP with no steps should fail")
	}
}

// chainVariant is one way of running n iterations of the chain case.
type chainVariant struct {
	name string
	run  func(n int) error
}

// chainVariants are BenchmarkChainSplit's variants, from all in C++ to all through the
// torch package (last, in scope s).
func chainVariants(s *torch.Scope, x, w, b *torch.Tensor) []chainVariant {
	return []chainVariant{
		{"cpp_values", func(n int) error { return torch.DiagChainCPP(x, w, b, chainSteps, n, false) }},
		{"cpp_handles", func(n int) error { return torch.DiagChainCPP(x, w, b, chainSteps, n, true) }},
		{"go_call_per_600_ops", func(n int) error { return torch.DiagChainGo(x, w, b, chainSteps, n, chainSteps) }},
		{"go_call_per_3_ops", func(n int) error { return torch.DiagChainGo(x, w, b, chainSteps, n, 1) }},
		{"go_call_per_op", func(n int) error { return torch.DiagChainGo(x, w, b, chainSteps, n, 0) }},
		{"torch_package", func(n int) error {
			for i := 0; i < n; i++ {
				if err := chainIter(s, x, w, b, false); err != nil {
					return err
				}
			}
			return nil
		}},
	}
}

// BenchmarkChainSplit runs the chain case (one iteration per b.N) with more or less of it
// issued from Go, from all in C++ to all through the torch package, reporting µs per
// forward op (600 per iteration). -count N alternates the variants N times.
func BenchmarkChainSplit(b *testing.B) {
	torch.SetNumThreads(1)
	in := torch.NewScope()
	defer in.Close()
	x, w, bias := chainInputs(b, in)
	s := torch.NewScope()
	defer s.Close()
	for _, v := range chainVariants(s, x, w, bias) {
		b.Run(v.name, func(b *testing.B) {
			if err := v.run(b.N); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/1e3/float64(b.N*opsPerIter("chain")), "us/chain_op")
		})
	}
}
