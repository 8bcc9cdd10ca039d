package cells

import (
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/internal/testutil/torchtest"
	"github.com/metanas-go/metanas/torch"
)

// pythonTorch returns a Python interpreter with torch, or skips the test.
func pythonTorch(t *testing.T) string {
	t.Helper()
	return testutil.PythonTorch(t, "no Python with torch (install python3-torch) for the parity test")
}

// runReference runs tools/pyref/metanas_ref.py forward on a state saved by Go and returns
// PyTorch's logits.
func runReference(t *testing.T, spec map[string]any, state []torch.Named, x *torch.Tensor) []float32 {
	t.Helper()
	py := pythonTorch(t)
	dir := t.TempDir()
	specPath := filepath.Join(dir, "spec.json")
	testutil.WriteJSON(t, specPath, spec)
	if err := torch.Save(filepath.Join(dir, "state.pt"), state); err != nil {
		t.Fatal(err)
	}
	if err := torch.Save(filepath.Join(dir, "x.pt"), []torch.Named{{Name: "x", Tensor: x}}); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, "../tools/pyref/metanas_ref.py", "forward", "--spec", specPath,
		"--state", filepath.Join(dir, "state.pt"), "--input", filepath.Join(dir, "x.pt"), "--out", filepath.Join(dir, "out.pt"))
	cmd.Env = append(os.Environ(), "PYREF_THREADS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("reference forward: %v\n%s", err, out)
	}
	v, ok := torchtest.LoadFloat32s(t, filepath.Join(dir, "out.pt"), "logits")
	if !ok {
		t.Fatal("reference output has no logits")
	}
	return v
}

func maxAbsDiff(a, b []float32) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	m := 0.0
	for i := range a {
		m = math.Max(m, math.Abs(float64(a[i]-b[i])))
	}
	return m
}

// randomizeBN gives batch norms non-trivial running statistics so eval mode is tested.
func randomizeBN(t *testing.T, s *torch.Scope, r *Registry) {
	for _, e := range r.Entries() {
		if e.Kind != Buffer || e.bn != nil {
			continue
		}
		sh := e.Tensor.MustShape()
		var v *torch.Tensor
		if e.Name[len(e.Name)-len("running_var"):] == "running_var" {
			v = s.AddScalar(s.Rand(sh, torch.CPU), 0.5)
		} else {
			v = s.MulScalar(s.Randn(sh, torch.CPU, false), 0.1)
		}
		if err := e.Tensor.Copy_(v); err != nil {
			t.Fatal(err)
		}
	}
}

func TestSearchNetParityWithPyTorch(t *testing.T) {
	for _, bn := range []string{"train", "eval"} {
		t.Run(bn, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			torch.ManualSeed(7)
			cfg := DefaultSearchConfig(5)
			cfg.Channels = 8
			cfg.AlphaInitStd = 1.5 // spread weights so that some ops and pairs are pruned
			n, err := NewSearchNet(s, torch.CPU, cfg)
			if err != nil {
				t.Fatal(err)
			}
			randomizeBN(t, s, n.Reg)
			const temp, thr = 0.7, 0.05
			var w *ArchWeights
			if w, err = n.Normalize(s, Softmax, temp); err != nil {
				t.Fatal(err)
			}
			pruned := 0
			for _, cw := range []CellWeights{w.Normal, w.Reduce} {
				for i := range cw.HostOps {
					for _, v := range cw.HostOps[i] {
						if v <= thr {
							pruned++
						}
					}
					for _, v := range cw.HostPairs[i] {
						if v <= thr {
							pruned++
						}
					}
				}
			}
			if pruned == 0 {
				t.Fatal("test setup: no op or pair pruned")
			}
			state, err := n.Reg.StateDict()
			if err != nil {
				t.Fatal(err)
			}
			x := s.Rand([]int64{4, 1, 28, 28}, torch.CPU)
			var got []float32
			err = torch.NoGrad(func() error {
				y := n.Forward(&Ctx{S: s, Train: bn == "train"}, x, w, thr)
				var e error
				got, e = y.Float32s()
				return e
			})
			if err != nil || s.Err() != nil {
				t.Fatal(err, s.Err())
			}
			spec := map[string]any{"kind": "search", "in_channels": 1, "classes": 5, "channels": 8,
				"temperature": temp, "prune_threshold": thr, "bn": bn}
			want := runReference(t, spec, state, x)
			if d := maxAbsDiff(got, want); d > 1e-4 {
				t.Errorf("max |Go - PyTorch| = %g over logits (%d pruned ops/pairs)\nGo %v\nPy %v", d, pruned, got, want)
			}
		})
	}
}
