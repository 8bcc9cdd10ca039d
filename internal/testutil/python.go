// Package testutil holds helpers that the module's tests share: finding a Python with
// PyTorch for the interoperability checks, running it, writing JSON inputs for it, and
// capturing a command's output. It imports nothing of this module, so the tests of every
// package, torch's included, can use it.
package testutil

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"sync"
	"testing"
)

var (
	pyOnce sync.Once
	pyPath string
)

// TorchPython returns the first interpreter of Debian's /usr/bin/python3 (it has
// PyTorch) and python3 on PATH that can import torch, or "" when neither can. The
// (slow) probe runs once per test binary, isolated (-I) from the current directory,
// where a folder named torch (this repository's Go package, seen from its root) would
// import as an empty namespace package.
func TorchPython() string {
	pyOnce.Do(func() {
		for _, py := range []string{"/usr/bin/python3", "python3"} {
			if exec.Command(py, "-I", "-c", "import torch; torch.zeros(1)").Run() == nil {
				pyPath = py
				return
			}
		}
	})
	return pyPath
}

// RequirePyTorchEnv, set to 1 (make test sets it), turns PythonTorch's skip into a
// failure, so that a suite run by make test or CI cannot pass without its parity tests.
const RequirePyTorchEnv = "METANAS_TEST_REQUIRE_PYTORCH"

// PythonTorch returns TorchPython's interpreter, or skips the test with reason when
// there is none (fails it when RequirePyTorchEnv is 1).
func PythonTorch(t testing.TB, reason string) string {
	t.Helper()
	py := TorchPython()
	if py == "" {
		if os.Getenv(RequirePyTorchEnv) == "1" {
			t.Fatalf("%s, and %s=1: install python3-torch (make deps does as root on Debian), or run make test REQUIRE_PYTORCH=0", reason, RequirePyTorchEnv)
		}
		t.Skip(reason)
	}
	return py
}

// PythonOutput runs py with args, with env added to this process's environment, and
// returns its standard output. The test fails, with Python's standard error, when the
// command does.
func PythonOutput(t testing.TB, py string, env []string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(py, args...)
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// WriteJSON writes v as JSON to path (mode 0644), failing the test on error.
func WriteJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
