package torch

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// traceEvents runs a small forward and backward pass on dev inside a trace (with the host's
// operators too when hostOps) and returns the events of the written trace file by category.
func traceEvents(t *testing.T, dev Device, hostOps bool) map[string][]string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "trace.json")
	if err := StartTrace(dev.CUDA, hostOps); err != nil {
		t.Fatal(err)
	}
	s := NewScope()
	x := s.Randn([]int64{2, 3, 8, 8}, dev, true)
	w := s.Randn([]int64{4, 3, 3, 3}, dev, false)
	y := s.Relu(s.Mul(s.Conv2d(x, w, nil, Conv{Stride: [2]int64{1, 1}, Padding: [2]int64{1, 1}, Dilation: [2]int64{1, 1}, Groups: 1}), s.Sum(w)))
	err := s.Sum(y).Backward()
	if err == nil {
		err = Synchronize(dev)
	}
	s.Close()
	if stop := StopTrace(path); err == nil {
		err = stop
	}
	if err != nil && strings.Contains(err.Error(), "Kineto") {
		t.Skipf("this LibTorch cannot write traces: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tr struct {
		TraceEvents []struct {
			Name string `json:"name"`
			Cat  string `json:"cat"`
		} `json:"traceEvents"`
	}
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatalf("trace file is not JSON: %v", err)
	}
	by := map[string][]string{}
	for _, e := range tr.TraceEvents {
		by[e.Cat] = append(by[e.Cat], e.Name)
	}
	return by
}

func hasName(names []string, sub string) bool {
	for _, n := range names {
		if strings.Contains(n, sub) {
			return true
		}
	}
	return false
}

// TestTraceHost checks that stopping without a trace is an error, and that a host trace
// lists the operators that ran (where LibTorch has Kineto: Debian's has not, PyTorch's
// wheels have).
func TestTraceHost(t *testing.T) {
	if err := StopTrace(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Error("StopTrace without StartTrace: no error")
	}
	by := traceEvents(t, CPU, false)
	for _, op := range []string{"aten::mul", "aten::relu", "aten::sum"} {
		if !hasName(by["cpu_op"], op) {
			t.Errorf("trace has no %s among its %d cpu_op events", op, len(by["cpu_op"]))
		}
	}
}

// TestTraceCUDA checks that a CUDA trace lists kernels, and with the host's operators
// also those (and without them, none).
func TestTraceCUDA(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	dev := Device{CUDA: true}
	for _, hostOps := range []bool{false, true} {
		by := traceEvents(t, dev, hostOps)
		if len(by["kernel"]) < 4 {
			t.Fatalf("host ops %t: trace has %d kernel events, want at least 4 (categories: %v)", hostOps, len(by["kernel"]), keys(by))
		}
		if got := hasName(by["cpu_op"], "aten::relu"); got != hostOps {
			t.Errorf("host ops %t: aten::relu among the trace's %d cpu_op events: %t", hostOps, len(by["cpu_op"]), got)
		}
	}
}

func keys(m map[string][]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
