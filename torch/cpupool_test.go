package torch

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// TestCPUPoolSelfTest checks the pool's size classes (every size fits, at most an eighth
// wasted, one capacity per class) and, with the pool on, that blocks are 64-byte aligned
// and a freed block is reused.
func TestCPUPoolSelfTest(t *testing.T) {
	if err := cpuPoolSelfTest(); err != nil {
		t.Fatal(err)
	}
}

// poolOn switches the pool on for a test and restores what it was.
func poolOn(t *testing.T) {
	was := CPUPool().Enabled
	SetCPUPool(true)
	t.Cleanup(func() { SetCPUPool(was) })
}

// TestCPUPoolReuse: a CPU tensor freed and allocated again at the same size takes the kept
// block (a hit, no new block), with the values of its own creation; the bytes handed out
// go back when the tensors are freed.
func TestCPUPoolReuse(t *testing.T) {
	runtime.LockOSThread() // the small blocks are kept per thread
	defer runtime.UnlockOSThread()
	poolOn(t)
	shape := []int64{7, 129} // 3,612 bytes: a 3,840-byte class
	s := NewScope()
	defer s.Close()
	s.Full(shape, 1, CPU) // a first block of this class
	s.Reset()
	before := CPUPool()
	a := s.Full(shape, 2.5, CPU)
	mid := CPUPool()
	if got := mid.Hits - before.Hits; got < 1 {
		t.Errorf("hits: %d new, want at least 1", got)
	}
	if got := mid.Misses - before.Misses; got != 0 {
		t.Errorf("misses: %d new, want 0 (the freed block should serve)", got)
	}
	if got := mid.InUseBytes - before.InUseBytes; got != 3840 {
		t.Errorf("bytes in use grew by %d, want 3840", got)
	}
	v, err := a.Float32s()
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range v {
		if x != 2.5 {
			t.Fatalf("value %d: %v, want 2.5", i, x)
		}
	}
	s.Reset()
	if got := CPUPool().InUseBytes - before.InUseBytes; got != 0 {
		t.Errorf("bytes in use after freeing: %+d, want 0", got)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}

// TestCPUPoolCrossThread: tensors allocated on one OS thread and freed on another leave
// the pool's count of bytes in use where it was, and a trim gives kept blocks back.
func TestCPUPoolCrossThread(t *testing.T) {
	poolOn(t)
	before := CPUPool()
	made := make(chan *Scope)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		s := NewScope()
		for i := 0; i < 50; i++ {
			s.Full([]int64{64, 28}, float64(i), CPU)
			s.Full([]int64{1 << 20}, 1, CPU) // 4 MiB: the shared lists
		}
		made <- s
	}()
	s := <-made
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	if got := CPUPool().InUseBytes - before.InUseBytes; got < 50*(7168+4<<20) {
		t.Errorf("bytes in use grew by %d, want at least %d", got, 50*(7168+4<<20))
	}
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		s.Close()
		close(done)
	}()
	<-done
	after := CPUPool()
	if got := after.InUseBytes - before.InUseBytes; got != 0 {
		t.Errorf("bytes in use after freeing on another thread: %+d, want 0", got)
	}
	if after.CachedBytes < 4<<20 {
		t.Errorf("kept %d bytes after freeing, want the 4 MiB blocks", after.CachedBytes)
	}
	if freed := TrimCPUPool(); freed < 4<<20 {
		t.Errorf("trim freed %d bytes, want at least 4 MiB", freed)
	}
}

// TestCPUPoolTrimsIdleThreads: a trim empties the cache of a thread that stays alive but
// allocates nothing more (before, such a thread kept up to 16 MiB until its next
// allocation, and resident memory moved with the threads a run happened to use).
func TestCPUPoolTrimsIdleThreads(t *testing.T) {
	poolOn(t)
	TrimCPUPool()
	filled, release := make(chan struct{}), make(chan struct{})
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		s := NewScope()
		for i := 0; i < 64; i++ {
			s.Full([]int64{64, 1024}, float64(i), CPU) // 256 KiB: the thread's own cache
		}
		s.Close()
		close(filled)
		<-release // alive, allocating nothing
	}()
	defer close(release)
	<-filled
	if got := CPUPool().CachedBytes; got < 64<<18 {
		t.Fatalf("the idle thread keeps %d bytes, want its 64 blocks of 256 KiB", got)
	}
	if freed := TrimCPUPool(); freed < 64<<18 {
		t.Errorf("trim freed %d bytes, want at least the idle thread's 16 MiB", freed)
	}
	if got := CPUPool().CachedBytes; got != 0 {
		t.Errorf("the pool keeps %d bytes after a trim, want 0", got)
	}
}

// TestCPUPoolOff: with the pool off LibTorch's allocator serves, and the pool counts nothing.
func TestCPUPoolOff(t *testing.T) {
	was := CPUPool().Enabled
	SetCPUPool(false)
	defer SetCPUPool(was)
	before := CPUPool()
	s := NewScope()
	x := s.Full([]int64{3, 5}, 4, CPU)
	y := s.Add(x, x)
	v, err := y.Float32s()
	s.Close()
	if err != nil {
		t.Fatal(err)
	}
	if v[0] != 8 || v[14] != 8 {
		t.Errorf("values %v, want 8", v)
	}
	after := CPUPool()
	if after.Enabled || after.Hits != before.Hits || after.Misses != before.Misses {
		t.Errorf("pool off: %+v then %+v", before, after)
	}
}

// TestCPUPoolCap: METANAS_CPU_POOL_MAX_MB=0 keeps no free block (each allocation is a new
// block), and METANAS_CPU_POOL=0 starts with LibTorch's allocator.
func TestCPUPoolCap(t *testing.T) {
	switch {
	case os.Getenv("METANAS_CPU_POOL") == "0":
		if CPUPool().Enabled {
			t.Fatal("METANAS_CPU_POOL=0, but the pool is on")
		}
		return
	case os.Getenv("METANAS_CPU_POOL_MAX_MB") == "0":
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		s := NewScope()
		defer s.Close()
		s.Full([]int64{100}, 1, CPU)
		s.Reset()
		before := CPUPool()
		s.Full([]int64{100}, 1, CPU)
		after := CPUPool()
		if after.Hits != before.Hits || after.Misses != before.Misses+1 || after.CachedBytes != 0 {
			t.Errorf("cap 0: %+v then %+v, want one miss and nothing kept", before, after)
		}
		return
	}
	if !CPUPool().Enabled {
		t.Skip("the pool is off in this environment")
	}
	testutil.RerunWith(t, []string{"METANAS_CPU_POOL_MAX_MB=0"}, "^TestCPUPoolCap$", "TestCPUPoolCap")
	testutil.RerunWith(t, []string{"METANAS_CPU_POOL=0"}, "^TestCPUPoolCap$", "TestCPUPoolCap")
	// A cap that is not a number is reported, not silently ignored; the default serves.
	cmd := exec.Command(os.Args[0], "-test.run=^TestCPUPoolReuse$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "METANAS_CPU_POOL_MAX_MB=lots")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "METANAS_CPU_POOL_MAX_MB=lots is not a number of MiB") ||
		!strings.Contains(string(out), "--- PASS: TestCPUPoolReuse") {
		t.Errorf("with METANAS_CPU_POOL_MAX_MB=lots: %v\n%s", err, out)
	}
}

// TestCPUPoolConcurrent: goroutines on their own OS threads create CPU tensors of many
// sizes (per-thread and shared classes), check their values, and hand half of them to
// another goroutine to free. Every value is right, and the pool's bytes in use come back
// to where they were.
func TestCPUPoolConcurrent(t *testing.T) {
	poolOn(t)
	before := CPUPool()
	const workers, rounds = 4, 60
	sizes := []int64{1, 17, 255, 1000, 7168, 40000, 70000, 300000}
	handoff := make(chan *Scope, workers*rounds)
	errs := make(chan error, workers+1)
	var freeing sync.WaitGroup
	freeing.Add(1)
	go func() { // frees what the workers hand over, on its own thread
		defer freeing.Done()
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for s := range handoff {
			s.Close()
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			mine := NewScope()
			defer mine.Close()
			for r := 0; r < rounds; r++ {
				s := NewScope()
				for i, n := range sizes {
					v := float64(w*1000 + r*10 + i)
					x := s.Full([]int64{n}, v, CPU)
					got, err := s.Sum(s.MulScalar(x, 0.5)).Item()
					if err != nil {
						errs <- err
						return
					}
					if want := 0.5 * v * float64(n); math.Abs(got-want) > 1e-6*math.Abs(want)+1e-3 {
						errs <- fmt.Errorf("worker %d round %d size %d: sum %v, want %v", w, r, n, got, want)
						return
					}
				}
				if r%2 == 0 {
					handoff <- s
				} else {
					s.Close()
				}
				mine.Full([]int64{int64(64 * (r + 1))}, 1, CPU)
				if r%10 == 9 {
					mine.Reset()
				}
			}
		}(w)
	}
	wg.Wait()
	close(handoff)
	freeing.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := CPUPool().InUseBytes - before.InUseBytes; got != 0 {
		t.Errorf("bytes in use after all scopes closed: %+d, want 0", got)
	}
}

// TestCPUPoolPeak: the peak counts the most bytes handed out at once since its reset: two
// 1 MiB tensors alive together count twice, one freed before the next once; a reset
// starts the next period at the bytes in use then.
func TestCPUPoolPeak(t *testing.T) {
	poolOn(t)
	s := NewScope()
	defer s.Close()
	const mib = 1 << 20
	shape := []int64{mib / 4} // 1 MiB of float32: a 1 MiB class
	CPUPoolPeak(true)
	base := CPUPool().InUseBytes
	a := s.Zeros(shape, CPU)
	b := s.Zeros(shape, CPU)
	if got := CPUPoolPeak(true) - base; got < 2*mib || got > 2*mib+mib/8 {
		t.Errorf("peak with two tensors alive: %d bytes above the start, want 2 MiB", got)
	}
	a.Free()
	b.Free()
	CPUPoolPeak(true) // the next period starts with both freed
	base = CPUPool().InUseBytes
	for i := 0; i < 3; i++ {
		s.Zeros(shape, CPU).Free()
	}
	if got := CPUPoolPeak(false) - base; got < mib || got > mib+mib/8 {
		t.Errorf("peak with one tensor alive at a time: %d bytes above the start, want 1 MiB", got)
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
}
