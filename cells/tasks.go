package cells

import (
	"fmt"
	"slices"

	"github.com/metanas-go/metanas/cells/genotype"
	"github.com/metanas-go/metanas/torch"
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

// ActiveKey describes what a forward pass with w at threshold computes: which ops run on
// which inputs and which input pairs join (a network of w's task count). Two weights with
// one key issue the same kernels on tensors of the same shapes, so a CUDA graph captured
// with one replays the other once its values are copied in (see CopyArch).
func (n *SearchNet) ActiveKey(w *ArchWeights, threshold float64) (string, error) {
	tasks := int(n.Reg.Tasks())
	if err := n.checkWeights(w, tasks); err != nil {
		return "", err
	}
	K := len(n.Cfg.Primitives)
	thr := float32(threshold)
	key := make([]byte, 0, 256)
	for _, cw := range []*CellWeights{&w.Normal, &w.Reduce} {
		for i := range cw.HostOps {
			var hp []float32
			if n.Cfg.Pairwise {
				hp = cw.HostPairs[i]
			}
			for _, on := range activeTasks(cw.HostOps[i], hp, tasks, i+2, K, thr) {
				key = append(key, "01"[b2i(on)])
			}
			key = append(key, '|')
			for _, v := range hp {
				key = append(key, "01"[b2i(v > thr)])
			}
			key = append(key, ';')
		}
	}
	return string(key), nil
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// CloneArch returns a copy of w in scope s: detached device tensors and host copies of
// their own, for CopyArch to overwrite in place.
func CloneArch(s *torch.Scope, w *ArchWeights) (*ArchWeights, error) {
	out := &ArchWeights{}
	for _, c := range []struct{ dst, src *CellWeights }{{&out.Normal, &w.Normal}, {&out.Reduce, &w.Reduce}} {
		for _, t := range c.src.Ops {
			c.dst.Ops = append(c.dst.Ops, s.Clone(s.Detach(t)))
		}
		for _, t := range c.src.Pairs {
			c.dst.Pairs = append(c.dst.Pairs, s.Clone(s.Detach(t)))
		}
		for _, h := range c.src.HostOps {
			c.dst.HostOps = append(c.dst.HostOps, slices.Clone(h))
		}
		for _, h := range c.src.HostPairs {
			c.dst.HostPairs = append(c.dst.HostPairs, slices.Clone(h))
		}
	}
	return out, s.Err()
}

// CopyArch copies the values of src into dst (a CloneArch of weights of the same shapes),
// device tensors in place.
func CopyArch(dst, src *ArchWeights) error {
	for _, c := range []struct{ dst, src *CellWeights }{{&dst.Normal, &src.Normal}, {&dst.Reduce, &src.Reduce}} {
		if len(c.dst.Ops) != len(c.src.Ops) || len(c.dst.Pairs) != len(c.src.Pairs) ||
			len(c.dst.HostOps) != len(c.src.HostOps) || len(c.dst.HostPairs) != len(c.src.HostPairs) {
			return fmt.Errorf("architecture weights: copy between weights of different networks")
		}
		if err := torch.ForeachCopy(append(slices.Clone(c.dst.Ops), c.dst.Pairs...), append(slices.Clone(c.src.Ops), c.src.Pairs...)); err != nil {
			return fmt.Errorf("architecture weights: %w", err)
		}
		if err := copyRows(c.dst.HostOps, c.src.HostOps); err != nil {
			return err
		}
		if err := copyRows(c.dst.HostPairs, c.src.HostPairs); err != nil {
			return err
		}
	}
	return nil
}

// copyRows copies the host weights src into dst, node by node, refusing other lengths.
func copyRows(dst, src [][]float32) error {
	for i := range dst {
		if len(dst[i]) != len(src[i]) {
			return fmt.Errorf("architecture weights: node %d has %d host weights, want %d", i, len(src[i]), len(dst[i]))
		}
		copy(dst[i], src[i])
	}
	return nil
}

// shareNodeCoefs turns the sharing of node weights between cells of a type on (tests
// compare against it off).
var shareNodeCoefs = true

// coefKey identifies a node's weights within a forward pass: the node's op and pair
// weights (tensors of one cell type and node), the op columns it sums, its pair incidence and the
// pruning threshold.
type coefKey struct {
	ops, pairs *torch.Tensor
	idx, inc   string
	thr        float32
}

// nodeCoefs returns torch.Scope.NodeCoefs of its arguments, computed once per forward pass
// for all the cells of a type that sum the same columns: the first cell's tensor serves
// the later ones, and autograd adds their gradients before the one backward pass through
// it (about 20 kernels fewer per node of each later cell).
func (c *Ctx) nodeCoefs(wpair, wops *torch.Tensor, inc []float32, nIn int, idx []int64, thr float32, tasks int64) *torch.Tensor {
	if c.coefs == nil || !shareNodeCoefs {
		return c.S.NodeCoefs(wpair, wops, inc, nIn, idx, float64(thr), tasks)
	}
	k := coefKey{ops: wops, pairs: wpair, idx: fmt.Sprint(idx), inc: fmt.Sprint(inc), thr: thr}
	if t, ok := c.coefs[k]; ok {
		return t
	}
	t := c.S.NodeCoefs(wpair, wops, inc, nIn, idx, float64(thr), tasks)
	c.coefs[k] = t
	return t
}
