package cells

import (
	"fmt"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
)

// incidence returns, row-major [pairs x nIn], which inputs each pair of nIn inputs joins.
func incidence(nIn int) []float32 {
	pairs := genotype.Pairs(nIn)
	inc := make([]float32, len(pairs)*nIn)
	for p, pr := range pairs {
		inc[p*nIn+pr[0]] = 1
		inc[p*nIn+pr[1]] = 1
	}
	return inc
}

// activeTasks returns, for node weights of T tasks, which op columns (j*K+k) some task
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

// forwardTasks is forward for a batched network: the ops some task needs run once for all
// tasks (grouped convolutions), and each task weighs their outputs with its own weights,
// zero where the op or its input is pruned for that task. A task's node thus equals what
// forward computes for it alone.
func (cell *SearchCell) forwardTasks(c *Ctx, s0, s1 *torch.Tensor, w *CellWeights, thr float32) *torch.Tensor {
	s := c.S
	T := c.tasks()
	states := cell.preprocess(c, s0, s1)
	relu := make([]*torch.Tensor, len(cell.nodes)+2)
	for i, row := range cell.nodes {
		nIn := i + 2
		K := len(row[0].ops)
		var hostPairs []float32
		var wp *torch.Tensor
		var inc []float32
		if w.Pairs != nil {
			hostPairs, wp, inc = w.HostPairs[i], w.Pairs[i], incidence(nIn)
		}
		active := activeTasks(w.HostOps[i], hostPairs, int(T), nIn, K, thr)
		outs, idx, drop := nodeOps(c, row, states, relu, func(j, k int) bool { return active[j*K+k] })
		var node *torch.Tensor
		if len(outs) == 0 {
			node = cell.zeros(c, states[0], states[1])
		} else {
			node = s.MixedTasks(outs, wp, w.Ops[i], inc, nIn, idx, drop, c.dropProb(), c.Gen, float64(thr), T)
		}
		states = append(states, node)
	}
	return c.catChannels(states[2:])
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
