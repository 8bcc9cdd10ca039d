package cells

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/torch"
)

// exportCase is one exported module checked against Go's own forward pass, in Go (the file
// loaded back with torch.LoadModule) and in Python (torch.jit.load).
type exportCase struct {
	name  string
	path  string
	x     []float32
	shape []int64
	// attrs are set on the loaded module before the forward pass (Python and Go); cases
	// that share a file give every attribute another case changes.
	attrs map[string]any
	want  []float32 // Go's logits
	// names are the state_dict keys the module must hold, in order.
	names    []string
	genotype string
	config   string
	// params is the number of parameter elements the module must hold (0: not checked).
	params int64
}

// randomizeExportBN gives every batch norm random running statistics (and affine ones a
// random scale and shift), so that eval-mode batch norm is far from the identity.
func randomizeExportBN(t *testing.T, s *torch.Scope, r *Registry) {
	t.Helper()
	for _, e := range r.Entries() {
		if e.bn == nil {
			continue
		}
		bn := e.bn
		sh := bn.RunMean.MustShape()
		errs := []error{
			bn.RunMean.Copy_(s.MulScalar(s.Randn(sh, torch.CPU, false), 0.1)),
			bn.RunVar.Copy_(s.AddScalar(s.Rand(sh, torch.CPU), 0.5)),
		}
		if bn.Weight != nil {
			errs = append(errs, bn.Weight.Copy_(s.AddScalar(s.Rand(sh, torch.CPU), 0.5)),
				bn.Bias.Copy_(s.MulScalar(s.Randn(sh, torch.CPU, false), 0.1)))
		}
		bn.count = 3
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
}

func entryNames(r *Registry) []string {
	var out []string
	for _, e := range r.Entries() {
		out = append(out, e.Name)
	}
	return out
}

func saveExport(t *testing.T, m *torch.Module, err error, path string) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := SaveExport(m, path); err != nil {
		t.Fatal(err)
	}
}

const exportConfig = "data:\n  ways: 3\nmodel:\n  channels: 4\n"

// exportCases builds the networks, exports them into dir and computes Go's logits.
func exportCases(t *testing.T, s *torch.Scope, dir string) []exportCase {
	torch.ManualSeed(11)
	const batch, side = 3, 10
	shape := []int64{batch, 1, side, side}
	x := s.Rand(shape, torch.CPU)
	xs, err := x.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	var cases []exportCase
	add := func(c exportCase) {
		c.x, c.shape = xs, shape
		cases = append(cases, c)
	}
	opts := ExportOptions{Config: exportConfig}

	// Discrete networks of two genotypes (auto_meta: 5 nodes, concat of 5 states), eval
	// batch norm with random statistics and affine parameters.
	for _, name := range []string{genotype.AutoMeta, genotype.MetaNASOmniglotV2} {
		g, err := genotype.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := DiscreteConfig{InChannels: 1, Classes: 3, Channels: 4, Layers: 4, Reductions: []int{1, 3},
			StemMultiplier: 3, FeatureScaleRate: 1, Genotype: g, Affine: true}
		n, err := NewDiscreteNet(s, torch.CPU, cfg)
		if err != nil {
			t.Fatal(err)
		}
		randomizeExportBN(t, s, n.Reg)
		path := filepath.Join(dir, name+".pt")
		m, err := ExportDiscrete(n, opts)
		saveExport(t, m, err, path)
		c := exportCase{name: "discrete_" + name, path: path, names: entryNames(n.Reg), genotype: g.String(), config: exportConfig,
			params: n.Reg.Count(Weight), attrs: map[string]any{"bn_train": false}}
		c.want = logitsOf(t, s, func() *torch.Tensor { return n.Forward(&Ctx{S: s}, x) })
		add(c)
		if name == genotype.MetaNASOmniglotV2 {
			// The same file with transductive batch norm switched on after loading.
			tc := c
			tc.name, tc.attrs = "discrete_bn_train", map[string]any{"bn_train": true}
			tc.want = logitsOf(t, s, func() *torch.Tensor { return n.Forward(&Ctx{S: s, Train: true}, x) })
			add(tc)
		}
	}

	// The meta-model with spread alphas: some ops and pairs are pruned at 0.05; the
	// forward decides at every call, so Python may change the threshold and the
	// temperature (thr2 at temp2 prunes whole nodes).
	scfg := DefaultSearchConfig(3)
	scfg.Channels, scfg.Layers, scfg.Reductions, scfg.AlphaInitStd = 4, 3, []int{1}, 1.5
	sn, err := NewSearchNet(s, torch.CPU, scfg)
	if err != nil {
		t.Fatal(err)
	}
	randomizeExportBN(t, s, sn.Reg)
	const temp, thr = 0.7, 0.05
	searchPath := filepath.Join(dir, "search.pt")
	m, err := ExportSearch(sn, temp, thr, opts)
	saveExport(t, m, err, searchPath)
	searchLogits := func(temp, thr float64, train bool) []float32 {
		w, err := sn.Normalize(s, Softmax, temp)
		if err != nil {
			t.Fatal(err)
		}
		return logitsOf(t, s, func() *torch.Tensor { return sn.Forward(&Ctx{S: s, Train: train}, x, w, thr) })
	}
	w, err := sn.Normalize(s, Softmax, temp)
	if err != nil {
		t.Fatal(err)
	}
	g, err := sn.Genotype(w)
	if err != nil {
		t.Fatal(err)
	}
	countPruned(t, sn, temp, thr)
	const temp2, thr2 = 1.3, 0.4
	if zero := zeroNodes(t, sn, temp2, thr2); zero == 0 || zero == 2*scfg.Nodes {
		t.Fatalf("test setup: threshold %g prunes %d of %d nodes whole, want some", thr2, zero, 2*scfg.Nodes)
	}
	base := exportCase{name: "search", path: searchPath, names: entryNames(sn.Reg), genotype: g.String(), config: exportConfig,
		params: sn.Reg.Count(Weight) + sn.Reg.Count(Alpha), attrs: map[string]any{"prune_threshold": thr, "temperature": temp, "bn_train": false}}
	base.want = searchLogits(temp, thr, false)
	add(base)
	c := base
	c.name, c.attrs, c.want = "search_zero_nodes", map[string]any{"prune_threshold": thr2, "temperature": temp2, "bn_train": false}, searchLogits(temp2, thr2, false)
	add(c)
	c = base
	c.name, c.attrs, c.want = "search_bn_train", map[string]any{"prune_threshold": thr, "temperature": temp, "bn_train": true}, searchLogits(temp, thr, true)
	add(c)

	// Plain DARTS sum over the DARTS primitives (zero op, 5x5 convs), relu_softmax.
	dcfg := scfg
	dcfg.Primitives, dcfg.Pairwise, dcfg.Layers, dcfg.Reductions = genotype.DARTS, false, 2, []int{1}
	dn, err := NewSearchNet(s, torch.CPU, dcfg)
	if err != nil {
		t.Fatal(err)
	}
	randomizeExportBN(t, s, dn.Reg)
	dartsPath := filepath.Join(dir, "darts.pt")
	m, err = ExportSearch(dn, 1, 0.08, ExportOptions{Normalizer: ReLUSoftmax})
	saveExport(t, m, err, dartsPath)
	dw, err := dn.Normalize(s, ReLUSoftmax, 1)
	if err != nil {
		t.Fatal(err)
	}
	dg, err := dn.Genotype(dw)
	if err != nil {
		t.Fatal(err)
	}
	c = exportCase{name: "search_darts", path: dartsPath, names: entryNames(dn.Reg), genotype: dg.String(),
		params: dn.Reg.Count(Weight) + dn.Reg.Count(Alpha)}
	c.want = logitsOf(t, s, func() *torch.Tensor { return dn.Forward(&Ctx{S: s}, x, dw, 0.08) })
	add(c)

	// The hard-pruned network: only active ops, transductive batch norm.
	prunedPath := filepath.Join(dir, "pruned.pt")
	m, err = ExportPruned(sn, temp, thr, ExportOptions{BNTrain: true, Config: exportConfig})
	saveExport(t, m, err, prunedPath)
	pc := exportCase{name: "pruned", path: prunedPath, genotype: g.String(), config: exportConfig, params: sn.ActiveParams(w, thr),
		attrs: map[string]any{"bn_train": true}}
	pc.names = prunedNames(t, sn, w, thr)
	pe := pc
	// Eval first: a training-mode pass updates the Go network's running statistics.
	pe.name, pe.attrs, pe.want = "pruned_bn_eval", map[string]any{"bn_train": false}, searchLogits(temp, thr, false)
	pc.want = searchLogits(temp, thr, true)
	add(pc)
	add(pe)

	// The discrete network of the derived genotype with the search network's weights.
	genoPath := filepath.Join(dir, "genotype.pt")
	m, err = ExportGenotype(sn, g, opts)
	saveExport(t, m, err, genoPath)
	d, err := sn.Discrete(s, g)
	if err != nil {
		t.Fatal(err)
	}
	gc := exportCase{name: "genotype", path: genoPath, names: entryNames(d.Reg), genotype: g.String(), config: exportConfig, params: d.Reg.Count(Weight)}
	gc.want = logitsOf(t, s, func() *torch.Tensor { return d.Forward(&Ctx{S: s}, x) })
	add(gc)
	return cases
}

// countPruned fails the test unless some ops and some pairs are pruned at thr.
func countPruned(t *testing.T, n *SearchNet, temp, thr float64) {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	w, err := n.Normalize(s, Softmax, temp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := n.Masks(w, thr)
	if err != nil {
		t.Fatal(err)
	}
	ops, pairs := 0, 0
	for _, cm := range []CellMask{m.Normal, m.Reduce} {
		for i := range cm.Ops {
			for j := range cm.Ops[i] {
				for _, on := range cm.Ops[i][j] {
					if !on {
						ops++
					}
				}
			}
			for _, on := range cm.Pairs[i] {
				if !on {
					pairs++
				}
			}
		}
	}
	if ops == 0 || pairs == 0 {
		t.Fatalf("test setup: %d ops and %d pairs pruned, want some of each", ops, pairs)
	}
}

// zeroNodes counts the nodes with no active op at thr.
func zeroNodes(t *testing.T, n *SearchNet, temp, thr float64) int {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	w, err := n.Normalize(s, Softmax, temp)
	if err != nil {
		t.Fatal(err)
	}
	m, err := n.Masks(w, thr)
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	for _, cm := range []CellMask{m.Normal, m.Reduce} {
		for i := range cm.Ops {
			any := false
			for j := range cm.Ops[i] {
				for k := range cm.Ops[i][j] {
					any = any || cm.Active(i, j, k)
				}
			}
			if !any {
				zero++
			}
		}
	}
	return zero
}

// prunedNames lists the keys ExportPruned must register: the search network's entries
// that the pruned forward uses (everything but the alphas and the tensors of inactive
// ops), then the architecture weights.
func prunedNames(t *testing.T, n *SearchNet, w *ArchWeights, thr float64) []string {
	t.Helper()
	m, err := n.Masks(w, thr)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range n.Reg.Entries() {
		if e.Kind == Alpha {
			continue
		}
		var c, i, j, k int
		var rest string
		if got, _ := sscanfKey(e.Name, &c, &i, &j, &k, &rest); got == 5 {
			cm := m.Normal
			if n.cells[c].Reduction {
				cm = m.Reduce
			}
			if !cm.Active(i, j, k) {
				continue
			}
		}
		out = append(out, e.Name)
	}
	for _, ct := range []string{"normal", "reduce"} {
		for i := 0; i < n.Cfg.Nodes; i++ {
			out = append(out, "arch."+ct+".ops."+strconv.Itoa(i))
			if n.Cfg.Pairwise {
				out = append(out, "arch."+ct+".pairs."+strconv.Itoa(i))
			}
		}
	}
	return out
}

// sscanfKey parses a search-network op key net.cells.{c}.dag.{i}.{j}._ops.{k}.<rest>.
func sscanfKey(name string, c, i, j, k *int, rest *string) (int, error) {
	return fmt.Sscanf(name, "net.cells.%d.dag.%d.%d._ops.%d.%s", c, i, j, k, rest)
}

func TestExportTorchScript(t *testing.T) {
	py := testutil.PythonTorch(t, "no Python with torch (install python3-torch): skipping the TorchScript export test")
	s := torch.NewScope()
	defer s.Close()
	dir := t.TempDir()
	cases := exportCases(t, s, dir)

	// One Python process runs every case (importing torch takes seconds).
	type pyIn struct {
		Name  string         `json:"name"`
		Path  string         `json:"path"`
		X     []float32      `json:"x"`
		Shape []int64        `json:"shape"`
		Attrs map[string]any `json:"attrs"`
	}
	type pyOut struct {
		Logits   []float64         `json:"logits"`
		Genotype string            `json:"genotype"`
		Extra    map[string]string `json:"extra"`
		Names    []string          `json:"names"`
		Params   int64             `json:"params"`
		BNTrain  bool              `json:"bn_train"`
		Kind     string            `json:"kind"`
	}
	var in []pyIn
	for _, c := range cases {
		in = append(in, pyIn{c.name, c.path, c.x, c.shape, c.attrs})
	}
	b, _ := json.Marshal(in)
	manifest := filepath.Join(dir, "cases.json")
	if err := os.WriteFile(manifest, b, 0o644); err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys, torch
torch.set_num_threads(1)
out = {}
for c in json.load(open(sys.argv[1])):
    files = {"genotype.txt": "", "config.yaml": "", "state_dict_names.json": "", "metanas.json": ""}
    m = torch.jit.load(c["path"], _extra_files=files)
    for k, v in (c["attrs"] or {}).items():
        setattr(m, k, v)
    x = torch.tensor(c["x"], dtype=torch.float32).view(c["shape"])
    # The graph optimizer only costs time on the large search modules.
    with torch.no_grad(), torch.jit.optimized_execution(m.kind != "search"):
        y = m(x)
    names = json.loads(files["state_dict_names.json"])
    sd = {k: getattr(m, a) for k, a in names.items()}
    assert all(isinstance(v, torch.Tensor) for v in sd.values())
    out[c["name"]] = {"logits": y.flatten().tolist(), "genotype": m.genotype,
        "extra": {k: v.decode() for k, v in files.items()}, "names": list(names),
        "params": sum(p.numel() for p in m.parameters()), "bn_train": m.bn_train, "kind": m.kind}
json.dump(out, sys.stdout)
`
	cmd := exec.Command(py, "-c", script, manifest)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, stderr.String())
	}
	var res map[string]pyOut
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatalf("python output: %v\n%s", err, raw)
	}

	loaded := map[string]*torch.Module{} // the search cases share a file: load it once
	defer func() {
		for _, m := range loaded {
			m.Close()
		}
	}()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, ok := res[c.name]
			if !ok {
				t.Fatal("no Python result")
			}
			d := maxDiff(c.want, r.Logits)
			if d > 1e-5 {
				t.Errorf("Python logits differ from Go's by %g\nGo %v\nPy %v", d, c.want, r.Logits)
			}
			if r.Genotype != c.genotype || strings.TrimSpace(r.Extra["genotype.txt"]) != c.genotype {
				t.Errorf("genotype attribute %q, file %q, want %q", r.Genotype, r.Extra["genotype.txt"], c.genotype)
			}
			if r.Extra["config.yaml"] != c.config {
				t.Errorf("config.yaml %q, want %q", r.Extra["config.yaml"], c.config)
			}
			var info map[string]any
			if err := json.Unmarshal([]byte(r.Extra["metanas.json"]), &info); err != nil || info["kind"] != r.Kind {
				t.Errorf("metanas.json %q (%v), kind attribute %q", r.Extra["metanas.json"], err, r.Kind)
			}
			if strings.Join(r.Names, " ") != strings.Join(c.names, " ") {
				t.Errorf("state_dict_names.json has %d keys, want %d\n got %v\nwant %v", len(r.Names), len(c.names), r.Names, c.names)
			}
			if c.params > 0 && r.Params != c.params {
				t.Errorf("module parameters hold %d elements, want %d", r.Params, c.params)
			}
			if v, ok := c.attrs["bn_train"]; ok && r.BNTrain != v {
				t.Errorf("bn_train %v after setting %v", r.BNTrain, v)
			}

			// The same file served from Go.
			gs := s.Child()
			defer gs.Close()
			m := loaded[c.path]
			if m == nil {
				var err error
				if m, err = torch.LoadModule(c.path, torch.CPU); err != nil {
					t.Fatal(err)
				}
				loaded[c.path] = m
				m.SetOptimize(r.Kind != "search")
			}
			var err error
			for k, v := range c.attrs {
				switch v := v.(type) {
				case bool:
					err = m.SetAttrBool(k, v)
				case float64:
					err = m.SetAttrFloat(k, v)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			x := gs.FromFloat32(c.x, c.shape, torch.CPU)
			got, err := m.Forward(gs, x).Float32s()
			if err != nil {
				t.Fatal(err)
			}
			dg := maxDiff(c.want, f64s(got))
			if dg > 1e-5 {
				t.Errorf("LoadModule logits differ from Go's by %g", dg)
			}
			t.Logf("max |logit - Go's|: Python %.3g, Go LoadModule %.3g (%d logits)", d, dg, len(c.want))
			if gen, err := m.AttrString("genotype"); err != nil || gen != c.genotype {
				t.Errorf("Go genotype attribute %q (%v)", gen, err)
			}
			files, err := torch.ExtraFiles(c.path)
			if err != nil || strings.TrimSpace(files["genotype.txt"]) != c.genotype || files["state_dict_names.json"] == "" {
				t.Errorf("Go extra files %v (%v)", files, err)
			}
		})
	}
}

func TestExportErrors(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	cfg := DefaultSearchConfig(2)
	cfg.Channels, cfg.Layers, cfg.Reductions, cfg.Nodes = 2, 1, nil, 1
	n, err := NewSearchNet(s, torch.CPU, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ExportSearch(n, 1, 0.01, ExportOptions{Normalizer: GumbelSoftmax}); err == nil || !strings.Contains(err.Error(), "gumbel") {
		t.Errorf("gumbel export: %v", err)
	}
	if _, err := ExportSearch(n, 0, 0.01, ExportOptions{}); err == nil {
		t.Error("temperature 0: no error")
	}
	if _, err := ExportPruned(n, 1, 0.01, ExportOptions{Name: "bad name"}); err == nil {
		t.Error("bad class name: no error")
	}
	if _, err := ExportDiscrete(nil, ExportOptions{}); err == nil {
		t.Error("nil network: no error")
	}
	if _, err := ExportGenotype(n, genotype.Genotype{}, ExportOptions{}); err == nil {
		t.Error("empty genotype: no error")
	}
	if got := ExportIdentifier("net.cells.0.dag.1.0._ops.3.0.net.1.weight"); got != "net_cells_0_dag_1_0__ops_3_0_net_1_weight" {
		t.Errorf("identifier %q", got)
	}
}

func maxDiff(a []float32, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-b[i]))
	}
	return d
}

func f64s(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}
