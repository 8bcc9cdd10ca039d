package genotype

import (
	"fmt"
	"math"
	"sort"
)

// NumPairs returns the number of unordered input pairs of a node with nInputs
// inputs, binom(nInputs, 2); 0 when nInputs < 2.
func NumPairs(nInputs int) int {
	if nInputs < 2 {
		return 0
	}
	return nInputs * (nInputs - 1) / 2
}

// Pairs returns the input pairs (i, j), i < j, of a node with nInputs inputs in
// lexicographic order (for i := 0; i < n; i++ { for j := i+1; j < n; j++ }), the order in
// which the PyTorch reference lays out its pairwise weights (alpha_pw) and pairwise sums.
// For 4 inputs: (0,1), (0,2), (0,3), (1,2), (1,3), (2,3). It returns nil when nInputs < 2.
func Pairs(nInputs int) [][2]int {
	if nInputs < 2 {
		return nil
	}
	out := make([][2]int, 0, NumPairs(nInputs))
	for i := 0; i < nInputs; i++ {
		for j := i + 1; j < nInputs; j++ {
			out = append(out, [2]int{i, j})
		}
	}
	return out
}

// CellWeights holds the architecture weights of one cell type for the
// pairwise model.
type CellWeights struct {
	// Ops[i] holds the op weights of node i: i+2 rows, one per input, each of
	// len(primitives) values in primitive order.
	Ops [][][]float32
	// Pairs[i] holds the NumPairs(i+2) pair weights of node i, in the order of
	// Pairs(i+2).
	Pairs [][]float32
}

// DerivePairwise derives a genotype from the weights of the pairwise model
// (see DerivePairwiseCell), with all nodes concatenated.
func DerivePairwise(normal, reduce CellWeights, primitives []string) (Genotype, error) {
	n, err := derivePairwiseCell(normal.Ops, normal.Pairs, primitives)
	if err != nil {
		return Genotype{}, fmt.Errorf("genotype: normal cell: %w", err)
	}
	r, err := derivePairwiseCell(reduce.Ops, reduce.Pairs, primitives)
	if err != nil {
		return Genotype{}, fmt.Errorf("genotype: reduce cell: %w", err)
	}
	return Genotype{Normal: n, NormalConcat: DefaultConcat(len(n)), Reduce: r, ReduceConcat: DefaultConcat(len(r))}, nil
}

// DeriveDARTS derives a genotype from the op weights of a plain DARTS model
// (see DeriveDARTSCell), with all nodes concatenated.
func DeriveDARTS(normal, reduce [][][]float32, primitives []string) (Genotype, error) {
	n, err := deriveDARTSCell(normal, primitives)
	if err != nil {
		return Genotype{}, fmt.Errorf("genotype: normal cell: %w", err)
	}
	r, err := deriveDARTSCell(reduce, primitives)
	if err != nil {
		return Genotype{}, fmt.Errorf("genotype: reduce cell: %w", err)
	}
	return Genotype{Normal: n, NormalConcat: DefaultConcat(len(n)), Reduce: r, ReduceConcat: DefaultConcat(len(r))}, nil
}

// DerivePairwiseCell derives the nodes of one cell from the pairwise model's
// weights, as the MetaNAS reference does: for node i it keeps the pair (a, b)
// with the largest weight in pairs[i] (ordered as Pairs(i+2)), and for each of
// the two inputs the op with the largest weight in that input's row of
// ops[i]. The node's edges are [(op_a, a), (op_b, b)] with a < b. An op named
// OpNone is never selected. Ties go to the lowest index: the first pair in
// Pairs order, the first op in primitive order.
//
// Only the order of the weights matters, so raw alphas and normalised weights
// give the same result. Shapes are checked: ops[i] must have i+2 rows of
// len(primitives) values, pairs[i] NumPairs(i+2) values, and no weight may be
// NaN; errors wrap ErrWeights.
func DerivePairwiseCell(ops [][][]float32, pairs [][]float32, primitives []string) ([][]Edge, error) {
	nodes, err := derivePairwiseCell(ops, pairs, primitives)
	if err != nil {
		return nil, fmt.Errorf("genotype: %w", err)
	}
	return nodes, nil
}

func derivePairwiseCell(ops [][][]float32, pairs [][]float32, primitives []string) ([][]Edge, error) {
	if err := checkOpWeights(ops, primitives); err != nil {
		return nil, err
	}
	if len(pairs) != len(ops) {
		return nil, fmt.Errorf("%w: %d nodes of pair weights for %d nodes of op weights", ErrWeights, len(pairs), len(ops))
	}
	nodes := make([][]Edge, len(ops))
	for i, pw := range pairs {
		if want := NumPairs(i + 2); len(pw) != want {
			return nil, fmt.Errorf("%w: node %d: %d pair weights, want %d", ErrWeights, i, len(pw), want)
		}
		best := 0
		for k, w := range pw {
			if math.IsNaN(float64(w)) {
				return nil, fmt.Errorf("%w: node %d: pair weight %d is NaN", ErrWeights, i, k)
			}
			if w > pw[best] {
				best = k
			}
		}
		pair := Pairs(i + 2)[best]
		nodes[i] = []Edge{
			{Op: primitives[bestOp(ops[i][pair[0]], primitives)], Input: pair[0]},
			{Op: primitives[bestOp(ops[i][pair[1]], primitives)], Input: pair[1]},
		}
	}
	return nodes, nil
}

// DeriveDARTSCell derives the nodes of one cell the way DARTS does: for each
// input of node i it takes the best op of that input's row of ops[i] (OpNone
// excluded) and keeps the two inputs whose best op has the largest weight.
// The edges are listed strongest first; ties go to the lowest index (lower
// input first, then lower op index).
//
// Weights of different inputs are compared with each other, so pass the
// normalised weights (softmax of each row) to match the reference, not the
// raw alphas. Shapes are checked as in DerivePairwiseCell.
func DeriveDARTSCell(ops [][][]float32, primitives []string) ([][]Edge, error) {
	nodes, err := deriveDARTSCell(ops, primitives)
	if err != nil {
		return nil, fmt.Errorf("genotype: %w", err)
	}
	return nodes, nil
}

func deriveDARTSCell(ops [][][]float32, primitives []string) ([][]Edge, error) {
	if err := checkOpWeights(ops, primitives); err != nil {
		return nil, err
	}
	nodes := make([][]Edge, len(ops))
	for i, rows := range ops {
		best := make([]int, len(rows))
		order := make([]int, len(rows))
		for j, row := range rows {
			best[j] = bestOp(row, primitives)
			order[j] = j
		}
		sort.SliceStable(order, func(a, b int) bool {
			return rows[order[a]][best[order[a]]] > rows[order[b]][best[order[b]]]
		})
		for _, j := range order[:2] {
			nodes[i] = append(nodes[i], Edge{Op: primitives[best[j]], Input: j})
		}
	}
	return nodes, nil
}

// bestOp returns the index of the largest weight in row, skipping OpNone and
// preferring the lowest index on ties. checkOpWeights guarantees a result.
func bestOp(row []float32, primitives []string) int {
	best := -1
	for k, w := range row {
		if primitives[k] == OpNone {
			continue
		}
		if best < 0 || w > row[best] {
			best = k
		}
	}
	return best
}

func checkOpWeights(ops [][][]float32, primitives []string) error {
	usable := false
	for _, p := range primitives {
		if p != OpNone {
			usable = true
		}
	}
	if !usable {
		return fmt.Errorf("%w: primitive set %v has no op other than %q", ErrWeights, primitives, OpNone)
	}
	if len(ops) == 0 {
		return fmt.Errorf("%w: no nodes", ErrWeights)
	}
	for i, rows := range ops {
		if len(rows) != i+2 {
			return fmt.Errorf("%w: node %d: %d input rows, want %d", ErrWeights, i, len(rows), i+2)
		}
		for j, row := range rows {
			if len(row) != len(primitives) {
				return fmt.Errorf("%w: node %d, input %d: %d op weights, want %d (one per primitive)",
					ErrWeights, i, j, len(row), len(primitives))
			}
			for k, w := range row {
				if math.IsNaN(float64(w)) {
					return fmt.Errorf("%w: node %d, input %d: weight of %s is NaN", ErrWeights, i, j, primitives[k])
				}
			}
		}
	}
	return nil
}
