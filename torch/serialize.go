package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"archive/tar"
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

	"github.com/nlpodyssey/gopickle/pytorch"
)

// Named is a tensor with its name (a state_dict entry).
type Named struct {
	Name   string
	Tensor *Tensor
}

// Save writes the named tensors as a dict in PyTorch's file format (torch.load reads it)
// through LibTorch's pickler. The file is written to a temporary name and renamed, so an
// existing file is never left half-written.
func Save(path string, entries []Named) error {
	names := make([]*C.char, len(entries))
	hs := make([]C.mt_tensor, len(entries))
	defer func() {
		for _, n := range names {
			C.free(unsafe.Pointer(n)) // free(NULL) for names not made yet
		}
	}()
	for i, e := range entries {
		if err := e.Tensor.valid("save " + e.Name); err != nil {
			return err
		}
		names[i] = C.CString(e.Name)
		hs[i] = e.Tensor.h
	}
	var np **C.char
	var hp *C.mt_tensor
	if len(entries) > 0 {
		np, hp = &names[0], &hs[0]
	}
	return saveAtomic(path, func(tmp *C.char) *C.char { return C.mt_save(np, hp, C.int64_t(len(entries)), tmp) })
}

// saveAtomic lets write fill a temporary file beside path (a shim call returning its error)
// and renames it over path, so that path is never left half-written.
func saveAtomic(path string, write func(tmp *C.char) *C.char) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	cp := C.CString(tmpName)
	defer C.free(unsafe.Pointer(cp))
	if err := cerr(write(cp)); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("save %s: %w", path, err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		os.Remove(tmpName)
		return fmt.Errorf("save %s: %w", path, err)
	}
	return nil
}

// Load reads a dict of tensors saved by Save or by Python's torch.save (a state_dict).
// It is LoadTree keeping the tensor leaves, nested dict keys joined with "." (the
// state_dict convention). Tensors are created on the CPU in scope s.
func Load(s *Scope, path string) ([]Named, error) {
	vals, err := LoadTree(s, path)
	if err != nil {
		return nil, err
	}
	var out []Named
	for _, v := range vals {
		if v.Kind == TensorValue {
			out = append(out, Named{Name: strings.ReplaceAll(v.Key, "/", "."), Tensor: v.Tensor})
		}
	}
	return out, nil
}

// ReadPickle reads any PyTorch file with gopickle and returns the Python object tree
// (dicts as *types.Dict or *types.OrderedDict, tensors as *pytorch.Tensor).
func ReadPickle(path string) (any, error) {
	obj, err := loadPickle(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: not a PyTorch file (%v)", path, err)
	}
	return obj, nil
}

// loadPickle is gopickle's pytorch.Load without its failure modes on foreign files: it loops
// forever on a file its tar probe reads as an empty archive (an empty file, or one of zero
// blocks), and panics on tar archives and on some malformed pickles.
func loadPickle(path string) (obj any, err error) {
	if z, zerr := zip.OpenReader(path); zerr == nil {
		z.Close()
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		_, terr := tar.NewReader(f).Next()
		f.Close()
		switch terr {
		case io.EOF:
			return nil, errors.New("empty file or empty archive")
		case nil:
			return nil, errors.New("a tar archive (PyTorch's oldest format is not supported)")
		}
	}
	defer func() {
		if r := recover(); r != nil {
			obj, err = nil, fmt.Errorf("unreadable pickle: %v", r)
		}
	}()
	return pytorch.Load(path)
}

// FromPickled converts a tensor read by gopickle into a CPU tensor of scope s (float
// storages become float32/float64, integer ones int64, bytes uint8, bools bool).
func FromPickled(s *Scope, pt *pytorch.Tensor) (*Tensor, error) {
	shape := make([]int64, len(pt.Size))
	for i, d := range pt.Size {
		shape[i] = int64(d)
	}
	n := int(numel(shape))
	// gather walks the strided view into a contiguous index list.
	idx := make([]int, 0, n)
	var walk func(dim, off int)
	walk = func(dim, off int) {
		if dim == len(pt.Size) {
			idx = append(idx, off)
			return
		}
		for i := 0; i < pt.Size[dim]; i++ {
			walk(dim+1, off+i*pt.Stride[dim])
		}
	}
	walk(0, pt.StorageOffset)
	var t *Tensor
	switch st := pt.Source.(type) {
	case *pytorch.FloatStorage:
		t = s.FromFloat32(gatherF32(st.Data, idx), shape, CPU)
	case *pytorch.HalfStorage:
		t = s.FromFloat32(gatherF32(st.Data, idx), shape, CPU)
	case *pytorch.BFloat16Storage:
		t = s.FromFloat32(gatherF32(st.Data, idx), shape, CPU)
	case *pytorch.DoubleStorage:
		v := make([]float64, len(idx))
		for i, j := range idx {
			v[i] = st.Data[j]
		}
		t = s.FromFloat64(v, shape, CPU)
	case *pytorch.LongStorage:
		v := make([]int64, len(idx))
		for i, j := range idx {
			v[i] = st.Data[j]
		}
		t = s.FromInt64(v, shape, CPU)
	case *pytorch.IntStorage:
		v := make([]int64, len(idx))
		for i, j := range idx {
			v[i] = int64(st.Data[j])
		}
		t = s.FromInt64(v, shape, CPU)
	case *pytorch.ByteStorage:
		v := make([]uint8, len(idx))
		for i, j := range idx {
			v[i] = st.Data[j]
		}
		t = s.fromData("from_uint8", unsafe.Pointer(unsafe.SliceData(v)), len(v), Uint8, shape, CPU, false)
	case *pytorch.BoolStorage:
		v := make([]uint8, len(idx))
		for i, j := range idx {
			if st.Data[j] {
				v[i] = 1
			}
		}
		t = s.fromData("from_bool", unsafe.Pointer(unsafe.SliceData(v)), len(v), Bool, shape, CPU, false)
	default:
		return nil, fmt.Errorf("unsupported storage %T", pt.Source)
	}
	return t, s.Err()
}

func gatherF32(data []float32, idx []int) []float32 {
	v := make([]float32, len(idx))
	for i, j := range idx {
		v[i] = data[j]
	}
	return v
}
