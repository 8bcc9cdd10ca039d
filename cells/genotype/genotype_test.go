package genotype

import (
	"errors"
	"strings"
	"testing"
)

const ogV2String = "Genotype(normal=[[('dil_conv_3x3', 0), ('sep_conv_3x3', 1)], [('avg_pool_3x3', 0), ('sep_conv_3x3', 1)], [('conv_1x5_5x1', 0), ('conv_3x3', 2)]], normal_concat=range(2, 5), reduce=[[('skip_connect', 0), ('sep_conv_3x3', 1)], [('conv_3x3', 0), ('dil_conv_3x3', 1)], [('dil_conv_3x3', 0), ('conv_1x5_5x1', 2)]], reduce_concat=range(2, 5))"

const inV2String = "Genotype(normal=[[('conv_1x5_5x1', 0), ('conv_3x3', 1)], [('conv_3x3', 0), ('sep_conv_3x3', 2)], [('dil_conv_3x3', 1), ('conv_1x5_5x1', 3)]], normal_concat=range(2, 5), reduce=[[('sep_conv_3x3', 0), ('conv_3x3', 1)], [('conv_3x3', 0), ('sep_conv_3x3', 2)], [('conv_3x3', 0), ('dil_conv_3x3', 1)]], reduce_concat=range(2, 5))"

const autoMetaCellString = "[[('conv_3x3', 1), ('max_pool_3x3', 1)], [('conv_1x5_5x1', 2), ('max_pool_3x3', 2)], [('conv_3x3', 2), ('conv_1x5_5x1', 3)], [('conv_3x3', 3), ('conv_3x3', 3)], [('conv_1x5_5x1', 3), ('conv_3x3', 2)]]"

const autoMetaString = "Genotype(normal=" + autoMetaCellString + ", normal_concat=range(2, 7), reduce=" + autoMetaCellString + ", reduce_concat=range(2, 7))"

func mustBuiltin(t *testing.T, name string) Genotype {
	t.Helper()
	g, err := Builtin(name)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestStringBuiltins(t *testing.T) {
	tests := []struct {
		name string
		want string
	}{
		{MetaNASOmniglotV2, ogV2String},
		{MetaNASMiniImagenetV2, inV2String},
		{AutoMeta, autoMetaString},
	}
	for _, tt := range tests {
		if got := mustBuiltin(t, tt.name).String(); got != tt.want {
			t.Errorf("%s.String() =\n%s\nwant\n%s", tt.name, got, tt.want)
		}
	}
}

func TestStringConcatAndQuoting(t *testing.T) {
	cell := [][]Edge{{{"conv_3x3", 0}, {"skip_connect", 1}}}
	tests := []struct {
		name   string
		concat []int
		op     string
		want   string
	}{
		{"range", []int{2, 3, 4}, "conv_3x3", "range(2, 5)"},
		{"single", []int{2}, "conv_3x3", "range(2, 3)"},
		{"gap", []int{2, 3, 5}, "conv_3x3", "[2, 3, 5]"},
		{"descending", []int{3, 2}, "conv_3x3", "[3, 2]"},
		{"empty", nil, "conv_3x3", "[]"},
		{"quote in op", []int{2}, "it's", `("it's", 0)`},
		{"both quotes", []int{2}, `a'b"c`, `('a\'b"c', 0)`},
	}
	for _, tt := range tests {
		c := [][]Edge{{{tt.op, 0}, {"skip_connect", 1}}}
		g := Genotype{Normal: c, NormalConcat: tt.concat, Reduce: cell, ReduceConcat: []int{2}}
		if s := g.String(); !strings.Contains(s, tt.want) {
			t.Errorf("%s: String() = %s, want it to contain %s", tt.name, s, tt.want)
		}
	}
}

func TestCountsAndEqual(t *testing.T) {
	og := mustBuiltin(t, MetaNASOmniglotV2)
	am := mustBuiltin(t, AutoMeta)
	tests := []struct {
		name         string
		g            Genotype
		nodesN, nodR int
		edgN, edgR   int
	}{
		{"og_v2", og, 3, 3, 6, 6},
		{"auto_meta", am, 5, 5, 10, 10},
		{"zero", Genotype{}, 0, 0, 0, 0},
		{"uneven", Genotype{Normal: [][]Edge{{{"conv_3x3", 0}}}, Reduce: [][]Edge{{{"conv_3x3", 0}, {"conv_3x3", 1}}, {{"conv_3x3", 2}}}}, 1, 2, 1, 3},
	}
	for _, tt := range tests {
		n, r := tt.g.Nodes()
		en, er := tt.g.Edges()
		if n != tt.nodesN || r != tt.nodR || en != tt.edgN || er != tt.edgR {
			t.Errorf("%s: Nodes() = %d, %d, Edges() = %d, %d; want %d, %d, %d, %d", tt.name, n, r, en, er, tt.nodesN, tt.nodR, tt.edgN, tt.edgR)
		}
	}

	changed := func(f func(g *Genotype)) Genotype { g := og.Clone(); f(&g); return g }
	eqTests := []struct {
		name string
		a, b Genotype
		want bool
	}{
		{"same", og, mustBuiltin(t, MetaNASOmniglotV2), true},
		{"different builtins", og, mustBuiltin(t, MetaNASMiniImagenetV2), false},
		{"op", og, changed(func(g *Genotype) { g.Normal[0][0].Op = "conv_3x3" }), false},
		{"input", og, changed(func(g *Genotype) { g.Reduce[2][1].Input = 1 }), false},
		{"extra edge", og, changed(func(g *Genotype) { g.Normal[1] = append(g.Normal[1], Edge{"conv_3x3", 2}) }), false},
		{"concat", og, changed(func(g *Genotype) { g.ReduceConcat = []int{2, 4} }), false},
		{"nil vs empty", Genotype{NormalConcat: nil}, Genotype{NormalConcat: []int{}, Normal: [][]Edge{}}, true},
	}
	for _, tt := range eqTests {
		if got := tt.a.Equal(tt.b); got != tt.want {
			t.Errorf("%s: Equal = %v, want %v", tt.name, got, tt.want)
		}
	}
	// Clone is deep.
	c := og.Clone()
	c.Normal[0][0].Op = "x"
	c.NormalConcat[0] = 9
	if og.Normal[0][0].Op != OpDilConv3x3 || og.NormalConcat[0] != 2 {
		t.Fatal("Clone shares memory with the original")
	}
}

func TestValidate(t *testing.T) {
	og := mustBuiltin(t, MetaNASOmniglotV2)
	changed := func(f func(g *Genotype)) Genotype { g := og.Clone(); f(&g); return g }
	tests := []struct {
		name  string
		g     Genotype
		prims []string
		err   error    // nil: valid
		parts []string // substrings of the message
	}{
		{"og few-shot", og, FewShot, nil, nil},
		{"og known", og, nil, nil, nil},
		{"auto_meta", mustBuiltin(t, AutoMeta), FewShot, nil, nil},
		{"og darts set", og, DARTS, ErrUnknownOp, []string{"normal cell, node 2, edge 0", `"conv_1x5_5x1"`, "valid: max_pool_3x3"}},
		{"unknown op reduce", changed(func(g *Genotype) { g.Reduce[1][1].Op = "conv_7x7" }), FewShot, ErrUnknownOp, []string{"reduce cell, node 1, edge 1", `"conv_7x7"`}},
		{"input too large", changed(func(g *Genotype) { g.Normal[0][1].Input = 2 }), FewShot, ErrInputRange, []string{"normal cell, node 0, edge 1", `"sep_conv_3x3"`, "input 2", "[0, 2)"}},
		{"input negative", changed(func(g *Genotype) { g.Reduce[2][0].Input = -1 }), FewShot, ErrInputRange, []string{"reduce cell, node 2, edge 0", "input -1", "[0, 4)"}},
		{"empty node", changed(func(g *Genotype) { g.Normal[1] = nil }), FewShot, ErrEmptyNode, []string{"normal cell, node 1"}},
		{"no nodes", changed(func(g *Genotype) { g.Reduce = nil }), FewShot, ErrNoNodes, []string{"reduce cell"}},
		{"concat empty", changed(func(g *Genotype) { g.NormalConcat = nil }), FewShot, ErrConcat, []string{"normal cell", "empty"}},
		{"concat too large", changed(func(g *Genotype) { g.ReduceConcat = []int{2, 3, 5} }), FewShot, ErrConcat, []string{"reduce cell, concat[2]", "index 5", "[2, 5)"}},
		{"concat input", changed(func(g *Genotype) { g.NormalConcat = []int{1, 2} }), FewShot, ErrConcat, []string{"normal cell, concat[0]", "index 1"}},
		{"concat repeated", changed(func(g *Genotype) { g.NormalConcat = []int{2, 3, 3} }), FewShot, ErrConcat, []string{"concat[2]", "repeated"}},
		{"empty set", og, []string{}, ErrUnknownPrimitiveSet, nil},
	}
	for _, tt := range tests {
		err := tt.g.Validate(tt.prims)
		if tt.err == nil {
			if err != nil {
				t.Errorf("%s: Validate: %v", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: Validate error %v, want %v", tt.name, err, tt.err)
			continue
		}
		for _, p := range tt.parts {
			if !strings.Contains(err.Error(), p) {
				t.Errorf("%s: error %q does not contain %q", tt.name, err, p)
			}
		}
	}
}
