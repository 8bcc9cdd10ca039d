package testutil

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCapture(t *testing.T) {
	big := strings.Repeat("x", 1<<20) // more than a pipe buffer holds
	stdout, stderr := os.Stdout, os.Stderr
	code, out, errs := Capture(t, func() int {
		fmt.Fprint(os.Stdout, big)
		fmt.Fprint(os.Stderr, "oops")
		return 3
	})
	if code != 3 || out != big || errs != "oops" {
		t.Errorf("Capture: code %d, %d bytes of stdout, stderr %q", code, len(out), errs)
	}
	if os.Stdout != stdout || os.Stderr != stderr {
		t.Error("os.Stdout or os.Stderr not restored")
	}
}

func TestWriteJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spec.json")
	WriteJSON(t, path, map[string]any{"channels": 4, "reductions": []int{1}})
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil || fmt.Sprint(got) != "map[channels:4 reductions:[1]]" {
		t.Errorf("WriteJSON wrote %s (%v)", b, err)
	}
}

func TestPythonOutput(t *testing.T) {
	py := PythonTorch(t, "no Python with torch")
	out := PythonOutput(t, py, []string{"METANAS_TESTUTIL=7"}, "-c", "import os, sys; print(os.environ['METANAS_TESTUTIL'], sys.argv[1])", "arg")
	if got := strings.TrimSpace(string(out)); got != "7 arg" {
		t.Errorf("PythonOutput = %q, want \"7 arg\"", got)
	}
	if again := TorchPython(); again != py {
		t.Errorf("TorchPython changed from %q to %q", py, again)
	}
}
