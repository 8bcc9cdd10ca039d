package genotype

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRoundTripBuiltins(t *testing.T) {
	for _, name := range BuiltinNames() {
		g := mustBuiltin(t, name)
		s := g.String()
		got, err := Parse(s)
		if err != nil {
			t.Errorf("%s: Parse(String()): %v", name, err)
			continue
		}
		if !got.Equal(g) {
			t.Errorf("%s: Parse(String()) = %v, want %v", name, got, g)
		}
		if got.String() != s {
			t.Errorf("%s: String not stable:\n%s\n%s", name, got.String(), s)
		}
	}
}

func TestParseRoundTripOther(t *testing.T) {
	tests := []Genotype{
		{ // non-contiguous concat, three edges, repeated input
			Normal:       [][]Edge{{{"conv_3x3", 0}, {"skip_connect", 1}, {"none", 1}}, {{"sep_conv_5x5", 2}}, {{"avg_pool_3x3", 3}}},
			NormalConcat: []int{2, 4},
			Reduce:       [][]Edge{{{"max_pool_3x3", 1}}},
			ReduceConcat: []int{2},
		},
		{ // concat out of order
			Normal:       [][]Edge{{{"conv_3x3", 0}}, {{"conv_3x3", 2}}},
			NormalConcat: []int{3, 2},
			Reduce:       [][]Edge{{{"dil_conv_5x5", 1}}, {{"conv_3x3", 0}}},
			ReduceConcat: []int{2, 3},
		},
	}
	for i, g := range tests {
		got, err := Parse(g.String())
		if err != nil || !got.Equal(g) {
			t.Errorf("case %d: Parse(%s) = %v, %v", i, g, got, err)
		}
	}
}

const ogV2Reference = `Genotype(
    normal=[
        [("dil_conv_3x3", 0), ("sep_conv_3x3", 1)],
        [("avg_pool_3x3", 0), ("sep_conv_3x3", 1)],
        [("conv_1x5_5x1", 0), ("conv_3x3", 2)],
    ],
    normal_concat=range(2, 5),
    reduce=[
        [("skip_connect", 0), ("sep_conv_3x3", 1)],
        [("conv_3x3", 0), ("dil_conv_3x3", 1)],
        [("dil_conv_3x3", 0), ("conv_1x5_5x1", 2)],
    ],
    reduce_concat=range(2, 5),
)`

func TestParseVariants(t *testing.T) {
	og := mustBuiltin(t, MetaNASOmniglotV2)
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
		{"exact", ogV2String, og},
		{"double quotes", strings.ReplaceAll(ogV2String, "'", `"`), og},
		{"multi-line source form with trailing commas", ogV2Reference, og},
		{"lists for edges", listEdges(ogV2String), og},
		{"extra spaces", strings.NewReplacer("(", " (  ", ")", "  ) ", "[", "[ ", "]", "\t]\n", ",", " , ", "=", " = ").Replace(ogV2String), og},
		{"no spaces", strings.ReplaceAll(ogV2String, " ", ""), og},
		{"no Genotype prefix", strings.TrimPrefix(ogV2String, "Genotype"), og},
		{"bare keywords", strings.TrimSuffix(strings.TrimPrefix(ogV2String, "Genotype("), ")"), og},
		{"lower-case genotype", "genotype" + strings.TrimPrefix(ogV2String, "Genotype"), og},
		{"concat lists", strings.ReplaceAll(ogV2String, "range(2, 5)", "[2, 3, 4]"), og},
		{"concat tuple", strings.ReplaceAll(ogV2String, "range(2, 5)", "(2, 3, 4,)"), og},
		{"range with step", strings.ReplaceAll(ogV2String, "range(2, 5)", "range(2, 5, 1)"), og},
		{"unicode prefix", strings.ReplaceAll(ogV2String, "('", "(u'"), og},
		{"tuples for nodes", strings.NewReplacer("[(", "((", ")]", "))").Replace(ogV2String), og},
		{"fields reordered", "Genotype(reduce_concat=[2], reduce=[[('max_pool_3x3', 0), ('avg_pool_3x3', 1)]], normal=[[('conv_3x3', 0), ('skip_connect', 1)]], normal_concat=range(2, 3))", small},
		{"concat omitted", "Genotype(normal=[[('conv_3x3', 0), ('skip_connect', 1)]], reduce=[[('max_pool_3x3', 0), ('avg_pool_3x3', 1)]])", small},
		{"trailing comma in edge", "Genotype(normal=[[('conv_3x3', 0,), ('skip_connect', 1,),]], reduce=[[('max_pool_3x3', 0), ('avg_pool_3x3', 1)]],)", small},
		{"surrounding whitespace", "\n\t " + ogV2String + " \n", og},
		{"escaped quote", `Genotype(normal=[[('conv_3x3', 0), ('skip_connect', 1)]], reduce=[[('max_pool_3x3', 0), ('avg_pool_3x3', 1)]])`, small},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("%s: Parse(%q): %v", tt.name, tt.in, err)
			continue
		}
		if !got.Equal(tt.want) {
			t.Errorf("%s: Parse = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParseWith(t *testing.T) {
	if _, err := ParseWith(ogV2String, FewShot); err != nil {
		t.Errorf("ParseWith(og_v2, FewShot): %v", err)
	}
	_, err := ParseWith(ogV2String, DARTS)
	var pe *ParseError
	if !errors.As(err, &pe) || !errors.Is(err, ErrUnknownOp) || pe.Token != "'conv_1x5_5x1'" {
		t.Errorf("ParseWith(og_v2, DARTS) = %v, want unknown op conv_1x5_5x1", err)
	}
	if _, err := ParseWith(ogV2String, []string{}); !errors.Is(err, ErrUnknownPrimitiveSet) {
		t.Errorf("ParseWith(empty set) = %v", err)
	}
}

// small is a one-node genotype used to build malformed inputs.
const small = "Genotype(normal=[[('conv_3x3', 0), ('skip_connect', 1)]], normal_concat=range(2, 3), reduce=[[('max_pool_3x3', 0), ('avg_pool_3x3', 1)]], reduce_concat=range(2, 3))"

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name  string
		in    string
		at    string // the error's token starts where this unique substring starts; "" = end of input
		token string // ParseError.Token
		err   error
		msg   string // substring of the message
	}{
		{"empty", "", "", "", ErrSyntax, "empty"},
		{"blank", "  \n ", "", "", ErrSyntax, "empty"},
		{"missing node-list bracket", strings.Replace(ogV2String, "('conv_3x3', 2)]]", "('conv_3x3', 2)]", 1),
			"normal_concat", "normal_concat", ErrSyntax, "expected '['"},
		{"missing closing paren", strings.TrimSuffix(small, ")"), "", "", ErrSyntax, "expected ',' or ')'"},
		{"missing edge paren", strings.Replace(small, "('skip_connect', 1)", "'skip_connect', 1)", 1),
			"'skip_connect'", "'skip_connect'", ErrSyntax, "expected '('"},
		{"missing edge close", strings.Replace(small, "('skip_connect', 1)", "('skip_connect', 1", 1),
			"]], normal_concat", "]", ErrSyntax, "expected ')' to close the edge"},
		{"unknown op", strings.Replace(ogV2String, "'conv_3x3', 2", "'conv_9x9', 2", 1),
			"'conv_9x9'", "'conv_9x9'", ErrUnknownOp, `normal cell, node 2, edge 1: unknown op "conv_9x9"`},
		{"unknown op in reduce", strings.Replace(small, "'avg_pool_3x3'", "'avg_pool_5x5'", 1),
			"'avg_pool_5x5'", "'avg_pool_5x5'", ErrUnknownOp, "reduce cell, node 0, edge 1"},
		{"unquoted op", strings.Replace(small, "'conv_3x3'", "conv_3x3", 1),
			"conv_3x3", "conv_3x3", ErrSyntax, "must be quoted"},
		{"bad input index", strings.Replace(small, "('skip_connect', 1)", "('skip_connect', 2)", 1),
			"2)]], normal_concat", "2", ErrInputRange, "normal cell, node 0, edge 1"},
		{"negative input index", strings.Replace(small, "('max_pool_3x3', 0)", "('max_pool_3x3', -1)", 1),
			"-1)", "-1", ErrInputRange, "reduce cell, node 0, edge 0"},
		{"non-integer input", strings.Replace(small, "('skip_connect', 1)", "('skip_connect', 1.5)", 1),
			"1.5", "1.5", ErrSyntax, "not an integer"},
		{"quoted input", strings.Replace(small, "('skip_connect', 1)", "('skip_connect', '1')", 1),
			"'1'", "'1'", ErrSyntax, "expected an integer input"},
		{"missing input", strings.Replace(small, "('skip_connect', 1)", "('skip_connect')", 1),
			")]], normal_concat", ")", ErrSyntax, "expected ','"},
		{"empty node", strings.Replace(small, "[('max_pool_3x3', 0), ('avg_pool_3x3', 1)]", "[]", 1),
			"[]]", "[", ErrEmptyNode, "reduce cell, node 0"},
		{"empty cell", strings.Replace(small, "[[('max_pool_3x3', 0), ('avg_pool_3x3', 1)]]", "[]", 1),
			"[], reduce_concat", "[", ErrNoNodes, "reduce cell"},
		{"concat index too large", strings.Replace(small, "normal_concat=range(2, 3)", "normal_concat=[2, 3]", 1),
			"3], reduce", "3", ErrConcat, "normal cell, concat[1]: bad concat: index 3"},
		{"concat range too long", strings.Replace(small, "reduce_concat=range(2, 3)", "reduce_concat=range(2, 9)", 1),
			"range(2, 9)", "range", ErrConcat, "reduce cell, concat[1]"},
		{"concat empty range", strings.Replace(small, "reduce_concat=range(2, 3)", "reduce_concat=range(3, 2)", 1),
			"range(3, 2)", "range", ErrConcat, "empty"},
		{"concat not int", strings.Replace(small, "normal_concat=range(2, 3)", "normal_concat=[two]", 1),
			"two", "two", ErrSyntax, "expected an integer concat index"},
		{"concat garbage", strings.Replace(small, "normal_concat=range(2, 3)", "normal_concat=2", 1),
			"2, reduce=", "2", ErrSyntax, "expected range(a, b)"},
		{"range step zero", strings.Replace(small, "range(2, 3)", "range(2, 3, 0)", 1),
			"range(2, 3, 0)", "range", ErrSyntax, "step"},
		{"range too many args", strings.Replace(small, "range(2, 3)", "range(2, 3, 1, 1)", 1),
			"1), reduce=", "1", ErrSyntax, "at most 3"},
		{"unknown field", strings.Replace(small, "reduce_concat", "reduction_concat", 1),
			"reduction_concat", "reduction_concat", ErrSyntax, "unknown field"},
		{"duplicate field", strings.Replace(small, "reduce_concat", "normal_concat", 1),
			"normal_concat=range(2, 3))", "normal_concat", ErrSyntax, "given twice"},
		{"missing reduce", "Genotype(normal=[[['conv_3x3', 0]]])", ")", ")", ErrSyntax, "missing field reduce"},
		{"missing normal", "Genotype(reduce=[[['conv_3x3', 0]]])", ")", ")", ErrSyntax, "missing field normal"},
		{"missing equals", strings.Replace(small, "normal=", "normal ", 1),
			"[[('conv_3x3'", "[", ErrSyntax, "expected '=' after normal"},
		{"unterminated string", strings.Replace(small, "'avg_pool_3x3'", "'avg_pool_3x3", 1),
			"'avg_pool_3x3, 1)", "'avg_pool_3x3, 1)]], reduce_concat=range(2, 3))", ErrSyntax, "unterminated string"},
		{"unterminated string at newline", "Genotype(normal=[[('conv_3x3\n, 0)]])", "'conv_3x3", "'conv_3x3", ErrSyntax, "unterminated string"},
		{"bad character", strings.Replace(small, "normal=", "normal={", 1), "{", "{", ErrSyntax, "unexpected character"},
		{"trailing text", small + " extra", "extra", "extra", ErrSyntax, "after the genotype"},
		{"wrong constructor", "Genome" + strings.TrimPrefix(small, "Genotype"), "Genome", "Genome", ErrSyntax, "expected Genotype(...)"},
		{"just a name", "metanas_og_v3", "", "", ErrSyntax, "expected '=' after metanas_og_v3"},
		{"number first", "42", "42", "42", ErrSyntax, "expected Genotype"},
		{"Genotype without paren", "Genotype[normal=[]]", "[normal", "[", ErrSyntax, "expected '(' after Genotype"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.in)
		if err == nil {
			t.Errorf("%s: Parse(%q): no error", tt.name, tt.in)
			continue
		}
		var pe *ParseError
		if !errors.As(err, &pe) {
			t.Errorf("%s: error %v is not a *ParseError", tt.name, err)
			continue
		}
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: error %v does not wrap %v", tt.name, err, tt.err)
		}
		wantOff := len(tt.in)
		if tt.at != "" {
			if strings.Count(tt.in, tt.at) != 1 {
				t.Fatalf("%s: marker %q is not unique in %q", tt.name, tt.at, tt.in)
			}
			wantOff = strings.Index(tt.in, tt.at)
		}
		if pe.Offset != wantOff || pe.Token != tt.token {
			t.Errorf("%s: error at offset %d token %q, want offset %d token %q (%v)", tt.name, pe.Offset, pe.Token, wantOff, tt.token, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, tt.msg) {
			t.Errorf("%s: message %q does not contain %q", tt.name, msg, tt.msg)
		}
		if !strings.HasPrefix(msg, "genotype: parse error at offset ") {
			t.Errorf("%s: message %q lacks the offset prefix", tt.name, msg)
		}
		if tt.token != "" && len(tt.token) <= 40 && !strings.Contains(msg, "token "+quote(tt.token)) {
			t.Errorf("%s: message %q does not name token %q", tt.name, msg, tt.token)
		}
	}
}

// listEdges rewrites the edge tuples of a genotype string as lists.
func listEdges(s string) string {
	s = strings.NewReplacer("('", "['", "),", "],", ")]", "]]").Replace(s)
	return strings.ReplaceAll(s, "range(2, 5]", "range(2, 5)")
}

func quote(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }

func FuzzParse(f *testing.F) {
	for _, name := range BuiltinNames() {
		g, _ := Builtin(name)
		f.Add(g.String())
	}
	f.Add(ogV2Reference)
	f.Add(small)
	f.Add("Genotype(normal=[[('conv_3x3', 0)]], reduce=[[('conv_3x3', 1)]], normal_concat=range(5))")
	f.Fuzz(func(t *testing.T, s string) {
		g, err := Parse(s)
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Offset < 0 || pe.Offset > len(s) {
				t.Fatalf("Parse(%q): bad error %v", s, err)
			}
			return
		}
		if err := g.Validate(nil); err != nil {
			t.Fatalf("Parse(%q) returned an invalid genotype: %v", s, err)
		}
		g2, err := Parse(g.String())
		if err != nil || !g2.Equal(g) {
			t.Fatalf("round trip of %q: %v, %v", s, g2, err)
		}
	})
}
