package genotype

import (
	"fmt"
	"sort"
	"strings"
)

// Names of the built-in genotypes.
const (
	// MetaNASOmniglotV2 is the genotype the MetaNAS authors published for
	// Omniglot (genotype_metanas_og_v2 in the reference).
	MetaNASOmniglotV2 = "metanas_og_v2"
	// MetaNASMiniImagenetV2 is the genotype the MetaNAS authors published for
	// MiniImagenet (genotype_metanas_in_v2 in the reference).
	MetaNASMiniImagenetV2 = "metanas_in_v2"
	// AutoMeta is the genotype of the Auto-Meta paper as transcribed by the
	// reference (genotype_auto_meta): 5 nodes, concat range(2, 7).
	AutoMeta = "auto_meta"
)

func e(op string, input int) Edge { return Edge{Op: op, Input: input} }

var builtins = map[string]Genotype{
	MetaNASOmniglotV2: {
		Normal: [][]Edge{
			{e(OpDilConv3x3, 0), e(OpSepConv3x3, 1)},
			{e(OpAvgPool3x3, 0), e(OpSepConv3x3, 1)},
			{e(OpConv1x5And5x1, 0), e(OpConv3x3, 2)},
		},
		NormalConcat: []int{2, 3, 4},
		Reduce: [][]Edge{
			{e(OpSkip, 0), e(OpSepConv3x3, 1)},
			{e(OpConv3x3, 0), e(OpDilConv3x3, 1)},
			{e(OpDilConv3x3, 0), e(OpConv1x5And5x1, 2)},
		},
		ReduceConcat: []int{2, 3, 4},
	},
	MetaNASMiniImagenetV2: {
		Normal: [][]Edge{
			{e(OpConv1x5And5x1, 0), e(OpConv3x3, 1)},
			{e(OpConv3x3, 0), e(OpSepConv3x3, 2)},
			{e(OpDilConv3x3, 1), e(OpConv1x5And5x1, 3)},
		},
		NormalConcat: []int{2, 3, 4},
		Reduce: [][]Edge{
			{e(OpSepConv3x3, 0), e(OpConv3x3, 1)},
			{e(OpConv3x3, 0), e(OpSepConv3x3, 2)},
			{e(OpConv3x3, 0), e(OpDilConv3x3, 1)},
		},
		ReduceConcat: []int{2, 3, 4},
	},
	AutoMeta: {
		Normal:       autoMetaCell(),
		NormalConcat: []int{2, 3, 4, 5, 6},
		Reduce:       autoMetaCell(),
		ReduceConcat: []int{2, 3, 4, 5, 6},
	},
}

func autoMetaCell() [][]Edge {
	return [][]Edge{
		{e(OpConv3x3, 1), e(OpMaxPool3x3, 1)},
		{e(OpConv1x5And5x1, 2), e(OpMaxPool3x3, 2)},
		{e(OpConv3x3, 2), e(OpConv1x5And5x1, 3)},
		{e(OpConv3x3, 3), e(OpConv3x3, 3)},
		{e(OpConv1x5And5x1, 3), e(OpConv3x3, 2)},
	}
}

// BuiltinNames returns the names of the built-in genotypes, sorted.
func BuiltinNames() []string {
	names := make([]string, 0, len(builtins))
	for n := range builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Builtin returns a copy of the built-in genotype with the given name. Names
// are matched case-insensitively with '-' treated as '_'.
func Builtin(name string) (Genotype, error) {
	if g, ok := builtins[normalizeName(name)]; ok {
		return g.Clone(), nil
	}
	return Genotype{}, fmt.Errorf("genotype: %w %q (builtins: %s)", ErrUnknownGenotype, name,
		strings.Join(BuiltinNames(), ", "))
}

// Lookup resolves a genotype given on a command line or in a config file: the
// name of a builtin (see Builtin), a genotype string in the reference's format
// (see Parse), or a JSON object (see Genotype.UnmarshalJSON). Anything else
// that does not look like a genotype string is reported as an unknown name.
func Lookup(nameOrString string) (Genotype, error) {
	s := strings.TrimSpace(nameOrString)
	if s == "" {
		return Genotype{}, fmt.Errorf("genotype: %w: empty name (builtins: %s)", ErrUnknownGenotype,
			strings.Join(BuiltinNames(), ", "))
	}
	if g, ok := builtins[normalizeName(s)]; ok {
		return g.Clone(), nil
	}
	if s[0] == '{' {
		var g Genotype
		if err := g.UnmarshalJSON([]byte(s)); err != nil {
			return Genotype{}, err
		}
		return g, nil
	}
	if strings.ContainsAny(s, "([=") {
		return Parse(s)
	}
	return Builtin(s)
}
