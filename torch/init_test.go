package torch

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestSingleCPUStart starts this test binary on one CPU (taskset) and checks that it
// comes up and computes: gotorch's init would otherwise ask LibTorch for zero threads
// there, which aborts the process (see internal/earlyinit).
func TestSingleCPUStart(t *testing.T) {
	if os.Getenv("METANAS_SINGLE_CPU_CHILD") == "1" {
		s := NewScope()
		defer s.Close()
		v, err := s.Sum(s.Ones([]int64{3}, CPU)).Item()
		if err != nil || v != 3 || NumThreads() != 1 {
			t.Fatalf("sum of three ones: %g, %v; threads %d", v, err, NumThreads())
		}
		return
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		t.Skip("taskset (util-linux) not installed")
	}
	if err := exec.Command(taskset, "-c", "0", "true").Run(); err != nil {
		t.Skipf("taskset cannot pin a process to CPU 0 here: %v", err)
	}
	cmd := exec.Command(taskset, "-c", "0", os.Args[0], "-test.run", "^TestSingleCPUStart$", "-test.v")
	cmd.Env = append(os.Environ(), "METANAS_SINGLE_CPU_CHILD=1")
	for _, k := range []string{"OMP_NUM_THREADS", "MKL_NUM_THREADS"} {
		cmd.Env = append(cmd.Env, k+"=") // unset for the child (empty reads as unset)
	}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestSingleCPUStart") {
		t.Fatalf("on one CPU: %v\n%.2000s", err, out)
	}
}
