package cells

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/torch"
)

// referenceTSV reads the reference state_dict listing (key -> shape) shipped beside the repo.
func referenceTSV(t *testing.T) ([]string, map[string]string) {
	t.Helper()
	var path string
	for _, p := range []string{"../../shared/reference", "../shared/reference"} {
		f := filepath.Join(p, "searchcnn_state_dict_omniglot_20way.tsv")
		if _, err := os.Stat(f); err == nil {
			path = f
			break
		}
	}
	if path == "" {
		t.Skip("reference state_dict listing not found (shared/reference beside the repository)")
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var keys []string
	shapes := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		parts := strings.SplitN(line, "\t", 2)
		keys = append(keys, parts[0])
		shapes[parts[0]] = parts[1]
	}
	return keys, shapes
}

func TestSearchNetMatchesReferenceStateDict(t *testing.T) {
	keys, shapes := referenceTSV(t)
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(0)
	n, err := NewSearchNet(s, torch.CPU, DefaultSearchConfig(20))
	if err != nil {
		t.Fatal(err)
	}
	entries := n.Reg.Entries()
	if len(entries) != len(keys) {
		t.Fatalf("%d entries, reference has %d", len(entries), len(keys))
	}
	for i, e := range entries {
		if e.Name != keys[i] {
			t.Fatalf("entry %d is %q, reference %q", i, e.Name, keys[i])
		}
		if got := ShapeString(e.Tensor.MustShape()); got != shapes[e.Name] {
			t.Errorf("%s: shape %s, reference %s", e.Name, got, shapes[e.Name])
		}
	}
	if w, a := n.Reg.Count(Weight), n.Reg.Count(Alpha); w != 462272 || a != 146 {
		t.Errorf("counts: %d weights + %d alphas, want 462272 + 146", w, a)
	}
}

func TestSearchNetCounts(t *testing.T) {
	cases := []struct {
		name      string
		in, ways  int
		weights   int64
		inputSize int64
	}{
		{"omniglot 5-way", 1, 5, 460997, 28},
		{"omniglot 20-way", 1, 20, 462272, 28},
		{"miniimagenet 5-way", 3, 5, 462509, 84},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			cfg := DefaultSearchConfig(tc.ways)
			cfg.InChannels = tc.in
			n, err := NewSearchNet(s, torch.CPU, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if got := n.Reg.Count(Weight); got != tc.weights {
				t.Errorf("weights %d, want %d", got, tc.weights)
			}
			w, err := n.Normalize(s, Softmax, 1)
			if err != nil {
				t.Fatal(err)
			}
			x := s.Randn([]int64{2, int64(tc.in), tc.inputSize, tc.inputSize}, torch.CPU, false)
			y := n.Forward(&Ctx{S: s, Train: true}, x, w, 0.01)
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if got := y.MustShape(); len(got) != 2 || got[0] != 2 || got[1] != int64(tc.ways) {
				t.Errorf("logits shape %v, want [2 %d]", got, tc.ways)
			}
		})
	}
}

// TestSearchCellSharesPools counts, in a child process with LibTorch's own pooling
// (METANAS_FAST_CPU_OPS=0) and the op profile on, the pools of one forward and backward
// pass of a one-cell network of 3 nodes: its 9 edges pool states 0 to 3, so 4 max and 4
// average pools (9 each without the cell's cache), and likewise their backward passes.
func TestSearchCellSharesPools(t *testing.T) {
	if os.Getenv("METANAS_FAST_CPU_OPS") != "0" {
		testutil.RerunWith(t, []string{"METANAS_FAST_CPU_OPS=0"}, "^TestSearchCellSharesPools$", "TestSearchCellSharesPools")
		return
	}
	s := torch.NewScope()
	defer s.Close()
	cfg := SearchConfig{InChannels: 1, Classes: 2, Channels: 4, Layers: 1, Nodes: 3, StemMultiplier: 3,
		FeatureScaleRate: 1, Primitives: genotype.FewShot, Pairwise: true, AlphaInitStd: 1e-3}
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	w, err := n.Normalize(s, Softmax, 1)
	if err != nil {
		t.Fatal(err)
	}
	x := s.Randn([]int64{2, 1, 6, 6}, torch.CPU, false)
	torch.ProfileOps()
	if _, err := torch.OpProfile(true); err != nil {
		t.Fatal(err)
	}
	if err := s.Sum(n.Forward(&Ctx{S: s, Train: true}, x, w, 0)).Backward(); err != nil {
		t.Fatal(err)
	}
	stats, err := torch.OpProfile(true)
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int64{}
	for _, st := range stats {
		calls[st.Name] = st.Calls
	}
	for _, op := range []string{"aten::max_pool2d_with_indices", "aten::avg_pool2d",
		"MaxPool2DWithIndicesBackward0", "AvgPool2DBackward0"} {
		if calls[op] != 4 {
			t.Errorf("%s ran %d times, want 4 (one per pooled state)", op, calls[op])
		}
	}
}

// TestNetConfigValidate: a search and a discrete network name the first invalid field they
// share (validateNet), and the search network its own.
func TestNetConfigValidate(t *testing.T) {
	g, err := genotype.Lookup(genotype.MetaNASOmniglotV2)
	if err != nil {
		t.Fatal(err)
	}
	shared := []struct {
		name string
		set  func(in, classes, channels, layers, stem, scale *int, red *[]int)
		want string
	}{
		{"in_channels", func(in, _, _, _, _, _ *int, _ *[]int) { *in = 0 }, "in_channels must be > 0, got 0"},
		{"classes", func(_, k, _, _, _, _ *int, _ *[]int) { *k = 0 }, "classes must be >= 1, got 0"},
		{"channels", func(_, _, c, _, _, _ *int, _ *[]int) { *c = -2 }, "channels must be > 0, got -2"},
		{"layers", func(_, _, _, l, _, _ *int, _ *[]int) { *l = 0 }, "layers must be > 0, got 0"},
		{"stem_multiplier", func(_, _, _, _, s, _ *int, _ *[]int) { *s = 0 }, "stem_multiplier must be > 0, got 0"},
		{"feature_scale_rate", func(_, _, _, _, _, f *int, _ *[]int) { *f = 0 }, "feature_scale_rate must be > 0, got 0"},
		{"reductions", func(_, _, _, _, _, _ *int, r *[]int) { *r = []int{1, 4} }, "reductions: cell index 4 outside [0, 4)"},
		{"valid", func(_, _, _, _, _, _ *int, _ *[]int) {}, ""},
	}
	for _, tc := range shared {
		sc := DefaultSearchConfig(5)
		tc.set(&sc.InChannels, &sc.Classes, &sc.Channels, &sc.Layers, &sc.StemMultiplier, &sc.FeatureScaleRate, &sc.Reductions)
		dc := DefaultDiscreteConfig(5, g)
		tc.set(&dc.InChannels, &dc.Classes, &dc.Channels, &dc.Layers, &dc.StemMultiplier, &dc.FeatureScaleRate, &dc.Reductions)
		for kind, err := range map[string]error{"search": sc.Validate(), "discrete": dc.Validate()} {
			if (tc.want == "") != (err == nil) || (err != nil && err.Error() != tc.want) {
				t.Errorf("%s network, %s: error %v, want %q", kind, tc.name, err, tc.want)
			}
		}
	}
	for _, tc := range []struct {
		name string
		set  func(c *SearchConfig)
		want string
	}{
		{"odd channels", func(c *SearchConfig) { c.Channels = 27 }, "channels must be even"},
		{"nodes", func(c *SearchConfig) { c.Nodes = 0 }, "nodes must be > 0"},
		{"primitives", func(c *SearchConfig) { c.Primitives = nil }, "primitives: empty set"},
		{"unknown primitive", func(c *SearchConfig) { c.Primitives = []string{"conv_9x9"} }, "primitives"},
		{"tasks", func(c *SearchConfig) { c.Tasks = -1 }, "tasks must be >= 0"},
	} {
		c := DefaultSearchConfig(5)
		tc.set(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}
