package genotype

import "errors"

// Sentinel errors. Errors returned by this package wrap one of these, so
// callers can test them with errors.Is; the messages add the details (cell,
// node, edge, token, position).
var (
	// ErrUnknownOp reports an operation name that is not in the primitive set.
	ErrUnknownOp = errors.New("unknown op")
	// ErrUnknownPrimitiveSet reports an unknown primitive set name.
	ErrUnknownPrimitiveSet = errors.New("unknown primitive set")
	// ErrUnknownGenotype reports a name that is neither a builtin genotype nor
	// a genotype string.
	ErrUnknownGenotype = errors.New("unknown genotype")
	// ErrNoNodes reports a cell without intermediate nodes.
	ErrNoNodes = errors.New("cell has no nodes")
	// ErrEmptyNode reports an intermediate node without edges.
	ErrEmptyNode = errors.New("node has no edges")
	// ErrInputRange reports an edge whose input index is out of range.
	ErrInputRange = errors.New("input index out of range")
	// ErrConcat reports an empty concat list or a bad concat index.
	ErrConcat = errors.New("bad concat")
	// ErrSyntax reports malformed genotype text or JSON.
	ErrSyntax = errors.New("syntax error")
	// ErrWeights reports architecture weights of the wrong shape or with NaN
	// entries.
	ErrWeights = errors.New("bad architecture weights")
)
