package torch

import (
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

func TestCreationAndConversion(t *testing.T) {
	s := NewScope()
	defer s.Close()
	cases := []struct {
		name  string
		x     *Tensor
		dtype DType
		shape []int64
		want  []float64
	}{
		{"full", s.Full([]int64{2, 2}, -1.5, CPU), Float32, []int64{2, 2}, []float64{-1.5, -1.5, -1.5, -1.5}},
		{"zeros", s.Zeros([]int64{3}, CPU), Float32, []int64{3}, []float64{0, 0, 0}},
		{"ones 0-d", s.Ones(nil, CPU), Float32, []int64{}, []float64{1}},
		{"full int64", s.FullOf([]int64{2}, 7, Int64, CPU, false), Int64, []int64{2}, []float64{7, 7}},
		{"full float64", s.FullOf([]int64{1}, 0.1, Float64, CPU, false), Float64, []int64{1}, []float64{0.1}},
		{"arange", s.Arange(5, CPU), Int64, []int64{5}, []float64{0, 1, 2, 3, 4}},
		{"images", s.FromImages([]uint8{0, 51, 255, 102}, []int64{1, 1, 2, 2}, 1.0/255, CPU), Float32, []int64{1, 1, 2, 2}, []float64{0, 0.2, 1, 0.4}},
		{"to int64 truncates", s.To(s.FromFloat32([]float32{1.7, -2.7}, []int64{2}, CPU), Int64, CPU), Int64, []int64{2}, []float64{1, -2}},
		{"to float64", s.To(s.FromInt64([]int64{3, -4}, []int64{2}, CPU), Float64, CPU), Float64, []int64{2}, []float64{3, -4}},
		{"to bool", s.To(s.FromFloat32([]float32{0, 2}, []int64{2}, CPU), Bool, CPU), Bool, []int64{2}, []float64{0, 1}},
		{"to float16", s.To(s.FromFloat32([]float32{0.5, 1024}, []int64{2}, CPU), Float16, CPU), Float16, []int64{2}, []float64{0.5, 1024}},
		{"float64 data", s.FromFloat64([]float64{math.Pi}, []int64{1}, CPU), Float64, []int64{1}, []float64{math.Pi}},
		{"pin memory", s.PinMemory(s.Ones([]int64{2}, CPU)), Float32, []int64{2}, []float64{1, 1}},
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		info, err := c.x.Info()
		if err != nil || info.DType != c.dtype || info.Device != CPU || !info.Defined || info.RequiresGrad {
			t.Errorf("%s: info %+v, err %v; want dtype %v on the CPU", c.name, info, err, c.dtype)
		}
		if sh := c.x.MustShape(); !sameShape(sh, c.shape) {
			t.Errorf("%s: shape %v, want %v", c.name, sh, c.shape)
		}
		v, err := c.x.Float64s()
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		compareValues(t, c.name, v, c.want, false, tolerance{Rel: 1e-6, Abs: 1e-7})
	}
	if v, err := cases[5].x.Int64s(); err != nil || fmt.Sprint(v) != "[0 1 2 3 4]" {
		t.Errorf("Int64s: %v, %v", v, err)
	}
	if v, err := cases[2].x.Item(); err != nil || v != 1 {
		t.Errorf("Item: %v, %v", v, err)
	}
	if p := s.FullOf([]int64{2}, 1, Float32, CPU, true); !mustInfo(t, p).RequiresGrad {
		t.Error("FullOf(requiresGrad) does not require grad")
	}
	if !strings.Contains(cases[0].x.String(), "-1.5") {
		t.Errorf("String() = %q", cases[0].x.String())
	}
	for d, want := range map[DType][2]any{Float32: {"float32", 4}, Float64: {"float64", 8}, Int64: {"int64", 8}, Bool: {"bool", 1}, Float16: {"float16", 2}, BFloat16: {"bfloat16", 2}, Uint8: {"uint8", 1}} {
		if d.String() != want[0] || d.Size() != want[1] {
			t.Errorf("%d: %s %d, want %v", int(d), d, d.Size(), want)
		}
	}
	if CPU.String() != "cpu" || (Device{CUDA: true, Index: 2}).String() != "cuda:2" || CPU.Check() != nil {
		t.Error("device names")
	}
}

func mustInfo(t *testing.T, x *Tensor) Info {
	t.Helper()
	info, err := x.Info()
	if err != nil {
		t.Fatal(err)
	}
	return info
}

func TestRandomStreams(t *testing.T) {
	s := NewScope()
	defer s.Close()
	ManualSeed(42)
	a := values(t, s.Randn([]int64{64}, CPU, false))
	ManualSeed(42)
	b := values(t, s.Randn([]int64{64}, CPU, false))
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Error("Randn differs after reseeding with the same seed")
	}
	if p := s.Randn([]int64{2}, CPU, true); !mustInfo(t, p).RequiresGrad {
		t.Error("Randn(requiresGrad) does not require grad")
	}
	u := values(t, s.Rand([]int64{1000}, CPU))
	mean := 0.0
	for _, v := range u {
		if v < 0 || v >= 1 {
			t.Fatalf("Rand value %v outside [0,1)", v)
		}
		mean += float64(v) / float64(len(u))
	}
	if math.Abs(mean-0.5) > 0.05 {
		t.Errorf("Rand mean %.3f", mean)
	}
	for _, p := range []float64{0, 1} {
		for _, v := range values(t, s.Bernoulli([]int64{100}, p, CPU)) {
			if float64(v) != p {
				t.Fatalf("Bernoulli(%g) drew %v", p, v)
			}
		}
	}
	ones := 0.0
	for _, v := range values(t, s.Bernoulli([]int64{10000}, 0.3, CPU)) {
		ones += float64(v)
	}
	if math.Abs(ones/10000-0.3) > 0.03 {
		t.Errorf("Bernoulli(0.3) mean %.3f", ones/10000)
	}

	// Private generators: the same seed gives the same stream whatever else draws numbers.
	g1, err := NewGenerator(7, CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer g1.Close()
	g2, _ := NewGenerator(7, CPU)
	defer g2.Close()
	g3, _ := NewGenerator(8, CPU)
	defer g3.Close()
	x1 := values(t, s.RandGen([]int64{32}, CPU, g1))
	s.Rand([]int64{100}, CPU) // the default generator does not disturb g2
	x2 := values(t, s.RandGen([]int64{32}, CPU, g2))
	x3 := values(t, s.RandGen([]int64{32}, CPU, g3))
	if fmt.Sprint(x1) != fmt.Sprint(x2) {
		t.Error("generators with the same seed differ")
	}
	if fmt.Sprint(x1) == fmt.Sprint(x3) {
		t.Error("generators with different seeds agree")
	}
	if next := values(t, s.RandGen([]int64{32}, CPU, g1)); fmt.Sprint(next) == fmt.Sprint(x1) {
		t.Error("a generator repeats its stream")
	}
	g1.Seed(7)
	if again := values(t, s.RandGen([]int64{32}, CPU, g1)); fmt.Sprint(again) != fmt.Sprint(x1) {
		t.Error("Seed does not restart the stream")
	}
	g1.Seed(11)
	g2.Seed(11)
	m1 := values(t, s.BernoulliGen([]int64{64}, 0.5, CPU, g1))
	m2 := values(t, s.BernoulliGen([]int64{64}, 0.5, CPU, g2))
	if fmt.Sprint(m1) != fmt.Sprint(m2) {
		t.Error("BernoulliGen differs for equal seeds")
	}
	if d := s.RandGen([]int64{4}, CPU, nil); !d.Valid() {
		t.Error("RandGen with the default generator failed")
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	g1.Close()
	g1.Close() // twice is harmless
}

// TestMixedNodeDropPath checks the drop-path part of the fused node: each droppable output
// is either dropped or scaled by 1/(1-p) per sample, non-droppable ones never, and a seeded
// generator makes the masks reproducible.
func TestMixedNodeDropPath(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const N = 64
	ones := s.Ones([]int64{N, 1, 1, 1}, CPU)
	outs := []*Tensor{ones, s.MulScalar(ones, 10)} // sample value = mask0*c0 + 10*mask1*c1
	wops := s.FromFloat32([]float32{0.25, 0.75}, []int64{1, 2}, CPU)
	idx := []int64{0, 1}
	run := func(seed uint64, drop []bool) []float32 {
		g, err := NewGenerator(seed, CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		return values(t, s.MixedNode(outs, nil, wops, nil, 1, idx, drop, 0.5, g))
	}
	a := run(3, []bool{true, true})
	b := run(3, []bool{true, true})
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Error("drop-path masks differ for equal generator seeds")
	}
	seen := map[float32]int{}
	for _, v := range a {
		seen[v]++
	}
	// 0.25*{0,2} + 7.5*{0,2}
	for v := range seen {
		if v != 0 && v != 0.5 && v != 15 && v != 15.5 {
			t.Errorf("sample value %v is not a drop-path combination", v)
		}
	}
	if len(seen) < 3 {
		t.Errorf("drop-path masks look constant: %v", seen)
	}
	for _, v := range run(4, []bool{false, true}) {
		if v != 0.25 && v != 15.25 {
			t.Fatalf("non-droppable output was dropped or scaled: %v", v)
		}
	}
	// Gradients through the masks: out[n] = c0*m0[n] + 10*c1*m1[n] with m in {0, 2}, so
	// d sum(out)/d c0 = sum_n m0[n] and d sum(out)/d c1 = 10 sum_n m1[n], and each output's
	// gradient is its samples' c*m. The masks are read back from the node's values.
	gs := s.Child()
	defer gs.Close()
	wg := gs.FromFloat32([]float32{0.25, 0.75}, []int64{1, 2}, CPU)
	o0, o1 := gs.Ones([]int64{N, 1, 1, 1}, CPU), gs.MulScalar(gs.Ones([]int64{N, 1, 1, 1}, CPU), 10)
	for _, x := range []*Tensor{wg, o0, o1} {
		if err := x.SetRequiresGrad(true); err != nil {
			t.Fatal(err)
		}
	}
	g, err := NewGenerator(5, CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	node := gs.MixedNode([]*Tensor{o0, o1}, nil, wg, nil, 1, idx, []bool{true, true}, 0.5, g)
	if err := gs.Sum(node).Backward(); err != nil {
		t.Fatal(err)
	}
	var m0, m1 []float32
	var sum0, sum1 float32
	for _, v := range values(t, node) {
		a, b := float32(0), float32(0)
		if v == 0.5 || v == 15.5 {
			a = 2
		}
		if v == 15 || v == 15.5 {
			b = 2
		}
		m0, m1 = append(m0, a), append(m1, b)
		sum0, sum1 = sum0+a, sum1+b
	}
	checkF32(t, "d/dc", gs.Grad(wg), []float32{sum0, 10 * sum1})
	want0, want1 := make([]float32, N), make([]float32, N)
	for n := range m0 {
		want0[n], want1[n] = 0.25*m0[n], 0.75*m1[n]
	}
	checkF32(t, "d/do0", gs.Grad(o0), want0)
	checkF32(t, "d/do1", gs.Grad(o1), want1)
	if err := gs.Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	bad := s.Child()
	defer bad.Close()
	bad.MixedNode(outs, nil, wops, nil, 1, []int64{0}, []bool{true, true}, 0, nil)
	wantErrContains(t, bad.Err(), "mixed_node")
}

func TestAliasingAndSyncs(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := s.FromFloat32([]float32{1, 2, 3}, []int64{3}, CPU)
	alias, det, clone := s.Alias(x), s.Detach(x), s.Clone(x)
	v := s.View(x, 3, 1)
	n0 := HostSyncs()
	s.Mul(s.AddScalar(x, 1), x)
	if HostSyncs() != n0 {
		t.Errorf("ops made %d host syncs", HostSyncs()-n0)
	}
	if err := x.Fill_(5); err != nil {
		t.Fatal(err)
	}
	for name, y := range map[string]*Tensor{"alias": alias, "detach": det, "view": v} {
		if got := values(t, y); got[0] != 5 {
			t.Errorf("%s does not share storage: %v", name, got)
		}
	}
	if got := values(t, clone); got[0] != 1 {
		t.Errorf("clone shares storage: %v", got)
	}
	if HostSyncs() <= n0 {
		t.Error("copies to Go memory are not counted as host syncs")
	}
	if err := Synchronize(CPU); err != nil {
		t.Error(err)
	}
	// Freeing one handle keeps the others.
	alias.Free()
	if got := values(t, x); got[2] != 5 {
		t.Errorf("x after freeing its alias: %v", got)
	}
	live := LiveTensors()
	g, err := x.Gotorch()
	if err != nil {
		t.Fatal(err)
	}
	if LiveTensors() != live {
		t.Errorf("the handle given to gotorch counts as live: %d, want %d", LiveTensors(), live)
	}
	back := s.FromGotorch(g)
	if err := back.Fill_(-1); err != nil {
		t.Fatal(err)
	}
	if got := values(t, x); got[1] != -1 {
		t.Errorf("gotorch handle does not share storage: %v", got)
	}
	defer SetNumThreads(NumThreads())
	SetNumThreads(1)
	if NumThreads() != 1 {
		t.Errorf("NumThreads = %d after SetNumThreads(1)", NumThreads())
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestCountOps: counting sees the ATen calls of an op and of its backward pass.
func TestCountOps(t *testing.T) {
	CountOps()
	s := NewScope()
	defer s.Close()
	x := s.Full([]int64{2, 3}, 1.5, CPU)
	if err := x.SetRequiresGrad(true); err != nil {
		t.Fatal(err)
	}
	before := OpCount()
	y := s.Sum(s.Mul(x, x))
	fwd := OpCount() - before
	if err := y.Backward(); err != nil {
		t.Fatal(err)
	}
	bwd := OpCount() - before - fwd
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	// aten::mul and aten::sum at least; the backward of mul(x, x) multiplies twice.
	if fwd < 2 || bwd < 2 {
		t.Errorf("counted %d ATen calls forward and %d backward; want at least 2 each", fwd, bwd)
	}
	t.Logf("ATen calls: %d forward, %d backward", fwd, bwd)
	n := OpCount()
	if _, err := x.Shape(); err != nil {
		t.Fatal(err)
	}
	if got := OpCount(); got != n {
		t.Errorf("reading a shape counted %d ATen calls; want 0", got-n)
	}
}

// profileMulChain profiles sum(x*x*x) and its backward pass from a reset profile, and
// returns the profile.
func profileMulChain(t *testing.T) []OpStat {
	t.Helper()
	return profiled(t, func() error {
		s := NewScope()
		defer s.Close()
		x := s.Full([]int64{4, 5}, 2, CPU)
		if err := x.SetRequiresGrad(true); err != nil {
			return err
		}
		if err := s.Sum(s.Mul(s.Mul(x, x), x)).Backward(); err != nil {
			return err
		}
		return s.Err()
	})
}

// TestProfileOps: the profile lists the ops run since the last reset with their call counts,
// names backward nodes, and starts empty after a reset.
func TestProfileOps(t *testing.T) {
	stats := profileMulChain(t)
	by := map[string]OpStat{}
	for i, st := range stats {
		by[st.Name] = st
		if st.SelfUS < 0 || st.Calls <= 0 {
			t.Errorf("%s: %d calls, %v us", st.Name, st.Calls, st.SelfUS)
		}
		if i > 0 && st.SelfUS > stats[i-1].SelfUS {
			t.Errorf("not sorted by self time: %s after %s", st.Name, stats[i-1].Name)
		}
	}
	// Two forward muls and, in the backward pass, two per MulBackward0 node.
	if got := by["aten::mul"].Calls; got < 2 {
		t.Errorf("aten::mul counted %d times, want at least 2 (profile: %v)", got, stats)
	}
	if got := by["MulBackward0"].Calls; got != 2 {
		t.Errorf("MulBackward0 counted %d times, want 2 (profile: %v)", got, stats)
	}
	if got := by["aten::sum"].Calls; got < 1 {
		t.Errorf("aten::sum counted %d times, want at least 1", got)
	}
	after, err := OpProfile(false)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != 0 {
		t.Errorf("profile after a reset: %v", after)
	}
	if inUse, _ := HostHeap(); inUse <= 0 {
		t.Errorf("C heap in use: %d bytes", inUse)
	}
}

// TestProfileOpsParents: with METANAS_PROFILE_PARENTS=2 (run in a child process, as the
// setting is read once) each call is keyed by its two innermost callers: the top-level
// multiplications as "- < aten::mul", the backward node's own as "... < MulBackward0 <
// aten::mul", and no key has more than two callers.
func TestProfileOpsParents(t *testing.T) {
	if os.Getenv("METANAS_PROFILE_PARENTS") != "2" {
		testutil.RerunWith(t, []string{"METANAS_PROFILE_PARENTS=2"}, "^TestProfileOpsParents$", "TestProfileOpsParents")
		return
	}
	stats := profileMulChain(t)
	top, backward := false, false
	for _, st := range stats {
		parts := strings.Split(st.Name, " < ")
		if len(parts) > 3 {
			t.Errorf("%q: more than two callers", st.Name)
		}
		top = top || st.Name == "- < aten::mul"
		backward = backward || (len(parts) == 3 && parts[1] == "MulBackward0" && parts[2] == "aten::mul")
	}
	if !top || !backward {
		t.Errorf("keys: top-level mul %v, MulBackward0's mul %v; profile %v", top, backward, stats)
	}
}
