package data

import (
	"context"
	"fmt"
	"sync"
)

// MetaBatch is one meta-batch: the tasks Index*len(Tasks) ..
// (Index+1)*len(Tasks)-1 of a sampler.
type MetaBatch struct {
	// Index is the meta-batch number.
	Index uint64
	// Tasks are the meta-batch's tasks, in index order.
	Tasks []Task
}

// Prefetcher builds meta-batches in a background goroutine, a few batches
// ahead of the consumer. The batches are exactly Sampler.Batch(b, size)
// for b = start, start+1, ..., so results do not depend on prefetching.
// Next, Position and Close may be called from different goroutines.
type Prefetcher struct {
	ch     chan MetaBatch
	cancel context.CancelFunc
	done   chan struct{}
	closed chan struct{}
	once   sync.Once

	mu   sync.Mutex
	next uint64 // index of the batch Next returns next
}

// NewPrefetcher starts prefetching meta-batches of size tasks from
// sampler, beginning with batch number start (use a checkpointed
// Position to resume). depth is the channel capacity (how many finished
// batches may wait; values below 1 mean 1). The goroutine stops when ctx
// is cancelled or Close is called.
func NewPrefetcher(ctx context.Context, sampler *Sampler, size int, start uint64, depth int) (*Prefetcher, error) {
	if sampler == nil {
		return nil, fmt.Errorf("data: prefetcher: nil sampler")
	}
	if size <= 0 {
		return nil, fmt.Errorf("data: prefetcher: meta-batch size must be positive (got %d)", size)
	}
	if depth < 1 {
		depth = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Prefetcher{
		ch:     make(chan MetaBatch, depth),
		cancel: cancel,
		done:   make(chan struct{}),
		closed: make(chan struct{}),
		next:   start,
	}
	go func() {
		defer close(p.done)
		defer close(p.ch)
		for b := start; ; b++ {
			mb := MetaBatch{Index: b, Tasks: sampler.Batch(b, size)}
			select {
			case p.ch <- mb:
			case <-ctx.Done():
				return
			}
		}
	}()
	return p, nil
}

// Next returns the next meta-batch. It blocks until one is ready, ctx is
// done (it returns ctx.Err(), also when ctx is done on entry) or the
// prefetcher is closed or its context cancelled (it returns ErrClosed).
func (p *Prefetcher) Next(ctx context.Context) (MetaBatch, error) {
	select {
	case <-p.closed:
		return MetaBatch{}, ErrClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return MetaBatch{}, err
	}
	select {
	case mb, ok := <-p.ch:
		if !ok {
			return MetaBatch{}, ErrClosed
		}
		p.mu.Lock()
		p.next = mb.Index + 1
		p.mu.Unlock()
		return mb, nil
	case <-ctx.Done():
		return MetaBatch{}, ctx.Err()
	}
}

// Position returns the number of the meta-batch Next will return next.
// Batches that were prefetched but not yet returned do not count, so
// Position is what a checkpoint should store for resuming.
func (p *Prefetcher) Position() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.next
}

// Close stops the background goroutine and waits for it to exit. It is
// safe to call more than once.
func (p *Prefetcher) Close() {
	p.once.Do(func() {
		close(p.closed)
		p.cancel()
		<-p.done
	})
}
