package data

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestPrefetcherMatchesSampler(t *testing.T) {
	ds := mustSynthetic(t, SyntheticOptions{Classes: 20, PerClass: 8, C: 1, H: 3, W: 3, Seed: 1})
	s, err := NewSampler(ds, 5, 3, 1, 11)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		size, depth  int
		start        uint64
		consume      int
		resumeAfter  int // close and resume from Position after this many
		wantPosition uint64
	}{
		{"depth 1", 4, 1, 0, 6, -1, 6},
		{"depth 2 from batch 10", 3, 2, 10, 5, -1, 15},
		{"resume", 2, 2, 0, 7, 3, 7},
		{"depth 0 means 1", 1, 0, 5, 2, -1, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			p, err := NewPrefetcher(ctx, s, tc.size, tc.start, tc.depth)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { p.Close() }()
			want := tc.start
			for i := 0; i < tc.consume; i++ {
				if i == tc.resumeAfter {
					pos := p.Position()
					// Let the goroutine run ahead before closing.
					time.Sleep(10 * time.Millisecond)
					p.Close()
					if p, err = NewPrefetcher(ctx, s, tc.size, pos, tc.depth); err != nil {
						t.Fatal(err)
					}
				}
				mb, err := p.Next(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if mb.Index != want {
					t.Fatalf("batch index %d, want %d", mb.Index, want)
				}
				if !reflect.DeepEqual(mb.Tasks, s.Batch(want, tc.size)) {
					t.Fatalf("batch %d differs from Sampler.Batch", want)
				}
				want++
			}
			if got := p.Position(); got != tc.wantPosition {
				t.Errorf("Position %d, want %d", got, tc.wantPosition)
			}
		})
	}
}

func TestPrefetcherStop(t *testing.T) {
	ds := mustSynthetic(t, SyntheticOptions{Classes: 5, PerClass: 4, C: 1, H: 2, W: 2, Seed: 1})
	s, _ := NewSampler(ds, 2, 1, 1, 1)

	t.Run("close", func(t *testing.T) {
		p, _ := NewPrefetcher(context.Background(), s, 2, 0, 2)
		if _, err := p.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
		p.Close()
		p.Close() // idempotent
		if _, err := p.Next(context.Background()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close: %v, want ErrClosed", err)
		}
	})
	t.Run("parent context cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		p, _ := NewPrefetcher(ctx, s, 2, 0, 1)
		cancel()
		// Buffered batches may still come out; then ErrClosed.
		deadline := time.After(5 * time.Second)
		for {
			_, err := p.Next(context.Background())
			if errors.Is(err, ErrClosed) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			select {
			case <-deadline:
				t.Fatal("prefetcher kept producing after cancel")
			default:
			}
		}
		p.Close()
	})
	t.Run("Next context", func(t *testing.T) {
		p, _ := NewPrefetcher(context.Background(), s, 1, 0, 1)
		defer p.Close()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := p.Next(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v, want context.Canceled", err)
		}
		// The stream is not consumed by the failed call.
		if mb, err := p.Next(context.Background()); err != nil || mb.Index != 0 {
			t.Fatalf("after a cancelled Next: batch %d, %v", mb.Index, err)
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		if _, err := NewPrefetcher(context.Background(), nil, 1, 0, 1); err == nil {
			t.Error("nil sampler: no error")
		}
		if _, err := NewPrefetcher(context.Background(), s, 0, 0, 1); err == nil {
			t.Error("size 0: no error")
		}
	})
}
