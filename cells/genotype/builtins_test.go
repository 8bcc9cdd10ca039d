package genotype

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestBuiltins(t *testing.T) {
	if got, want := BuiltinNames(), []string{"auto_meta", "metanas_in_v2", "metanas_og_v2"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("BuiltinNames() = %v, want %v", got, want)
	}
	tests := []struct {
		name   string
		nodes  int
		concat []int
	}{
		{"metanas_og_v2", 3, []int{2, 3, 4}},
		{"METANAS-OG-V2", 3, []int{2, 3, 4}},
		{"metanas_in_v2", 3, []int{2, 3, 4}},
		{"auto_meta", 5, []int{2, 3, 4, 5, 6}},
	}
	for _, tt := range tests {
		g, err := Builtin(tt.name)
		if err != nil {
			t.Errorf("Builtin(%q): %v", tt.name, err)
			continue
		}
		if n, r := g.Nodes(); n != tt.nodes || r != tt.nodes {
			t.Errorf("%s: Nodes() = %d, %d, want %d", tt.name, n, r, tt.nodes)
		}
		if !reflect.DeepEqual(g.NormalConcat, tt.concat) || !reflect.DeepEqual(g.ReduceConcat, tt.concat) {
			t.Errorf("%s: concat %v %v, want %v", tt.name, g.NormalConcat, g.ReduceConcat, tt.concat)
		}
		if err := g.Validate(FewShot); err != nil {
			t.Errorf("%s: Validate(FewShot): %v", tt.name, err)
		}
	}
	// Builtin returns copies.
	g := mustBuiltin(t, AutoMeta)
	g.Normal[0][0].Op = "changed"
	if mustBuiltin(t, AutoMeta).Normal[0][0].Op != OpConv3x3 {
		t.Fatal("Builtin returned shared memory")
	}
	if _, err := Builtin("metanas_og_v3"); !errors.Is(err, ErrUnknownGenotype) ||
		!strings.Contains(err.Error(), `"metanas_og_v3"`) || !strings.Contains(err.Error(), "metanas_og_v2") {
		t.Errorf("Builtin(unknown) error %v: want ErrUnknownGenotype naming it and the builtins", err)
	}
}

func TestLookup(t *testing.T) {
	og := mustBuiltin(t, MetaNASOmniglotV2)
	tests := []struct {
		in   string
		want Genotype
		err  error
	}{
		{"metanas_og_v2", og, nil},
		{"  metanas_og_v2\n", og, nil},
		{"metanas-og-v2", og, nil},
		{ogV2String, og, nil},
		{strings.ReplaceAll(ogV2String, "'", `"`), og, nil},
		{`{"normal":[[["dil_conv_3x3",0],["sep_conv_3x3",1]],[["avg_pool_3x3",0],["sep_conv_3x3",1]],[["conv_1x5_5x1",0],["conv_3x3",2]]],` +
			`"reduce":[[["skip_connect",0],["sep_conv_3x3",1]],[["conv_3x3",0],["dil_conv_3x3",1]],[["dil_conv_3x3",0],["conv_1x5_5x1",2]]]}`, og, nil},
		{"darts_v2", Genotype{}, ErrUnknownGenotype},
		{"", Genotype{}, ErrUnknownGenotype},
		{"Genotype(normal=[[('conv_9x9', 0)]], reduce=[[('conv_3x3', 0)]])", Genotype{}, ErrUnknownOp},
		{"Genotype(normal=[[('conv_3x3', 0)]])", Genotype{}, ErrSyntax},
		{"Genotype(normal=[[('conv_3x3', 0)]", Genotype{}, ErrSyntax},
		{`{"normal": 1}`, Genotype{}, ErrSyntax},
	}
	for _, tt := range tests {
		g, err := Lookup(tt.in)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("Lookup(%q) error %v, want %v", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || !g.Equal(tt.want) {
			t.Errorf("Lookup(%q) = %v, %v; want %v", tt.in, g, err, tt.want)
		}
	}
}
