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

// fusedDumpEnv names the file a child of TestSearchNetFusedMatchesUnfused writes its pass to.
const fusedDumpEnv = "METANAS_TEST_FUSED_DUMP"

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
	var got [2]map[string][]float32
	for k, fused := range []string{"0", "1"} {
		path := filepath.Join(dir, "fused"+fused+".json")
		testutil.RerunWith(t, append(env, "METANAS_NODE_FUSED="+fused, fusedDumpEnv+"="+path),
			"^TestSearchNetFusedMatchesUnfused$", "TestSearchNetFusedMatchesUnfused")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &got[k]); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"node sums", "state fans", "norm relus", "relu fans"} {
		if n := got[0]["calls: "+name]; len(n) != 1 || n[0] != 0 {
			t.Errorf("unfused: %s ran %v times, want 0", name, n)
		}
		if n := got[1]["calls: "+name]; len(n) != 1 || n[0] == 0 {
			t.Errorf("fused: %s ran %v times, want some", name, n)
		}
	}
	names := make([]string, 0, len(got[0]))
	for name := range got[0] {
		names = append(names, name)
	}
	sort.Strings(names)
	if len(got[1]) != len(got[0]) {
		t.Errorf("%d values unfused, %d fused", len(got[0]), len(got[1]))
	}
	compared := 0
	for _, name := range names {
		want, have := got[0][name], got[1][name]
		if strings.HasPrefix(name, "calls:") {
			continue
		}
		if len(want) != len(have) {
			t.Errorf("%s: %d values fused, %d unfused", name, len(have), len(want))
			continue
		}
		// Relative to the tensor's largest value: sums in other orders (float32).
		var scale float64
		for _, v := range want {
			scale = max(scale, math.Abs(float64(v)))
		}
		for i := range want {
			if d := math.Abs(float64(have[i] - want[i])); d > 1e-4*scale+1e-6 {
				t.Errorf("%s[%d] = %g fused, %g unfused (largest %g)", name, i, have[i], want[i], scale)
				break
			}
		}
		compared++
	}
	t.Logf("compared %d tensors", compared)
	if compared < 20 {
		t.Errorf("compared %d tensors, want the logits, running statistics and many gradients", compared)
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
	calls := func() [4]int64 {
		return [4]int64{nodeFusedCalls.Load(), stateFans.Load(), normReLUs.Load(), reluFans.Load()}
	}
	before := calls()
	y := n.Forward(&Ctx{S: s, Train: true, Tasks: T}, x, w, 0.05)
	if err := s.Sum(s.Mul(y, r)).Backward(); err != nil {
		t.Fatal(err)
	}
	after := calls()
	out := map[string][]float32{"logits": hostValues(t, s, y)}
	for i, name := range []string{"node sums", "state fans", "norm relus", "relu fans"} {
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
