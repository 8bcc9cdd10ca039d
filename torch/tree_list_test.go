package torch

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// TestSaveTreeLists: ListValue makes real lists (an optimizer's param_groups): LoadTree
// gives their elements under their indices, Python's torch.load sees lists, and
// torch.optim accepts the result as an optimizer state_dict.
func TestSaveTreeLists(t *testing.T) {
	s := NewScope()
	defer s.Close()
	w := s.FromFloat32([]float32{1, 2, 3, 4}, []int64{2, 2}, CPU)
	vals := []Value{
		T("opt/state/0/exp_avg", w),
		T("opt/state/0/exp_avg_sq", s.MulScalar(w, 2)),
		T("opt/state/0/step", s.FromFloat32([]float32{3}, []int64{}, CPU)),
		List("opt/param_groups"),
		Float("opt/param_groups/0/lr", 0.25),
		List("opt/param_groups/0/betas"),
		Float("opt/param_groups/0/betas/0", 0),
		Float("opt/param_groups/0/betas/1", 0.999),
		Float("opt/param_groups/0/eps", 1e-8),
		Float("opt/param_groups/0/weight_decay", 0),
		List("opt/param_groups/0/params"),
		Int("opt/param_groups/0/params/0", 0),
		List("empty"),
		List("mixed"),
		Str("mixed/0", "a"),
		T("mixed/1", w),
		Int("mixed/2/k", 7), // index 2 with a path below it: a new dict
		Str("mixed/0", "b"), // replaces element 0
		EmptyDict("d"),
	}
	path := filepath.Join(t.TempDir(), "lists.pt")
	got, byKey := saveLoadTree(t, s, path, vals)
	for k, want := range map[string]string{
		"opt/param_groups/0/lr": "0.25", "opt/param_groups/0/betas/1": "0.999",
		"opt/param_groups/0/params/0": "0", "mixed/0": "b", "mixed/2/k": "7",
	} {
		v, ok := byKey[k]
		if !ok {
			t.Errorf("LoadTree lacks %s: %v", k, got)
			continue
		}
		var s string
		switch v.Kind {
		case FloatValue:
			s = strings.TrimRight(strings.TrimRight(jsonNum(v.Float), "0"), ".")
		case IntValue:
			s = jsonNum(float64(v.Int))
		case StringValue:
			s = v.Str
		}
		if s != want {
			t.Errorf("%s = %q, want %s", k, s, want)
		}
	}
	if v := byKey["mixed/1"]; v.Kind != TensorValue {
		t.Errorf("mixed/1: %+v", v)
	}
	if _, ok := byKey["empty"]; ok {
		t.Error("an empty list gave a leaf")
	}

	py := testutil.PythonTorch(t, "no Python with torch: skipping the Python side of the list check")
	out, err := exec.Command(py, "-c", `
import json, sys, torch
sys.path.insert(0, "testdata"); from strict_load import strict_load
d = strict_load(sys.argv[1])
opt = d["opt"]
p = torch.nn.Parameter(torch.zeros(2, 2))
a = torch.optim.Adam([p], lr=1.0)
a.load_state_dict(opt)
g = a.param_groups[0]
st = a.state[p]
print(json.dumps({"pg_is_list": isinstance(opt["param_groups"], list), "lr": g["lr"], "betas": list(g["betas"]),
  "params_is_list": isinstance(opt["param_groups"][0]["params"], list), "step": float(st["step"]),
  "exp_avg": st["exp_avg"].flatten().tolist(), "empty": d["empty"], "mixed0": d["mixed"][0],
  "mixed1": d["mixed"][1].flatten().tolist(), "mixed2": d["mixed"][2], "d": d["d"]}))
`, path).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("python: %v\n%s", err, msg)
	}
	var r map[string]any
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	b, _ := json.Marshal(r)
	want := `{"betas":[0,0.999],"d":{},"empty":[],"exp_avg":[1,2,3,4],"lr":0.25,"mixed0":"b","mixed1":[1,2,3,4],"mixed2":{"k":7},"params_is_list":true,"pg_is_list":true,"step":3}`
	if string(b) != want {
		t.Errorf("Python sees\n %s\nwant\n %s", b, want)
	}
}

func jsonNum(f float64) string {
	b, _ := json.Marshal(f)
	return string(b)
}

// TestSaveTreeListErrors: list elements out of order, a word indexing a list, and a path
// through a leaf are refused, and no file is left behind.
func TestSaveTreeListErrors(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		vals []Value
		want string
	}{
		{"gap", []Value{List("l"), Int("l/1", 1)}, "list index 1"},
		{"word", []Value{List("l"), Int("l/x", 1)}, "indexes a list"},
		{"leaf", []Value{Int("a", 1), Int("a/b", 2)}, "key 'a/b': path goes through a value that is neither a dict nor a list"},
	}
	for _, c := range cases {
		path := filepath.Join(dir, c.name+".pt")
		err := SaveTree(path, c.vals)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming %s and %q", c.name, err, path, c.want)
		}
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("failed saves left %d files", len(files))
	}
}
