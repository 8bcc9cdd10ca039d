package testutil

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// Capture calls run, typically a command's in-process entry point, with os.Stdout and
// os.Stderr redirected to pipes, and returns its result with what it wrote to each. The
// pipes are drained while run runs, so large outputs do not block it.
func Capture(t testing.TB, run func() int) (code int, stdout, stderr string) {
	t.Helper()
	rOut, wOut, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	rErr, wErr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	oldOut, oldErr := os.Stdout, os.Stderr
	os.Stdout, os.Stderr = wOut, wErr
	// Restored even when run panics, so the test's own report is not lost in a pipe.
	defer func() { os.Stdout, os.Stderr = oldOut, oldErr }()
	var out, errb bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&out, rOut); close(done) }()
	errDone := make(chan struct{})
	go func() { io.Copy(&errb, rErr); close(errDone) }()
	code = run()
	wOut.Close()
	wErr.Close()
	<-done
	<-errDone
	return code, out.String(), errb.String()
}
