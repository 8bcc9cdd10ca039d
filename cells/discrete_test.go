package cells

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
)

func mustGenotype(t *testing.T, name string) genotype.Genotype {
	t.Helper()
	g, err := genotype.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// cellShape is the expected output geometry of a cell.
type cellShape struct{ ch, hw int64 }

// expectedCells returns the output shapes of the cells of a network with the given input
// side, cell channels, reductions, feature scale rate and per-cell-type output widths.
func expectedCells(size, c int64, layers int, reductions []int, fsr int64, normalWidth, reduceWidth int64) []cellShape {
	var out []cellShape
	hw := size
	for i := 0; i < layers; i++ {
		red := false
		for _, r := range reductions {
			red = red || r == i
		}
		width := normalWidth
		if red {
			c *= fsr
			hw = (hw + 1) / 2
			width = reduceWidth
		}
		out = append(out, cellShape{c * width, hw})
	}
	return out
}

func checkCellShape(t *testing.T, i int, got []int64, batch int64, want cellShape) {
	t.Helper()
	if len(got) != 4 || got[0] != batch || got[1] != want.ch || got[2] != want.hw || got[3] != want.hw {
		t.Errorf("cell %d output %v, want [%d %d %d %d]", i, got, batch, want.ch, want.hw, want.hw)
	}
}

func TestDiscreteAndSearchShapes(t *testing.T) {
	cases := []struct {
		name       string
		in, size   int64
		geno       string
		reductions []int
		fsr        int
	}{
		{"omniglot og_v2", 1, 28, genotype.MetaNASOmniglotV2, []int{1, 3}, 1},
		{"omniglot auto_meta", 1, 28, genotype.AutoMeta, []int{1, 3}, 1},
		{"miniimagenet in_v2", 3, 84, genotype.MetaNASMiniImagenetV2, []int{1, 3}, 1},
		{"miniimagenet auto_meta", 3, 84, genotype.AutoMeta, []int{1, 3}, 1},
		{"omniglot og_v2 channel doubling", 1, 28, genotype.MetaNASOmniglotV2, []int{1, 3}, 2},
		{"miniimagenet no reductions", 3, 84, genotype.MetaNASMiniImagenetV2, nil, 1},
	}
	const batch, c, classes, layers = 2, 4, 5, 4
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			torch.ManualSeed(1)
			g := mustGenotype(t, tc.geno)
			cfg := DiscreteConfig{InChannels: int(tc.in), Classes: classes, Channels: c, Layers: layers, Reductions: tc.reductions,
				StemMultiplier: 3, FeatureScaleRate: tc.fsr, Genotype: g, Affine: true}
			d, err := NewDiscreteNet(s, torch.CPU, cfg)
			if err != nil {
				t.Fatal(err)
			}
			x := s.Rand([]int64{batch, tc.in, tc.size, tc.size}, torch.CPU)
			ctx := &Ctx{S: s, Train: true, DropPath: 0.2}
			want := expectedCells(tc.size, c, layers, tc.reductions, int64(tc.fsr), int64(len(g.NormalConcat)), int64(len(g.ReduceConcat)))
			// discrete cells, one by one
			h := d.stemB.Forward(ctx, s.Conv2d(x, d.stemW, nil, torch.Conv{Padding: [2]int64{1, 1}}))
			s0, s1 := h, h
			for i, cell := range d.cells {
				if cell.Reduction != cfg.isReduction(i) {
					t.Errorf("cell %d: reduction flag %v", i, cell.Reduction)
				}
				s0, s1 = s1, cell.forward(ctx, s0, s1)
				checkCellShape(t, i, s1.MustShape(), batch, want[i])
			}
			y := d.Forward(ctx, x)
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if got := y.MustShape(); len(got) != 2 || got[0] != batch || got[1] != classes {
				t.Errorf("logits %v, want [%d %d]", got, batch, classes)
			}

			// search cells of the same geometry (3 nodes)
			scfg := SearchConfig{InChannels: int(tc.in), Classes: classes, Channels: c, Layers: layers, Nodes: 3,
				Reductions: tc.reductions, StemMultiplier: 3, FeatureScaleRate: tc.fsr, Primitives: genotype.FewShot, Pairwise: true}
			n, err := NewSearchNet(s, torch.CPU, scfg)
			if err != nil {
				t.Fatal(err)
			}
			w, err := n.Normalize(s, Softmax, 1)
			if err != nil {
				t.Fatal(err)
			}
			want = expectedCells(tc.size, c, layers, tc.reductions, int64(tc.fsr), 3, 3)
			h = n.stemB.Forward(ctx, s.Conv2d(x, n.stemW, nil, torch.Conv{Padding: [2]int64{1, 1}}))
			s0, s1 = h, h
			for i, cell := range n.cells {
				cw := &w.Normal
				if cell.Reduction {
					cw = &w.Reduce
				}
				s0, s1 = s1, cell.forward(ctx, s0, s1, cw, 0.01)
				checkCellShape(t, i, s1.MustShape(), batch, want[i])
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// customGenotype exercises what the published genotypes do not: three edges in a node,
// DARTS-only ops (5x5 convs, none), skip_connect at stride 2 and a concat that leaves a
// node out.
const customGenotype = "Genotype(normal=[[('sep_conv_5x5', 0), ('skip_connect', 1), ('none', 1)], " +
	"[('dil_conv_5x5', 2), ('max_pool_3x3', 0)], [('conv_1x5_5x1', 3), ('skip_connect', 2)]], normal_concat=[2, 4], " +
	"reduce=[[('skip_connect', 0), ('avg_pool_3x3', 1)], [('sep_conv_3x3', 2), ('skip_connect', 1), ('conv_3x3', 0)]], " +
	"reduce_concat=range(2, 4))"

// TestDiscreteKeysMatchReference compares metanas_og_v2's state_dict with tools/pyref's
// keys, order and shapes included. (The parity tests below load the other genotypes' states
// into pyref strictly, which checks their key sets and shapes.)
func TestDiscreteKeysMatchReference(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	d, err := NewDiscreteNet(s, torch.CPU, DefaultDiscreteConfig(20, mustGenotype(t, genotype.MetaNASOmniglotV2)))
	if err != nil {
		t.Fatal(err)
	}
	// The count pyref's README gives for metanas_og_v2 on Omniglot 20-way, C=28.
	if got, n := d.Reg.Count(Weight), len(d.Reg.Entries()); got != 79288 || n != 263 {
		t.Errorf("metanas_og_v2: %d weights in %d entries, want 79288 in 263", got, n)
	}
	for _, k := range []struct {
		key   string
		shape []int64
	}{
		{"cells.0.dag.0.0.0.net.1.weight", []int64{28, 1, 3, 3}},
		{"cells.0.dag.0.1.0.net.1.net.2.weight", []int64{28, 28, 1, 1}},
		{"cells.1.dag.0.0.0.conv2.weight", []int64{14, 28, 1, 1}},
		{"cells.2.preproc0.conv1.weight", []int64{14, 84, 1, 1}},
	} {
		e, ok := d.Reg.Lookup(k.key)
		if !ok {
			t.Errorf("no key %s", k.key)
		} else if !slices.Equal(e.Tensor.MustShape(), k.shape) {
			t.Errorf("%s: shape %v, want %v", k.key, e.Tensor.MustShape(), k.shape)
		}
	}
	compareKeys(t, d.Reg, referenceKeys(t, map[string]any{"kind": "discrete", "genotype": "metanas_og_v2", "classes": 20}))
}

func TestDiscreteParityWithPyTorch(t *testing.T) {
	cases := []struct {
		name  string
		spec  map[string]any
		cfg   func(t *testing.T) DiscreteConfig
		in    int64
		size  int64
		modes []string
	}{
		{"og_v2 omniglot", map[string]any{"kind": "discrete", "genotype": "metanas_og_v2", "classes": 5, "channels": 8},
			func(t *testing.T) DiscreteConfig {
				c := DefaultDiscreteConfig(5, mustGenotype(t, genotype.MetaNASOmniglotV2))
				c.Channels = 8
				return c
			}, 1, 28, []string{"eval", "train"}},
		{"auto_meta miniimagenet", map[string]any{"kind": "discrete", "genotype": "auto_meta", "classes": 5, "channels": 4,
			"in_channels": 3, "size": 84},
			func(t *testing.T) DiscreteConfig {
				c := DefaultDiscreteConfig(5, mustGenotype(t, genotype.AutoMeta))
				c.Channels, c.InChannels = 4, 3
				return c
			}, 3, 84, []string{"eval"}},
		{"custom genotype", map[string]any{"kind": "discrete", "genotype": customGenotype, "classes": 5, "channels": 6, "layers": 3,
			"reductions": []int{0, 2}, "feature_scale_rate": 2, "affine": false},
			func(t *testing.T) DiscreteConfig {
				return DiscreteConfig{InChannels: 1, Classes: 5, Channels: 6, Layers: 3, Reductions: []int{0, 2}, StemMultiplier: 3,
					FeatureScaleRate: 2, Genotype: mustGenotype(t, customGenotype)}
			}, 1, 28, []string{"eval"}},
	}
	for _, tc := range cases {
		for _, bn := range tc.modes {
			t.Run(tc.name+" "+bn, func(t *testing.T) {
				s := torch.NewScope()
				defer s.Close()
				torch.ManualSeed(11)
				d, err := NewDiscreteNet(s, torch.CPU, tc.cfg(t))
				if err != nil {
					t.Fatal(err)
				}
				randomizeAffineBN(t, s, d.Reg)
				state, err := d.Reg.StateDict()
				if err != nil {
					t.Fatal(err)
				}
				x := s.Rand([]int64{4, tc.in, tc.size, tc.size}, torch.CPU)
				got := logitsOf(t, s, func() *torch.Tensor { return d.Forward(&Ctx{S: s, Train: bn == "train"}, x) })
				spec := map[string]any{"bn": bn}
				for k, v := range tc.spec {
					spec[k] = v
				}
				want := runReference(t, spec, state, x)
				if diff := maxAbsDiff(got, want); diff > 1e-4 {
					t.Errorf("max |Go - PyTorch| = %g\nGo %v\nPy %v", diff, got, want)
				}
			})
		}
	}
}

func TestDiscreteDropPath(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(3)
	cfg := DefaultDiscreteConfig(5, mustGenotype(t, genotype.MetaNASOmniglotV2))
	cfg.Channels = 4
	d, err := NewDiscreteNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	x := s.Rand([]int64{8, 1, 28, 28}, torch.CPU)
	run := func(ctx *Ctx) []float32 { return logitsOf(t, s, func() *torch.Tensor { return d.Forward(ctx, x) }) }
	g1, _ := torch.NewGenerator(5, torch.CPU)
	g2, _ := torch.NewGenerator(5, torch.CPU)
	defer g1.Close()
	defer g2.Close()
	// Eval mode ignores drop-path; training mode applies it, reproducibly per generator.
	if a, b := run(&Ctx{S: s, DropPath: 0.5, Gen: g1}), run(&Ctx{S: s}); maxAbsDiff(a, b) != 0 {
		t.Error("drop-path changed an eval-mode pass")
	}
	plain := run(&Ctx{S: s, Train: true})
	a := run(&Ctx{S: s, Train: true, DropPath: 0.5, Gen: g1})
	g1.Seed(9)
	g2.Seed(9)
	b1 := run(&Ctx{S: s, Train: true, DropPath: 0.5, Gen: g1})
	b2 := run(&Ctx{S: s, Train: true, DropPath: 0.5, Gen: g2})
	if maxAbsDiff(a, plain) == 0 {
		t.Error("drop-path 0.5 left the training-mode logits unchanged")
	}
	if maxAbsDiff(b1, b2) != 0 {
		t.Error("same generator seed, different drop-path masks")
	}
}

func TestDiscreteBadInput(t *testing.T) {
	og := func(t *testing.T) genotype.Genotype { return mustGenotype(t, genotype.MetaNASOmniglotV2) }
	cases := []struct {
		name  string
		cfg   func(t *testing.T) DiscreteConfig
		want  []string
		isErr error
	}{
		{"zero channels", func(t *testing.T) DiscreteConfig { c := DefaultDiscreteConfig(5, og(t)); c.Channels = 0; return c },
			[]string{"channels must be > 0"}, nil},
		{"odd channels with reductions", func(t *testing.T) DiscreteConfig { c := DefaultDiscreteConfig(5, og(t)); c.Channels = 7; return c },
			[]string{"channels must be even"}, nil},
		{"zero classes", func(t *testing.T) DiscreteConfig { c := DefaultDiscreteConfig(0, og(t)); return c },
			[]string{"classes"}, nil},
		{"reduction out of range", func(t *testing.T) DiscreteConfig {
			c := DefaultDiscreteConfig(5, og(t))
			c.Reductions = []int{1, 4}
			return c
		}, []string{"reductions", "4"}, nil},
		{"unknown op", func(t *testing.T) DiscreteConfig {
			g := og(t)
			g.Normal[1][0].Op = "conv_9x9"
			return DefaultDiscreteConfig(5, g)
		}, []string{`"conv_9x9"`, "normal cell", "node 1, edge 0"}, genotype.ErrUnknownOp},
		{"input index out of range", func(t *testing.T) DiscreteConfig {
			g := og(t)
			g.Reduce[0][1].Input = 3
			return DefaultDiscreteConfig(5, g)
		}, []string{"reduce cell", "node 0, edge 1", "input 3"}, genotype.ErrInputRange},
		{"concat out of range", func(t *testing.T) DiscreteConfig {
			g := og(t)
			g.NormalConcat = []int{2, 3, 5}
			return DefaultDiscreteConfig(5, g)
		}, []string{"concat[2]", "5"}, genotype.ErrConcat},
		{"empty genotype", func(t *testing.T) DiscreteConfig { return DefaultDiscreteConfig(5, genotype.Genotype{}) },
			[]string{"normal cell"}, genotype.ErrNoNodes},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := torch.NewScope()
			defer s.Close()
			_, err := NewDiscreteNet(s, torch.CPU, tc.cfg(t))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if tc.isErr != nil && !errors.Is(err, tc.isErr) {
				t.Errorf("error %q does not wrap %v", err, tc.isErr)
			}
		})
	}
}

func TestGenotypeStringBadInput(t *testing.T) {
	cases := []struct {
		name, text string
		want       []string
		isErr      error
	}{
		{"unknown op", "Genotype(normal=[[('conv_9x9', 0), ('conv_3x3', 1)]], normal_concat=range(2, 3), reduce=[[('conv_3x3', 0), ('conv_3x3', 1)]], reduce_concat=range(2, 3))",
			[]string{"conv_9x9"}, genotype.ErrUnknownOp},
		{"malformed", "Genotype(normal=[[('conv_3x3', 0), ('conv_3x3' 1)]], reduce=[])",
			[]string{"token"}, genotype.ErrSyntax},
		{"unterminated", "Genotype(normal=[[('conv_3x3', 0)", []string{"end of input"}, genotype.ErrSyntax},
		{"input index out of range", "Genotype(normal=[[('conv_3x3', 0), ('conv_3x3', 2)]], reduce=[[('conv_3x3', 0), ('conv_3x3', 1)]])",
			[]string{"input 2"}, genotype.ErrInputRange},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := genotype.Lookup(tc.text)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if !errors.Is(err, tc.isErr) {
				t.Errorf("error %q does not wrap %v", err, tc.isErr)
			}
		})
	}
}
