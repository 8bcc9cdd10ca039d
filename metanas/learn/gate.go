package learn

import "sync"

// DeviceGate orders the device work of batch workers that run at once (each on its own
// CUDA stream) around CUDA graph captures. A capture may not overlap CUDA calls of other
// threads that CUDA counts as unsafe during a capture (synchronous copies, stream and
// event synchronisation, among others; with CUDA's default capture mode they fail the
// capture), and it synchronises the device and empties the allocator's cache first. So a
// batch worker holds the gate shared for what it issues (loading the meta-model, an
// adaptation, scoring, adding to the meta-learner) and exclusively while it captures.
// The zero value is ready; a nil gate orders nothing (one batch worker).
type DeviceGate struct{ mu sync.RWMutex }

// Shared holds g shared and returns its release.
func (g *DeviceGate) Shared() (release func()) {
	if g == nil {
		return func() {}
	}
	g.mu.RLock()
	return g.mu.RUnlock
}

// Do runs f with g held shared.
func (g *DeviceGate) Do(f func() error) error {
	defer g.Shared()()
	return f()
}

// exclusive turns a shared hold of g into an exclusive one for f, then back: f runs
// once every other holder has released g, and no one else holds it meanwhile.
func (g *DeviceGate) exclusive(f func() error) error {
	if g == nil {
		return f()
	}
	g.mu.RUnlock()
	g.mu.Lock()
	defer func() {
		g.mu.Unlock()
		g.mu.RLock()
	}()
	return f()
}
