package torch

import (
	"math"
	"os"
	"runtime"
	"strconv"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// TestBranchStreamsSetting checks, in child processes, how METANAS_BRANCH_STREAMS is read:
// a count of 2 to 16 as given, more capped at 16, below 2 or not a number as off.
func TestBranchStreamsSetting(t *testing.T) {
	if os.Getenv("METANAS_TEST_BRANCHES") != "" {
		t.Skip("a child of this test")
	}
	for _, c := range []struct{ env, want string }{{"4", "4"}, {"2", "2"}, {"1", "0"}, {"x", "0"}, {"40", "16"}} {
		testutil.RerunWith(t, []string{"METANAS_BRANCH_STREAMS=" + c.env, "METANAS_TEST_BRANCHES=" + c.want},
			"^TestBranchStreamsValue$", "TestBranchStreamsValue")
	}
}

// TestBranchStreamsValue is TestBranchStreamsSetting's child: BranchStreams reports the
// expected count, and on the CPU a fork opens nothing, so that a join fails.
func TestBranchStreamsValue(t *testing.T) {
	want := os.Getenv("METANAS_TEST_BRANCHES")
	if want == "" {
		t.Skip("run by TestBranchStreamsSetting")
	}
	if got := strconv.Itoa(BranchStreams()); got != want {
		t.Errorf("BranchStreams() = %s with METANAS_BRANCH_STREAMS=%q, want %s", got, os.Getenv("METANAS_BRANCH_STREAMS"), want)
	}
	s := NewScope()
	defer s.Close()
	if n := s.ForkBranches(CPU); n != 0 {
		t.Errorf("ForkBranches(CPU) = %d, want 0", n)
	}
	s.JoinBranches(nil)
	if s.Err() == nil {
		t.Error("JoinBranches without a fork: no error")
	}
}

// TestCUDABranchStreams runs a small network whose five branches go to three streams (each
// reading the parameter through BranchInput), in a child process with
// METANAS_BRANCH_STREAMS=3, and checks its loss and gradient against the same network on
// one stream: eagerly, and replayed from a CUDA graph captured across the branches (forward
// and backward).
func TestCUDABranchStreams(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	if BranchStreams() < 2 {
		testutil.RerunWith(t, []string{"METANAS_BRANCH_STREAMS=3"}, "^TestCUDABranchStreams$", "TestCUDABranchStreams")
		return
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev := Device{CUDA: true}
	s := NewScope()
	defer s.Close()
	const n = 96
	v := make([]float32, n*n)
	for i := range v {
		v[i] = float32(math.Sin(float64(i)*0.37)) * 0.2
	}
	x := s.Param(v, []int64{n, n}, dev)
	forward := func(st *Scope, branched bool) *Tensor {
		if branched {
			if got := st.ForkBranches(dev); got != 3 {
				t.Fatalf("ForkBranches = %d, want 3", got)
			}
		}
		var outs []*Tensor
		for i := 0; i < 5; i++ {
			in := x
			if branched {
				st.UseBranch(i)
				in = st.BranchInput(x) // its gradient, made on the branch, is read on the trunk
			}
			y := st.Relu(in)
			for k := 0; k < 4; k++ {
				y = st.MulScalar(st.Matmul(y, in), 1+0.1*float64(i))
			}
			outs = append(outs, y)
		}
		if branched {
			st.JoinBranches(outs)
		}
		sum := outs[0]
		for _, o := range outs[1:] {
			sum = st.Add(sum, o)
		}
		return st.Sum(st.Mul(sum, sum))
	}
	step := func(st *Scope, branched bool) *Tensor {
		loss := forward(st, branched)
		if err := loss.Backward(); err != nil {
			t.Fatal(err)
		}
		return loss
	}
	read := func(loss *Tensor) (float32, []float32) {
		l, err := loss.Item()
		if err != nil {
			t.Fatal(err)
		}
		return float32(l), values(t, s.To(s.Grad(x), Float32, CPU))
	}
	zero := func() {
		if err := ZeroGrad([]*Tensor{x}, false); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Child()
	wantLoss, wantGrad := read(step(st, false))
	zero()
	gotLoss, gotGrad := read(step(st, true))
	if err := st.Err(); err != nil {
		t.Fatal(err)
	}
	closeTo(t, "eager branched loss", []float32{gotLoss}, []float32{wantLoss}, 1e-5)
	closeTo(t, "eager branched gradient", gotGrad, wantGrad, 1e-5)

	// Free the eager steps' autograd graphs before capturing: while they live, x keeps the
	// AccumulateGrad node they created, which runs on the stream it was created on (here
	// the legacy default stream), and a captured backward pass may not make that stream
	// wait (cudaErrorStreamCaptureImplicit, seen on an H200 before this reset).
	st.Reset()
	g, err := NewGraph(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	zero()
	var loss *Tensor
	if err := g.Capture(nil, nil, func() error {
		loss = step(st, true)
		return st.Err()
	}); err != nil {
		t.Fatal(err)
	}
	for r := 0; r < 2; r++ {
		zero()
		if err := g.Replay(); err != nil {
			t.Fatal(err)
		}
		gotLoss, gotGrad = read(loss)
		closeTo(t, "replayed branched loss", []float32{gotLoss}, []float32{wantLoss}, 1e-5)
		closeTo(t, "replayed branched gradient", gotGrad, wantGrad, 1e-5)
	}
}

// TestBranchInputOutsideFork: outside a fork (and on the CPU) BranchInput is its input: the
// same values, and the gradient reaches the input as through the input itself.
func TestBranchInputOutsideFork(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := s.Param([]float32{1, -2, 3}, []int64{3}, CPU)
	y := s.BranchInput(x)
	if err := s.Sum(s.Mul(y, y)).Backward(); err != nil {
		t.Fatal(err)
	}
	closeTo(t, "values", values(t, y), []float32{1, -2, 3}, 0)
	closeTo(t, "gradient", values(t, s.Grad(x)), []float32{2, -4, 6}, 0)
}
