package genotype

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestJSONRoundTrip(t *testing.T) {
	for _, name := range BuiltinNames() {
		g := mustBuiltin(t, name)
		data, err := json.Marshal(g)
		if err != nil {
			t.Fatalf("%s: Marshal: %v", name, err)
		}
		var back Genotype
		if err := json.Unmarshal(data, &back); err != nil {
			t.Fatalf("%s: Unmarshal(%s): %v", name, data, err)
		}
		if !back.Equal(g) {
			t.Errorf("%s: JSON round trip = %v, want %v", name, back, g)
		}
	}
}

func TestJSONMarshalFormat(t *testing.T) {
	g := Genotype{
		Normal:       [][]Edge{{{"conv_3x3", 0}, {"skip_connect", 1}}},
		NormalConcat: []int{2},
		Reduce:       [][]Edge{{{"max_pool_3x3", 0}, {"avg_pool_3x3", 1}}},
		ReduceConcat: []int{2},
	}
	tests := []struct {
		name string
		g    Genotype
		want string
	}{
		{"small", g, `{"normal":[[["conv_3x3",0],["skip_connect",1]]],"normal_concat":[2],"reduce":[[["max_pool_3x3",0],["avg_pool_3x3",1]]],"reduce_concat":[2]}`},
		{"zero", Genotype{}, `{"normal":[],"normal_concat":[],"reduce":[],"reduce_concat":[]}`},
		{"nil node", Genotype{Normal: [][]Edge{nil}}, `{"normal":[[]],"normal_concat":[],"reduce":[],"reduce_concat":[]}`},
	}
	for _, tt := range tests {
		data, err := json.Marshal(tt.g)
		if err != nil || string(data) != tt.want {
			t.Errorf("%s: Marshal = %s, %v; want %s", tt.name, data, err, tt.want)
		}
	}
	// Marshalling through a pointer and inside a struct gives the same form.
	wrapped, err := json.Marshal(struct {
		G *Genotype `json:"g"`
	}{&g})
	if err != nil || !strings.Contains(string(wrapped), `"normal":[[["conv_3x3",0]`) {
		t.Errorf("Marshal in struct = %s, %v", wrapped, err)
	}
}

func TestJSONUnmarshalForms(t *testing.T) {
	small := Genotype{
		Normal:       [][]Edge{{{"conv_3x3", 0}, {"skip_connect", 1}}},
		NormalConcat: []int{2},
		Reduce:       [][]Edge{{{"max_pool_3x3", 0}, {"avg_pool_3x3", 1}}},
		ReduceConcat: []int{2},
	}
	tests := []struct {
		name string
		in   string
		want Genotype
	}{
		{"arrays", `{"normal":[[["conv_3x3",0],["skip_connect",1]]],"normal_concat":[2],"reduce":[[["max_pool_3x3",0],["avg_pool_3x3",1]]],"reduce_concat":[2]}`, small},
		{"objects", `{"normal":[[{"op":"conv_3x3","input":0},{"input":1,"op":"skip_connect"}]],"normal_concat":[2],"reduce":[[{"op":"max_pool_3x3","input":0},{"op":"avg_pool_3x3","input":1}]],"reduce_concat":[2]}`, small},
		{"mixed, spaced", "{ \"reduce\" : [[ [\"max_pool_3x3\", 0], {\"op\": \"avg_pool_3x3\", \"input\": 1} ]],\n \"normal\": [[[\"conv_3x3\", 0], [\"skip_connect\", 1]]] }", small},
		{"string form", `"` + strings.ReplaceAll(small.String(), "'", `\"`) + `"`, small},
		{"builtin string", `"` + ogV2String + `"`, mustBuiltin(t, MetaNASOmniglotV2)},
	}
	for _, tt := range tests {
		var g Genotype
		if err := json.Unmarshal([]byte(tt.in), &g); err != nil {
			t.Errorf("%s: Unmarshal(%s): %v", tt.name, tt.in, err)
			continue
		}
		if !g.Equal(tt.want) {
			t.Errorf("%s: Unmarshal = %v, want %v", tt.name, g, tt.want)
		}
	}

	// null leaves the value alone, as with the standard types.
	g := small.Clone()
	if err := json.Unmarshal([]byte("null"), &g); err != nil || !g.Equal(small) {
		t.Errorf("Unmarshal(null) = %v, %v", g, err)
	}
	var cfg struct {
		Genotype *Genotype `json:"genotype"`
	}
	if err := json.Unmarshal([]byte(`{"genotype": null}`), &cfg); err != nil || cfg.Genotype != nil {
		t.Errorf("Unmarshal nested null = %v, %v", cfg.Genotype, err)
	}
}

func TestJSONUnmarshalErrors(t *testing.T) {
	const edges = `[[["conv_3x3",0],["skip_connect",1]]]`
	tests := []struct {
		name string
		in   string
		err  error
		msg  string
	}{
		{"not json", `{"normal": [`, ErrSyntax, ""},
		{"three-element edge", `{"normal":[[["conv_3x3",0,1]]],"reduce":` + edges + `}`, ErrSyntax, "3 elements"},
		{"non-integer input", `{"normal":[[["conv_3x3",1.5]]],"reduce":` + edges + `}`, ErrSyntax, "input 1.5 is not an integer"},
		{"string input", `{"normal":[[["conv_3x3","1"]]],"reduce":` + edges + `}`, ErrSyntax, `input "1" is not an integer`},
		{"op not string", `{"normal":[[[3,1]]],"reduce":` + edges + `}`, ErrSyntax, "op 3 is not a string"},
		{"object missing input", `{"normal":[[{"op":"conv_3x3"}]],"reduce":` + edges + `}`, ErrSyntax, "want {"},
		{"object unknown key", `{"normal":[[{"op":"conv_3x3","input":0,"x":1}]],"reduce":` + edges + `}`, ErrSyntax, "unknown field"},
		{"edge scalar", `{"normal":[["conv_3x3"]],"reduce":` + edges + `}`, ErrSyntax, "want [\"op\", input]"},
		{"unknown key", `{"normal":` + edges + `,"reduce":` + edges + `,"extra":1}`, ErrSyntax, "extra"},
		{"missing reduce", `{"normal":` + edges + `}`, ErrSyntax, `missing key "reduce"`},
		{"missing normal", `{"reduce":` + edges + `}`, ErrSyntax, `missing key "normal"`},
		{"unknown op", `{"normal":[[["conv_9x9",0]]],"reduce":` + edges + `}`, ErrUnknownOp, `normal cell, node 0, edge 0: unknown op "conv_9x9"`},
		{"bad input index", `{"normal":` + edges + `,"reduce":[[["conv_3x3",2]]]}`, ErrInputRange, "reduce cell, node 0, edge 0"},
		{"bad concat", `{"normal":` + edges + `,"normal_concat":[2,3],"reduce":` + edges + `}`, ErrConcat, "normal cell, concat[1]"},
		{"bad string form", `"Genotype(normal=[[('conv_9x9', 0)]], reduce=[])"`, ErrUnknownOp, "offset 19"},
		{"array", `[1, 2]`, ErrSyntax, ""},
	}
	for _, tt := range tests {
		var g Genotype
		err := json.Unmarshal([]byte(tt.in), &g)
		if err == nil {
			t.Errorf("%s: Unmarshal(%s): no error", tt.name, tt.in)
			continue
		}
		// encoding/json reports its own syntax errors before calling us.
		if tt.name != "not json" && !errors.Is(err, tt.err) {
			t.Errorf("%s: error %v does not wrap %v", tt.name, err, tt.err)
		}
		if !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: error %q does not contain %q", tt.name, err, tt.msg)
		}
		if !g.Equal(Genotype{}) {
			t.Errorf("%s: failed Unmarshal changed the value to %v", tt.name, g)
		}
	}
	// Trailing data is rejected when UnmarshalJSON is called directly.
	var g Genotype
	if err := g.UnmarshalJSON([]byte(`{"normal":` + edges + `,"reduce":` + edges + `} {}`)); !errors.Is(err, ErrSyntax) {
		t.Errorf("trailing data: %v", err)
	}
}
