package testutil

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// RerunWith runs the tests matching run again in a child of the test binary with env added
// to its environment (settings read once at start-up, such as METANAS_* switches), and
// fails t unless the child exits cleanly and each test named in want passed.
func RerunWith(t testing.TB, env []string, run string, want ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run="+run, "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("with %v: %v\n%s", env, err, out)
	}
	for _, name := range want {
		if !strings.Contains(string(out), "--- PASS: "+name+" ") {
			t.Errorf("with %v: %s did not pass:\n%s", env, name, out)
		}
	}
}

// EachSetting serves a test of a setting read once per process (the environment variable
// name): it returns the variable's value in this process, for the caller to check, and
// where the variable is unset it first reruns test in a child process for each of values,
// with the variable set to it (each child checks its value in turn).
func EachSetting(t *testing.T, name, test string, values ...string) string {
	t.Helper()
	env, set := os.LookupEnv(name)
	if !set {
		for _, v := range values {
			t.Run(v, func(t *testing.T) {
				RerunWith(t, []string{name + "=" + v}, "^"+test+"$", test)
			})
		}
	}
	return env
}
