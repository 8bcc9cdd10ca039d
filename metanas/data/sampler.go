package data

import (
	"fmt"
)

// Task is one N-way, K-shot few-shot task with Q queries per class.
//
// SupportX holds N*K images and QueryX N*Q images, each image C*H*W
// float32 values in [0,1] (uint8/255) in NCHW order. SupportY and QueryY
// hold the labels 0..N-1 of the examples. The support and the query
// examples are each in a random order (the trainer may take minibatches in
// order).
type Task struct {
	// Index is the task's position in its sampler's stream.
	Index uint64
	// N ways, K shots and Q queries per class.
	N, K, Q int
	// C, H, W give the image shape.
	C, H, W int
	// SupportX, SupportY: the N*K support examples.
	SupportX []float32
	SupportY []int64
	// QueryX, QueryY: the N*Q query examples.
	QueryX []float32
	QueryY []int64
	// Classes[l] is the index in the dataset's Classes of the class with
	// label l.
	Classes []int
	// SupportImages and QueryImages give, for each example, the index of
	// its image within its class (its class is Classes[label]).
	SupportImages []int
	QueryImages   []int
}

// Sampler draws few-shot tasks from a Dataset. Task i is a pure function
// of (dataset, ways, shots, queries, seed, i): the task's random numbers
// come from a PCG generator seeded with (seed, i). So a stream of tasks is
// reproducible, tasks may be built in any order or concurrently, and
// resuming needs only the index of the next task. A Sampler is safe for
// concurrent use.
type Sampler struct {
	ds                   *Dataset
	ways, shots, queries int
	seed                 uint64
	table                [256]float32
}

// NewSampler returns a sampler of ways-way tasks with shots support and
// queries query images per class. It checks that the dataset has at least
// ways classes and that every class has at least shots+queries images
// (errors wrap ErrTooFewClasses or ErrTooFewImages).
func NewSampler(ds *Dataset, ways, shots, queries int, seed uint64) (*Sampler, error) {
	if err := ds.Validate(); err != nil {
		return nil, err
	}
	if ways < 1 || shots < 1 || queries < 0 {
		return nil, fmt.Errorf("data: sampler: need ways >= 1, shots >= 1, queries >= 0 (got %d, %d, %d)", ways, shots, queries)
	}
	if len(ds.Classes) < ways {
		return nil, fmt.Errorf("data: split %q has %d classes, but %d ways were asked: %w",
			ds.Name, len(ds.Classes), ways, ErrTooFewClasses)
	}
	need := shots + queries
	for i := range ds.Classes {
		if n := ds.Classes[i].N; n < need {
			return nil, fmt.Errorf("data: split %q: class %d (%q) has %d images, but shots+queries = %d+%d = %d are needed: %w",
				ds.Name, i, ds.Classes[i].Name, n, shots, queries, need, ErrTooFewImages)
		}
	}
	s := &Sampler{ds: ds, ways: ways, shots: shots, queries: queries, seed: seed}
	for v := range s.table {
		s.table[v] = float32(v) / 255
	}
	return s, nil
}

// Dataset returns the sampler's dataset.
func (s *Sampler) Dataset() *Dataset { return s.ds }

// Ways returns the number of classes per task.
func (s *Sampler) Ways() int { return s.ways }

// Shots returns the number of support images per class.
func (s *Sampler) Shots() int { return s.shots }

// Queries returns the number of query images per class.
func (s *Sampler) Queries() int { return s.queries }

// Seed returns the sampler's seed.
func (s *Sampler) Seed() uint64 { return s.seed }

// Task builds task number index:
//
//  1. N distinct classes are drawn without replacement (a partial
//     Fisher-Yates shuffle of all class indices); the l-th drawn class
//     gets label l, so the labels are a uniformly random permutation of
//     the chosen classes;
//  2. for each label, K+Q distinct images of its class are drawn without
//     replacement: the first K are support, the next Q query;
//  3. the support examples and the query examples are each shuffled.
func (s *Sampler) Task(index uint64) Task {
	ds := s.ds
	n, k, q := s.ways, s.shots, s.queries
	src := newPCG(streamTask, s.seed, index)

	m := len(ds.Classes)
	pool := make([]int, m)
	for i := range pool {
		pool[i] = i
	}
	for i := 0; i < n; i++ {
		j := i + int(uintn(src, uint64(m-i)))
		pool[i], pool[j] = pool[j], pool[i]
	}
	classes := append([]int(nil), pool[:n]...)

	type ex struct{ label, img int }
	sup := make([]ex, 0, n*k)
	qry := make([]ex, 0, n*q)
	var imgs []int
	for l, c := range classes {
		cnt := ds.Classes[c].N
		if cap(imgs) < cnt {
			imgs = make([]int, cnt)
		}
		imgs = imgs[:cnt]
		for i := range imgs {
			imgs[i] = i
		}
		for i := 0; i < k+q; i++ {
			j := i + int(uintn(src, uint64(cnt-i)))
			imgs[i], imgs[j] = imgs[j], imgs[i]
		}
		for i := 0; i < k; i++ {
			sup = append(sup, ex{l, imgs[i]})
		}
		for i := k; i < k+q; i++ {
			qry = append(qry, ex{l, imgs[i]})
		}
	}
	shuffle := func(e []ex) {
		for i := len(e) - 1; i > 0; i-- {
			j := int(uintn(src, uint64(i+1)))
			e[i], e[j] = e[j], e[i]
		}
	}
	shuffle(sup)
	shuffle(qry)

	t := Task{
		Index: index, N: n, K: k, Q: q, C: ds.C, H: ds.H, W: ds.W,
		Classes: classes,
	}
	sz := ds.ImageSize()
	fill := func(e []ex) ([]float32, []int64, []int) {
		x := make([]float32, len(e)*sz)
		y := make([]int64, len(e))
		idx := make([]int, len(e))
		for i, v := range e {
			px := ds.Image(classes[v.label], v.img)
			dst := x[i*sz : (i+1)*sz]
			for j, p := range px {
				dst[j] = s.table[p]
			}
			y[i] = int64(v.label)
			idx[i] = v.img
		}
		return x, y, idx
	}
	t.SupportX, t.SupportY, t.SupportImages = fill(sup)
	t.QueryX, t.QueryY, t.QueryImages = fill(qry)
	return t
}

// Batch returns the meta-batch number batch of size tasks: the tasks with
// indices batch*size .. batch*size+size-1.
func (s *Sampler) Batch(batch uint64, size int) []Task {
	if size <= 0 {
		return nil
	}
	tasks := make([]Task, size)
	base := batch * uint64(size)
	for i := range tasks {
		tasks[i] = s.Task(base + uint64(i))
	}
	return tasks
}
