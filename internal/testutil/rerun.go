package testutil

import (
	"os"
	"os/exec"
	"sort"
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

// CheckSetting tests a setting read once per process (the environment variable name):
// for each value of want ("" for unset), what got reports must be want's entry. The set
// values run in child processes of test (EachSetting), in sorted order; a value outside
// want, set by whoever ran the test, skips it. what names got's result in messages.
func CheckSetting[T comparable](t *testing.T, name, test string, want map[string]T, what string, got func() T) {
	t.Helper()
	var values []string
	for v := range want {
		if v != "" {
			values = append(values, v)
		}
	}
	sort.Strings(values)
	env := EachSetting(t, name, test, values...)
	w, ok := want[env]
	if !ok {
		t.Skipf("%s=%s is not one of this test's values", name, env)
	}
	if g := got(); g != w {
		t.Errorf("%s=%q: %s = %v, want %v", name, env, what, g, w)
	}
}
