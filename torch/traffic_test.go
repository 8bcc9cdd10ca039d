package torch

import (
	"os"
	"testing"

	"github.com/metanas-go/metanas/internal/testutil"
)

// TestProfileBytes (in a child process, as the counting cannot be stopped and slows every
// op): each outermost ATen call counts the bytes of the tensors it reads and writes, by
// hand for float32 tensors of 1,000 elements (4,000 bytes): an addition reads two and
// writes one; a view moves nothing; a copy of a strided slice reads and writes the slice;
// a concatenation reads both and writes their sum; a fill writes its output only; the
// operators nested in a call (matmul's expansion and products) are the call's own.
func TestProfileBytes(t *testing.T) {
	if os.Getenv("METANAS_TEST_PROFILE_BYTES") != "1" {
		testutil.RerunWith(t, []string{"METANAS_TEST_PROFILE_BYTES=1"}, "^TestProfileBytes$", "TestProfileBytes")
		return
	}
	ProfileBytes()
	s := NewScope()
	defer s.Close()
	a := s.Randn([]int64{10, 100}, CPU, false)
	b := s.Randn([]int64{10, 100}, CPU, false)
	one := s.Full([]int64{1}, 2, CPU)
	if _, err := BytesProfile(true); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		run   func()
		op    string
		calls int64
		bytes int64
	}{
		{"add", func() { s.Add(a, b) }, "aten::add", 1, 3 * 4000},
		{"broadcast add", func() { s.Add(a, one) }, "aten::add", 1, 4000 + 4 + 4000},
		{"view", func() { s.View(a, 1000) }, "aten::view", 1, 0},
		{"strided copy", func() { s.Contiguous(s.Narrow(a, 1, 0, 50)) }, "aten::contiguous", 1, 2 * 2000},
		{"cat", func() { s.Cat([]*Tensor{a, b}, 0) }, "aten::cat", 1, 4 * 4000},
		{"zeros", func() { s.Zeros([]int64{10, 100}, CPU) }, "aten::full", 1, 4000}, // Zeros fills
		// [5, 10, 100] x [100, 7] = [5, 10, 7]: 20,000 + 2,800 read, 1,400 written.
		{"matmul", func() {
			s.Matmul(s.View(s.Cat([]*Tensor{a, b, a, b, a}, 0), 5, 10, 100), s.Narrow(s.View(s.Cat([]*Tensor{a, a}, 0), 100, 20), 1, 0, 7))
		}, "aten::matmul", 1, 20000 + 2800 + 1400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.run()
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			prof, err := BytesProfile(true)
			if err != nil {
				t.Fatal(err)
			}
			var got *OpBytes
			for i := range prof {
				if prof[i].Name == tt.op {
					got = &prof[i]
				}
				if i > 0 && prof[i].Bytes > prof[i-1].Bytes {
					t.Errorf("not sorted by bytes: %v", prof)
				}
			}
			if got == nil || got.Calls != tt.calls || got.Bytes != tt.bytes {
				t.Errorf("%s: %+v, want %d calls and %d bytes (profile %v)", tt.op, got, tt.calls, tt.bytes, prof)
			}
		})
	}
}
