package torch

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runPython runs a Python snippet with args under Debian's Python (it has PyTorch), else
// any python3 on PATH, and decodes its JSON output into out. The test is skipped when no
// interpreter can import torch; the snippet itself is the probe, so the (slow) import of
// torch happens once.
func runPython(t *testing.T, script string, out any, args ...string) {
	t.Helper()
	var failures []string
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		cmd := exec.Command(py, append([]string{"-c", script}, args...)...)
		cmd.Env = append(os.Environ(), "OMP_NUM_THREADS=1")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			if strings.Contains(stderr.String(), "No module named 'torch'") || errors.Is(err, exec.ErrNotFound) || os.IsNotExist(err) {
				failures = append(failures, py+": no torch")
				continue
			}
			t.Fatalf("%s: %v\n%s", py, err, stderr.String())
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("python output: %v\n%s", err, b)
		}
		return
	}
	t.Skipf("no Python with torch (%s): install python3-torch to run the interoperability check", strings.Join(failures, "; "))
}

// saveLoadTree saves vals at path with SaveTree, loads them back with LoadTree, and
// returns the loaded leaves, also by key.
func saveLoadTree(t *testing.T, s *Scope, path string, vals []Value) ([]Value, map[string]Value) {
	t.Helper()
	if err := SaveTree(path, vals); err != nil {
		t.Fatal(err)
	}
	got, err := LoadTree(s, path)
	if err != nil {
		t.Fatal(err)
	}
	return got, keyed(got)
}

// keyed indexes vals by key (a later value wins).
func keyed(vals []Value) map[string]Value {
	byKey := map[string]Value{}
	for _, v := range vals {
		byKey[v.Key] = v
	}
	return byKey
}

type savedTensor struct {
	name  string
	dtype DType
	shape []int64
	data  []float64
}

// testEntries builds tensors of every dtype Save must handle, including a 0-d tensor, an
// empty one, and a non-contiguous view.
func testEntries(t *testing.T, s *Scope) ([]Named, []savedTensor) {
	t.Helper()
	w := s.FromFloat32([]float32{-1, -0.5, 0, 0.5, 1, 1.5}, []int64{2, 3}, CPU)
	wt := s.Permute(w, 1, 0) // non-contiguous
	entries := []Named{
		{"net.conv.weight", w},
		{"net.conv.weight_t", wt},
		{"net.fc.bias", s.FromFloat64([]float64{0.1, -2.25}, []int64{2}, CPU)},
		{"labels", s.FromInt64([]int64{3, -1, 1 << 40}, []int64{3}, CPU)},
		{"mask", s.CompareScalar(w, Gt, 0)},
		{"scalar", s.Sum(w)},
		{"empty", s.Zeros([]int64{0, 4}, CPU)},
		{"param", s.Param([]float32{2, 3}, []int64{2}, CPU)},
	}
	want := []savedTensor{
		{"net.conv.weight", Float32, []int64{2, 3}, []float64{-1, -0.5, 0, 0.5, 1, 1.5}},
		{"net.conv.weight_t", Float32, []int64{3, 2}, []float64{-1, 0.5, -0.5, 1, 0, 1.5}},
		{"net.fc.bias", Float64, []int64{2}, []float64{0.1, -2.25}},
		{"labels", Int64, []int64{3}, []float64{3, -1, 1 << 40}},
		{"mask", Bool, []int64{2, 3}, []float64{0, 0, 0, 1, 1, 1}},
		{"scalar", Float32, []int64{}, []float64{1.5}},
		{"empty", Float32, []int64{0, 4}, nil},
		{"param", Float32, []int64{2}, []float64{2, 3}},
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return entries, want
}

func checkLoaded(t *testing.T, got []Named, want []savedTensor, wantDType func(DType) DType) {
	t.Helper()
	if len(got) != len(want) {
		names := []string{}
		for _, g := range got {
			names = append(names, g.Name)
		}
		t.Fatalf("loaded %d entries %v, want %d", len(got), names, len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name {
			t.Errorf("entry %d: name %q, want %q", i, g.Name, w.name)
			continue
		}
		sh, err := g.Tensor.Shape()
		if err != nil || !sameShape(sh, w.shape) {
			t.Errorf("%s: shape %v (%v), want %v", w.name, sh, err, w.shape)
			continue
		}
		info, _ := g.Tensor.Info()
		if wd := wantDType(w.dtype); info.DType != wd {
			t.Errorf("%s: dtype %v, want %v", w.name, info.DType, wd)
		}
		if info.Device != CPU {
			t.Errorf("%s: loaded on %v", w.name, info.Device)
		}
		v, err := g.Tensor.Float64s()
		if err != nil {
			t.Errorf("%s: %v", w.name, err)
			continue
		}
		compareValues(t, w.name, v, w.data, true, tolerance{})
	}
}

func sameDType(d DType) DType { return d }

func TestSaveLoadRoundTrip(t *testing.T) {
	start := LiveTensors()
	s := NewScope()
	entries, want := testEntries(t, s)
	path := filepath.Join(t.TempDir(), "state.pt")
	if err := Save(path, entries); err != nil {
		t.Fatal(err)
	}
	// Saving over an existing file replaces it and leaves no temporary behind.
	if err := Save(path, entries); err != nil {
		t.Fatal(err)
	}
	if files, _ := os.ReadDir(filepath.Dir(path)); len(files) != 1 {
		t.Errorf("directory holds %d files after Save, want 1", len(files))
	}
	got, err := Load(s, path)
	if err != nil {
		t.Fatal(err)
	}
	checkLoaded(t, got, want, sameDType)
	// Loaded tensors are independent of the saved ones.
	if err := got[0].Tensor.Fill_(7); err != nil {
		t.Fatal(err)
	}
	if v := values(t, entries[0].Tensor); v[0] != -1 {
		t.Errorf("saved tensor changed by writing the loaded one: %v", v)
	}
	s.Close()
	if LiveTensors() != start {
		t.Errorf("live %d, want %d", LiveTensors(), start)
	}
}

func TestSaveTreeLoadTree(t *testing.T) {
	s := NewScope()
	defer s.Close()
	w := s.FromFloat32([]float32{1, 2, 3, 4}, []int64{2, 2}, CPU)
	vals := []Value{
		T("meta_model/net.stem.0.weight", w),
		T("optim/state/0/exp_avg", s.MulScalar(w, 0.5)),
		Int("optim/state/0/step", 12),
		Float("optim/lr", 0.003),
		Str("config/name", "omniglot"),
		Int("epoch", 3),
		{Key: "empty", Kind: EmptyDictValue},
	}
	path := filepath.Join(t.TempDir(), "sub", "ckpt.pt")
	got, byKey := saveLoadTree(t, s, path, vals)
	if len(got) != 6 {
		t.Errorf("loaded %d leaves, want 6 (the empty dict has none): %v", len(got), byKey)
	}
	if v := byKey["meta_model/net.stem.0.weight"]; v.Kind != TensorValue || fmt.Sprint(values(t, v.Tensor)) != "[1 2 3 4]" {
		t.Errorf("tensor leaf: %+v", v)
	}
	if v := byKey["optim/state/0/exp_avg"]; v.Kind != TensorValue || fmt.Sprint(values(t, v.Tensor)) != "[0.5 1 1.5 2]" {
		t.Errorf("nested tensor leaf under an int key: %+v", v)
	}
	if v := byKey["optim/state/0/step"]; v.Kind != IntValue || v.Int != 12 {
		t.Errorf("int leaf: %+v", v)
	}
	if v := byKey["optim/lr"]; v.Kind != FloatValue || v.Float != 0.003 {
		t.Errorf("float leaf: %+v", v)
	}
	if v := byKey["config/name"]; v.Kind != StringValue || v.Str != "omniglot" {
		t.Errorf("string leaf: %+v", v)
	}
	if v := byKey["epoch"]; v.Kind != IntValue || v.Int != 3 {
		t.Errorf("epoch: %+v", v)
	}
	// Nothing to save is an error and leaves no file behind.
	dir := t.TempDir()
	if err := SaveTree(filepath.Join(dir, "none.pt"), nil); err == nil {
		t.Error("SaveTree of nothing: no error")
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("SaveTree of nothing left %d files", len(files))
	}
}

// TestLoadPythonFiles loads files written by Python's torch.save (testdata, made by
// gen_golden.py): a state_dict in the zip format, the same in the legacy format (LibTorch's
// unpickler cannot read it: the gopickle fallback does), and nested dicts with numbers.
func TestLoadPythonFiles(t *testing.T) {
	w := []float64{-1, -0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5}
	wt := make([]float64, 12)
	for i := 0; i < 3; i++ {
		for j := 0; j < 4; j++ {
			wt[j*3+i] = w[i*4+j]
		}
	}
	want := []savedTensor{
		{"layer.weight", Float32, []int64{3, 4}, w},
		{"layer.weight_t", Float32, []int64{4, 3}, wt},
		{"layer.bias", Float64, []int64{4}, []float64{0, 0.25, 0.5, 0.75}},
		{"steps", Int64, []int64{5}, []float64{0, 1, 2, 3, 4}},
		{"mask", Bool, []int64{6}, []float64{1, 0, 1, 0, 1, 0}},
	}
	for _, f := range []string{"py_state_zip.pt", "py_state_legacy.pt"} {
		t.Run(f, func(t *testing.T) {
			s := NewScope()
			defer s.Close()
			got, err := Load(s, filepath.Join("testdata", f))
			if err != nil {
				t.Fatal(err)
			}
			checkLoaded(t, got, want, sameDType)
		})
	}
	// gopickle reads the legacy file on its own (the path Load falls back to).
	if _, err := ReadPickle(filepath.Join("testdata", "py_state_legacy.pt")); err != nil {
		t.Errorf("ReadPickle: %v", err)
	}
	s := NewScope()
	defer s.Close()
	tree, err := LoadTree(s, filepath.Join("testdata", "py_nested.pt"))
	if err != nil {
		t.Fatal(err)
	}
	byKey := keyed(tree)
	if v := byKey["model/layer.weight"]; v.Kind != TensorValue || fmt.Sprint(v.Tensor.MustShape()) != "[3 4]" {
		t.Errorf("model/layer.weight: %+v", v)
	}
	if v := byKey["model/steps"]; v.Kind != TensorValue || fmt.Sprint(v.Tensor.MustShape()) != "[5]" {
		t.Errorf("model/steps: %+v", v)
	}
	if v := byKey["epoch"]; v.Kind != IntValue || v.Int != 7 {
		t.Errorf("epoch: %+v", v)
	}
	if v := byKey["lr"]; v.Kind != FloatValue || v.Float != 0.125 {
		t.Errorf("lr: %+v", v)
	}
	if v := byKey["name"]; v.Kind != StringValue || v.Str != "metanas" {
		t.Errorf("name: %+v", v)
	}
}

// TestPythonInterop runs PyTorch once: it loads files written by Go's Save and SaveTree
// (same names, shapes, dtypes and values as Go saved), and saves a real module's
// state_dict (incl. BatchNorm's 0-d int64 num_batches_tracked) that Go then loads.
func TestPythonInterop(t *testing.T) {
	s := NewScope()
	defer s.Close()
	entries, want := testEntries(t, s)
	dir := t.TempDir()
	flat := filepath.Join(dir, "flat.pt")
	if err := Save(flat, entries); err != nil {
		t.Fatal(err)
	}
	tree := filepath.Join(dir, "tree.pt")
	if err := SaveTree(tree, []Value{T("model/w", entries[0].Tensor), T("model/3/b", entries[2].Tensor), Int("step", 9), Float("lr", 0.5), Str("tag", "go")}); err != nil {
		t.Fatal(err)
	}
	module := filepath.Join(dir, "module.pt")
	type pyTensor struct {
		Shape []int64   `json:"shape"`
		DType string    `json:"dtype"`
		Data  []float64 `json:"data"`
	}
	var out struct {
		Flat   []string            `json:"flat_names"`
		Ts     map[string]pyTensor `json:"tensors"`
		Tree   map[string]any      `json:"tree"`
		Model  []string            `json:"model_keys"`
		Module map[string]pyTensor `json:"module"`
	}
	runPython(t, `
import json, sys, torch
names = {torch.float32: "float32", torch.float64: "float64", torch.int64: "int64", torch.bool: "bool"}
enc = lambda v: {"shape": list(v.shape), "dtype": names[v.dtype], "data": [float(x) for x in v.reshape(-1).tolist()]}
sys.path.insert(0, "testdata"); from strict_load import strict_load
d = strict_load(sys.argv[1])
t = strict_load(sys.argv[2])
torch.manual_seed(3)
m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.Linear(4, 2))
m[1].running_mean.normal_(); m[1].num_batches_tracked += 5
sd = m.state_dict()
torch.save(sd, sys.argv[3])
print(json.dumps({"flat_names": list(d.keys()), "tensors": {k: enc(v) for k, v in d.items()},
    "tree": {"step": t["step"], "lr": t["lr"], "tag": t["tag"], "w": enc(t["model"]["w"])["data"],
             "b": enc(t["model"][3]["b"])["data"]},
    "model_keys": [str(k) for k in t["model"].keys()],
    "module": {k: enc(v) for k, v in sd.items()}}))
`, &out, flat, tree, module)

	t.Run("go->python", func(t *testing.T) {
		if len(out.Flat) != len(want) {
			t.Fatalf("Python sees %d entries %v, want %d", len(out.Flat), out.Flat, len(want))
		}
		for i, w := range want {
			if out.Flat[i] != w.name {
				t.Errorf("entry %d: Python name %q, want %q", i, out.Flat[i], w.name)
			}
			p := out.Ts[w.name]
			if !sameShape(p.Shape, w.shape) || p.DType != w.dtype.String() {
				t.Errorf("%s: Python sees %v %s, want %v %v", w.name, p.Shape, p.DType, w.shape, w.dtype)
				continue
			}
			compareValues(t, "python "+w.name, p.Data, w.data, true, tolerance{})
		}
		if out.Tree["step"] != 9.0 || out.Tree["lr"] != 0.5 || out.Tree["tag"] != "go" {
			t.Errorf("tree scalars in Python: %v", out.Tree)
		}
		if fmt.Sprint(out.Tree["w"]) != "[-1 -0.5 0 0.5 1 1.5]" || fmt.Sprint(out.Tree["b"]) != "[0.1 -2.25]" {
			t.Errorf("tree tensors in Python: w %v, b %v", out.Tree["w"], out.Tree["b"])
		}
		if strings.Join(out.Model, ",") != "w,3" {
			t.Errorf("model keys in Python: %v (the digit segment must be an int key)", out.Model)
		}
	})

	t.Run("python->go", func(t *testing.T) {
		got, err := Load(s, module)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(out.Module) || len(got) != 9 {
			t.Fatalf("loaded %d entries, Python saved %d", len(got), len(out.Module))
		}
		for _, g := range got {
			r, ok := out.Module[g.Name]
			if !ok {
				t.Errorf("unexpected entry %q", g.Name)
				continue
			}
			checkTensor(t, g.Name, g.Tensor, &jTensor{Shape: r.Shape, DType: r.DType, Data: r.Data}, cpuTol)
		}
	})
}

// TestLoadBadFiles: truncated, foreign and missing files are errors naming the path.
func TestLoadBadFiles(t *testing.T) {
	dir := t.TempDir()
	s := NewScope()
	defer s.Close()
	entries, _ := testEntries(t, s)
	good := filepath.Join(dir, "good.pt")
	if err := Save(good, entries); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := os.ReadFile(filepath.Join("testdata", "py_state_legacy.pt"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"truncated.pt":        b[:len(b)/2],
		"truncated_tail.pt":   b[:len(b)-30],
		"legacy_truncated.pt": legacy[:len(legacy)*2/3],
		"text.pt":             []byte("this is not a PyTorch file\n"),
		"json.pt":             []byte(`{"w": [1, 2, 3]}`),
		"empty.pt":            nil,
		"zero_blocks.pt":      make([]byte, 1024),
		"archive.tar":         tarFile(t),
		"garbage.pt":          garbage(4096),
	}
	// Every prefix of the legacy file (gopickle's path) fails cleanly, none hangs or panics.
	for n := 1; n < len(legacy); n += len(legacy)/16 + 1 {
		files[fmt.Sprintf("legacy_prefix_%d.pt", n)] = legacy[:n]
	}
	for name, data := range files {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			before := LiveTensors()
			c := s.Child()
			defer c.Close()
			if got, err := Load(c, path); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("Load: %d entries, error %v; want an error naming %s", len(got), err, path)
			}
			if got, err := LoadTree(c, path); err == nil || !strings.Contains(err.Error(), path) {
				t.Errorf("LoadTree: %d leaves, error %v; want an error naming %s", len(got), err, path)
			}
			c.Close()
			if LiveTensors() != before {
				t.Errorf("failed loads left %d tensors", LiveTensors()-before)
			}
		})
	}
	missing := filepath.Join(dir, "missing.pt")
	if _, err := Load(s, missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load of a missing file: %v", err)
	}
	if _, err := LoadTree(s, missing); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("LoadTree of a missing file: %v", err)
	}
	if err := Save(filepath.Join(dir, "no", "such", "dir", "x.pt"), entries); err == nil || !strings.Contains(err.Error(), "x.pt") {
		t.Errorf("Save into a missing directory: %v", err)
	}
}

func tarFile(t *testing.T) []byte {
	var b bytes.Buffer
	w := tar.NewWriter(&b)
	data := []byte("payload")
	if err := w.WriteHeader(&tar.Header{Name: "data.pkl", Mode: 0o644, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Close()
	return b.Bytes()
}

// garbage returns deterministic pseudo-random bytes.
func garbage(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
