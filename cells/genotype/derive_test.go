package genotype

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestPairs(t *testing.T) {
	tests := []struct {
		n     int
		pairs [][2]int
	}{
		{0, nil},
		{1, nil},
		{2, [][2]int{{0, 1}}},
		{3, [][2]int{{0, 1}, {0, 2}, {1, 2}}},
		{4, [][2]int{{0, 1}, {0, 2}, {0, 3}, {1, 2}, {1, 3}, {2, 3}}},
		{5, [][2]int{{0, 1}, {0, 2}, {0, 3}, {0, 4}, {1, 2}, {1, 3}, {1, 4}, {2, 3}, {2, 4}, {3, 4}}},
	}
	for _, tt := range tests {
		if got := Pairs(tt.n); !reflect.DeepEqual(got, tt.pairs) {
			t.Errorf("Pairs(%d) = %v, want %v", tt.n, got, tt.pairs)
		}
		if got := NumPairs(tt.n); got != len(tt.pairs) {
			t.Errorf("NumPairs(%d) = %d, want %d", tt.n, got, len(tt.pairs))
		}
	}
}

// row returns n op weights of 0.1 with value v at the given op indices.
func row(n int, v float32, at ...int) []float32 {
	r := make([]float32, n)
	for i := range r {
		r[i] = 0.1
	}
	for _, k := range at {
		r[k] = v
	}
	return r
}

func TestDerivePairwiseCell(t *testing.T) {
	nf := len(FewShot)
	nd := len(DARTS)
	tests := []struct {
		name  string
		ops   [][][]float32
		pairs [][]float32
		prims []string
		want  [][]Edge
	}{
		{
			name: "three nodes",
			ops: [][][]float32{
				{row(nf, 0.5, 6), row(nf, 0.5, 5)},
				{row(nf, 0.9, 0), row(nf, 0.5, 1), row(nf, 0.5, 4)},
				{row(nf, 0.5, 3), row(nf, 0.9, 0), row(nf, 0.9, 1), row(nf, 0.5, 2)},
			},
			// Node 2 picks index 3, which is (1,2) in the reference's
			// lexicographic order.
			pairs: [][]float32{{0.7}, {0.1, 0.2, 0.7}, {0.1, 0.1, 0.2, 0.4, 0.1, 0.1}},
			prims: FewShot,
			want: [][]Edge{
				{{"dil_conv_3x3", 0}, {"sep_conv_3x3", 1}},
				{{"avg_pool_3x3", 1}, {"conv_3x3", 2}},
				{{"max_pool_3x3", 1}, {"avg_pool_3x3", 2}},
			},
		},
		{
			name:  "ties go to the first pair and the first op",
			ops:   [][][]float32{{row(nf, 0.1), row(nf, 0.1)}, {row(nf, 0.1), row(nf, 0.3, 2, 5), row(nf, 0.3, 4, 6)}},
			pairs: [][]float32{{0.2}, {0.1, 0.5, 0.5}},
			prims: FewShot,
			want:  [][]Edge{{{"max_pool_3x3", 0}, {"max_pool_3x3", 1}}, {{"max_pool_3x3", 0}, {"conv_3x3", 2}}},
		},
		{
			name:  "none is never chosen",
			ops:   [][][]float32{{row(nd, 0.9, 7), append(row(nd-1, 0.2, 4), 0.95)}},
			pairs: [][]float32{{1}},
			prims: DARTS,
			want:  [][]Edge{{{"max_pool_3x3", 0}, {"sep_conv_5x5", 1}}},
		},
		{
			name:  "raw negative alphas",
			ops:   [][][]float32{{{-3, -2, -1, -0.5, -4, -5, -6}, {-1, -1, -1, -1, -1, -1, -0.9}}},
			pairs: [][]float32{{-7}},
			prims: FewShot,
			want:  [][]Edge{{{"conv_1x5_5x1", 0}, {"dil_conv_3x3", 1}}},
		},
	}
	for _, tt := range tests {
		got, err := DerivePairwiseCell(tt.ops, tt.pairs, tt.prims)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: DerivePairwiseCell = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDeriveDARTSCell(t *testing.T) {
	nf := len(FewShot)
	nd := len(DARTS)
	tests := []struct {
		name  string
		ops   [][][]float32
		prims []string
		want  [][]Edge
	}{
		{
			name: "top two inputs, strongest first",
			ops: [][][]float32{
				{row(nf, 0.3, 4), row(nf, 0.6, 1)},
				{row(nf, 0.3, 0), row(nf, 0.5, 5), row(nf, 0.6, 3)},
			},
			prims: FewShot,
			want:  [][]Edge{{{"avg_pool_3x3", 1}, {"conv_3x3", 0}}, {{"conv_1x5_5x1", 2}, {"sep_conv_3x3", 1}}},
		},
		{
			// Input 0 of node 1 is dominated by none, so its best real op
			// is weak and the input is dropped.
			name: "none excluded from op and input choice",
			ops: [][][]float32{
				{row(nd, 0.1), row(nd, 0.2, 0)},
				{row(nd, 0.9, 7), row(nd, 0.4, 3), row(nd, 0.3, 6)},
			},
			prims: DARTS,
			want:  [][]Edge{{{"max_pool_3x3", 1}, {"max_pool_3x3", 0}}, {{"sep_conv_3x3", 1}, {"dil_conv_5x5", 2}}},
		},
		{
			name:  "ties go to the lower input and op",
			ops:   [][][]float32{{row(nf, 0.1), row(nf, 0.1)}, {row(nf, 0.1), row(nf, 0.1), row(nf, 0.1)}},
			prims: FewShot,
			want:  [][]Edge{{{"max_pool_3x3", 0}, {"max_pool_3x3", 1}}, {{"max_pool_3x3", 0}, {"max_pool_3x3", 1}}},
		},
	}
	for _, tt := range tests {
		got, err := DeriveDARTSCell(tt.ops, tt.prims)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: DeriveDARTSCell = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestDeriveErrors(t *testing.T) {
	nf := len(FewShot)
	good := [][][]float32{{row(nf, 0.5, 1), row(nf, 0.5, 2)}}
	nan := float32(math.NaN())
	tests := []struct {
		name  string
		ops   [][][]float32
		pairs [][]float32 // nil: DARTS derivation only
		prims []string
		msg   string
	}{
		{"no nodes", nil, nil, FewShot, "no nodes"},
		{"too few rows", [][][]float32{{row(nf, 0.5, 1)}}, nil, FewShot, "node 0: 1 input rows, want 2"},
		{"too many rows", [][][]float32{good[0], {row(nf, 1), row(nf, 1), row(nf, 1), row(nf, 1)}}, nil, FewShot, "node 1: 4 input rows, want 3"},
		{"wrong op count", [][][]float32{{row(nf, 0.5, 1), row(nf-1, 0.5, 2)}}, nil, FewShot, "node 0, input 1: 6 op weights, want 7"},
		{"NaN op weight", [][][]float32{{row(nf, nan, 3), row(nf, 0.5, 2)}}, nil, FewShot, "node 0, input 0: weight of conv_1x5_5x1 is NaN"},
		{"only none", [][][]float32{{{1}, {1}}}, nil, []string{"none"}, "no op other than"},
		{"pair nodes mismatch", good, [][]float32{{1}, {1, 1, 1}}, FewShot, "2 nodes of pair weights for 1 nodes"},
		{"pair count", good, [][]float32{{1, 2}}, FewShot, "node 0: 2 pair weights, want 1"},
		{"NaN pair weight", good, [][]float32{{nan}}, FewShot, "node 0: pair weight 0 is NaN"},
	}
	for _, tt := range tests {
		var errs []error
		if tt.pairs == nil {
			_, err := DeriveDARTSCell(tt.ops, tt.prims)
			errs = append(errs, err)
			_, err = DeriveDARTS(tt.ops, good, tt.prims)
			errs = append(errs, err)
		}
		pairs := tt.pairs
		if pairs == nil {
			pairs = make([][]float32, len(tt.ops))
			for i := range pairs {
				pairs[i] = make([]float32, NumPairs(i+2))
			}
		}
		_, err := DerivePairwiseCell(tt.ops, pairs, tt.prims)
		errs = append(errs, err)
		_, err = DerivePairwise(CellWeights{good, [][]float32{{1}}}, CellWeights{tt.ops, pairs}, tt.prims)
		errs = append(errs, err)
		for i, err := range errs {
			if !errors.Is(err, ErrWeights) || !strings.Contains(err.Error(), tt.msg) || !strings.HasPrefix(err.Error(), "genotype: ") {
				t.Errorf("%s (call %d): error %v, want ErrWeights containing %q", tt.name, i, err, tt.msg)
			}
		}
	}
	if _, err := DerivePairwise(CellWeights{good, [][]float32{{1}}}, CellWeights{nil, nil}, FewShot); err == nil ||
		!strings.Contains(err.Error(), "reduce cell") {
		t.Errorf("DerivePairwise error %v does not name the reduce cell", err)
	}
	if _, err := DeriveDARTS(nil, good, FewShot); err == nil || !strings.Contains(err.Error(), "normal cell") {
		t.Errorf("DeriveDARTS error %v does not name the normal cell", err)
	}
}

// TestDerivePairwiseReproducesBuiltin derives metanas_og_v2 back from weights
// that favour its edges.
func TestDerivePairwiseReproducesBuiltin(t *testing.T) {
	for _, name := range []string{MetaNASOmniglotV2, MetaNASMiniImagenetV2} {
		want := mustBuiltin(t, name)
		weights := func(nodes [][]Edge) CellWeights {
			var w CellWeights
			for i, node := range nodes {
				rows := make([][]float32, i+2)
				for j := range rows {
					rows[j] = row(len(FewShot), 0.1)
				}
				for _, e := range node {
					k, err := OpIndex(e.Op, FewShot)
					if err != nil {
						t.Fatal(err)
					}
					rows[e.Input][k] = 0.8
				}
				pw := make([]float32, NumPairs(i+2))
				for k, p := range Pairs(i + 2) {
					if p[0] == node[0].Input && p[1] == node[1].Input {
						pw[k] = 1
					}
				}
				w.Ops = append(w.Ops, rows)
				w.Pairs = append(w.Pairs, pw)
			}
			return w
		}
		got, err := DerivePairwise(weights(want.Normal), weights(want.Reduce), FewShot)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !got.Equal(want) {
			t.Errorf("%s: DerivePairwise = %v, want %v", name, got, want)
		}
		if err := got.Validate(FewShot); err != nil {
			t.Errorf("%s: derived genotype invalid: %v", name, err)
		}
		dg, err := DeriveDARTS(weights(want.Normal).Ops, weights(want.Reduce).Ops, FewShot)
		if err != nil || dg.Validate(FewShot) != nil {
			t.Errorf("%s: DeriveDARTS = %v, %v", name, dg, err)
		}
	}
}
