// Package genotype describes discrete MetaNAS/DARTS cell architectures
// ("genotypes"): the primitive operation sets, the Genotype type with its
// textual form (the PyTorch reference's Python repr), JSON encoding,
// validation, the published genotypes, and the derivation of a genotype from
// continuous architecture weights (alphas).
//
// A cell has two inputs (indices 0 and 1, the outputs of the two previous
// cells) and a number of intermediate nodes; intermediate node i (0-based) has
// index i+2 and may read from any index in [0, i+2). Each node is a list of
// edges (normally two), an edge being an operation applied to one input. The
// cell output concatenates the nodes listed in the concat indices.
//
// The package is pure Go and depends on the standard library only.
package genotype
