package config

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func parseFlags(t *testing.T, args ...string) *Flags {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	f := BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("Parse(%q): %v", args, err)
	}
	return f
}

func TestFlagsResolve(t *testing.T) {
	preset := filepath.Join(presetDir, "smoke.yaml")
	tests := []struct {
		name  string
		args  []string
		check func(c Config) bool
	}{
		{"defaults", nil, func(c Config) bool { return c.Data.Ways == 20 && c.Run.Seed == 2 }},
		{"file", []string{"--config", preset}, func(c Config) bool { return c.Data.Ways == 5 && c.Run.Out == "runs/smoke" }},
		{"short config", []string{"-c", preset}, func(c Config) bool { return c.Data.Ways == 5 }},
		{"named flags override file", []string{"-c", preset, "--data", "/d", "--device", "cuda:1", "--out", "o", "--seed", "9"},
			func(c Config) bool {
				return c.Data.Dir == "/d" && c.Run.Device == "cuda:1" && c.Run.Out == "o" && c.Run.Seed == 9
			}},
		{"seed zero given", []string{"-c", preset, "--seed", "0"}, func(c Config) bool { return c.Run.Seed == 0 }},
		{"seed not given keeps file", []string{"-c", preset}, func(c Config) bool { return c.Run.Seed == 1 }},
		{"set repeated, lists keep commas", []string{"-c", preset, "--set", "model.reductions=[0,1]", "--set", "task.steps=3"},
			func(c Config) bool { return slices.Equal(c.Model.Reductions, []int{0, 1}) && c.Task.Steps == 3 }},
		{"later set wins", []string{"--set", "task.steps=3", "--set", "task.steps=4"}, func(c Config) bool { return c.Task.Steps == 4 }},
		{"named flag wins over set", []string{"--set", "run.seed=5", "--seed", "6"}, func(c Config) bool { return c.Run.Seed == 6 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseFlags(t, tt.args...).Resolve()
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config: %+v", bare(c))
			}
		})
	}
}

func TestFlagsResolveErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		file string
		fld  string
	}{
		{"missing file", []string{"-c", "nope.yaml"}, "nope.yaml", ""},
		{"bad set", []string{"--set", "task.nope=1"}, "--set task.nope=1", "task.nope"},
		{"invalid after set", []string{"--set", "data.ways=1"}, "--set data.ways=1", "data.ways"},
		{"invalid device", []string{"--device", "tpu"}, "--device tpu", "run.device"},
		{"empty out", []string{"--out", ""}, "--out ", "run.out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseFlags(t, tt.args...).Resolve()
			es := AsErrors(err)
			if len(es) == 0 {
				t.Fatalf("got %v, want a config error", err)
			}
			if es[0].File != tt.file || es[0].Field != tt.fld {
				t.Errorf("got File %q Field %q, want %q %q (%v)", es[0].File, es[0].Field, tt.file, tt.fld, err)
			}
		})
	}
}

func TestFlagsWithoutFlagSet(t *testing.T) {
	f := &Flags{Device: "cuda", Sets: []string{"task.steps=2"}}
	c := Default()
	if err := f.Apply(&c); err != nil {
		t.Fatal(err)
	}
	if c.Run.Device != "cuda" || c.Task.Steps != 2 || c.Run.Seed != 2 || c.Run.Out != "runs/metanas" {
		t.Errorf("unexpected config: %+v", bare(c))
	}
}

func TestBindFlagsHelp(t *testing.T) {
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	BindFlags(fs)
	usage := fs.FlagUsages()
	for _, name := range []string{"--config", "-c", "--data", "--device", "--out", "--seed", "--set"} {
		if !strings.Contains(usage, name) {
			t.Errorf("usage lacks %s:\n%s", name, usage)
		}
	}
}
