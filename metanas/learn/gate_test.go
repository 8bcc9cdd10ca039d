package learn

import (
	"errors"
	"testing"
	"time"

	"github.com/metanas-go/metanas/torch"
)

// TestDeviceGate: an exclusive section waits for every other shared holder, holds off new
// ones, and leaves its caller holding the gate shared again; a nil gate orders nothing.
func TestDeviceGate(t *testing.T) {
	g := &DeviceGate{}
	releaseA := g.Shared() // another batch worker, mid-step
	ran := make(chan struct{})
	done := make(chan error)
	go func() {
		release := g.Shared()
		err := g.exclusive(func() error {
			close(ran)
			if g.mu.TryRLock() {
				return errors.New("a shared hold was granted during the exclusive section")
			}
			return nil
		})
		release()
		done <- err
	}()
	select {
	case <-ran:
		t.Fatal("the exclusive section ran while another worker held the gate")
	case <-time.After(50 * time.Millisecond):
	}
	releaseA()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Every holder has released the gate.
	if !g.mu.TryLock() {
		t.Fatal("the gate is still held after every holder released it")
	}
	g.mu.Unlock()

	// While the caller holds it shared after the section, an exclusive hold is refused.
	release := g.Shared()
	if err := g.exclusive(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	if g.mu.TryLock() {
		t.Fatal("exclusive did not give the caller its shared hold back")
	}
	release()

	var nilGate *DeviceGate
	calls := 0
	nilGate.Shared()()
	if err := nilGate.exclusive(func() error { calls++; return nil }); err != nil || calls != 1 {
		t.Fatalf("nil gate: exclusive ran f %d times, error %v", calls, err)
	}
	if err := nilGate.Do(func() error { calls++; return errors.New("x") }); err == nil || calls != 2 {
		t.Fatalf("nil gate: Do ran f %d times, error %v", calls, err)
	}
}

// TestDeviceGateBatchWorkers: two batch workers sharing a gate adapt batches at once, each
// trying a capture in every adaptation (on the CPU the capture fails at once, after its
// exclusive hold, and the steps go on eagerly on the static buffers), without deadlock and
// with what one batch worker adapting the same batches alone gives (bit for bit).
func TestDeviceGateBatchWorkers(t *testing.T) {
	cfg := tinyConfig(t)
	// Three task steps: each minibatch shape (4 and 2 images) reaches its capture (after
	// two eager steps of both) within an adaptation.
	if err := cfg.Set("task.steps=3"); err != nil {
		t.Fatal(err)
	}
	const T = 2
	tasks := tinyTasks(t, cfg, 2*T)
	ts := Settings(cfg, false)
	meta := newTestMeta(t, cfg, torch.CPU, 5)
	gate := &DeviceGate{}
	pair := []*BatchWorker{newTestBatch(t, cfg, torch.CPU, T), newTestBatch(t, cfg, torch.CPU, T)}
	alone := newTestBatch(t, cfg, torch.CPU, T)
	alone.graphs = graphsStatic
	adapt := func(b *BatchWorker, k int, search bool) ([][]float32, error) {
		if err := b.Load(meta); err != nil {
			return nil, err
		}
		b.SeedTask(uint64(70 + k))
		if _, err := b.Adapt(tasks[k*T:(k+1)*T], ts, search); err != nil {
			return nil, err
		}
		return host(t, append(b.Model.Weights(), b.Model.Alphas()...)), nil
	}
	for round, search := range []bool{false, true, true} {
		got := make([][][]float32, len(pair))
		errs := make([]error, len(pair))
		done := make(chan int)
		for k, b := range pair {
			b.Gate, b.graphs, b.GraphErr = gate, graphsCUDA, nil
			go func() {
				got[k], errs[k] = adapt(b, k, search)
				done <- k
			}()
		}
		for range pair {
			select {
			case <-done:
			case <-time.After(2 * time.Minute):
				t.Fatalf("round %d: the batch workers did not finish (a deadlock on the gate?)", round)
			}
		}
		for k, b := range pair {
			if errs[k] != nil {
				t.Fatalf("round %d, batch worker %d: %v", round, k, errs[k])
			}
			if b.GraphErr == nil || b.graphs != graphsStatic {
				t.Fatalf("round %d, batch worker %d: no capture was tried (graph error %v)", round, k, b.GraphErr)
			}
			want, err := adapt(alone, k, search)
			if err != nil {
				t.Fatal(err)
			}
			for p := range want {
				for e := range want[p] {
					if got[k][p][e] != want[p][e] {
						t.Fatalf("round %d, batch %d, tensor %d element %d: %g beside another batch, %g alone", round, k, p, e, got[k][p][e], want[p][e])
					}
				}
			}
		}
	}
}
