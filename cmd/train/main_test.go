package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCaptured runs the command in-process and returns its exit code and stderr.
func runCaptured(t *testing.T, args ...string) (int, string) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	code := run(args)
	w.Close()
	os.Stderr = old
	var buf bytes.Buffer
	io.Copy(&buf, r)
	return code, buf.String()
}

func TestBadInputExitsWith2(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknown, []byte("task:\n  w_lrr: 0.1\n"), 0o644)
	existing := filepath.Join(dir, "existing")
	os.MkdirAll(existing, 0o755)
	ckpt := filepath.Join(existing, "checkpoint.pt")
	os.WriteFile(ckpt, []byte("precious"), 0o644)
	synth := []string{"--config", "../../configs/smoke.yaml", "--set", "data.dataset=synthetic",
		"--set", "data.synthetic.classes=8", "--set", "data.synthetic.per_class=8", "--set", "data.synthetic.size=8",
		"--set", "data.synthetic.channels=1"}
	cases := []struct {
		name string
		args []string
		want []string // substrings of the message
	}{
		{"missing data dir", []string{"--config", "../../configs/smoke.yaml", "--data", filepath.Join(dir, "nope")}, []string{"nope", "data"}},
		{"unknown config key", []string{"--config", unknown}, []string{"w_lrr", "unknown.yaml"}},
		{"negative learning rate", []string{"--config", "../../configs/smoke.yaml", "--set", "task.w_lr=-0.1"}, []string{"task.w_lr"}},
		{"fewer classes than ways", append(append([]string{}, synth...), "--set", "data.ways=30", "--out", filepath.Join(dir, "w")), []string{"ways", "classes"}},
		{"existing checkpoint", append(append([]string{}, synth...), "--out", existing), []string{"checkpoint.pt", "--resume"}},
		{"unknown flag", []string{"--frobnicate"}, []string{"frobnicate"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, msg := runCaptured(t, c.args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr:\n%s", code, msg)
			}
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message does not name %q:\n%s", w, msg)
				}
			}
		})
	}
	if b, _ := os.ReadFile(ckpt); string(b) != "precious" {
		t.Error("an existing checkpoint was overwritten")
	}
}
