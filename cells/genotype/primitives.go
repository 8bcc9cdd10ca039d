package genotype

import (
	"fmt"
	"strings"
)

// Operation names used by the primitive sets.
const (
	OpMaxPool3x3    = "max_pool_3x3"
	OpAvgPool3x3    = "avg_pool_3x3"
	OpSkip          = "skip_connect"
	OpConv1x5And5x1 = "conv_1x5_5x1"
	OpConv3x3       = "conv_3x3"
	OpSepConv3x3    = "sep_conv_3x3"
	OpSepConv5x5    = "sep_conv_5x5"
	OpDilConv3x3    = "dil_conv_3x3"
	OpDilConv5x5    = "dil_conv_5x5"
	// OpNone is the "zero" operation of the DARTS set. It is never selected
	// when a genotype is derived from architecture weights.
	OpNone = "none"
)

// FewShot is the MetaNAS few-shot primitive set, in the reference's order: the
// index of an operation is its column in an alpha row. Treat it as read-only;
// Primitives returns a copy.
var FewShot = []string{
	OpMaxPool3x3,
	OpAvgPool3x3,
	OpSkip,
	OpConv1x5And5x1,
	OpConv3x3,
	OpSepConv3x3,
	OpDilConv3x3,
}

// DARTS is the original DARTS primitive set, in the reference's order (index =
// alpha column). Treat it as read-only; Primitives returns a copy.
var DARTS = []string{
	OpMaxPool3x3,
	OpAvgPool3x3,
	OpSkip,
	OpSepConv3x3,
	OpSepConv5x5,
	OpDilConv3x3,
	OpDilConv5x5,
	OpNone,
}

// PrimitiveSetNames returns the canonical names accepted by Primitives.
func PrimitiveSetNames() []string { return []string{"few_shot", "darts"} }

// Primitives returns a copy of the primitive set with the given name. Names
// are matched case-insensitively with '-' treated as '_': "few_shot",
// "fewshot" and "darts" are known.
func Primitives(name string) ([]string, error) {
	switch normalizeName(name) {
	case "few_shot", "fewshot":
		return clonePrims(FewShot), nil
	case "darts":
		return clonePrims(DARTS), nil
	}
	return nil, fmt.Errorf("genotype: %w %q (known: %s)", ErrUnknownPrimitiveSet, name,
		strings.Join(PrimitiveSetNames(), ", "))
}

// KnownOps returns the union of all built-in primitive sets: the FewShot
// operations in order, followed by the DARTS operations not in FewShot. Parse,
// UnmarshalJSON and Validate(nil) check operation names against it.
func KnownOps() []string {
	out := clonePrims(FewShot)
	for _, op := range DARTS {
		if indexOf(op, out) < 0 {
			out = append(out, op)
		}
	}
	return out
}

// OpIndex returns the index of op in primitives (its alpha column). The error
// names the op and lists the valid ones.
func OpIndex(op string, primitives []string) (int, error) {
	if i := indexOf(op, primitives); i >= 0 {
		return i, nil
	}
	return -1, fmt.Errorf("genotype: %w", unknownOpError(op, primitives))
}

// ValidateOp reports whether op belongs to primitives. The error names the op
// and lists the valid ones.
func ValidateOp(op string, primitives []string) error {
	_, err := OpIndex(op, primitives)
	return err
}

func unknownOpError(op string, primitives []string) error {
	return fmt.Errorf("%w %q (valid: %s)", ErrUnknownOp, op, strings.Join(primitives, ", "))
}

func indexOf(op string, primitives []string) int {
	for i, p := range primitives {
		if p == op {
			return i
		}
	}
	return -1
}

func clonePrims(p []string) []string { return append([]string(nil), p...) }

func normalizeName(s string) string {
	return strings.ReplaceAll(strings.ToLower(strings.TrimSpace(s)), "-", "_")
}
