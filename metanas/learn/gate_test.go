package learn

import (
	"errors"
	"testing"
	"time"
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
