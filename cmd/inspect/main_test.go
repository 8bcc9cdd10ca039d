package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// inspect runs the command and returns its exit status, stdout and stderr.
func inspect(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

// keysJSON is the shared shape of inspect's and tools/pyref's keys output.
type keysJSON struct {
	Kind      string          `json:"kind"`
	Weights   int64           `json:"weights"`
	Alphas    int64           `json:"alphas"`
	Buffers   int64           `json:"buffers"`
	StateDict [][]interface{} `json:"state_dict"`
}

func decode(t *testing.T, text string) keysJSON {
	t.Helper()
	var k keysJSON
	if err := json.Unmarshal([]byte(text), &k); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, text)
	}
	return k
}

// pyrefKeys runs tools/pyref's keys command, or skips without a Python with torch.
func pyrefKeys(t *testing.T, spec string) keysJSON {
	t.Helper()
	py := testutil.PythonTorch(t, "no Python with torch for tools/pyref")
	path := filepath.Join(t.TempDir(), "spec.json")
	if err := os.WriteFile(path, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "../../tools/pyref/metanas_ref.py", "keys", "--spec", path).Output()
	if err != nil {
		t.Fatalf("pyref keys: %v", err)
	}
	return decode(t, string(out))
}

func TestInspectConfigs(t *testing.T) {
	cases := []struct {
		config          string
		kind            string
		weights, alphas int64
		entries         int
		spec            string // tools/pyref spec of the same network ("" to skip the comparison)
	}{
		{"og_metanas.yaml", "search", 462272, 146, 1229, `{}`},
		{"og_metanas_5shot.yaml", "search", 462272, 146, 1229, ""},
		{"in_metanas.yaml", "search", 462509, 146, 1229, ""},
		{"og_reptile.yaml", "cnn", 113236, 0, 30, ""},
		{"in_reptile.yaml", "cnn", 121093, 0, 30, ""},
	}
	for _, tc := range cases {
		t.Run(tc.config, func(t *testing.T) {
			path := filepath.Join("..", "..", "configs", tc.config)
			if _, err := os.Stat(path); err != nil {
				t.Skipf("preset %s not present", path)
			}
			code, out, stderr := inspect("--config", path)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			got := decode(t, out)
			if got.Kind != tc.kind || got.Weights != tc.weights || got.Alphas != tc.alphas || len(got.StateDict) != tc.entries {
				t.Errorf("%s: %d weights, %d alphas, %d entries; want %s: %d, %d, %d", got.Kind, got.Weights, got.Alphas,
					len(got.StateDict), tc.kind, tc.weights, tc.alphas, tc.entries)
			}
			if tc.spec != "" {
				want := pyrefKeys(t, tc.spec)
				want.Kind = got.Kind
				if !reflect.DeepEqual(got, want) {
					t.Error("output differs from tools/pyref keys for the same network")
				}
			}
		})
	}
}

func TestInspectGenotype(t *testing.T) {
	code, out, stderr := inspect("--genotype", "metanas_og_v2", "--ways", "20")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got := decode(t, out)
	if got.Kind != "discrete" || got.Weights != 79288 || got.Alphas != 0 || len(got.StateDict) != 263 {
		t.Errorf("metanas_og_v2: %s, %d weights, %d alphas, %d entries; want discrete, 79288, 0, 263", got.Kind, got.Weights, got.Alphas, len(got.StateDict))
	}
	want := pyrefKeys(t, `{"kind": "discrete", "genotype": "metanas_og_v2", "classes": 20}`)
	want.Kind = got.Kind
	if !reflect.DeepEqual(got, want) {
		t.Error("output differs from tools/pyref keys for the same network")
	}

	// auto_meta on MiniImagenet, no reductions, given as a string.
	code, out, stderr = inspect("--genotype", "Genotype(normal=[[('conv_3x3', 1), ('max_pool_3x3', 0)]], normal_concat=range(2, 3), "+
		"reduce=[[('conv_3x3', 0), ('conv_3x3', 1)]], reduce_concat=range(2, 3))",
		"--dataset", "miniimagenet", "--ways", "5", "--channels", "5", "--layers", "2", "--reductions", "")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got = decode(t, out)
	// stem 15*3*9 + BN 30; cell 0: 2 StdConvs 15*5 + BN 10, conv_3x3 5*9 + 25 + BN 10, max_pool BN 10;
	// cell 1: the same but preproc1 reads 5 channels; linear 5*5 + 5.
	cell0 := int64(2*(15*5+10) + 5*9 + 25 + 10 + 10)
	cell1 := int64(15*5+10+5*5+10) + 5*9 + 25 + 10 + 10
	if want := int64(15*3*9+30) + cell0 + cell1 + 30; got.Weights != want {
		t.Errorf("weights %d, want %d", got.Weights, want)
	}
	if got.StateDict[0][0] != "stem.0.weight" || !reflect.DeepEqual(got.StateDict[0][1], []interface{}{15.0, 3.0, 3.0, 3.0}) {
		t.Errorf("first entry %v", got.StateDict[0])
	}
}

func TestInspectBadInput(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"unknown op", []string{"--genotype", "Genotype(normal=[[('conv_9x9', 0), ('conv_3x3', 1)]], reduce=[[('conv_3x3', 0), ('conv_3x3', 1)]])"},
			[]string{"--genotype", "conv_9x9"}},
		{"malformed genotype", []string{"--genotype", "Genotype(normal=[[('conv_3x3', 0) ('conv_3x3', 1)]], reduce=[])"},
			[]string{"--genotype", "parse error", "token"}},
		{"unknown genotype name", []string{"--genotype", "metanas_xx"}, []string{"metanas_xx"}},
		{"input index out of range", []string{"--genotype", "Genotype(normal=[[('conv_3x3', 0), ('conv_3x3', 5)]], reduce=[[('conv_3x3', 0), ('conv_3x3', 1)]])"},
			[]string{"input 5"}},
		{"zero channels", []string{"--genotype", "metanas_og_v2", "--channels", "0"}, []string{"--channels"}},
		{"odd channels", []string{"--genotype", "metanas_og_v2", "--channels", "7"}, []string{"--channels", "even"}},
		{"reduction out of range", []string{"--genotype", "metanas_og_v2", "--reductions", "1,4"}, []string{"--reductions", "4"}},
		{"reduction not a number", []string{"--genotype", "metanas_og_v2", "--reductions", "1,three"}, []string{"--reductions", `"three"`}},
		{"zero ways", []string{"--genotype", "metanas_og_v2", "--ways", "0"}, []string{"--ways"}},
		{"unknown dataset", []string{"--genotype", "metanas_og_v2", "--dataset", "cifar10"}, []string{"--dataset", "cifar10"}},
		{"missing config", []string{"--config", "no/such.yaml"}, []string{"no/such.yaml"}},
		{"config zero channels", []string{"--config", "../../configs/og_metanas.yaml", "--set", "model.channels=0"}, []string{"model.channels"}},
		{"config bad genotype", []string{"--config", "../../configs/og_metanas.yaml", "--set", "model.kind=discrete", "--set",
			"model.genotype=Genotype(normal=[[('conv_3x3', 0), ('bogus_op', 1)]], reduce=[[('conv_3x3', 0), ('conv_3x3', 1)]])"},
			[]string{"model.genotype", "bogus_op"}},
		{"both modes", []string{"--config", "../../configs/og_metanas.yaml", "--genotype", "auto_meta"}, []string{"--config", "--genotype"}},
		{"discrete flag without genotype", []string{"--channels", "8"}, []string{"--channels", "--genotype"}},
		{"unknown flag", []string{"--chanels", "8"}, []string{"chanels"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := inspect(tc.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2 (stderr %q)", code, stderr)
			}
			if out != "" {
				t.Errorf("printed %q on bad input", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("message %q does not mention %q", stderr, w)
				}
			}
		})
	}
}
