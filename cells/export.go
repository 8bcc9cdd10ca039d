package cells

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
)

// Exported modules hold every tensor as a parameter (weights, alphas) or buffer
// (batch-norm statistics and counters) named after its state_dict key with "." replaced
// by "_" (net.cells.0.preproc0.net.1.weight becomes net_cells_0_preproc0_net_1_weight),
// and these attributes:
//
//	kind              str    discrete, search or pruned
//	genotype          str    the network's genotype (search: derived at the export's
//	                         temperature; pruned: derived from the weights it was pruned with)
//	config            str    ExportOptions.Config
//	bn_train          bool   batch statistics (true) or running statistics (false)
//	state_dict_names  str    JSON object: state_dict key -> attribute name, in state_dict order
//	export_info       str    JSON object describing the export (format, kind, bn, shapes, ...)
//	in_channels, classes int
//	temperature, prune_threshold float, normalizer str (search: used by forward, may be
//	                         changed from Python; pruned: the values it was pruned with)
//
// SaveExport writes them also as the extra files genotype.txt, config.yaml,
// state_dict_names.json and metanas.json. In Python:
//
//	files = {"genotype.txt": "", "config.yaml": "", "state_dict_names.json": ""}
//	m = torch.jit.load("model.pt", _extra_files=files)
//	names = json.loads(files["state_dict_names.json"])
//	state = {key: getattr(m, attr) for key, attr in names.items()}  # the state_dict
//	logits = m(x)  # x: float32 [N, in_channels, H, W]
//
// The first calls of a large module (the search meta-model) spend seconds in TorchScript's
// graph optimizer, which gains nothing on these networks; run them under
// torch.jit.optimized_execution(False) in Python, or with Module.SetOptimize(false) in Go.
//
// ExportFormat is the version of this layout.
const ExportFormat = 1

// Kinds of exported modules (the module's "kind" attribute).
const (
	ExportKindDiscrete = "discrete" // a DiscreteNet (ExportDiscrete, ExportGenotype)
	ExportKindSearch   = "search"   // the one-shot meta-model with its alphas (ExportSearch)
	ExportKindPruned   = "pruned"   // a hard-pruned one-shot network without its dead ops (ExportPruned)
)

// ExportOptions are the choices of an export.
type ExportOptions struct {
	// BNTrain makes batch norm normalise with the statistics of the batch it is given
	// (transductive, as MetaNAS scores its meta-test tasks) instead of the running
	// statistics. Either way the exported forward never updates the running statistics.
	// The choice is the module's bn_train attribute, which Python may change
	// (module.bn_train = True).
	BNTrain bool
	// Config is the run configuration (YAML) stored as the config attribute and the
	// extra file config.yaml (omitted when empty).
	Config string
	// Name is the TorchScript class name (default MetaNASDiscrete, MetaNASSearch or
	// MetaNASPruned).
	Name string
	// Normalizer turns alphas into weights in ExportSearch and ExportPruned: Softmax (the
	// default when empty) or ReLUSoftmax. GumbelSoftmax is random and refused.
	Normalizer NormKind
}

// exporter generates a module's TorchScript source and registers the tensors it uses.
type exporter struct {
	reg   *Registry
	names map[*torch.Tensor]string // registry tensor -> state_dict name
	used  map[*torch.Tensor]bool
	extra []exportTensor  // tensors that are not registry entries (pruned architecture weights)
	fwd   strings.Builder // body of forward
	defs  strings.Builder // the per-cell methods
	cur   *strings.Builder
}

type exportTensor struct {
	name string
	t    *torch.Tensor
	kind Kind
}

func newExporter(r *Registry) *exporter {
	e := &exporter{reg: r, names: map[*torch.Tensor]string{}, used: map[*torch.Tensor]bool{}}
	e.cur = &e.fwd
	for _, en := range r.Entries() {
		e.names[en.Tensor] = en.Name
	}
	return e
}

// ExportIdentifier maps a state_dict key to the attribute name of its tensor in an exported
// module: every character that is not a letter, digit or underscore becomes "_".
func ExportIdentifier(name string) string {
	var b strings.Builder
	for i, c := range name {
		switch {
		case c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9' && i > 0):
			b.WriteRune(c)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}

// reservedAttrs are attribute and method names of exported modules that tensors may not take.
var reservedAttrs = map[string]bool{
	"kind": true, "genotype": true, "config": true, "bn_train": true, "state_dict_names": true, "export_info": true,
	"in_channels": true, "classes": true, "temperature": true, "prune_threshold": true, "normalizer": true,
	"training": true, "forward": true,
}

// ref returns the TorchScript expression of a registry tensor (None for nil) and marks it used.
func (e *exporter) ref(t *torch.Tensor) (string, error) {
	if t == nil {
		return "None", nil
	}
	name, ok := e.names[t]
	if !ok {
		return "", errors.New("export: a tensor of the network is not in its registry")
	}
	e.used[t] = true
	return "self." + ExportIdentifier(name), nil
}

// refs returns the expressions of several tensors, joined by ", ".
func (e *exporter) refs(ts ...*torch.Tensor) (string, error) {
	parts := make([]string, len(ts))
	for i, t := range ts {
		r, err := e.ref(t)
		if err != nil {
			return "", err
		}
		parts[i] = r
	}
	return strings.Join(parts, ", "), nil
}

// bnArgs returns the trailing arguments of _bn and the op helpers for bn: weight, bias,
// running mean, running variance, momentum, eps.
func (e *exporter) bnArgs(bn *BatchNorm) (string, error) {
	r, err := e.refs(bn.Weight, bn.Bias, bn.RunMean, bn.RunVar)
	if err != nil {
		return "", err
	}
	if bn.NumBatchesTracked != nil {
		e.used[bn.NumBatchesTracked] = true
	}
	return r + ", " + pyFloat(bn.Momentum) + ", " + pyFloat(bn.Eps), nil
}

// pyFloat formats a finite v as a TorchScript float literal that reads back as the same
// float64.
func pyFloat(v float64) string {
	s := strconv.FormatFloat(v, 'g', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return s
}

func (e *exporter) line(format string, a ...any) {
	e.cur.WriteString("    ")
	fmt.Fprintf(e.cur, format, a...)
	e.cur.WriteByte('\n')
}

// cellMethod emits method _cell_{c}(self, s0: Tensor, s1: Tensor, params) -> Tensor, whose
// body body writes, and the forward lines that call it with args and shift the states
// (s0, s1 = s1, cell output).
func (e *exporter) cellMethod(c int, reduction bool, params, args []string, body func() error) error {
	sig := append([]string{"self", "s0: Tensor", "s1: Tensor"}, params...)
	fmt.Fprintf(&e.defs, "\ndef _cell_%d(%s) -> Tensor:\n", c, strings.Join(sig, ", "))
	e.cur = &e.defs
	e.line("# cell %d (%s)", c, cellKind(reduction))
	err := body()
	e.cur = &e.fwd
	if err != nil {
		return err
	}
	e.line("c%d = self._cell_%d(%s)", c, c, strings.Join(append([]string{"s0", "s1"}, args...), ", "))
	e.line("s0 = s1")
	e.line("s1 = c%d", c)
	return nil
}

// opHelper is a method of the exported module applying one kind of op: name(x, params).
type opHelper struct {
	name   string
	params string // the parameters after x, with their types
}

const bnParams = "bw: Optional[Tensor], bb: Optional[Tensor], rm: Tensor, rv: Tensor, momentum: float, eps: float"

// opHelpers are the op methods (defined in scriptHelpers); maybeHelpers adds for each a
// method _m<name>(on, outs, idx, q, x, params) that appends name(x, params) to outs and q
// to idx when on is set. Search cells call those rather than branching themselves:
// TorchScript's loader spends time proportional to the whole source on every value
// defined inside an if-block, which made large unrolled cells load slowly.
var opHelpers = []opHelper{
	{"_zero", "stride: int"},
	{"_pool", "is_max: bool, stride: int, " + bnParams},
	{"_std_conv", "w: Tensor, " + bnParams},
	{"_dil_conv", "dw: Tensor, pw: Tensor, stride: int, pad: int, dil: int, groups: int, " + bnParams},
	{"_sep_conv", "dw1: Tensor, pw1: Tensor, stride1: int, pad1: int, dil1: int, groups1: int, " +
		"bw1: Optional[Tensor], bb1: Optional[Tensor], rm1: Tensor, rv1: Tensor, momentum1: float, eps1: float, " +
		"dw2: Tensor, pw2: Tensor, stride2: int, pad2: int, dil2: int, groups2: int, " +
		"bw2: Optional[Tensor], bb2: Optional[Tensor], rm2: Tensor, rv2: Tensor, momentum2: float, eps2: float"},
	{"_fac_conv", "w1: Tensor, w2: Tensor, stride: int, " + bnParams},
	{"_fact_reduce", "w1: Tensor, w2: Tensor, " + bnParams},
	{"_id", ""},
}

// paramNames returns the names of a helper's parameters.
func (h opHelper) paramNames() []string {
	var out []string
	for _, p := range strings.Split(h.params, ", ") {
		if name, _, ok := strings.Cut(p, ":"); ok {
			out = append(out, name)
		}
	}
	return out
}

// maybeHelpers returns the _m<name> methods of opHelpers.
func maybeHelpers() string {
	var b strings.Builder
	for _, h := range opHelpers {
		params, args := "", "x"
		if h.params != "" {
			params = ", " + h.params
			args += ", " + strings.Join(h.paramNames(), ", ")
		}
		fmt.Fprintf(&b, "\ndef _m%s(self, on: bool, outs: List[Tensor], idx: List[int], q: int, x: Tensor%s) -> None:\n", h.name, params)
		fmt.Fprintf(&b, "    if on:\n        outs.append(self.%s(%s))\n        idx.append(q)\n", h.name, args)
	}
	return b.String()
}

// opCall returns the helper applying op and the arguments that follow x.
func (e *exporter) opCall(o Op) (name, args string, err error) {
	dil := func(d *dilConv) (string, error) {
		w, err := e.refs(d.dw, d.pw)
		if err != nil {
			return "", err
		}
		bn, err := e.bnArgs(d.bn)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s, %d, %d, %d, %d, %s", w, d.stride, d.pad, d.dilate, d.cin, bn), nil
	}
	twoConvs := func(w1, w2 *torch.Tensor, bn *BatchNorm, mid string) (string, error) {
		w, err := e.refs(w1, w2)
		if err != nil {
			return "", err
		}
		b, err := e.bnArgs(bn)
		if err != nil {
			return "", err
		}
		return w + mid + ", " + b, nil
	}
	switch op := o.(type) {
	case identity:
		return "_id", "", nil
	case zeroOp:
		return "_zero", strconv.FormatInt(op.stride, 10), nil
	case *poolBN:
		bn, err := e.bnArgs(op.bn)
		return "_pool", fmt.Sprintf("%s, %d, %s", pyBool(op.max), op.stride, bn), err
	case *dilConv:
		a, err := dil(op)
		return "_dil_conv", a, err
	case *sepConv:
		a, err := dil(op.a)
		if err != nil {
			return "", "", err
		}
		b, err := dil(op.b)
		return "_sep_conv", a + ", " + b, err
	case *facConv:
		a, err := twoConvs(op.w1, op.w2, op.bn, fmt.Sprintf(", %d", op.stride))
		return "_fac_conv", a, err
	case *FactorizedReduce:
		a, err := twoConvs(op.w1, op.w2, op.bn, "")
		return "_fact_reduce", a, err
	case *StdConv:
		w, err := e.ref(op.w)
		if err != nil {
			return "", "", err
		}
		bn, err := e.bnArgs(op.bn)
		return "_std_conv", w + ", " + bn, err
	}
	return "", "", fmt.Errorf("export: unsupported op type %T", o)
}

// opExpr returns the TorchScript expression applying op to the variable in.
func (e *exporter) opExpr(o Op, in string) (string, error) {
	if _, ok := o.(identity); ok {
		return in, nil
	}
	name, args, err := e.opCall(o)
	if err != nil {
		return "", err
	}
	if args != "" {
		args = ", " + args
	}
	return fmt.Sprintf("self.%s(%s%s)", name, in, args), nil
}

// maybeOp returns the statement appending op(in) to outs and q to idx when on is true.
func (e *exporter) maybeOp(o Op, in, on, outs, idx string, q int) (string, error) {
	name, args, err := e.opCall(o)
	if err != nil {
		return "", err
	}
	if args != "" {
		args = ", " + args
	}
	return fmt.Sprintf("self._m%s(%s, %s, %s, %d, %s%s)", name, on, outs, idx, q, in, args), nil
}

// stem emits the stem: h = BN(conv3x3(x)), s0 = s1 = h.
func (e *exporter) stem(w *torch.Tensor, bn *BatchNorm) error {
	wr, err := e.ref(w)
	if err != nil {
		return err
	}
	b, err := e.bnArgs(bn)
	if err != nil {
		return err
	}
	e.line("h = self._bn(torch.conv2d(x, %s, None, [1, 1], [1, 1], [1, 1], 1), %s)", wr, b)
	e.line("s0 = h")
	e.line("s1 = h")
	return nil
}

// classifier emits global average pooling, flatten and the linear layer.
func (e *exporter) classifier(w, b *torch.Tensor) error {
	r, err := e.refs(w, b)
	if err != nil {
		return err
	}
	e.line("y = torch.flatten(torch.adaptive_avg_pool2d(s1, [1, 1]), 1)")
	e.line("return torch.linear(y, %s)", r)
	return nil
}

// preprocess emits the two cell inputs of cell c and returns their variables.
func (e *exporter) preprocess(c int, pre0, pre1 Op) ([]string, error) {
	states := []string{"p0", "p1"}
	p0, err := e.opExpr(pre0, "s0")
	if err != nil {
		return nil, err
	}
	p1, err := e.opExpr(pre1, "s1")
	if err != nil {
		return nil, err
	}
	e.line("%s = %s", states[0], p0)
	e.line("%s = %s", states[1], p1)
	return states, nil
}

// scriptHelpers are the methods every exported module shares. _bn is batch norm with the
// statistics bn_train selects (never updating the running statistics); the op helpers
// mirror cells/ops.go.
const scriptHelpers = `
def _bn(self, x: Tensor, w: Optional[Tensor], b: Optional[Tensor], rm: Tensor, rv: Tensor, momentum: float, eps: float) -> Tensor:
    if self.bn_train:
        return torch.batch_norm(x, w, b, None, None, True, momentum, eps, True)
    return torch.batch_norm(x, w, b, rm, rv, False, momentum, eps, True)

def _id(self, x: Tensor) -> Tensor:
    return x

def _zero(self, x: Tensor, stride: int) -> Tensor:
    if stride == 1:
        return x * 0.0
    return x[:, :, ::stride, ::stride] * 0.0

def _pool(self, x: Tensor, is_max: bool, stride: int, bw: Optional[Tensor], bb: Optional[Tensor], rm: Tensor, rv: Tensor, momentum: float, eps: float) -> Tensor:
    if is_max:
        y = torch.max_pool2d(x, [3, 3], [stride, stride], [1, 1])
    else:
        y = torch.avg_pool2d(x, [3, 3], [stride, stride], [1, 1], False, False)
    return self._bn(y, bw, bb, rm, rv, momentum, eps)

def _std_conv(self, x: Tensor, w: Tensor, bw: Optional[Tensor], bb: Optional[Tensor], rm: Tensor, rv: Tensor, momentum: float, eps: float) -> Tensor:
    y = torch.conv2d(torch.relu(x), w, None, [1, 1], [0, 0], [1, 1], 1)
    return self._bn(y, bw, bb, rm, rv, momentum, eps)

def _dil_conv(self, x: Tensor, dw: Tensor, pw: Tensor, stride: int, pad: int, dil: int, groups: int, bw: Optional[Tensor], bb: Optional[Tensor], rm: Tensor, rv: Tensor, momentum: float, eps: float) -> Tensor:
    y = torch.conv2d(torch.relu(x), dw, None, [stride, stride], [pad, pad], [dil, dil], groups)
    y = torch.conv2d(y, pw, None, [1, 1], [0, 0], [1, 1], 1)
    return self._bn(y, bw, bb, rm, rv, momentum, eps)

def _sep_conv(self, x: Tensor, dw1: Tensor, pw1: Tensor, stride1: int, pad1: int, dil1: int, groups1: int, bw1: Optional[Tensor], bb1: Optional[Tensor], rm1: Tensor, rv1: Tensor, momentum1: float, eps1: float, dw2: Tensor, pw2: Tensor, stride2: int, pad2: int, dil2: int, groups2: int, bw2: Optional[Tensor], bb2: Optional[Tensor], rm2: Tensor, rv2: Tensor, momentum2: float, eps2: float) -> Tensor:
    y = self._dil_conv(x, dw1, pw1, stride1, pad1, dil1, groups1, bw1, bb1, rm1, rv1, momentum1, eps1)
    return self._dil_conv(y, dw2, pw2, stride2, pad2, dil2, groups2, bw2, bb2, rm2, rv2, momentum2, eps2)

def _fac_conv(self, x: Tensor, w1: Tensor, w2: Tensor, stride: int, bw: Optional[Tensor], bb: Optional[Tensor], rm: Tensor, rv: Tensor, momentum: float, eps: float) -> Tensor:
    y = torch.conv2d(torch.relu(x), w1, None, [stride, stride], [0, 2], [1, 1], 1)
    y = torch.conv2d(y, w2, None, [1, 1], [2, 0], [1, 1], 1)
    return self._bn(y, bw, bb, rm, rv, momentum, eps)

def _fact_reduce(self, x: Tensor, w1: Tensor, w2: Tensor, bw: Optional[Tensor], bb: Optional[Tensor], rm: Tensor, rv: Tensor, momentum: float, eps: float) -> Tensor:
    y = torch.relu(x)
    a = torch.conv2d(y, w1, None, [2, 2], [0, 0], [1, 1], 1)
    z = y
    if y.dim() == 4:
        if y.size(2) % 2 == 0:
            z = z[:, :, 1:, :]
        if y.size(3) % 2 == 0:
            z = z[:, :, :, 1:]
    b = torch.conv2d(z, w2, None, [2, 2], [0, 0], [1, 1], 1)
    return self._bn(torch.cat([a, b], 1), bw, bb, rm, rv, momentum, eps)
`

// mixHelpers compute search-cell nodes as the shim's mt_mixed_node does: the coefficient
// of op k on input j is w[j, k] times the summed weights of the active pairs containing j,
// and the node is the coefficient-weighted sum of the active ops' outputs (zeros when none
// is active). _coef also decides which ops are active at a threshold, as
// SearchNet.Forward does (weights compared in their own dtype).
const mixHelpers = `
def _norm(self, a: Tensor, t: float) -> Tensor:
    if self.normalizer == "relu_softmax":
        a = torch.relu(a)
    return torch.softmax(a / t, -1)

def _incidence(self, pairs: List[List[int]], keep: List[bool], w: Tensor) -> Tuple[Tensor, List[bool]]:
    n_in = w.size(0)
    used: List[bool] = []
    for j in range(n_in):
        used.append(False)
    vals: List[float] = []
    for p in range(len(pairs)):
        for j in range(n_in):
            if keep[p] and (pairs[p][0] == j or pairs[p][1] == j):
                used[j] = True
                vals.append(1.0)
            else:
                vals.append(0.0)
    inc = torch.tensor(vals, dtype=w.dtype, device=w.device).view([len(pairs), n_in])
    return inc, used

def _coef_fixed(self, w: Tensor, wp: Optional[Tensor], pairs: List[List[int]], keep: List[bool]) -> Tensor:
    if wp is None:
        return w.flatten()
    inc, used = self._incidence(pairs, keep, w)
    c = torch.matmul(wp.unsqueeze(0), inc).squeeze(0)
    return (w * c.unsqueeze(1)).flatten()

def _coef(self, w: Tensor, wp: Optional[Tensor], pairs: List[List[int]], thr: float) -> Tuple[Tensor, List[bool]]:
    wk: List[bool] = (w > thr).flatten().tolist()
    if wp is None:
        return w.flatten(), wk
    keep: List[bool] = (wp > thr).tolist()
    inc, used = self._incidence(pairs, keep, w)
    c = torch.matmul(wp.unsqueeze(0), inc).squeeze(0)
    k = w.size(1)
    act: List[bool] = []
    for q in range(len(wk)):
        act.append(wk[q] and used[q // k])
    return (w * c.unsqueeze(1)).flatten(), act

def _mix(self, outs: List[Tensor], idx: List[int], coef: Tensor, like: Tensor, c: int, reduce: bool) -> Tensor:
    m = len(outs)
    if m == 0:
        h = like.size(2)
        w = like.size(3)
        if reduce:
            h = (h + 1) // 2
            w = (w + 1) // 2
        return torch.zeros([like.size(0), c, h, w], dtype=like.dtype, device=like.device)
    cm = coef.index_select(0, torch.tensor(idx, device=coef.device))
    if m == 1:
        return outs[0] * cm
    return (torch.stack(outs, 0) * cm.view([m, 1, 1, 1, 1])).sum(0)
`

// exportMeta is what finish records besides the tensors.
type exportMeta struct {
	name       string
	kind       string
	genotype   string
	inChannels int
	classes    int
	search     bool // temperature, prune_threshold and normalizer attributes
	temp, thr  float64
	norm       NormKind
	info       map[string]any
}

// finish registers the tensors (all registry entries when all is set, else the used ones,
// in state_dict order, then e.extra), sets the attributes and compiles the source.
func (e *exporter) finish(all bool, meta exportMeta, opts ExportOptions, helpers string) (*torch.Module, error) {
	if _, err := e.reg.StateDict(); err != nil { // brings the batch counters up to date
		return nil, fmt.Errorf("export: %w", err)
	}
	name := opts.Name
	if name == "" {
		name = meta.name
	}
	mod, err := torch.NewModule(name)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			mod.Close()
		}
	}()
	var list []exportTensor
	for _, en := range e.reg.Entries() {
		if all || e.used[en.Tensor] {
			list = append(list, exportTensor{en.Name, en.Tensor, en.Kind})
		}
	}
	list = append(list, e.extra...)
	idents := map[string]string{}
	var names strings.Builder
	names.WriteString("{")
	for i, t := range list {
		id := ExportIdentifier(t.name)
		if prev, dup := idents[id]; dup {
			return nil, fmt.Errorf("export: keys %q and %q both map to the attribute %s", prev, t.name, id)
		}
		if reservedAttrs[id] || strings.HasPrefix(id, "_") {
			return nil, fmt.Errorf("export: key %q maps to the reserved attribute name %s", t.name, id)
		}
		idents[id] = t.name
		if t.kind == Buffer {
			err = mod.RegisterBuffer(id, t.t)
		} else {
			err = mod.RegisterParameter(id, t.t, true)
		}
		if err != nil {
			return nil, fmt.Errorf("export: %s: %w", t.name, err)
		}
		k, _ := json.Marshal(t.name)
		v, _ := json.Marshal(id)
		if i > 0 {
			names.WriteString(",")
		}
		names.WriteString("\n  ")
		names.Write(k)
		names.WriteString(": ")
		names.Write(v)
	}
	names.WriteString("\n}\n")
	bn := "eval"
	if opts.BNTrain {
		bn = "train"
	}
	info := map[string]any{"format": ExportFormat, "kind": meta.kind, "bn": bn, "in_channels": meta.inChannels,
		"classes": meta.classes, "genotype": meta.genotype, "tensors": len(list), "input": "float32 [N, in_channels, H, W]"}
	for k, v := range meta.info {
		info[k] = v
	}
	if meta.search {
		info["temperature"], info["prune_threshold"], info["normalizer"] = meta.temp, meta.thr, string(meta.norm)
	}
	infoJSON, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	attrs := []error{
		mod.SetAttrString("kind", meta.kind),
		mod.SetAttrString("genotype", meta.genotype),
		mod.SetAttrString("config", opts.Config),
		mod.SetAttrBool("bn_train", opts.BNTrain),
		mod.SetAttrString("state_dict_names", names.String()),
		mod.SetAttrString("export_info", string(infoJSON)+"\n"),
		mod.SetAttrInt("in_channels", int64(meta.inChannels)),
		mod.SetAttrInt("classes", int64(meta.classes)),
	}
	if meta.search {
		attrs = append(attrs, mod.SetAttrFloat("temperature", meta.temp), mod.SetAttrFloat("prune_threshold", meta.thr),
			mod.SetAttrString("normalizer", string(meta.norm)))
	}
	if err := errors.Join(attrs...); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	src := helpers + e.defs.String() + "\ndef forward(self, x: Tensor) -> Tensor:\n" + e.fwd.String()
	if err := mod.Define(src); err != nil {
		return nil, fmt.Errorf("export: compiling the generated TorchScript: %w", err)
	}
	if err := mod.SetTraining(false); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	ok = true
	return mod, nil
}

// ExportDiscrete returns a TorchScript module computing n's forward pass (drop path off,
// batch norm as opts.BNTrain selects) from copies of n's tensors. It handles any genotype:
// node and edge counts, concat lists, reduction cells, affine or plain batch norms.
func ExportDiscrete(n *DiscreteNet, opts ExportOptions) (*torch.Module, error) {
	if n == nil {
		return nil, errors.New("export: nil discrete network")
	}
	e := newExporter(n.Reg)
	if err := e.discreteBody(n); err != nil {
		return nil, err
	}
	cfg := n.Cfg
	meta := exportMeta{name: "MetaNASDiscrete", kind: ExportKindDiscrete, genotype: cfg.Genotype.String(),
		inChannels: cfg.InChannels, classes: cfg.Classes,
		info: map[string]any{"channels": cfg.Channels, "layers": cfg.Layers, "reductions": cfg.Reductions, "affine": cfg.Affine}}
	return e.finish(true, meta, opts, scriptHelpers)
}

func (e *exporter) discreteBody(n *DiscreteNet) error {
	if err := e.stem(n.stemW, n.stemB); err != nil {
		return err
	}
	for c, cell := range n.cells {
		if err := e.cellMethod(c, cell.Reduction, nil, nil, func() error { return e.discreteCell(c, cell) }); err != nil {
			return err
		}
	}
	return e.classifier(n.linW, n.linB)
}

func (e *exporter) discreteCell(c int, cell *DiscreteCell) error {
	states, err := e.preprocess(c, cell.pre0, cell.pre1)
	if err != nil {
		return err
	}
	for i, row := range cell.nodes {
		v := fmt.Sprintf("s%d", i+2)
		for k, ed := range row {
			if ed.input < 0 || ed.input >= len(states) {
				return fmt.Errorf("export: cell %d node %d edge %d reads state %d", c, i, k, ed.input)
			}
			y, err := e.opExpr(ed.op, states[ed.input])
			if err != nil {
				return fmt.Errorf("export: cell %d node %d edge %d: %w", c, i, k, err)
			}
			if k == 0 {
				e.line("%s = %s", v, y)
			} else {
				e.line("%s = %s + %s", v, v, y)
			}
		}
		states = append(states, v)
	}
	out := make([]string, len(cell.concat))
	for k, i := range cell.concat {
		if i < 0 || i >= len(states) {
			return fmt.Errorf("export: cell %d concatenates state %d of %d", c, i, len(states))
		}
		out[k] = states[i]
	}
	e.line("return torch.cat([%s], 1)", strings.Join(out, ", "))
	return nil
}

func cellKind(reduction bool) string {
	if reduction {
		return "reduction"
	}
	return "normal"
}

func (o ExportOptions) normalizer() (NormKind, error) {
	switch o.Normalizer {
	case "", Softmax:
		return Softmax, nil
	case ReLUSoftmax:
		return ReLUSoftmax, nil
	case GumbelSoftmax:
		return "", errors.New("export: gumbel_softmax draws random noise at every pass; export with softmax (its noise-free form) or relu_softmax")
	}
	return "", fmt.Errorf("export: normalizer %q: use softmax or relu_softmax", o.Normalizer)
}

func checkTempThreshold(temp, threshold float64) error {
	if !(temp > 0) {
		return fmt.Errorf("export: temperature must be > 0, got %g", temp)
	}
	if threshold != threshold {
		return errors.New("export: prune threshold is NaN")
	}
	return nil
}

// pairsLiteral returns the TorchScript List[List[int]] of the input pairs of a node with
// nIn inputs (genotype.Pairs order), or an empty list without pairwise weights.
func pairsLiteral(nIn int, pairwise bool) string {
	if !pairwise {
		return "no_pairs"
	}
	ps := genotype.Pairs(nIn)
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("[%d, %d]", p[0], p[1])
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// ExportSearch returns a TorchScript module of the one-shot meta-model n: its forward
// normalises the alphas with softmax(alpha / temperature) (or relu_softmax), skips every op
// and input pair whose weight is at or below prune_threshold, and weights the remaining ops
// as SearchNet.Forward does, so that it computes SearchNet.Forward's logits for
// n.Normalize(s, normalizer, temperature) and threshold. temperature, prune_threshold and
// normalizer are attributes that Python may change; the pruning decisions are taken at
// every call from the current alphas. The genotype attribute is the one derived at temp.
func ExportSearch(n *SearchNet, temp, threshold float64, opts ExportOptions) (*torch.Module, error) {
	if n == nil {
		return nil, errors.New("export: nil search network")
	}
	norm, err := opts.normalizer()
	if err != nil {
		return nil, err
	}
	if err := checkTempThreshold(temp, threshold); err != nil {
		return nil, err
	}
	g, err := n.derivedGenotype(norm, temp)
	if err != nil {
		return nil, err
	}
	e := newExporter(n.Reg)
	K := len(n.Cfg.Primitives)
	e.line("no_pairs: List[List[int]] = []")
	e.line("t = self.temperature")
	e.line("thr = self.prune_threshold")
	for _, ct := range []struct {
		tag        string
		ops, pairs []*torch.Tensor
	}{{"n", n.AlphaNormal, n.AlphaPwNormal}, {"r", n.AlphaReduce, n.AlphaPwReduce}} {
		for i, a := range ct.ops {
			ar, err := e.ref(a)
			if err != nil {
				return nil, err
			}
			wp := "None"
			if n.Cfg.Pairwise {
				pr, err := e.ref(ct.pairs[i])
				if err != nil {
					return nil, err
				}
				e.line("wp_%s%d = self._norm(%s, t)", ct.tag, i, pr)
				wp = fmt.Sprintf("wp_%s%d", ct.tag, i)
			}
			e.line("cf_%s%d, act_%s%d = self._coef(self._norm(%s, t), %s, %s, thr)", ct.tag, i, ct.tag, i, ar, wp, pairsLiteral(i+2, n.Cfg.Pairwise))
		}
	}
	if err := e.stem(n.stemW, n.stemB); err != nil {
		return nil, err
	}
	for c, cell := range n.cells {
		tag := "n"
		if cell.Reduction {
			tag = "r"
		}
		var params, args []string
		for i := range cell.nodes {
			params = append(params, fmt.Sprintf("cf%d: Tensor", i), fmt.Sprintf("act%d: List[bool]", i))
			args = append(args, fmt.Sprintf("cf_%s%d", tag, i), fmt.Sprintf("act_%s%d", tag, i))
		}
		body := func() error {
			states, err := e.preprocess(c, cell.pre0, cell.pre1)
			if err != nil {
				return err
			}
			for i, row := range cell.nodes {
				outs, idx := fmt.Sprintf("outs%d", i), fmt.Sprintf("idx%d", i)
				e.line("%s: List[Tensor] = []", outs)
				e.line("%s: List[int] = []", idx)
				for j, ed := range row {
					for k, op := range ed.ops {
						q := j*K + k
						st, err := e.maybeOp(op, states[j], fmt.Sprintf("act%d[%d]", i, q), outs, idx, q)
						if err != nil {
							return fmt.Errorf("export: cell %d node %d input %d op %d: %w", c, i, j, k, err)
						}
						e.line("%s", st)
					}
				}
				v := fmt.Sprintf("s%d", i+2)
				e.line("%s = self._mix(%s, %s, cf%d, p1, %d, %s)", v, outs, idx, i, cell.out, pyBool(cell.Reduction))
				states = append(states, v)
			}
			e.line("return torch.cat([%s], 1)", strings.Join(states[2:], ", "))
			return nil
		}
		if err := e.cellMethod(c, cell.Reduction, params, args, body); err != nil {
			return nil, err
		}
	}
	if err := e.classifier(n.linW, n.linB); err != nil {
		return nil, err
	}
	meta := n.exportMeta("MetaNASSearch", ExportKindSearch, g, temp, threshold, norm)
	return e.finish(true, meta, opts, scriptHelpers+mixHelpers+maybeHelpers())
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

func (n *SearchNet) exportMeta(name, kind string, g genotype.Genotype, temp, thr float64, norm NormKind) exportMeta {
	cfg := n.Cfg
	return exportMeta{name: name, kind: kind, genotype: g.String(), inChannels: cfg.InChannels, classes: cfg.Classes,
		search: true, temp: temp, thr: thr, norm: norm,
		info: map[string]any{"channels": cfg.Channels, "layers": cfg.Layers, "nodes": cfg.Nodes, "reductions": cfg.Reductions,
			"primitives": cfg.Primitives, "pairwise": cfg.Pairwise}}
}

// derivedGenotype normalises the alphas and derives the genotype (SearchNet.Genotype).
func (n *SearchNet) derivedGenotype(norm NormKind, temp float64) (genotype.Genotype, error) {
	var g genotype.Genotype
	err := torch.NoGrad(func() error {
		return torch.With(nil, func(s *torch.Scope) error {
			w, err := n.Normalize(s, norm, temp)
			if err != nil {
				return err
			}
			g, err = n.Genotype(w)
			return err
		})
	})
	if err != nil {
		return g, fmt.Errorf("export: genotype: %w", err)
	}
	return g, nil
}

// ExportPruned returns a TorchScript module of n hard-pruned at threshold: the weights
// w = n.Normalize(s, normalizer, temp) decide once, at export, which ops and input pairs
// survive (weight above float32(threshold), SearchNet.Masks), and the module contains only
// those ops with their tensors, plus the normalised weights of each node (buffers
// arch.{normal,reduce}.{ops,pairs}.{i}) that scale them. Its forward equals
// SearchNet.Forward(c, x, w, threshold), the pass MetaNAS scores a meta-test task with,
// operation for operation; nodes whose ops are all pruned give zeros as there. The
// genotype attribute is SearchNet.Genotype(w).
func ExportPruned(n *SearchNet, temp, threshold float64, opts ExportOptions) (*torch.Module, error) {
	if n == nil {
		return nil, errors.New("export: nil search network")
	}
	norm, err := opts.normalizer()
	if err != nil {
		return nil, err
	}
	if err := checkTempThreshold(temp, threshold); err != nil {
		return nil, err
	}
	var mod *torch.Module
	err = torch.NoGrad(func() error {
		return torch.With(nil, func(s *torch.Scope) error {
			w, err := n.Normalize(s, norm, temp)
			if err != nil {
				return err
			}
			masks, err := n.Masks(w, threshold)
			if err != nil {
				return err
			}
			g, err := n.Genotype(w)
			if err != nil {
				return err
			}
			e := newExporter(n.Reg)
			active, err := e.prunedBody(n, w, masks)
			if err != nil {
				return err
			}
			meta := n.exportMeta("MetaNASPruned", ExportKindPruned, g, temp, threshold, norm)
			meta.info["active_ops"] = active
			meta.info["active_params"] = n.ActiveParams(w, threshold)
			mod, err = e.finish(false, meta, opts, scriptHelpers+mixHelpers)
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("export pruned: %w", err)
	}
	return mod, nil
}

// prunedBody emits the forward of the hard-pruned network and returns its number of
// active ops.
func (e *exporter) prunedBody(n *SearchNet, w *ArchWeights, masks *PruneMasks) (int, error) {
	K := len(n.Cfg.Primitives)
	active := 0
	e.line("no_pairs: List[List[int]] = []")
	e.line("no_keep: List[bool] = []")
	for _, ct := range []struct {
		tag, name string
		cw        *CellWeights
		m         *CellMask
	}{{"n", "normal", &w.Normal, &masks.Normal}, {"r", "reduce", &w.Reduce, &masks.Reduce}} {
		for i := range ct.cw.Ops {
			opsName := fmt.Sprintf("arch.%s.ops.%d", ct.name, i)
			e.extra = append(e.extra, exportTensor{opsName, ct.cw.Ops[i], Buffer})
			wp, keep := "None", "no_keep"
			if n.Cfg.Pairwise {
				pn := fmt.Sprintf("arch.%s.pairs.%d", ct.name, i)
				e.extra = append(e.extra, exportTensor{pn, ct.cw.Pairs[i], Buffer})
				wp = "self." + ExportIdentifier(pn)
				ks := make([]string, len(ct.m.Pairs[i]))
				for p, on := range ct.m.Pairs[i] {
					ks[p] = pyBool(on)
				}
				keep = "[" + strings.Join(ks, ", ") + "]"
			}
			e.line("cf_%s%d = self._coef_fixed(self.%s, %s, %s, %s)", ct.tag, i, ExportIdentifier(opsName), wp, pairsLiteral(i+2, n.Cfg.Pairwise), keep)
		}
	}
	if err := e.stem(n.stemW, n.stemB); err != nil {
		return 0, err
	}
	for c, cell := range n.cells {
		tag, m := "n", &masks.Normal
		if cell.Reduction {
			tag, m = "r", &masks.Reduce
		}
		var params, args []string
		for i := range cell.nodes {
			params = append(params, fmt.Sprintf("cf%d: Tensor", i))
			args = append(args, fmt.Sprintf("cf_%s%d", tag, i))
		}
		body := func() error {
			states, err := e.preprocess(c, cell.pre0, cell.pre1)
			if err != nil {
				return err
			}
			for i, row := range cell.nodes {
				var outs, idx []string
				for j, ed := range row {
					for k, op := range ed.ops {
						if !m.Active(i, j, k) {
							continue
						}
						y, err := e.opExpr(op, states[j])
						if err != nil {
							return fmt.Errorf("export: cell %d node %d input %d op %d: %w", c, i, j, k, err)
						}
						o := fmt.Sprintf("o%d_%d", i, len(outs))
						e.line("%s = %s", o, y)
						outs = append(outs, o)
						idx = append(idx, strconv.Itoa(j*K+k))
					}
				}
				active += len(outs)
				e.line("outs%d: List[Tensor] = [%s]", i, strings.Join(outs, ", "))
				e.line("idx%d: List[int] = [%s]", i, strings.Join(idx, ", "))
				v := fmt.Sprintf("s%d", i+2)
				e.line("%s = self._mix(outs%d, idx%d, cf%d, p1, %d, %s)", v, i, i, i, cell.out, pyBool(cell.Reduction))
				states = append(states, v)
			}
			e.line("return torch.cat([%s], 1)", strings.Join(states[2:], ", "))
			return nil
		}
		if err := e.cellMethod(c, cell.Reduction, params, args, body); err != nil {
			return 0, err
		}
	}
	return active, e.classifier(n.linW, n.linB)
}

// ExportGenotype exports the discrete network of genotype g built from n's weights
// (SearchNet.Discrete: non-affine batch norms, each genotype edge the search network's op
// on that input, the stem, preprocessing and classifier as they are). Unlike ExportPruned
// it drops the architecture weights: edges are summed with weight 1. It equals the
// one-shot network's forward only where pruning leaves exactly g's ops and one pair per
// node at weight 1 (a node with one active pair (a, b) and one op per input computes
// w_pair * (w_a * op_a + w_b * op_b) there, op_a + op_b here); otherwise it is the
// discretised architecture, to be fine-tuned or compared rather than served as the score.
func ExportGenotype(n *SearchNet, g genotype.Genotype, opts ExportOptions) (*torch.Module, error) {
	if n == nil {
		return nil, errors.New("export: nil search network")
	}
	var mod *torch.Module
	err := torch.With(nil, func(s *torch.Scope) error {
		d, err := n.Discrete(s, g)
		if err != nil {
			return err
		}
		mod, err = ExportDiscrete(d, opts)
		return err
	})
	return mod, err
}

// ExportFiles returns the extra files of an exported module, built from its attributes:
// genotype.txt, config.yaml (when the config is not empty), state_dict_names.json and
// metanas.json (export_info).
func ExportFiles(m *torch.Module) (map[string]string, error) {
	files := map[string]string{}
	for _, f := range []struct{ attr, file string }{
		{"genotype", "genotype.txt"}, {"config", "config.yaml"}, {"state_dict_names", "state_dict_names.json"}, {"export_info", "metanas.json"},
	} {
		v, err := m.AttrString(f.attr)
		if err != nil {
			return nil, fmt.Errorf("export files: %w (not a module made by cells.Export*)", err)
		}
		if v == "" && f.file == "config.yaml" {
			continue
		}
		if f.file == "genotype.txt" && !strings.HasSuffix(v, "\n") {
			v += "\n"
		}
		files[f.file] = v
	}
	return files, nil
}

// SaveExport writes an exported module to path (atomically) with the extra files of
// ExportFiles.
func SaveExport(m *torch.Module, path string) error {
	files, err := ExportFiles(m)
	if err != nil {
		return err
	}
	return m.Save(path, files)
}
