package cells

import (
	"fmt"

	"github.com/metanas-go/metanas/cells/genotype"
)

// incidence returns, row-major [pairs x nIn], which inputs each pair of nIn inputs that
// keep selects joins (rows of other pairs stay zero).
func incidence(nIn int, keep func(p int) bool) []float32 {
	pairs := genotype.Pairs(nIn)
	inc := make([]float32, len(pairs)*nIn)
	for p, pr := range pairs {
		if keep(p) {
			inc[p*nIn+pr[0]] = 1
			inc[p*nIn+pr[1]] = 1
		}
	}
	return inc
}

// activeTasks returns, for node weights of T tasks (T = 1: one network), which op columns (j*K+k) some task
// needs: an op above thr on an input that one of that task's pairs above thr uses (every
// input when there are no pair weights). An op no task needs is not computed.
func activeTasks(hostOps, hostPairs []float32, tasks, nIn, K int, thr float32) []bool {
	active := make([]bool, nIn*K)
	pairs := genotype.Pairs(nIn)
	used := make([]bool, nIn)
	for t := 0; t < tasks; t++ {
		for j := range used {
			used[j] = hostPairs == nil
		}
		if hostPairs != nil {
			for p, pr := range pairs {
				if hostPairs[t*len(pairs)+p] > thr {
					used[pr[0]], used[pr[1]] = true, true
				}
			}
		}
		for j := 0; j < nIn; j++ {
			if !used[j] {
				continue
			}
			for k := 0; k < K; k++ {
				if hostOps[(t*nIn+j)*K+k] > thr {
					active[j*K+k] = true
				}
			}
		}
	}
	return active
}

// TaskHost returns task t's share of the host copy of a batched network's weights (see
// Normalize), as the weights of one task's network: what Genotype, Masks and ActiveParams
// read. Its device tensors are nil.
func (w *ArchWeights) TaskHost(t, tasks int) (*ArchWeights, error) {
	if tasks < 1 || t < 0 || t >= tasks {
		return nil, fmt.Errorf("architecture weights: task %d of %d", t, tasks)
	}
	out := &ArchWeights{}
	slice := func(rows [][]float32) ([][]float32, error) {
		if rows == nil {
			return nil, nil
		}
		res := make([][]float32, len(rows))
		for i, r := range rows {
			if len(r)%tasks != 0 {
				return nil, fmt.Errorf("architecture weights: %d values do not split into %d tasks", len(r), tasks)
			}
			m := len(r) / tasks
			res[i] = r[t*m : (t+1)*m]
		}
		return res, nil
	}
	for _, c := range []struct{ dst, src *CellWeights }{{&out.Normal, &w.Normal}, {&out.Reduce, &w.Reduce}} {
		var err error
		if c.dst.HostOps, err = slice(c.src.HostOps); err != nil {
			return nil, err
		}
		if c.dst.HostPairs, err = slice(c.src.HostPairs); err != nil {
			return nil, err
		}
	}
	return out, nil
}
