package torch

import (
	"math/rand"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rssBytes reads the resident set size from /proc/self/statm (Linux).
func rssBytes() (int64, bool) {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}

// tinyNet is a small conv net: conv 3x3 -> batch norm -> relu -> max pool -> global average
// pool -> linear, trained with cross-entropy and Adam.
type tinyNet struct {
	convW, bnW, bnB, rm, rv, fcW, fcB *Tensor
	x, y                              *Tensor
	opt                               *Optimizer
}

func newTinyNet(t *testing.T, s *Scope) *tinyNet {
	r := rand.New(rand.NewSource(1))
	randn := func(n int, scale float64) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(r.NormFloat64() * scale)
		}
		return v
	}
	const N, C, K = 8, 6, 4
	labels := make([]int64, N)
	for i := range labels {
		labels[i] = int64(i % K)
	}
	n := &tinyNet{
		convW: s.Param(randn(C*1*3*3, 0.5), []int64{C, 1, 3, 3}, CPU),
		bnW:   s.Param(randn(C, 0.1), []int64{C}, CPU),
		bnB:   s.Param(randn(C, 0.1), []int64{C}, CPU),
		rm:    s.Zeros([]int64{C}, CPU),
		rv:    s.Ones([]int64{C}, CPU),
		fcW:   s.Param(randn(K*C, 0.5), []int64{K, C}, CPU),
		fcB:   s.Param(randn(K, 0.1), []int64{K}, CPU),
		x:     s.FromFloat32(randn(N*1*10*10, 1), []int64{N, 1, 10, 10}, CPU),
		y:     s.FromInt64(labels, []int64{N}, CPU),
	}
	if err := n.bnW.Fill_(1); err != nil {
		t.Fatal(err)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	var err error
	n.opt, err = NewAdam([]*Tensor{n.convW, n.bnW, n.bnB, n.fcW, n.fcB}, AdamOptions{LR: 0.01, Beta1: 0.9, Beta2: 0.999, WeightDecay: 1e-3})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// step runs one forward/backward/Adam step in scope s and returns the loss tensor.
func (n *tinyNet) step(s *Scope) (*Tensor, error) {
	h := s.Conv2d(n.x, n.convW, nil, Conv{Padding: [2]int64{1, 1}})
	h = s.BatchNorm(h, n.bnW, n.bnB, n.rm, n.rv, true, 0.1, 1e-5)
	h = s.Relu(h)
	h = s.MaxPool2d(h, 3, 2, 1)
	h = s.Flatten(s.AdaptiveAvgPool2d(h, 1, 1), 1, -1)
	logits := s.Linear(h, n.fcW, n.fcB)
	loss := s.CrossEntropy(logits, n.y)
	if err := s.Err(); err != nil {
		return nil, err
	}
	if err := n.opt.ZeroGrad(); err != nil {
		return nil, err
	}
	if err := loss.Backward(); err != nil {
		return nil, err
	}
	return loss, n.opt.Step()
}

// TestMemoryBounded runs 5,000 training steps of a small conv net, half with Reset of one
// scope per step and half with a child scope per step, and checks that neither handles nor
// resident memory grow after a warm-up.
func TestMemoryBounded(t *testing.T) {
	iters := 5000
	if testing.Short() {
		iters = 1000
	}
	// Tiny tensors gain nothing from intra-op threads; one thread keeps the loop fast on a
	// busy machine.
	defer SetNumThreads(NumThreads())
	SetNumThreads(1)
	start := LiveTensors()
	root := NewScope()
	net := newTinyNet(t, root)
	base := LiveTensors()

	work := root.Child()
	var first, last float64
	run := func(i int) {
		var err error
		if i%2 == 0 {
			work.Reset()
			_, err = net.step(work)
		} else {
			err = With(root, func(c *Scope) error {
				l, err := net.step(c)
				if err == nil && (i == -1 || i == iters-1) {
					v, _ := l.Item()
					if i == -1 {
						first = v
					} else {
						last = v
					}
				}
				return err
			})
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	const warm = 300
	run(-1) // the loss before any update
	for i := 0; i < warm; i++ {
		run(i)
	}
	work.Reset()
	runtime.GC()
	debug.FreeOSMemory()
	rss0, haveRSS := rssBytes()
	t0 := time.Now()
	for i := 0; i < iters; i++ {
		run(i)
		if i%1000 == 999 && LiveTensors() > base+64 {
			t.Fatalf("step %d: %d live tensors, %d at the start of the loop", i, LiveTensors(), base)
		}
	}
	work.Reset()
	elapsed := time.Since(t0)
	if got := LiveTensors(); got != base {
		t.Errorf("live tensors %d after the loop, %d before", got, base)
	}
	runtime.GC()
	debug.FreeOSMemory()
	if haveRSS {
		rss1, _ := rssBytes()
		growth := rss1 - rss0
		t.Logf("%d steps in %v; resident memory %.1f MiB -> %.1f MiB (%+.2f MiB); loss %.4f -> %.4f",
			iters, elapsed.Round(time.Millisecond), float64(rss0)/(1<<20), float64(rss1)/(1<<20), float64(growth)/(1<<20), first, last)
		// One leaked activation per step (8x6x10x10 floats = 19 KB) would add ~90 MiB; a
		// leaked handle of a scalar loss ~1.5 MiB. Allocator noise stays well below 4 MiB.
		if growth > 4<<20 {
			t.Errorf("resident memory grew by %.1f MiB over %d steps", float64(growth)/(1<<20), iters)
		}
	} else {
		t.Log("no /proc/self/statm: resident memory not checked")
	}
	if !(last < first) {
		t.Errorf("loss did not decrease: %.4f -> %.4f", first, last)
	}
	net.opt.Close()
	work.Close()
	root.Close()
	if LiveTensors() != start {
		t.Errorf("live tensors %d after closing everything, %d at the start", LiveTensors(), start)
	}
}

// TestCUDAMemoryStats: without CUDA the allocator's statistics are an error; on CUDA a
// 64 MiB tensor shows in the allocated and reserved bytes and their peaks, and after it is
// freed and the peaks reset, the peaks fall back to the current values.
func TestCUDAMemoryStats(t *testing.T) {
	if !CUDAAvailable() {
		if _, err := CUDAMemoryStats(Device{CUDA: true}, false); err == nil {
			t.Error("CUDA memory statistics without CUDA: no error")
		}
		return
	}
	dev := Device{CUDA: true}
	before, err := CUDAMemoryStats(dev, true)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	s := NewScope()
	x := s.Zeros([]int64{size / 4}, dev)
	during, err := CUDAMemoryStats(dev, false)
	if err != nil || s.Err() != nil {
		t.Fatal(err, s.Err())
	}
	if during.Allocated-before.Allocated < size || during.AllocatedPeak < during.Allocated ||
		during.Reserved < during.Allocated || during.ReservedPeak < during.Reserved {
		t.Errorf("with a 64 MiB tensor: %+v (before %+v)", during, before)
	}
	s.Close()
	_ = x
	after, err := CUDAMemoryStats(dev, true)
	if err != nil {
		t.Fatal(err)
	}
	if after.AllocatedPeak < during.Allocated || after.Allocated > during.Allocated-size {
		t.Errorf("after freeing it: %+v, want the peak kept until the reset and the tensor gone", after)
	}
	reset, err := CUDAMemoryStats(dev, false)
	if err != nil {
		t.Fatal(err)
	}
	if reset.AllocatedPeak != reset.Allocated || reset.ReservedPeak != reset.Reserved {
		t.Errorf("after a reset the peaks are the current values: %+v", reset)
	}
}
