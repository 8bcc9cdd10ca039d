// Package torchtest holds test helpers that need the torch package. Package torch's own
// tests cannot use it (import cycle); they use testutil.
package torchtest

import (
	"os"
	"strings"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
	"github.com/metanas-go/metanas/torch"
)

// LoadFloat32s loads the tensors saved at path (torch.Load) and returns the values of the
// one named name, and false when the file has none of that name. Errors fail the test.
func LoadFloat32s(t testing.TB, path, name string) ([]float32, bool) {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	got, err := torch.Load(s, path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range got {
		if e.Name == name {
			v, err := e.Tensor.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			return v, true
		}
	}
	return nil, false
}

// RerunCUDAWithBranchStreams runs the test named test again in a child process with
// METANAS_BRANCH_STREAMS=4 (a search node's ops on four CUDA streams). It skips without a
// CUDA device, and in a process that already runs branch streams.
func RerunCUDAWithBranchStreams(t *testing.T, test string) {
	t.Helper()
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	if torch.BranchStreams() > 1 {
		t.Skip("this process already runs branch streams")
	}
	testutil.RerunWith(t, []string{"METANAS_BRANCH_STREAMS=4"}, "^"+test+"$", test)
}

// RerunNodeBatchNormOther runs the test named test again in a child process with the node
// batch norm (one batch norm per search node of a batched network) the other way than the
// device's default: METANAS_NODE_BATCH_NORM=1 for a CPU test, =0 for a CUDA test (cuda set;
// it skips without a CUDA device). It skips in a process that sets the variable itself.
func RerunNodeBatchNormOther(t *testing.T, test string, cuda bool) {
	t.Helper()
	if cuda && !torch.CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	if os.Getenv("METANAS_NODE_BATCH_NORM") != "" {
		t.Skip("this process sets METANAS_NODE_BATCH_NORM")
	}
	env := "METANAS_NODE_BATCH_NORM=1"
	if cuda {
		env = "METANAS_NODE_BATCH_NORM=0"
	}
	testutil.RerunWith(t, []string{env}, "^"+test+"$", test)
}

// RerunCUDAWithOwnGraphPools runs the test named test again in child processes with
// METANAS_GRAPH_POOLS=own (each CUDA graph a memory pool of its own), alone and with
// METANAS_BRANCH_STREAMS=4: whether branch streams fail under graphs only where graphs
// share a pool. It skips without a CUDA device, and in a process that sets either.
func RerunCUDAWithOwnGraphPools(t *testing.T, test string) {
	t.Helper()
	if !torch.CUDAAvailable() {
		t.Skip("no CUDA device (or LibTorch built without CUDA)")
	}
	if os.Getenv("METANAS_GRAPH_POOLS") != "" || torch.BranchStreams() > 1 {
		t.Skip("this process sets METANAS_GRAPH_POOLS or runs branch streams")
	}
	for _, env := range [][]string{{"METANAS_GRAPH_POOLS=own"}, {"METANAS_GRAPH_POOLS=own", "METANAS_BRANCH_STREAMS=4"}} {
		t.Run(strings.Join(env, ","), func(t *testing.T) {
			testutil.RerunWith(t, env, "^"+test+"$", test)
		})
	}
}
