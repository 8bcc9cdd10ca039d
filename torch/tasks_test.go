package torch

import (
	"os"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// TestMixedTasks checks the batched node against its formula: per task t, the weight of
// op column (j, k) is wops[t, j, k] (zero at or below the threshold) times the sum of the
// task's pair weights (zero at or below the threshold) of the pairs that contain input j;
// node[:, t] = sum over the given columns of weight * output[:, t]. Also its gradient with
// respect to the op weights.
func TestMixedTasks(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const T, N, C, nIn, K = 2, 3, 2, 3, 2
	const thr = 0.1
	// Inputs 0..2 give pairs (0,1), (0,2), (1,2).
	wopsV := []float32{
		0.5, 0.05, 0.3, 0.2, 0.6, 0.4, // task 0: (0,0) (0,1) (1,0) (1,1) (2,0) (2,1)
		0.09, 0.9, 0.7, 0.3, 0.2, 0.8, // task 1
	}
	wpairV := []float32{0.6, 0.08, 0.32, 0.1, 0.5, 0.4} // task 0: (0,1) (0,2) (1,2); task 1
	inc := []float32{1, 1, 0, 1, 0, 1, 0, 1, 1}
	idx := []int64{0, 1, 2, 5} // columns (0,0) (0,1) (1,0) (2,1)
	wops := s.FromFloat32(wopsV, []int64{T * nIn, K}, CPU)
	wpair := s.FromFloat32(wpairV, []int64{T, 3}, CPU)
	if err := wops.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	Seed := uint64(7)
	ManualSeed(Seed)
	outs := make([]*Tensor, len(idx))
	outV := make([][]float32, len(idx))
	for m := range outs {
		outs[m] = s.Randn([]int64{N, T * C, 2, 2}, CPU, false)
		outV[m] = values(t, outs[m])
	}
	node := s.MixedTasks(outs, wpair, wops, inc, nIn, idx, []bool{true, true, true, true}, 0, nil, thr, T)
	if err := s.Sum(node).Backward(); err != nil {
		t.Fatal(err)
	}
	keep := func(v float32) float32 {
		if v > thr {
			return v
		}
		return 0
	}
	coef := make([][]float32, T)
	for tk := 0; tk < T; tk++ {
		pairSum := make([]float32, nIn)
		for p := 0; p < 3; p++ {
			for j := 0; j < nIn; j++ {
				pairSum[j] += inc[p*nIn+j] * keep(wpairV[tk*3+p])
			}
		}
		for _, col := range idx {
			j := int(col) / K
			coef[tk] = append(coef[tk], keep(wopsV[tk*nIn*K+int(col)])*pairSum[j])
		}
	}
	got := values(t, node)
	per := C * 4 // values of one task in one sample
	want := make([]float32, len(got))
	gradW := make([]float32, T*nIn*K)
	for n := 0; n < N; n++ {
		for tk := 0; tk < T; tk++ {
			for e := 0; e < per; e++ {
				at := (n*T+tk)*per + e
				for m := range idx {
					want[at] += coef[tk][m] * outV[m][at]
				}
			}
		}
	}
	// d sum(node) / d wops[t, j, k] = [wops > thr] * pairSum_t[j] * sum of output m's task-t values.
	for tk := 0; tk < T; tk++ {
		for m, col := range idx {
			if wopsV[tk*nIn*K+int(col)] <= thr {
				continue
			}
			var sum float32
			for n := 0; n < N; n++ {
				for e := 0; e < per; e++ {
					sum += outV[m][(n*T+tk)*per+e]
				}
			}
			gradW[tk*nIn*K+int(col)] = coef[tk][m] / wopsV[tk*nIn*K+int(col)] * sum
		}
	}
	checkF32(t, "node", node, want)
	checkF32(t, "d/dwops", s.Grad(wops), gradW)
	if coef[0][1] != 0 || coef[1][0] != 0 || coef[0][3] == 0 {
		t.Fatalf("test setup: pruning pattern %v", coef)
	}
	bad := s.Child()
	defer bad.Close()
	bad.MixedTasks(outs, wpair, wops, inc, nIn, idx, []bool{true, true, true, true}, 0, nil, thr, 4)
	wantErrContains(t, bad.Err(), "node_coefs")
	// Weights of the wrong shape for the outputs: named by the sum.
	bad2 := s.Child()
	defer bad2.Close()
	coefs := bad2.NodeCoefs(wpair, wops, inc, nIn, idx[:3], thr, T)
	bad2.MixedTasksCoefs(nil, nil, outs, coefs, []bool{true, true, true, true}, 0, nil, T)
	wantErrContains(t, bad2.Err(), "coefficients of shape [2, 3] are not [2, 4]")
}

// TestMixedTasksDropPath: each (sample, task) draws its own masks: values are drop-path
// combinations of the task's weights, and the two tasks' masks are not one draw.
func TestMixedTasksDropPath(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const N, T = 64, 2
	ones := s.Ones([]int64{N, T, 1, 1}, CPU)
	outs := []*Tensor{ones, s.MulScalar(ones, 10)}
	wops := s.FromFloat32([]float32{0.25, 0.75, 0.5, 0.5}, []int64{T, 2}, CPU)
	g, err := NewGenerator(3, CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	v := values(t, s.MixedTasks(outs, nil, wops, nil, 1, []int64{0, 1}, []bool{true, true}, 0.5, g, 0, T))
	allowed := []map[float32]bool{{0: true, 0.5: true, 15: true, 15.5: true}, {0: true, 1: true, 10: true, 11: true}}
	// Decode the first op's mask of each task: task 0 is 0.25*m0 + 7.5*m1, task 1 0.5*m0 + 5*m1.
	same := 0
	for n := 0; n < N; n++ {
		for tk := 0; tk < T; tk++ {
			if !allowed[tk][v[n*T+tk]] {
				t.Fatalf("sample %d task %d: %v is not a drop-path combination", n, tk, v[n*T+tk])
			}
		}
		kept0 := v[n*T] == 0.5 || v[n*T] == 15.5
		kept1 := v[n*T+1] == 1 || v[n*T+1] == 11
		if kept0 == kept1 {
			same++
		}
	}
	if same == N {
		t.Errorf("both tasks drew the same masks for all %d samples", N)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestMixedTasksGenericPath runs the two tests above and TestMixedTasksStacked again in a
// process with the shim's CPU kernels off (METANAS_FAST_CPU_OPS=0): the batched product
// that CUDA uses; and once more with METANAS_NODE_SUM=loop, the term-by-term sum.
func TestMixedTasksGenericPath(t *testing.T) {
	if os.Getenv("METANAS_FAST_CPU_OPS") == "0" {
		t.Skip("this process already runs the generic path")
	}
	for _, env := range [][]string{{"METANAS_FAST_CPU_OPS=0"}, {"METANAS_FAST_CPU_OPS=0", "METANAS_NODE_SUM=loop"}} {
		testutil.RerunWith(t, env, "^TestMixedTasks(DropPath|Stacked)?$", "TestMixedTasks", "TestMixedTasksDropPath",
			"TestMixedTasksStacked")
	}
}

// TestClipGradNormTasks: each task's gradient slices are clipped by their own global norm.
func TestClipGradNormTasks(t *testing.T) { clipGradNormTasks(t, CPU) }

// TestCUDAClipGradNormTasks is TestClipGradNormTasks on CUDA, where each task's rows are
// scaled by one multi-tensor multiply (LibTorch >= 2.1).
func TestCUDAClipGradNormTasks(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	clipGradNormTasks(t, Device{CUDA: true})
}

func clipGradNormTasks(t *testing.T, dev Device) {
	s := NewScope()
	defer s.Close()
	a := s.Zeros([]int64{4}, dev)    // tasks: [0:2], [2:4]
	b := s.Zeros([]int64{2, 3}, dev) // tasks: row 0, row 1
	for _, p := range []*Tensor{a, b} {
		if err := p.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.SetGrad(s.FromFloat32([]float32{3, 0, 0.1, 0}, []int64{4}, dev)); err != nil {
		t.Fatal(err)
	}
	if err := b.SetGrad(s.FromFloat32([]float32{0, 4, 0, 0, 0, 0}, []int64{2, 3}, dev)); err != nil {
		t.Fatal(err)
	}
	norms := s.ClipGradNormTasks([]*Tensor{a, b}, 2, 1)
	checkF32(t, "norms", norms, []float32{5, 0.1})
	c := float32(1 / (5 + 1e-6))
	checkF32(t, "a.grad", s.Grad(a), []float32{3 * c, 0, 0.1, 0})
	checkF32(t, "b.grad", s.Grad(b), []float32{0, 4 * c, 0, 0, 0, 0})
	bad := s.Child()
	defer bad.Close()
	bad.ClipGradNormTasks([]*Tensor{a, b}, 3, 1) // 4 elements do not split into 3 tasks
	wantErrContains(t, bad.Err(), "clip_grad_norm_tasks", "3 tasks")
}

// TestMatmul: a plain and a broadcast batched product, by hand.
func TestMatmul(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := s.FromFloat32([]float32{1, 2, 3, 4}, []int64{2, 2}, CPU)
	b := s.FromFloat32([]float32{5, 6}, []int64{2, 1}, CPU)
	checkF32(t, "[2,2]x[2,1]", s.Matmul(a, b), []float32{17, 39})
	// [N=2, T=2, 1, 2] x [T=2, 2, 1]: the batch dimensions broadcast, as in the batched node.
	x := s.FromFloat32([]float32{1, 2, 3, 4, 5, 6, 7, 8}, []int64{2, 2, 1, 2}, CPU)
	w := s.FromFloat32([]float32{1, 0, 0, 1}, []int64{2, 2, 1}, CPU) // task 0 picks x0, task 1 x1
	checkF32(t, "[2,2,1,2]x[2,2,1]", s.Matmul(x, w), []float32{1, 4, 5, 8})
	bad := s.Child()
	defer bad.Close()
	bad.Matmul(a, s.Ones([]int64{3, 1}, CPU))
	wantErrContains(t, bad.Err(), "matmul", "[2, 2]", "[3, 1]")
}
