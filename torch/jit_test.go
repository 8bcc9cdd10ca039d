package torch

import (
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

const jitAffineSrc = `
def forward(self, x: Tensor) -> Tensor:
    y = torch.linear(x, self.w, self.b)
    if self.use_relu:
        y = torch.relu(y)
    return y * self.scale + float(self.offset)
`

// newAffineModule builds y = relu?(x W^T + b) * scale + offset.
func newAffineModule(t *testing.T, s *Scope) *Module {
	t.Helper()
	m, err := NewModule("metanas_test.Affine")
	if err != nil {
		t.Fatal(err)
	}
	w := s.FromFloat32([]float32{1, -2, 0.5, 3, 0, -1}, []int64{2, 3}, CPU)
	b := s.FromFloat32([]float32{0.25, -0.5}, []int64{2}, CPU)
	for _, err := range []error{
		m.RegisterParameter("w", w, true),
		m.RegisterBuffer("b", b),
		m.SetAttrFloat("scale", 2),
		m.SetAttrInt("offset", 1),
		m.SetAttrBool("use_relu", false),
		m.SetAttrString("note", "genotype: none\nline 2"),
		m.Define(jitAffineSrc),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// The module holds copies: changing the source tensors does not reach it.
	if err := w.Fill_(7); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestModuleBuildSaveLoadForward(t *testing.T) {
	s := NewScope()
	defer s.Close()
	m := newAffineModule(t, s)
	defer m.Close()
	x := s.FromFloat32([]float32{1, 2, 3, -1, 0, 1}, []int64{2, 3}, CPU)
	// x W^T + b = [[1-4+1.5+0.25, 3+0-3-0.5], [-1+0+0.5+0.25, -3+0-1-0.5]]
	want := []float32{-1.25*2 + 1, -0.5*2 + 1, -0.25*2 + 1, -4.5*2 + 1}
	checkF32(t, "built", m.Forward(s, x), want)
	if err := m.SetAttrBool("use_relu", true); err != nil {
		t.Fatal(err)
	}
	checkF32(t, "relu", m.Forward(s, x), []float32{1, 1, 1, 1})
	if err := m.SetAttrBool("use_relu", false); err != nil {
		t.Fatal(err)
	}
	if err := m.SetAttrInt("use_relu", 1); err == nil || !strings.Contains(err.Error(), "bool") {
		t.Errorf("setting a bool attribute to an int: %v, want a type error", err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "affine.pt")
	extra := map[string]string{"genotype.txt": "Genotype(normal=[])", "bin/data": "a\x00b"}
	if err := m.Save(path, extra); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("save left %d files in the directory, want 1", len(ents))
	}
	got, err := ExtraFiles(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["genotype.txt"] != extra["genotype.txt"] || got["bin/data"] != "a\x00b" {
		t.Errorf("extra files %q, want %q", got, extra)
	}
	if _, ok, err := ExtraFile(path, "missing.txt"); ok || err != nil {
		t.Errorf("missing extra file: found %v, err %v", ok, err)
	}

	l, err := LoadModule(path, CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	checkF32(t, "loaded", l.Forward(s, x), want)
	if v, err := l.Attr("scale"); err != nil || v != 2.0 {
		t.Errorf("scale = %v (%v), want 2.0", v, err)
	}
	if v, err := l.Attr("offset"); err != nil || v != int64(1) {
		t.Errorf("offset = %v (%v), want 1", v, err)
	}
	if v, err := l.AttrString("note"); err != nil || v != "genotype: none\nline 2" {
		t.Errorf("note = %q (%v)", v, err)
	}
	if v, err := l.Attr("use_relu"); err != nil || v != false {
		t.Errorf("use_relu = %v (%v)", v, err)
	}
	if _, err := l.Attr("w"); err == nil {
		t.Error("Attr of a tensor: no error")
	}
	checkF32(t, "parameter w", l.AttrTensor(s, "w"), []float32{1, -2, 0.5, 3, 0, -1})
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}

	// Python reads the same file: forward, attributes, extra files.
	py := testutil.PythonTorch(t, "no Python with torch (install python3-torch): skipping the TorchScript interoperability check")
	script := `
import sys, torch
files = {"genotype.txt": "", "bin/data": ""}
m = torch.jit.load(sys.argv[1], _extra_files=files)
x = torch.tensor([[1., 2., 3.], [-1., 0., 1.]])
y = m(x).flatten().tolist()
print(" ".join("%.6f" % v for v in y))
print(m.scale, m.offset, m.use_relu, repr(m.note))
print(files["genotype.txt"].decode(), files["bin/data"] == b"a\x00b")
`
	out, err := exec.Command(py, "-c", script, path).CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	wantLines := []string{"-1.500000 0.000000 0.500000 -8.000000", "2.0 1 False 'genotype: none\\nline 2'", "Genotype(normal=[]) True"}
	if len(lines) != 3 || lines[0] != wantLines[0] || lines[1] != wantLines[1] || lines[2] != wantLines[2] {
		t.Errorf("python says\n%s\nwant\n%s", out, strings.Join(wantLines, "\n"))
	}
}

func TestModuleErrors(t *testing.T) {
	s := NewScope()
	defer s.Close()
	if _, err := NewModule("bad name"); err == nil {
		t.Error("NewModule with a space: no error")
	}
	m, err := NewModule("E")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterBuffer("a.b", s.Zeros([]int64{1}, CPU)); err == nil {
		t.Error("buffer name with a dot: no error")
	}
	err = m.Define("def forward(self, x: Tensor) -> Tensor:\n    return x + self.missing\n")
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("define with an unknown attribute: %v", err)
	}
	m.Close()
	// A failed Define may leave a half-made method behind: start over.
	if m, err = NewModule("E"); err != nil {
		t.Fatal(err)
	}
	if err := m.Define("def forward(self, x: Tensor) -> int:\n    return x.size(0)\n"); err != nil {
		t.Fatal(err)
	}
	y := m.Forward(s, s.Zeros([]int64{3}, CPU))
	if y.Valid() || s.Err() == nil || !strings.Contains(s.Err().Error(), "not a Tensor") {
		t.Errorf("non-tensor result: err %v", s.Err())
	}
	s.ClearErr()
	m.Close()
	m.Close()
	m.Forward(s, s.Zeros([]int64{3}, CPU))
	if !errors.Is(s.Err(), ErrModuleClosed) {
		t.Errorf("forward after close: %v", s.Err())
	}
	if err := m.Save(filepath.Join(t.TempDir(), "x.pt"), nil); !errors.Is(err, ErrModuleClosed) {
		t.Errorf("save after close: %v", err)
	}
	if _, err := LoadModule(filepath.Join(t.TempDir(), "none.pt"), CPU); err == nil {
		t.Error("loading a missing file: no error")
	}
	bad := filepath.Join(t.TempDir(), "bad.pt")
	if err := os.WriteFile(bad, []byte("not a zip"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadModule(bad, CPU); err == nil {
		t.Error("loading a non-module file: no error")
	}
	if _, err := ExtraFiles(bad); err == nil {
		t.Error("extra files of a non-module file: no error")
	}
}

func checkF32(t *testing.T, what string, y *Tensor, want []float32) {
	t.Helper()
	got, err := y.Float32s()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(float64(got[i]-want[i])) > 1e-6 {
			t.Fatalf("%s: %v, want %v", what, got, want)
		}
	}
}
