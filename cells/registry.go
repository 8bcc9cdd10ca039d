// Package cells holds the MetaNAS search space and the networks built from it: candidate
// operations, MixedOps, search and discrete cells, the one-shot network with its
// architecture parameters (alphas), normalizers, pruning, and the REPTILE baseline CNN.
// It knows nothing of meta-learning. Parameter and buffer names equal the reference
// implementation's state_dict keys.
package cells

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/metanas-go/metanas/torch"
)

// Kind tells what a registry entry is.
type Kind int

// Entry kinds.
const (
	Weight Kind = iota // trained network weight
	Buffer             // batch-norm running statistics and counters
	Alpha              // architecture parameter
)

// Entry is one named tensor of a network's state_dict.
type Entry struct {
	Name   string
	Tensor *torch.Tensor
	Kind   Kind
	bn     *BatchNorm // owner of a num_batches_tracked buffer
}

type store struct {
	entries []Entry
	index   map[string]int
	err     error
	tasks   int64 // task copies stacked along each tensor's first dimension (>= 1)
}

// Registry creates a network's parameters and buffers on one device, in one scope, and
// records their state_dict names in creation order.
type Registry struct {
	s      *torch.Scope
	dev    torch.Device
	prefix string
	st     *store
}

// NewRegistry returns an empty registry creating tensors in s on dev.
func NewRegistry(s *torch.Scope, dev torch.Device) *Registry {
	return NewTaskRegistry(s, dev, 1)
}

// NewTaskRegistry returns an empty registry for a network of tasks batched tasks: every
// parameter and running statistic it creates holds the tasks' copies stacked along its
// first dimension ([tasks*d0, ...]); names stay those of one task's network.
func NewTaskRegistry(s *torch.Scope, dev torch.Device, tasks int64) *Registry {
	return &Registry{s: s, dev: dev, st: &store{index: map[string]int{}, tasks: max(1, tasks)}}
}

// Tasks returns the number of task copies the registry's tensors hold (1 unless batched).
func (r *Registry) Tasks() int64 { return r.st.tasks }

// stacked returns shape with its first dimension multiplied by the number of tasks.
func (r *Registry) stacked(shape []int64) []int64 {
	if r.st.tasks == 1 || len(shape) == 0 {
		return shape
	}
	out := slices.Clone(shape)
	out[0] *= r.st.tasks
	return out
}

// Sub returns a registry that prefixes names with name + ".".
func (r *Registry) Sub(name string) *Registry {
	c := *r
	c.prefix = r.prefix + name + "."
	return &c
}

// Scope returns the scope owning the registry's tensors.
func (r *Registry) Scope() *torch.Scope { return r.s }

// Device returns the device of the registry's tensors.
func (r *Registry) Device() torch.Device { return r.dev }

// Entries returns all entries in state_dict order.
func (r *Registry) Entries() []Entry { return r.st.entries }

func (r *Registry) add(name string, t *torch.Tensor, k Kind) *torch.Tensor {
	full := r.prefix + name
	if _, dup := r.st.index[full]; dup {
		if r.st.err == nil {
			r.st.err = fmt.Errorf("duplicate parameter name %q", full)
		}
		return t
	}
	r.st.index[full] = len(r.st.entries)
	r.st.entries = append(r.st.entries, Entry{Name: full, Tensor: t, Kind: k})
	return t
}

// replace makes the entry holding old hold t instead (same name and kind) and reports
// whether there was one.
func (r *Registry) replace(old, t *torch.Tensor) bool {
	for i := range r.st.entries {
		if r.st.entries[i].Tensor == old {
			r.st.entries[i].Tensor = t
			return true
		}
	}
	return false
}

// uniformWeight creates a trainable weight drawn from U(-bound, bound).
func (r *Registry) uniformWeight(name string, shape []int64, bound float64) *torch.Tensor {
	s := r.s
	u := s.Rand(r.stacked(shape), r.dev)
	t := s.AddScalar(s.MulScalar(u, 2*bound), -bound)
	t = s.Detach(t)
	_ = t.SetRequiresGrad(true)
	return r.add(name, t, Weight)
}

// ConvWeight creates a conv weight [out, in/groups, kh, kw] with PyTorch's default
// initialisation (kaiming-uniform with a=sqrt(5): U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
func (r *Registry) ConvWeight(name string, out, in, groups, kh, kw int64) *torch.Tensor {
	fanIn := float64(in / groups * kh * kw)
	return r.uniformWeight(name, []int64{out, in / groups, kh, kw}, 1/math.Sqrt(fanIn))
}

// LinearWeights creates a linear layer's weight [out, in] and bias [out] with PyTorch's
// default initialisation.
func (r *Registry) LinearWeights(prefix string, out, in int64) (w, b *torch.Tensor) {
	bound := 1 / math.Sqrt(float64(in))
	sub := r.Sub(prefix)
	return sub.uniformWeight("weight", []int64{out, in}, bound), sub.uniformWeight("bias", []int64{out}, bound)
}

// Alpha creates an architecture parameter std * N(0,1).
func (r *Registry) Alpha(name string, shape []int64, std float64) *torch.Tensor {
	s := r.s
	t := s.Detach(s.MulScalar(s.Randn(r.stacked(shape), r.dev, false), std))
	_ = t.SetRequiresGrad(true)
	return r.add(name, t, Alpha)
}

// Err returns the first error of tensor creation.
func (r *Registry) Err() error {
	if r.st.err != nil {
		return r.st.err
	}
	return r.s.Err()
}

// Select returns the tensors of the given kind, in state_dict order.
func (r *Registry) Select(k Kind) []*torch.Tensor {
	var out []*torch.Tensor
	for _, e := range r.st.entries {
		if e.Kind == k {
			out = append(out, e.Tensor)
		}
	}
	return out
}

// Count returns the number of elements of all entries of kind k.
func (r *Registry) Count(k Kind) int64 {
	var n int64
	for _, e := range r.st.entries {
		if e.Kind == k {
			n += e.Tensor.Numel()
		}
	}
	return n
}

// Lookup returns the entry named name.
func (r *Registry) Lookup(name string) (Entry, bool) {
	i, ok := r.st.index[name]
	if !ok {
		return Entry{}, false
	}
	return r.st.entries[i], true
}

// StateDict returns every entry as a named tensor, batch-norm counters brought up to date.
func (r *Registry) StateDict() ([]torch.Named, error) {
	out := make([]torch.Named, len(r.st.entries))
	for i, e := range r.st.entries {
		if e.bn != nil {
			if err := e.Tensor.Fill_(float64(e.bn.count)); err != nil {
				return nil, err
			}
		}
		out[i] = torch.Named{Name: e.Name, Tensor: e.Tensor}
	}
	return out, nil
}

// LoadStateDict copies values from entries into the registry's tensors (converting dtype
// and device). Every registry key must be present with the same shape, and no unknown key
// may be given; the error names the first offending key. Keys listed in ignore are skipped.
func (r *Registry) LoadStateDict(entries []torch.Named, ignore ...string) error {
	skip := map[string]bool{}
	for _, k := range ignore {
		skip[k] = true
	}
	given := map[string]*torch.Tensor{}
	for _, e := range entries {
		if skip[e.Name] {
			continue
		}
		if _, ok := r.st.index[e.Name]; !ok {
			return fmt.Errorf("unexpected key %q (not in this network; check the architecture config)", e.Name)
		}
		given[e.Name] = e.Tensor
	}
	for _, e := range r.st.entries {
		src, ok := given[e.Name]
		if !ok {
			return fmt.Errorf("missing key %q", e.Name)
		}
		want, _ := e.Tensor.Shape()
		got, err := src.Shape()
		if err != nil {
			return fmt.Errorf("key %q: %w", e.Name, err)
		}
		if !slices.Equal(want, got) {
			return fmt.Errorf("key %q has shape %v, this network expects %v", e.Name, got, want)
		}
	}
	for _, e := range r.st.entries {
		src := given[e.Name]
		if e.bn != nil {
			v, err := src.Item()
			if err != nil {
				return fmt.Errorf("key %q: %w", e.Name, err)
			}
			e.bn.count = int64(v)
		}
		if err := e.Tensor.Copy_(src); err != nil {
			return fmt.Errorf("key %q: %w", e.Name, err)
		}
	}
	return nil
}

// ShapeString formats a shape as [a, b].
func ShapeString(s []int64) string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// RunningStats returns the batch-norm running means and variances (the float buffers,
// without the integer batch counters), in state_dict order.
func (r *Registry) RunningStats() []*torch.Tensor {
	var out []*torch.Tensor
	for _, e := range r.st.entries {
		if e.Kind == Buffer && e.bn == nil {
			out = append(out, e.Tensor)
		}
	}
	return out
}

// CopyFrom copies every tensor (weights, alphas, buffers) and batch counter of src, a
// registry of the same architecture, into r; into every task copy when r is batched and
// src is not.
func (r *Registry) CopyFrom(src *Registry) error {
	if len(src.st.entries) != len(r.st.entries) {
		return fmt.Errorf("copy: %d entries into %d", len(src.st.entries), len(r.st.entries))
	}
	dst := make([]*torch.Tensor, len(r.st.entries))
	from := make([]*torch.Tensor, len(r.st.entries))
	for i, e := range r.st.entries {
		dst[i], from[i] = e.Tensor, src.st.entries[i].Tensor
		if e.bn != nil {
			e.bn.count = src.st.entries[i].bn.count
		}
	}
	if r.st.tasks != src.st.tasks {
		if src.st.tasks != 1 {
			return fmt.Errorf("copy: a network of %d tasks into one of %d", src.st.tasks, r.st.tasks)
		}
		return torch.ForeachCopyTasks(dst, from, r.st.tasks)
	}
	return torch.ForeachCopy(dst, from)
}
