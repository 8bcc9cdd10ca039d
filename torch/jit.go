package torch

// #include <stdlib.h>
// #include "jit.h"
import "C"

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"unsafe"
)

// ErrModuleClosed is returned when a module is used after Close.
var ErrModuleClosed = errors.New("TorchScript module used after Close")

// Module is a TorchScript module (torch::jit::Module): either built here, by registering
// parameters, buffers and attributes and compiling TorchScript source with Define, then
// saved with Save in the format Python's torch.jit.load reads; or loaded with LoadModule
// from a file written by Save or by Python's torch.jit.save, and run with Forward.
//
// A module is not safe for concurrent mutation; concurrent Forward calls on a loaded module
// are as safe as LibTorch makes them (they are for inference). Close frees it; a module
// dropped without Close is freed by a finalizer as a safety net only.
type Module struct {
	h       C.mt_module
	noOptim bool
}

func newModule(h C.mt_module) *Module {
	m := &Module{h: h}
	runtime.SetFinalizer(m, (*Module).Close)
	return m
}

// NewModule returns an empty module whose TorchScript class is __torch__.<name>; name is
// a Python identifier, or several joined by dots.
func NewModule(name string) (*Module, error) {
	if !validQualifiedName(name) {
		return nil, fmt.Errorf("new module %q: the name must be Python identifiers joined by dots", name)
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var h C.mt_module
	if err := cerr(C.mt_jit_new(cn, &h)); err != nil {
		return nil, err
	}
	return newModule(h), nil
}

// ValidIdentifier reports whether s is a Python/TorchScript identifier (ASCII letters,
// digits and underscores, not starting with a digit), as parameter, buffer and attribute
// names must be.
func ValidIdentifier(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_' || ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z'):
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func validQualifiedName(s string) bool {
	for _, p := range strings.Split(s, ".") {
		if !ValidIdentifier(p) {
			return false
		}
	}
	return true
}

// Close frees the module. Closing twice is harmless.
func (m *Module) Close() {
	if m == nil || m.h == nil {
		return
	}
	runtime.SetFinalizer(m, nil)
	C.mt_jit_free(m.h)
	m.h = nil
}

func (m *Module) check(op, name string) error {
	if m == nil || m.h == nil {
		return fmt.Errorf("%s: %w", op, ErrModuleClosed)
	}
	if name != "" && !ValidIdentifier(name) {
		return fmt.Errorf("%s: %q is not an identifier (letters, digits, underscores; no dots)", op, name)
	}
	return nil
}

// RegisterParameter adds a parameter named name holding a detached CPU copy of t, with
// requires_grad as given. It must precede the Define that uses it.
func (m *Module) RegisterParameter(name string, t *Tensor, requiresGrad bool) error {
	op := "register parameter " + name
	if err := m.check(op, name); err != nil {
		return err
	}
	if err := t.valid(op); err != nil {
		return err
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return cerr(C.mt_jit_register_parameter(m.h, cn, t.h, C.bool(requiresGrad)))
}

// RegisterBuffer adds a buffer (a tensor saved with the module that is not a parameter)
// named name holding a detached CPU copy of t.
func (m *Module) RegisterBuffer(name string, t *Tensor) error {
	op := "register buffer " + name
	if err := m.check(op, name); err != nil {
		return err
	}
	if err := t.valid(op); err != nil {
		return err
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return cerr(C.mt_jit_register_buffer(m.h, cn, t.h))
}

func (m *Module) setAttr(name string, f func(*C.char) *C.char) error {
	op := "set attribute " + name
	if err := m.check(op, name); err != nil {
		return err
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	return cerr(f(cn))
}

// SetAttrString adds a str attribute (self.<name> in TorchScript, module.<name> in
// Python) or sets an existing one.
func (m *Module) SetAttrString(name, v string) error {
	return m.setAttr(name, func(cn *C.char) *C.char {
		cv := C.CString(v)
		defer C.free(unsafe.Pointer(cv))
		return C.mt_jit_set_str(m.h, cn, cv)
	})
}

// SetAttrInt adds an int attribute or sets an existing one.
func (m *Module) SetAttrInt(name string, v int64) error {
	return m.setAttr(name, func(cn *C.char) *C.char { return C.mt_jit_set_int(m.h, cn, C.int64_t(v)) })
}

// SetAttrFloat adds a float attribute or sets an existing one.
func (m *Module) SetAttrFloat(name string, v float64) error {
	return m.setAttr(name, func(cn *C.char) *C.char { return C.mt_jit_set_float(m.h, cn, C.double(v)) })
}

// SetAttrBool adds a bool attribute or sets an existing one.
func (m *Module) SetAttrBool(name string, v bool) error {
	return m.setAttr(name, func(cn *C.char) *C.char { return C.mt_jit_set_bool(m.h, cn, C.bool(v)) })
}

// Attr returns the value of a str, int, float or bool attribute as a string, int64,
// float64 or bool. Tensors (parameters, buffers) are read with AttrTensor.
func (m *Module) Attr(name string) (any, error) {
	op := "attribute " + name
	if err := m.check(op, name); err != nil {
		return nil, err
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var kind C.int
	var s *C.char
	var i C.int64_t
	var f C.double
	if err := cerr(C.mt_jit_attr(m.h, cn, &kind, &s, &i, &f, nil)); err != nil {
		return nil, err
	}
	switch kind {
	case C.MT_JIT_STR:
		v := C.GoString(s)
		C.mt_free_str(s)
		return v, nil
	case C.MT_JIT_INT:
		return int64(i), nil
	case C.MT_JIT_FLOAT:
		return float64(f), nil
	case C.MT_JIT_BOOL:
		return i != 0, nil
	case C.MT_JIT_TENSOR:
		return nil, fmt.Errorf("%s is a tensor: use AttrTensor", op)
	}
	ty := C.GoString(s)
	C.mt_free_str(s)
	return nil, fmt.Errorf("%s has type %s (not str, int, float or bool)", op, ty)
}

// AttrString returns the value of a str attribute.
func (m *Module) AttrString(name string) (string, error) {
	v, err := m.Attr(name)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("attribute %s is a %T, not a string", name, v)
	}
	return s, nil
}

// AttrTensor returns a parameter, buffer or tensor attribute as a tensor of scope s that
// shares the module's storage (a write to it changes the module).
func (m *Module) AttrTensor(s *Scope, name string) *Tensor {
	op := "attribute " + name
	if !s.ok(op) {
		return &Tensor{}
	}
	if err := m.check(op, name); err != nil {
		return s.fail(err)
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var kind C.int
	var str *C.char
	var h C.mt_tensor
	if err := cerr(C.mt_jit_attr(m.h, cn, &kind, &str, nil, nil, &h)); err != nil {
		return s.fail(err)
	}
	if kind != C.MT_JIT_TENSOR {
		if str != nil {
			C.mt_free_str(str)
		}
		return s.fail(fmt.Errorf("%s is not a tensor", op))
	}
	return s.adopt(h)
}

// Define compiles TorchScript source, one or more methods (`def forward(self, x: Tensor)
// -> Tensor:` ...) that may use the registered parameters, buffers and attributes as
// self.<name>. Compilation errors quote the offending source line; a failed Define may
// leave part of the source defined, so build a new module rather than retry.
func (m *Module) Define(src string) error {
	if err := m.check("define", ""); err != nil {
		return err
	}
	cs := C.CString(src)
	defer C.free(unsafe.Pointer(cs))
	return cerr(C.mt_jit_define(m.h, cs))
}

// SetTraining sets the module's training flag (module.train() / module.eval()), which
// TorchScript code reads as self.training.
func (m *Module) SetTraining(on bool) error {
	if err := m.check("set training", ""); err != nil {
		return err
	}
	return cerr(C.mt_jit_train(m.h, C.bool(on)))
}

// Save writes the module to path in TorchScript's zip format, with the given extra files
// (read in Python with torch.jit.load(path, _extra_files={"name": ""}) or here with
// ExtraFiles). The file is written under a temporary name and renamed, so an existing
// file is replaced whole or not at all.
func (m *Module) Save(path string, extraFiles map[string]string) error {
	if err := m.check("save "+path, ""); err != nil {
		return err
	}
	keys := make([]string, 0, len(extraFiles))
	for k := range extraFiles {
		if k == "" || strings.HasPrefix(k, "/") || strings.Contains(k, "..") || strings.ContainsAny(k, "\n\x00") {
			return fmt.Errorf("save %s: bad extra file name %q", path, k)
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	names := make([]*C.char, len(keys))
	data := make([]*C.char, len(keys))
	lens := make([]C.int64_t, len(keys))
	defer func() {
		for i := range keys {
			C.free(unsafe.Pointer(names[i]))
			C.free(unsafe.Pointer(data[i]))
		}
	}()
	for i, k := range keys {
		v := extraFiles[k]
		names[i] = C.CString(k)
		data[i] = (*C.char)(C.CBytes([]byte(v)))
		lens[i] = C.int64_t(len(v))
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	cp := C.CString(tmpName)
	defer C.free(unsafe.Pointer(cp))
	var np, dp **C.char
	var lp *C.int64_t
	if len(keys) > 0 {
		np, dp, lp = &names[0], &data[0], &lens[0]
	}
	if err := cerr(C.mt_jit_save(m.h, cp, np, dp, lp, C.int64_t(len(keys)))); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// LoadModule reads a TorchScript module saved by Save or by Python's torch.jit.save, with
// its tensors on dev, and puts it in evaluation mode (SetTraining(false)).
func LoadModule(path string, dev Device) (*Module, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("load module %s: %w", path, err)
	}
	if err := dev.Check(); err != nil {
		return nil, fmt.Errorf("load module %s: %w", path, err)
	}
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	t, i := dev.c()
	var h C.mt_module
	if err := cerr(C.mt_jit_load(cp, t, i, &h)); err != nil {
		return nil, fmt.Errorf("load module %s: %w", path, err)
	}
	m := newModule(h)
	if err := m.SetTraining(false); err != nil {
		m.Close()
		return nil, fmt.Errorf("load module %s: %w", path, err)
	}
	return m, nil
}

// ExtraFiles returns every extra file stored in a saved module, by name, without loading
// the module.
func ExtraFiles(path string) (map[string]string, error) {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var joined *C.char
	if err := cerr(C.mt_jit_extra_names(cp, &joined)); err != nil {
		return nil, fmt.Errorf("extra files of %s: %w", path, err)
	}
	list := C.GoString(joined)
	C.mt_free_str(joined)
	out := map[string]string{}
	if list == "" {
		return out, nil
	}
	for _, name := range strings.Split(list, "\n") {
		v, ok, err := ExtraFile(path, name)
		if err != nil {
			return nil, err
		}
		if ok {
			out[name] = v
		}
	}
	return out, nil
}

// ExtraFile returns one extra file of a saved module and whether it exists.
func ExtraFile(path, name string) (string, bool, error) {
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var found C.bool
	var data *C.char
	var n C.int64_t
	if err := cerr(C.mt_jit_extra_read(cp, cn, &found, &data, &n)); err != nil {
		return "", false, fmt.Errorf("extra file %s of %s: %w", name, path, err)
	}
	if !bool(found) {
		return "", false, nil
	}
	v := C.GoStringN(data, C.int(n))
	C.mt_free_str(data)
	return v, true, nil
}

// SetOptimize turns TorchScript's graph optimizer on (the default) or off for this
// module's Forward calls. The optimizer profiles the first calls and recompiles the graph
// (specialisation, fusion); for the networks cells exports, built of convolutions and
// control flow with nothing to fuse on the CPU, it only costs seconds on the first calls
// of a large module, so serving them with it off is better.
func (m *Module) SetOptimize(on bool) { m.noOptim = !on }

// Forward calls the module's forward method on inputs with gradient recording off and
// returns its tensor result in scope s; errors (a closed module, a non-tensor result,
// TorchScript's own) are recorded in s like those of other operations.
func (m *Module) Forward(s *Scope, inputs ...*Tensor) *Tensor { return m.forward(s, true, inputs) }

// ForwardGrad is Forward with gradient recording as the calling thread has it, for
// fine-tuning a loaded module.
func (m *Module) ForwardGrad(s *Scope, inputs ...*Tensor) *Tensor {
	return m.forward(s, false, inputs)
}

func (m *Module) forward(s *Scope, noGrad bool, inputs []*Tensor) *Tensor {
	if !s.ok("module forward", inputs...) {
		return &Tensor{}
	}
	if err := m.check("module forward", ""); err != nil {
		return s.fail(err)
	}
	hs := handles(inputs)
	var hp *C.mt_tensor
	if len(hs) > 0 {
		hp = &hs[0]
	}
	var out C.mt_tensor
	e := C.mt_jit_forward(m.h, hp, C.int64_t(len(hs)), C.bool(noGrad), C.bool(!m.noOptim), &out)
	return s.res(e, out)
}
