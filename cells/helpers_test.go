package cells

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/torch"
)

// pyKeyList is the output of `metanas_ref.py keys`.
type pyKeyList struct {
	Weights   int64                `json:"weights"`
	Alphas    int64                `json:"alphas"`
	Buffers   int64                `json:"buffers"`
	StateDict [][2]json.RawMessage `json:"state_dict"`
}

// referenceKeys runs tools/pyref's keys command for spec.
func referenceKeys(t *testing.T, spec map[string]any) pyKeyList {
	t.Helper()
	py := pythonTorch(t)
	dir := t.TempDir()
	specPath := filepath.Join(dir, "spec.json")
	testutil.WriteJSON(t, specPath, spec)
	out, err := exec.Command(py, "../tools/pyref/metanas_ref.py", "keys", "--spec", specPath).Output()
	if err != nil {
		t.Fatalf("reference keys: %v", err)
	}
	var k pyKeyList
	if err := json.Unmarshal(out, &k); err != nil {
		t.Fatalf("reference keys output: %v", err)
	}
	return k
}

// compareKeys checks that r has pyref's keys and shapes in pyref's order, and its counts.
func compareKeys(t *testing.T, r *Registry, want pyKeyList) {
	t.Helper()
	entries := r.Entries()
	if len(entries) != len(want.StateDict) {
		t.Errorf("%d state_dict entries, reference %d", len(entries), len(want.StateDict))
	}
	for i := 0; i < len(entries) && i < len(want.StateDict); i++ {
		var name string
		var shape []int64
		if err := json.Unmarshal(want.StateDict[i][0], &name); err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(want.StateDict[i][1], &shape); err != nil {
			t.Fatal(err)
		}
		e := entries[i]
		if e.Name != name {
			t.Fatalf("entry %d is %q, reference %q", i, e.Name, name)
		}
		if !slices.Equal(e.Tensor.MustShape(), shape) {
			t.Errorf("%s: shape %v, reference %v", name, e.Tensor.MustShape(), shape)
		}
	}
	if got := r.Count(Weight); got != want.Weights {
		t.Errorf("weights %d, reference %d", got, want.Weights)
	}
	if got := r.Count(Alpha); got != want.Alphas {
		t.Errorf("alphas %d, reference %d", got, want.Alphas)
	}
	if got := r.Count(Buffer); got != want.Buffers {
		t.Errorf("buffer elements %d, reference %d", got, want.Buffers)
	}
}

// randomizeAffineBN draws affine batch-norm scales from U(0.5, 1.5) and shifts from
// 0.1 N(0,1), on top of randomizeBN's running statistics.
func randomizeAffineBN(t *testing.T, s *torch.Scope, r *Registry) {
	t.Helper()
	randomizeBN(t, s, r)
	for _, e := range r.Entries() {
		if e.bn == nil || e.bn.Weight == nil {
			continue
		}
		sh := e.bn.Weight.MustShape()
		if err := e.bn.Weight.Copy_(s.AddScalar(s.Rand(sh, torch.CPU), 0.5)); err != nil {
			t.Fatal(err)
		}
		if err := e.bn.Bias.Copy_(s.MulScalar(s.Randn(sh, torch.CPU, false), 0.1)); err != nil {
			t.Fatal(err)
		}
	}
}

// logitsOf runs f without gradients and returns its output on the host.
func logitsOf(t *testing.T, s *torch.Scope, f func() *torch.Tensor) []float32 {
	t.Helper()
	var out []float32
	err := torch.NoGrad(func() error {
		y := f()
		if err := s.Err(); err != nil {
			return err
		}
		var e error
		out, e = y.Float32s()
		return e
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
