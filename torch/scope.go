package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// ErrFreed is returned when a tensor is used after it was freed or its scope closed.
var ErrFreed = errors.New("tensor used after it was freed (its scope was closed); Keep it or move it to a longer-lived scope")

var scopeIDs atomic.Uint64

// Scope owns tensors and frees them together when it is closed. A scope is used by one
// goroutine at a time; Keep and MoveTo may target a scope shared by several goroutines.
// A scope that is dropped without Close is closed by a finalizer as a safety net only.
type Scope struct {
	id      uint64
	parent  *Scope
	mu      sync.Mutex // guards tensors when other scopes move tensors in
	tensors []*Tensor
	err     error
	closed  bool
	// free collects the handles that Reset and Close free in one C call.
	free []C.mt_tensor
	// slot is C memory where shim calls write their result handle: a Go variable whose
	// address went to C would be moved to the heap on every call.
	slot *C.mt_tensor
	// block is where the next tensors' structs come from: one Go allocation per
	// len(block) ops instead of one per op. Blocks are never reused, so a stale *Tensor
	// of an earlier Reset keeps reading as freed.
	block []Tensor
}

// Tensor is a handle to a LibTorch tensor owned by a scope.
type Tensor struct {
	h     C.mt_tensor
	owner uint64
}

// NewScope returns a root scope.
func NewScope() *Scope { return newScope(nil) }

// Child returns a scope whose Keep moves tensors into s.
func (s *Scope) Child() *Scope { return newScope(s) }

func newScope(parent *Scope) *Scope {
	s := &Scope{id: scopeIDs.Add(1), parent: parent}
	runtime.SetFinalizer(s, (*Scope).Close)
	return s
}

// With runs f in a child scope of s (a root scope when s is nil), closes the child, and
// returns f's error or else the child's first operation error.
func With(s *Scope, f func(*Scope) error) error {
	var c *Scope
	if s == nil {
		c = NewScope()
	} else {
		c = s.Child()
	}
	defer c.Close()
	if err := f(c); err != nil {
		return err
	}
	return c.Err()
}

// Err returns the first error of an operation in this scope, or nil.
func (s *Scope) Err() error { return s.err }

// ClearErr forgets the recorded error so the scope can be used again.
func (s *Scope) ClearErr() { s.err = nil }

// Len returns how many live tensors the scope owns.
func (s *Scope) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := make(map[*Tensor]bool, len(s.tensors))
	for _, t := range s.tensors {
		if t.h != nil && t.owner == s.id {
			seen[t] = true // a tensor moved out and back is listed twice
		}
	}
	return len(seen)
}

// Close frees every tensor the scope still owns. Closing twice is harmless.
func (s *Scope) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	runtime.SetFinalizer(s, nil)
	s.freeOwned()
	s.tensors = nil
	if s.slot != nil {
		C.free(unsafe.Pointer(s.slot))
		s.slot = nil
	}
}

// out returns the scope's result slot, cleared.
func (s *Scope) out() *C.mt_tensor {
	if s.slot == nil {
		s.slot = (*C.mt_tensor)(C.calloc(1, C.size_t(unsafe.Sizeof(C.mt_tensor(nil)))))
	}
	*s.slot = nil
	return s.slot
}

// Reset frees every tensor the scope owns and clears its error, keeping the scope open
// (cheaper than a new scope per loop iteration).
func (s *Scope) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.freeOwned()
	s.tensors = s.tensors[:0]
	s.err = nil
}

func (s *Scope) freeOwned() {
	hs := s.free[:0]
	for _, t := range s.tensors {
		if t.h != nil && t.owner == s.id {
			hs = append(hs, t.h)
			t.h = nil
		}
	}
	if len(hs) > 0 {
		C.mt_tensor_free_many(&hs[0], C.int64_t(len(hs)))
	}
	clear(hs)
	s.free = hs
}

// Keep moves tensors to the parent scope so they survive Close, and returns the first.
// Without a parent it is an error recorded in the scope.
func (s *Scope) Keep(ts ...*Tensor) *Tensor {
	if s.parent == nil {
		s.setErr(errors.New("keep: scope has no parent; use MoveTo"))
		return firstOf(ts)
	}
	for _, t := range ts {
		t.MoveTo(s.parent)
	}
	return firstOf(ts)
}

func firstOf(ts []*Tensor) *Tensor {
	if len(ts) == 0 {
		return nil
	}
	return ts[0]
}

// MoveTo makes dst the owner of t. Moving into a closed scope frees t (a closed scope
// never frees again, so the tensor would otherwise leak).
func (t *Tensor) MoveTo(dst *Scope) {
	if t == nil || t.h == nil {
		return
	}
	dst.mu.Lock()
	defer dst.mu.Unlock()
	if dst.closed {
		t.Free()
		return
	}
	if t.owner == dst.id {
		return
	}
	t.owner = dst.id
	dst.tensors = append(dst.tensors, t)
}

// Free releases t now rather than when its scope closes.
func (t *Tensor) Free() {
	if t != nil && t.h != nil {
		C.mt_tensor_free(t.h)
		t.h = nil
	}
}

// Valid reports whether t refers to a live tensor.
func (t *Tensor) Valid() bool { return t != nil && t.h != nil }

func (t *Tensor) valid(op string) error {
	if t == nil {
		return fmt.Errorf("%s: nil tensor", op)
	}
	if t.h == nil {
		return fmt.Errorf("%s: %w", op, ErrFreed)
	}
	return nil
}

func (s *Scope) setErr(err error) {
	if s.err == nil {
		s.err = err
	}
}

// fail records err and returns an invalid tensor.
func (s *Scope) fail(err error) *Tensor {
	s.setErr(err)
	return &Tensor{}
}

// ok checks the scope and the inputs of op; on failure it records the error.
func (s *Scope) ok(op string, ts ...*Tensor) bool {
	if s.err != nil {
		return false
	}
	if s.closed {
		s.setErr(fmt.Errorf("%s: scope is closed", op))
		return false
	}
	for _, t := range ts {
		if err := t.valid(op); err != nil {
			s.setErr(err)
			return false
		}
	}
	return true
}

// tensorBlock is how many tensor structs a scope allocates at once.
const tensorBlock = 64

// adopt registers a new handle in the scope.
func (s *Scope) adopt(h C.mt_tensor) *Tensor {
	if len(s.block) == 0 {
		s.block = make([]Tensor, tensorBlock)
	}
	t := &s.block[0]
	s.block = s.block[1:]
	t.h, t.owner = h, s.id
	s.tensors = append(s.tensors, t)
	return t
}

// res turns a shim call's outcome into a tensor of the scope.
func (s *Scope) res(e *C.char, h C.mt_tensor) *Tensor {
	if e != nil {
		return s.fail(cerr(e))
	}
	return s.adopt(h)
}

// result is res for callers holding the handle by pointer.
func (s *Scope) result(_ C.mt_tensor, err error, h *C.mt_tensor) *Tensor {
	if err != nil {
		return s.fail(err)
	}
	return s.adopt(*h)
}

// handles returns the C handles of ts (nil entries allowed when opt is true).
func handles(ts []*Tensor) []C.mt_tensor {
	hs := make([]C.mt_tensor, len(ts))
	for i, t := range ts {
		if t != nil {
			hs[i] = t.h
		}
	}
	return hs
}

// optH returns t's handle or NULL for a nil tensor (an omitted optional input).
func optH(t *Tensor) C.mt_tensor {
	if t == nil {
		return nil
	}
	return t.h
}
