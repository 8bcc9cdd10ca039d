package genotype_test

import (
	"encoding/json"
	"fmt"

	"github.com/metanas-go/metanas/cells/genotype"
)

func ExampleLookup() {
	g, err := genotype.Lookup("metanas_og_v2")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(g.Normal[2])
	n, r := g.Edges()
	fmt.Println(n, r)
	// Output:
	// [('conv_1x5_5x1', 0) ('conv_3x3', 2)]
	// 6 6
}

func ExampleParse() {
	g, err := genotype.Parse(`Genotype(normal=[[("conv_3x3", 0), ("skip_connect", 1)]], reduce=[[["max_pool_3x3", 0], ["conv_3x3", 1]]])`)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(g)
	_, err = genotype.Parse(`Genotype(normal=[[('conv_3x3', 0), ('conv_3x3', 2)]], reduce=[[('conv_3x3', 0)]])`)
	fmt.Println(err)
	// Output:
	// Genotype(normal=[[('conv_3x3', 0), ('skip_connect', 1)]], normal_concat=range(2, 3), reduce=[[('max_pool_3x3', 0), ('conv_3x3', 1)]], reduce_concat=range(2, 3))
	// genotype: parse error at offset 48, token "2": normal cell, node 0, edge 1: input index out of range: op "conv_3x3" reads input 2, node 0 allows [0, 2)
}

func ExampleGenotype_MarshalJSON() {
	g, _ := genotype.Builtin("metanas_in_v2")
	data, _ := json.Marshal(g)
	fmt.Println(string(data))
	// Output:
	// {"normal":[[["conv_1x5_5x1",0],["conv_3x3",1]],[["conv_3x3",0],["sep_conv_3x3",2]],[["dil_conv_3x3",1],["conv_1x5_5x1",3]]],"normal_concat":[2,3,4],"reduce":[[["sep_conv_3x3",0],["conv_3x3",1]],[["conv_3x3",0],["sep_conv_3x3",2]],[["conv_3x3",0],["dil_conv_3x3",1]]],"reduce_concat":[2,3,4]}
}

func ExampleDerivePairwiseCell() {
	// One node with two inputs over the few-shot set: the only pair is
	// (0, 1); input 0's best op is conv_3x3 (column 4), input 1's is
	// skip_connect (column 2).
	ops := [][][]float32{{
		{0.1, 0.1, 0.1, 0.1, 0.4, 0.1, 0.1},
		{0.1, 0.1, 0.3, 0.1, 0.2, 0.1, 0.1},
	}}
	pairs := [][]float32{{1}}
	nodes, err := genotype.DerivePairwiseCell(ops, pairs, genotype.FewShot)
	fmt.Println(nodes, err)
	// Output:
	// [[('conv_3x3', 0) ('skip_connect', 1)]] <nil>
}
