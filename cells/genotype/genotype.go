package genotype

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Edge is one edge of a cell: operation Op applied to the state with index
// Input (0 and 1 are the cell inputs, i+2 is intermediate node i).
type Edge struct {
	Op    string
	Input int
}

// String returns the edge as a Python tuple, e.g. ('conv_3x3', 1).
func (e Edge) String() string {
	return "(" + pyQuote(e.Op) + ", " + strconv.Itoa(e.Input) + ")"
}

// Genotype is a discrete cell architecture for the normal and the reduction
// cell. Normal[i] and Reduce[i] list the edges of intermediate node i; the
// concat slices list the state indices concatenated into the cell output.
type Genotype struct {
	Normal       [][]Edge `json:"normal"`
	NormalConcat []int    `json:"normal_concat"`
	Reduce       [][]Edge `json:"reduce"`
	ReduceConcat []int    `json:"reduce_concat"`
}

// DefaultConcat returns the concat indices of a cell that concatenates all of
// its nodes: 2, 3, ..., nodes+1 (Python's range(2, nodes+2)).
func DefaultConcat(nodes int) []int {
	if nodes <= 0 {
		return []int{}
	}
	out := make([]int, nodes)
	for i := range out {
		out[i] = i + 2
	}
	return out
}

// String returns the genotype in the PyTorch reference's format (the repr of
// its Genotype namedtuple), e.g.
//
//	Genotype(normal=[[('conv_3x3', 0), ('conv_3x3', 1)]], normal_concat=range(2, 3), reduce=[...], reduce_concat=range(2, 3))
//
// A concat list of consecutive ascending indices prints as range(a, b), any
// other as a list such as [2, 3, 5]. Parse reads the result back.
func (g Genotype) String() string {
	var b strings.Builder
	b.WriteString("Genotype(normal=")
	writeNodes(&b, g.Normal)
	b.WriteString(", normal_concat=")
	writeConcat(&b, g.NormalConcat)
	b.WriteString(", reduce=")
	writeNodes(&b, g.Reduce)
	b.WriteString(", reduce_concat=")
	writeConcat(&b, g.ReduceConcat)
	b.WriteString(")")
	return b.String()
}

func writeNodes(b *strings.Builder, nodes [][]Edge) {
	b.WriteByte('[')
	for i, node := range nodes {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('[')
		for j, e := range node {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(e.String())
		}
		b.WriteByte(']')
	}
	b.WriteByte(']')
}

func writeConcat(b *strings.Builder, c []int) {
	if isContiguous(c) {
		fmt.Fprintf(b, "range(%d, %d)", c[0], c[len(c)-1]+1)
		return
	}
	b.WriteByte('[')
	for i, v := range c {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(v))
	}
	b.WriteByte(']')
}

func isContiguous(c []int) bool {
	if len(c) == 0 {
		return false
	}
	for i := 1; i < len(c); i++ {
		if c[i] != c[i-1]+1 {
			return false
		}
	}
	return true
}

// pyQuote quotes s the way Python's repr quotes a str: single quotes unless s
// contains a single quote and no double quote.
func pyQuote(s string) string {
	q := byte('\'')
	if strings.ContainsRune(s, '\'') && !strings.ContainsRune(s, '"') {
		q = '"'
	}
	var b strings.Builder
	b.WriteByte(q)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == q || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte(q)
	return b.String()
}

// Nodes returns the number of intermediate nodes of the normal and of the
// reduction cell.
func (g Genotype) Nodes() (normal, reduce int) { return len(g.Normal), len(g.Reduce) }

// Edges returns the number of edges of the normal and of the reduction cell.
func (g Genotype) Edges() (normal, reduce int) { return countEdges(g.Normal), countEdges(g.Reduce) }

func countEdges(nodes [][]Edge) int {
	n := 0
	for _, node := range nodes {
		n += len(node)
	}
	return n
}

// Equal reports whether g and o describe the same architecture: the same
// edges in the same order and the same concat indices. Nil and empty slices
// are equal.
func (g Genotype) Equal(o Genotype) bool {
	return nodesEqual(g.Normal, o.Normal) && slices.Equal(g.NormalConcat, o.NormalConcat) &&
		nodesEqual(g.Reduce, o.Reduce) && slices.Equal(g.ReduceConcat, o.ReduceConcat)
}

func nodesEqual(a, b [][]Edge) bool { return slices.EqualFunc(a, b, slices.Equal[[]Edge]) }

// Clone returns a deep copy of g.
func (g Genotype) Clone() Genotype {
	return Genotype{
		Normal:       cloneNodes(g.Normal),
		NormalConcat: cloneInts(g.NormalConcat),
		Reduce:       cloneNodes(g.Reduce),
		ReduceConcat: cloneInts(g.ReduceConcat),
	}
}

func cloneNodes(nodes [][]Edge) [][]Edge {
	if nodes == nil {
		return nil
	}
	out := make([][]Edge, len(nodes))
	for i, n := range nodes {
		out[i] = append([]Edge(nil), n...)
	}
	return out
}

func cloneInts(c []int) []int {
	if c == nil {
		return nil
	}
	return append([]int(nil), c...)
}

// Validate checks g against a primitive set: every op must belong to
// primitives (nil means KnownOps, the union of the built-in sets), each cell
// must have at least one node and each node at least one edge, the input of
// an edge of node i must lie in [0, i+2), and the concat indices must be
// non-empty, distinct and lie in [2, nodes+2). The error names the cell
// ("normal" or "reduce"), the node and edge or concat position, and the
// offending op or index, and wraps ErrUnknownOp, ErrNoNodes, ErrEmptyNode,
// ErrInputRange or ErrConcat.
func (g Genotype) Validate(primitives []string) error {
	if primitives == nil {
		primitives = KnownOps()
	}
	if len(primitives) == 0 {
		return fmt.Errorf("genotype: %w: empty primitive set", ErrUnknownPrimitiveSet)
	}
	if p := checkCell(g.Normal, g.NormalConcat, primitives); p != nil {
		return fmt.Errorf("genotype: normal cell%w", p)
	}
	if p := checkCell(g.Reduce, g.ReduceConcat, primitives); p != nil {
		return fmt.Errorf("genotype: reduce cell%w", p)
	}
	return nil
}

// problem locates the first defect found in a cell. node, edge and concat
// are -1 when they do not apply.
type problem struct {
	node, edge, concat int
	err                error
}

// Error formats the location (after the cell name) and the defect.
func (p *problem) Error() string {
	var loc string
	switch {
	case p.concat >= 0:
		loc = fmt.Sprintf(", concat[%d]", p.concat)
	case p.edge >= 0:
		loc = fmt.Sprintf(", node %d, edge %d", p.node, p.edge)
	case p.node >= 0:
		loc = fmt.Sprintf(", node %d", p.node)
	}
	return loc + ": " + p.err.Error()
}

// Unwrap returns the underlying error.
func (p *problem) Unwrap() error { return p.err }

// checkCell returns the first defect of a cell, or nil.
func checkCell(nodes [][]Edge, concat []int, primitives []string) *problem {
	if len(nodes) == 0 {
		return &problem{-1, -1, -1, ErrNoNodes}
	}
	for i, node := range nodes {
		if len(node) == 0 {
			return &problem{i, -1, -1, ErrEmptyNode}
		}
		for j, e := range node {
			if indexOf(e.Op, primitives) < 0 {
				return &problem{i, j, -1, unknownOpError(e.Op, primitives)}
			}
			if e.Input < 0 || e.Input >= i+2 {
				return &problem{i, j, -1, fmt.Errorf("%w: op %q reads input %d, node %d allows [0, %d)",
					ErrInputRange, e.Op, e.Input, i, i+2)}
			}
		}
	}
	if len(concat) == 0 {
		return &problem{-1, -1, -1, fmt.Errorf("%w: concat is empty", ErrConcat)}
	}
	seen := make(map[int]bool, len(concat))
	for k, c := range concat {
		if c < 2 || c >= len(nodes)+2 {
			return &problem{-1, -1, k, fmt.Errorf("%w: index %d out of range [2, %d) for %d nodes",
				ErrConcat, c, len(nodes)+2, len(nodes))}
		}
		if seen[c] {
			return &problem{-1, -1, k, fmt.Errorf("%w: index %d repeated", ErrConcat, c)}
		}
		seen[c] = true
	}
	return nil
}
