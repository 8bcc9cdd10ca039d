package torch

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"unsafe"
)

// Golden tests: every case of testdata/golden.json (written by testdata/gen_golden.py with
// PyTorch 1.13) is run through this package and compared with PyTorch's forward outputs,
// gradients of loss = sum_i sum(out_i * weight_i), updated buffers, and optimizer steps.
//
// Tolerance on the CPU: |got - want| <= 1e-5*|want| + 1e-6*max(1, max|want|) for every
// element: relative 1e-5, plus an absolute 1e-6 for values near zero, scaled up by the
// tensor's largest magnitude when that exceeds 1 (a float32 sum's rounding error grows with
// its terms, not its result, so a near-zero gradient entry of a conv whose gradients reach 10
// differs from PyTorch's by up to ~1e-6 once the thread count or SIMD path changes the
// summation order). Integer and boolean outputs must match exactly.

// tolerance bounds |got - want| by Rel*|want| + Abs*max(1, max|want|), max over the tensor.
type tolerance struct{ Rel, Abs float64 }

var (
	cpuTol = tolerance{Rel: 1e-5, Abs: 1e-6}
	// On CUDA, cuDNN convolutions use TF32 by default (10-bit mantissa) and reductions run
	// in another order: relative 2e-3, absolute 2e-3 scaled as above.
	cudaTol = tolerance{Rel: 2e-3, Abs: 2e-3}
)

type jTensor struct {
	Name   string    `json:"name"`
	Shape  []int64   `json:"shape"`
	DType  string    `json:"dtype"`
	Data   []float64 `json:"data"`
	Grad   bool      `json:"grad"`
	Weight []float64 `json:"weight"`
}

type jParams struct {
	Stride          []int64   `json:"stride"`
	Padding         []int64   `json:"padding"`
	Dilation        []int64   `json:"dilation"`
	Groups          int64     `json:"groups"`
	Training        bool      `json:"training"`
	Momentum        float64   `json:"momentum"`
	Eps             float64   `json:"eps"`
	K               int64     `json:"k"`
	S               int64     `json:"s"`
	P               int64     `json:"p"`
	CountIncludePad bool      `json:"count_include_pad"`
	Out             []int64   `json:"out"`
	Dim             int64     `json:"dim"`
	Dims            []int64   `json:"dims"`
	Keepdim         bool      `json:"keepdim"`
	Slices          [][]int64 `json:"slices"`
	Start           int64     `json:"start"`
	End             int64     `json:"end"`
	Length          int64     `json:"length"`
	Shape           []int64   `json:"shape"`
	Alpha           float64   `json:"alpha"`
	Scalar          float64   `json:"scalar"`
	Cmp             string    `json:"cmp"`
	Largest         bool      `json:"largest"`
	MaxNorm         float64   `json:"max_norm"`
	Weight          float64   `json:"weight"`
	NTasks          int       `json:"ntasks"`
	Betas           []float64 `json:"betas"`
	WeightDecay     float64   `json:"weight_decay"`
	Dampening       float64   `json:"dampening"`
	Nesterov        bool      `json:"nesterov"`
	NIn             int       `json:"n_in"`
	Idx             []int64   `json:"idx"`
	Inc             []float64 `json:"inc"`
}

type jStep struct {
	LR     float64             `json:"lr"`
	Grads  map[string]*jTensor `json:"grads"`
	Params map[string]*jTensor `json:"params"`
}

type jCase struct {
	Name    string              `json:"name"`
	Op      string              `json:"op"`
	Params  jParams             `json:"params"`
	Inputs  []*jTensor          `json:"inputs"`
	Outputs []*jTensor          `json:"outputs"`
	Grads   map[string]*jTensor `json:"grads"`
	After   map[string]*jTensor `json:"after"`
	Steps   []jStep             `json:"steps"`
	State   map[string]*jTensor `json:"state"`
}

type jGolden struct {
	TorchVersion string   `json:"torch_version"`
	Cases        []*jCase `json:"cases"`
}

var (
	goldenOnce sync.Once
	golden     *jGolden
	goldenErr  error
)

func loadGolden(t *testing.T) *jGolden {
	t.Helper()
	goldenOnce.Do(func() {
		b, err := os.ReadFile(filepath.Join("testdata", "golden.json"))
		if err != nil {
			goldenErr = fmt.Errorf("%v (regenerate with /usr/bin/python3 torch/testdata/gen_golden.py)", err)
			return
		}
		var g jGolden
		if err := json.Unmarshal(b, &g); err != nil {
			goldenErr = err
			return
		}
		golden = &g
	})
	if goldenErr != nil {
		t.Fatal(goldenErr)
	}
	return golden
}

func f32s(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

func i64s(v []float64) []int64 {
	out := make([]int64, len(v))
	for i, x := range v {
		out[i] = int64(x)
	}
	return out
}

// newTensor builds j on dev: float32 inputs marked grad require gradients.
func newTensor(s *Scope, j *jTensor, dev Device) *Tensor {
	switch j.DType {
	case "float32":
		if j.Grad {
			return s.Param(f32s(j.Data), j.Shape, dev)
		}
		return s.FromFloat32(f32s(j.Data), j.Shape, dev)
	case "float64":
		return s.FromFloat64(j.Data, j.Shape, dev)
	case "int64":
		return s.FromInt64(i64s(j.Data), j.Shape, dev)
	case "bool":
		b := make([]uint8, len(j.Data))
		for i, x := range j.Data {
			if x != 0 {
				b[i] = 1
			}
		}
		return s.fromData("from_bool", unsafe.Pointer(unsafe.SliceData(b)), len(b), Bool, j.Shape, dev, false)
	}
	return s.fail(fmt.Errorf("golden: unknown dtype %q", j.DType))
}

func sameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkTensor compares got with want: shape, dtype, and values within tol (exactly for
// integer and boolean tensors).
func checkTensor(t *testing.T, what string, got *Tensor, want *jTensor, tol tolerance) {
	t.Helper()
	if got == nil || !got.Valid() {
		t.Errorf("%s: no tensor", what)
		return
	}
	sh, err := got.Shape()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	if !sameShape(sh, want.Shape) {
		t.Errorf("%s: shape %v, want %v", what, sh, want.Shape)
		return
	}
	if want.DType != "" {
		info, err := got.Info()
		if err != nil {
			t.Errorf("%s: %v", what, err)
			return
		}
		if info.DType.String() != want.DType {
			t.Errorf("%s: dtype %v, want %s", what, info.DType, want.DType)
		}
	}
	vals, err := got.Float64s()
	if err != nil {
		t.Errorf("%s: %v", what, err)
		return
	}
	wantVals := want.Data
	if want.DType == "float32" {
		// The file holds the shortest decimals of float32 values: round them back.
		wantVals = make([]float64, len(want.Data))
		for i, w := range want.Data {
			wantVals[i] = float64(float32(w))
		}
	}
	compareValues(t, what, vals, wantVals, want.DType == "int64" || want.DType == "bool", tol)
}

func compareValues(t *testing.T, what string, got, want []float64, exact bool, tol tolerance) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return
	}
	maxAbs := 0.0
	for _, w := range want {
		maxAbs = math.Max(maxAbs, math.Abs(w))
	}
	bad := 0
	for i := range got {
		d := math.Abs(got[i] - want[i])
		var ok bool
		if exact {
			ok = got[i] == want[i]
		} else {
			ok = d <= tol.Abs*math.Max(1, maxAbs)+tol.Rel*math.Abs(want[i]) && !math.IsNaN(got[i])
		}
		if !ok {
			if bad < 5 {
				t.Errorf("%s[%d] = %.9g, want %.9g (diff %.3g)", what, i, got[i], want[i], d)
			}
			bad++
		}
	}
	if bad > 5 {
		t.Errorf("%s: %d of %d values differ", what, bad, len(got))
	}
}

var cmpNames = map[string]Cmp{"eq": Eq, "ne": Ne, "lt": Lt, "le": Le, "gt": Gt, "ge": Ge}

// goldenOp runs one forward op of the golden file. ins holds the inputs in file order.
type goldenOp func(s *Scope, in map[string]*Tensor, ins []*Tensor, p jParams) []*Tensor

func one(t *Tensor) []*Tensor { return []*Tensor{t} }

func pair2(v []int64) [2]int64 { return [2]int64{v[0], v[1]} }

var goldenOps = map[string]goldenOp{
	"conv2d": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		c := Conv{Stride: pair2(p.Stride), Padding: pair2(p.Padding), Dilation: pair2(p.Dilation), Groups: p.Groups}
		return one(s.Conv2d(in["x"], in["w"], in["b"], c))
	},
	"batch_norm": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.BatchNorm(in["x"], in["weight"], in["bias"], in["running_mean"], in["running_var"], p.Training, p.Momentum, p.Eps))
	},
	"relu": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Relu(in["x"])) },
	"max_pool2d": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.MaxPool2d(in["x"], p.K, p.S, p.P))
	},
	"avg_pool2d": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.AvgPool2d(in["x"], p.K, p.S, p.P, p.CountIncludePad))
	},
	"adaptive_avg_pool2d": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.AdaptiveAvgPool2d(in["x"], p.Out[0], p.Out[1]))
	},
	"linear": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.Linear(in["x"], in["w"], in["b"]))
	},
	"softmax": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.Softmax(in["x"], p.Dim))
	},
	"log_softmax": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.LogSoftmax(in["x"], p.Dim))
	},
	"cross_entropy": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.CrossEntropy(in["logits"], in["target"]))
	},
	"cat": func(s *Scope, _ map[string]*Tensor, ins []*Tensor, p jParams) []*Tensor {
		return one(s.Cat(ins, p.Dim))
	},
	"stack": func(s *Scope, _ map[string]*Tensor, ins []*Tensor, p jParams) []*Tensor {
		return one(s.Stack(ins, p.Dim))
	},
	"slice": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		x := in["x"]
		for _, sl := range p.Slices {
			x = s.Slice(x, sl[0], sl[1], sl[2], sl[3])
		}
		return one(x)
	},
	"narrow": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.Narrow(in["x"], p.Dim, p.Start, p.Length))
	},
	"view": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.View(in["x"], p.Shape...))
	},
	"reshape": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.Reshape(in["x"], p.Shape...))
	},
	"flatten": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.Flatten(in["x"], p.Start, p.End))
	},
	"permute": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.Contiguous(s.Permute(in["x"], p.Dims...)))
	},
	"index_select": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.IndexSelect(in["x"], p.Dim, in["index"]))
	},
	"add": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.Add(in["a"], in["b"]))
	},
	"sub": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.Sub(in["a"], in["b"]))
	},
	"mul": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.Mul(in["a"], in["b"]))
	},
	"div": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.Div(in["a"], in["b"]))
	},
	"maximum": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.Maximum(in["a"], in["b"]))
	},
	"minimum": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.Minimum(in["a"], in["b"]))
	},
	"add_scaled": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.AddScaled(in["a"], in["b"], p.Alpha))
	},
	"add_scalar": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.AddScalar(in["a"], p.Scalar))
	},
	"sub_scalar": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.SubScalar(in["a"], p.Scalar))
	},
	"mul_scalar": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.MulScalar(in["a"], p.Scalar))
	},
	"div_scalar": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.DivScalar(in["a"], p.Scalar))
	},
	"clamp_min": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.ClampMin(in["a"], p.Scalar))
	},
	"clamp_max": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.ClampMax(in["a"], p.Scalar))
	},
	"pow": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.Pow(in["a"], p.Scalar))
	},
	"neg":  func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Neg(in["a"])) },
	"exp":  func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Exp(in["a"])) },
	"log":  func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Log(in["a"])) },
	"sqrt": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Sqrt(in["a"])) },
	"abs":  func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Abs(in["a"])) },
	"sigmoid": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.Sigmoid(in["a"]))
	},
	"tanh":   func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Tanh(in["a"])) },
	"square": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Square(in["a"])) },
	"compare": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.Compare(in["a"], cmpNames[p.Cmp], in["b"]))
	},
	"compare_scalar": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.CompareScalar(in["a"], cmpNames[p.Cmp], p.Scalar))
	},
	"where": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor {
		return one(s.Where(in["cond"], in["a"], in["b"]))
	},
	"argmax": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.Argmax(in["x"], p.Dim, p.Keepdim))
	},
	"topk": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		v, i := s.TopK(in["x"], p.K, p.Dim, p.Largest)
		return []*Tensor{v, i}
	},
	"sum":  func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Sum(in["x"])) },
	"mean": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Mean(in["x"])) },
	"max":  func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Max(in["x"])) },
	"min":  func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Min(in["x"])) },
	"norm": func(s *Scope, in map[string]*Tensor, _ []*Tensor, _ jParams) []*Tensor { return one(s.Norm(in["x"])) },
	"mean_dims": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.MeanDims(in["x"], p.Keepdim, p.Dims...))
	},
	"sum_dims": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.SumDims(in["x"], p.Keepdim, p.Dims...))
	},
	"max_dim": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		return one(s.MaxDim(in["x"], p.Dim, p.Keepdim))
	},
	"mixed_node": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		outs := make([]*Tensor, len(p.Idx))
		for m := range outs {
			outs[m] = in[fmt.Sprintf("o%d", m)]
		}
		var inc []float32
		if in["wpair"] != nil {
			inc = f32s(p.Inc)
		}
		return one(s.MixedNode(outs, in["wpair"], in["wops"], inc, p.NIn, p.Idx, make([]bool, len(outs)), 0, nil))
	},
	"clip_grad_norm": func(s *Scope, in map[string]*Tensor, _ []*Tensor, p jParams) []*Tensor {
		for _, n := range []string{"0", "1"} {
			if err := in["p"+n].SetGrad(in["g"+n]); err != nil {
				return one(s.fail(err))
			}
		}
		return one(s.ClipGradNorm([]*Tensor{in["p0"], in["p1"]}, p.MaxNorm))
	},
}

// goldenInPlace runs one in-place update of the golden file; the case's "after" lists the
// expected contents of the updated inputs.
var goldenInPlace = map[string]func(in map[string]*Tensor, p jParams) error{
	"lerp_":       func(in map[string]*Tensor, p jParams) error { return in["dst"].Lerp_(in["end"], p.Weight) },
	"add_":        func(in map[string]*Tensor, p jParams) error { return in["dst"].Add_(in["src"], p.Alpha) },
	"mul_scalar_": func(in map[string]*Tensor, p jParams) error { return in["dst"].MulScalar_(p.Scalar) },
	"fill_":       func(in map[string]*Tensor, p jParams) error { return in["dst"].Fill_(p.Scalar) },
	"copy_":       func(in map[string]*Tensor, _ jParams) error { return in["dst"].Copy_(in["src"]) },
	"foreach_lerp": func(in map[string]*Tensor, p jParams) error {
		return ForeachLerp([]*Tensor{in["dst0"], in["dst1"]}, []*Tensor{in["end0"], in["end1"]}, p.Weight)
	},
	"foreach_add": func(in map[string]*Tensor, p jParams) error {
		return ForeachAdd([]*Tensor{in["dst0"], in["dst1"]}, []*Tensor{in["src0"], in["src1"]}, p.Alpha)
	},
	"foreach_mul_scalar": func(in map[string]*Tensor, p jParams) error {
		return ForeachMulScalar([]*Tensor{in["dst0"], in["dst1"]}, p.Scalar)
	},
	"foreach_lerp_mean": func(in map[string]*Tensor, p jParams) error {
		tasks := make([][]*Tensor, p.NTasks)
		for k := range tasks {
			tasks[k] = []*Tensor{in[fmt.Sprintf("task%d_0", k)], in[fmt.Sprintf("task%d_1", k)]}
		}
		return ForeachLerpMean([]*Tensor{in["meta0"], in["meta1"]}, tasks, p.Weight)
	},
}

func runGoldenCase(t *testing.T, c *jCase, dev Device, tol tolerance) {
	s := NewScope()
	defer s.Close()
	in := map[string]*Tensor{}
	ins := make([]*Tensor, len(c.Inputs))
	for i, j := range c.Inputs {
		ins[i] = newTensor(s, j, dev)
		in[j.Name] = ins[i]
	}
	if err := s.Err(); err != nil {
		t.Fatalf("inputs: %v", err)
	}
	switch c.Op {
	case "adam", "sgd":
		runOptimCase(t, s, c, in, tol)
		return
	}
	var outs []*Tensor
	if f, ok := goldenInPlace[c.Op]; ok {
		if err := f(in, c.Params); err != nil {
			t.Fatalf("%s: %v", c.Op, err)
		}
	} else {
		f, ok := goldenOps[c.Op]
		if !ok {
			t.Fatalf("no Go implementation for golden op %q", c.Op)
		}
		outs = f(s, in, ins, c.Params)
	}
	if err := s.Err(); err != nil {
		t.Fatalf("%s: %v", c.Op, err)
	}
	if len(outs) != len(c.Outputs) {
		t.Fatalf("%d outputs, want %d", len(outs), len(c.Outputs))
	}
	var loss *Tensor
	for i, want := range c.Outputs {
		checkTensor(t, fmt.Sprintf("output %d", i), outs[i], want, tol)
		if want.Weight == nil {
			continue
		}
		info, err := outs[i].Info()
		if err != nil || !info.RequiresGrad {
			t.Errorf("output %d: requires_grad false (err %v), want true", i, err)
			continue
		}
		w := s.FromFloat32(f32s(want.Weight), want.Shape, dev)
		term := s.Sum(s.Mul(outs[i], w))
		if loss == nil {
			loss = term
		} else {
			loss = s.Add(loss, term)
		}
	}
	if err := s.Err(); err != nil {
		t.Fatalf("loss: %v", err)
	}
	if loss != nil {
		if err := loss.Backward(); err != nil {
			t.Fatalf("backward: %v", err)
		}
	}
	for _, j := range c.Inputs {
		want, ok := c.Grads[j.Name]
		if !ok {
			if j.Grad && loss != nil {
				t.Errorf("golden case has no gradient for input %s", j.Name)
			}
			continue
		}
		g := s.Grad(in[j.Name])
		if g == nil {
			t.Errorf("input %s: no gradient after backward", j.Name)
			continue
		}
		checkTensor(t, "grad "+j.Name, g, want, tol)
	}
	names := make([]string, 0, len(c.After))
	for n := range c.After {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		var got *Tensor
		if base, ok := strings.CutSuffix(n, ".grad"); ok {
			got = s.Grad(in[base])
		} else {
			got = in[n]
		}
		checkTensor(t, n+" after", got, c.After[n], tol)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

func runOptimCase(t *testing.T, s *Scope, c *jCase, in map[string]*Tensor, tol tolerance) {
	params := []*Tensor{in["p0"], in["p1"]}
	p := c.Params
	var opt *Optimizer
	var err error
	if c.Op == "adam" {
		opt, err = NewAdam(params, AdamOptions{LR: c.Steps[0].LR, Beta1: p.Betas[0], Beta2: p.Betas[1], Eps: p.Eps, WeightDecay: p.WeightDecay})
	} else {
		opt, err = NewSGD(params, SGDOptions{LR: c.Steps[0].LR, Momentum: p.Momentum, Dampening: p.Dampening, WeightDecay: p.WeightDecay, Nesterov: p.Nesterov})
	}
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Close()
	dev := CPU
	if info, err := params[0].Info(); err == nil {
		dev = info.Device
	}
	for i, st := range c.Steps {
		if st.LR != opt.LR() {
			opt.SetLR(st.LR)
		}
		if opt.LR() != st.LR {
			t.Fatalf("step %d: LR() = %g after SetLR(%g)", i, opt.LR(), st.LR)
		}
		for k, name := range []string{"p0", "p1"} {
			var g *Tensor
			if j := st.Grads[name]; j != nil {
				g = newTensor(s, j, dev)
			}
			if err := params[k].SetGrad(g); err != nil {
				t.Fatalf("step %d: set grad %s: %v", i, name, err)
			}
		}
		if err := opt.Step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		for k, name := range []string{"p0", "p1"} {
			checkTensor(t, fmt.Sprintf("step %d %s", i, name), params[k], st.Params[name], tol)
		}
	}
	names := make([]string, 0, len(c.State))
	for n := range c.State {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		pn, key, _ := strings.Cut(n, ".")
		idx := map[string]int{"p0": 0, "p1": 1}[pn]
		st, err := opt.State(s, idx, key)
		if err != nil {
			t.Errorf("state %s: %v", n, err)
			continue
		}
		if st == nil {
			t.Errorf("state %s: missing", n)
			continue
		}
		checkTensor(t, "state "+n, st, c.State[n], tol)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

func runGolden(t *testing.T, dev Device, tol tolerance) {
	g := loadGolden(t)
	if len(g.Cases) < 100 {
		t.Fatalf("golden.json has %d cases; expected the full set", len(g.Cases))
	}
	before := LiveTensors()
	for _, c := range g.Cases {
		t.Run(c.Name, func(t *testing.T) { runGoldenCase(t, c, dev, tol) })
	}
	if after := LiveTensors(); after != before {
		t.Errorf("live tensors %d after the golden cases, %d before", after, before)
	}
}

// TestGoldenCPU checks every op against PyTorch on the CPU.
func TestGoldenCPU(t *testing.T) { runGolden(t, CPU, cpuTol) }

// TestGoldenCUDA runs the same cases on the first CUDA device.
func TestGoldenCUDA(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA): golden cases run on the CPU only")
	}
	runGolden(t, Device{CUDA: true}, cudaTol)
}

// TestGoldenCoversEveryOp makes sure every Go implementation is exercised by some case, so
// an op cannot silently lose its golden coverage when the generator changes.
func TestGoldenCoversEveryOp(t *testing.T) {
	g := loadGolden(t)
	seen := map[string]bool{}
	for _, c := range g.Cases {
		seen[c.Op] = true
	}
	for op := range goldenOps {
		if !seen[op] {
			t.Errorf("op %s has no golden case", op)
		}
	}
	for op := range goldenInPlace {
		if !seen[op] {
			t.Errorf("in-place op %s has no golden case", op)
		}
	}
	for _, op := range []string{"adam", "sgd"} {
		if !seen[op] {
			t.Errorf("optimizer %s has no golden case", op)
		}
	}
}
