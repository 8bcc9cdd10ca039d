package cells

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/torch"
)

// fusedDumpEnv names the file a child of TestSearchNetFusedMatchesUnfused writes its pass to;
// emulateEnv set, the child runs the fused calls' CUDA kernels emulated on the host
// (torch.EmulateKernels).
const (
	fusedDumpEnv = "METANAS_TEST_FUSED_DUMP"
	emulateEnv   = "METANAS_TEST_EMULATE_KERNELS"
)

// TestSearchNetFusedMatchesUnfused: one training pass of a batched search network of
// og_metanas's shape (4 cells, reductions 1 and 3, pair weights, 3 tasks that prune
// differently) gives the same logits, gradients (weights and alphas) and running statistics
// with METANAS_NODE_FUSED=1 as with =0, both with CUDA's other switches, each in a child
// process that writes them to a file: every fused call (the node batch norm and sum, the
// fans of states, pools and repetitions, the split pieces' buffers, sep_conv's fused middle
// batch norm and ReLU, the ReLU fans of the cells' inputs) against the calls it replaces,
// in one network. The fused child must have run each of them.
func TestSearchNetFusedMatchesUnfused(t *testing.T) {
	if path := os.Getenv(fusedDumpEnv); path != "" {
		dumpFusedPass(t, path)
		return
	}
	if os.Getenv("METANAS_NODE_FUSED") != "" {
		t.Skip("this process sets METANAS_NODE_FUSED")
	}
	env := []string{"METANAS_NODE_BATCH_NORM=1", "METANAS_POINTWISE=matmul", "METANAS_FACTORIZED_REDUCE=patch",
		"METANAS_STATE_FUSION=1", "METANAS_FAST_CPU_OPS=0", "METANAS_CPU_POOL=0"}
	dir := t.TempDir()
	runs := []struct {
		name, fused string
		emulate     bool
	}{{"unfused", "0", false}, {"fused", "1", false}, {"fused, kernels emulated", "1", true}}
	got := make([]map[string][]float32, len(runs))
	for k, run := range runs {
		path := filepath.Join(dir, fmt.Sprintf("run%d.json", k))
		env := append(env, "METANAS_NODE_FUSED="+run.fused, fusedDumpEnv+"="+path)
		if run.emulate {
			env = append(env, emulateEnv+"=1")
		}
		testutil.RerunWith(t, env, "^TestSearchNetFusedMatchesUnfused$", "TestSearchNetFusedMatchesUnfused")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &got[k]); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"node sums", "state fans", "norm relus", "relu fans", "emulated launches"} {
			n := got[k]["calls: "+name]
			if want := run.fused == "1" && (name != "emulated launches" || run.emulate); len(n) != 1 || (n[0] != 0) != want {
				t.Errorf("%s: %s ran %v times, want some: %v", run.name, name, n, want)
			}
		}
	}
	for k := 1; k < len(runs); k++ {
		compareFusedPass(t, runs[k].name, got[0], got[k])
	}
}

// compareFusedPass compares the values of a fused pass (have) with the unfused pass's.
func compareFusedPass(t *testing.T, name string, want, have map[string][]float32) {
	t.Helper()
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, k)
	}
	sort.Strings(names)
	if len(have) != len(want) {
		t.Errorf("%s: %d values, %d unfused", name, len(have), len(want))
	}
	compared := 0
	for _, k := range names {
		w, h := want[k], have[k]
		if strings.HasPrefix(k, "calls:") {
			continue
		}
		if len(w) != len(h) {
			t.Errorf("%s: %s: %d values, %d unfused", name, k, len(h), len(w))
			continue
		}
		// Relative to the tensor's largest value: sums in other orders (float32).
		var scale float64
		for _, v := range w {
			scale = max(scale, math.Abs(float64(v)))
		}
		for i := range w {
			if d := math.Abs(float64(h[i] - w[i])); d > 1e-4*scale+1e-6 {
				t.Errorf("%s: %s[%d] = %g, unfused %g (largest %g)", name, k, i, h[i], w[i], scale)
				break
			}
		}
		compared++
	}
	t.Logf("%s: compared %d tensors", name, compared)
	if compared < 20 {
		t.Errorf("%s: compared %d tensors, want the logits, running statistics and many gradients", name, compared)
	}
}

// dumpFusedPass runs TestSearchNetFusedMatchesUnfused's pass in this process's settings and
// writes its values to path as JSON (name: values).
func dumpFusedPass(t *testing.T, path string) {
	const T, N, H = 3, 4, 8
	cfg := SearchConfig{InChannels: 2, Classes: 3, Channels: 4, Layers: 4, Nodes: 3, Reductions: []int{1, 3},
		StemMultiplier: 3, FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1.5, Tasks: T}
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(5)
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	x := s.Randn([]int64{N, T * 2, H, H}, torch.CPU, false)
	r := s.Randn([]int64{T, N, 3}, torch.CPU, false)
	w, err := n.Normalize(s, Softmax, 0.4)
	if err != nil {
		t.Fatal(err)
	}
	if os.Getenv(emulateEnv) != "" {
		defer torch.EmulateKernels(torch.EmulateKernels(true))
	}
	calls := func() [5]int64 {
		return [5]int64{nodeFusedCalls.Load(), stateFans.Load(), normReLUs.Load(), reluFans.Load(), torch.EmulatedLaunches()}
	}
	before := calls()
	y := n.Forward(&Ctx{S: s, Train: true, Tasks: T}, x, w, 0.05)
	if err := s.Sum(s.Mul(y, r)).Backward(); err != nil {
		t.Fatal(err)
	}
	after := calls()
	out := map[string][]float32{"logits": hostValues(t, s, y)}
	for i, name := range []string{"node sums", "state fans", "norm relus", "relu fans", "emulated launches"} {
		out["calls: "+name] = []float32{float32(after[i] - before[i])}
	}
	for _, e := range n.Reg.Entries() {
		if e.Kind == Buffer {
			if e.Tensor != nil {
				if info, err := e.Tensor.Info(); err == nil && info.DType == torch.Float32 {
					out["buffer "+e.Name] = hostValues(t, s, e.Tensor)
				}
			}
			continue
		}
		if g := s.Grad(e.Tensor); g != nil {
			out["grad "+e.Name] = hostValues(t, s, g)
		}
	}
	for i, a := range n.Alphas() {
		if g := s.Grad(a); g != nil {
			out[fmt.Sprintf("alpha grad %d", i)] = hostValues(t, s, g)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
