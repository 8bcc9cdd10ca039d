package torch

// #include <stdlib.h>
// #include "shim.h"
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"unsafe"

	"github.com/nlpodyssey/gopickle/pytorch"
	"github.com/nlpodyssey/gopickle/types"
)

// ValueKind tells which field of a Value holds its data.
type ValueKind int

// Value kinds.
const (
	TensorValue ValueKind = iota
	StringValue
	IntValue
	FloatValue
	EmptyDictValue
	// ListValue is an empty list at Key (SaveTree only: LoadTree gives a list's elements
	// under their indices and no entry of its own). The values whose paths continue Key with
	// an index ("pg/0", "pg/1/lr", ...) fill it, in index order: index len(list) appends
	// (a new dict when the path goes on), a smaller one replaces or goes into that element.
	ListValue
)

// Value is one leaf of a saved tree of nested dicts (and lists). Key is its path with "/"
// between dict keys ("meta_model/net.stem.0.weight"); a path segment of only digits is an
// int key of a dict, or an index below a ListValue.
type Value struct {
	Key    string
	Kind   ValueKind
	Tensor *Tensor
	Str    string
	Int    int64
	Float  float64
}

// T returns a tensor leaf.
func T(key string, t *Tensor) Value { return Value{Key: key, Kind: TensorValue, Tensor: t} }

// Str returns a string leaf.
func Str(key, s string) Value { return Value{Key: key, Kind: StringValue, Str: s} }

// Int returns an integer leaf.
func Int(key string, v int64) Value { return Value{Key: key, Kind: IntValue, Int: v} }

// Float returns a float leaf.
func Float(key string, v float64) Value { return Value{Key: key, Kind: FloatValue, Float: v} }

// EmptyDict returns an empty dict leaf (values below its path fill it).
func EmptyDict(key string) Value { return Value{Key: key, Kind: EmptyDictValue} }

// List returns an empty list leaf; the values at key/0, key/1, ... that follow fill it in
// order (see ListValue).
func List(key string) Value { return Value{Key: key, Kind: ListValue} }

// SaveTree writes the values as nested dicts (and lists, see ListValue) in PyTorch's file
// format (torch.load returns the dict), atomically: a temporary file renamed over path, so
// a crash never leaves a broken file at path.
func SaveTree(path string, vals []Value) error {
	n := len(vals)
	if n == 0 {
		return fmt.Errorf("save %s: nothing to save", path)
	}
	keys := make([]*C.char, n)
	strs := make([]*C.char, n)
	kinds := make([]C.int, n)
	ts := make([]C.mt_tensor, n)
	ints := make([]C.int64_t, n)
	floats := make([]C.double, n)
	defer func() {
		for i := range keys {
			C.free(unsafe.Pointer(keys[i]))
			if strs[i] != nil {
				C.free(unsafe.Pointer(strs[i]))
			}
		}
	}()
	for i, v := range vals {
		keys[i] = C.CString(v.Key)
		kinds[i] = C.int(v.Kind)
		switch v.Kind {
		case TensorValue:
			if err := v.Tensor.valid("save " + v.Key); err != nil {
				return err
			}
			ts[i] = v.Tensor.h
		case StringValue:
			strs[i] = C.CString(v.Str)
		case IntValue:
			ints[i] = C.int64_t(v.Int)
		case FloatValue:
			floats[i] = C.double(v.Float)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("save %s: %w", path, err)
	}
	return saveAtomic(path, func(tmp *C.char) *C.char {
		return C.mt_save_tree(&keys[0], &kinds[0], &ts[0], &strs[0], &ints[0], &floats[0], C.int64_t(n), tmp)
	})
}

// LoadTree reads a PyTorch file (written by SaveTree, Save, or Python's torch.save) into a
// flat list of leaves with "/"-joined paths; tensors land on the CPU in scope s. The
// elements of lists and tuples come under their index ("param_groups/0/lr"), booleans as
// ints 0 and 1. Leaves that are neither tensors, strings nor numbers (None) are skipped.
func LoadTree(s *Scope, path string) ([]Value, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	cp := C.CString(path)
	defer C.free(unsafe.Pointer(cp))
	var t C.mt_tree
	if e := C.mt_load_tree(cp, &t); e == nil {
		defer C.mt_tree_free(t)
		n := int(C.mt_tree_size(t))
		out := make([]Value, n)
		for i := 0; i < n; i++ {
			ci := C.int64_t(i)
			v := Value{Key: C.GoString(C.mt_tree_key(t, ci)), Kind: ValueKind(C.mt_tree_kind(t, ci))}
			switch v.Kind {
			case TensorValue:
				v.Tensor = s.adopt(C.mt_tree_tensor(t, ci))
			case StringValue:
				v.Str = C.GoString(C.mt_tree_str(t, ci))
			case IntValue:
				v.Int = int64(C.mt_tree_int(t, ci))
			case FloatValue:
				v.Float = float64(C.mt_tree_float(t, ci))
			}
			out[i] = v
		}
		return out, nil
	} else {
		C.mt_free_str(e)
	}
	obj, err := loadPickle(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: not a PyTorch file (%v)", path, err)
	}
	var out []Value
	if err := flattenTree(s, "", obj, &out); err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	return out, nil
}

func flattenTree(s *Scope, prefix string, obj any, out *[]Value) error {
	key := func(k any) string {
		var ks string
		switch kk := k.(type) {
		case string:
			ks = kk
		case int:
			ks = strconv.Itoa(kk)
		case int64:
			ks = strconv.FormatInt(kk, 10)
		default:
			ks = fmt.Sprint(k)
		}
		if prefix == "" {
			return ks
		}
		return prefix + "/" + ks
	}
	switch v := obj.(type) {
	case *types.OrderedDict:
		for e := v.List.Front(); e != nil; e = e.Next() {
			ent := e.Value.(*types.OrderedDictEntry)
			if err := flattenTree(s, key(ent.Key), ent.Value, out); err != nil {
				return err
			}
		}
	case *types.Dict:
		for _, ent := range *v {
			if err := flattenTree(s, key(ent.Key), ent.Value, out); err != nil {
				return err
			}
		}
	case *types.List:
		for i, x := range *v {
			if err := flattenTree(s, key(i), x, out); err != nil {
				return err
			}
		}
	case *types.Tuple:
		for i, x := range *v {
			if err := flattenTree(s, key(i), x, out); err != nil {
				return err
			}
		}
	case *pytorch.Tensor:
		t, err := FromPickled(s, v)
		if err != nil {
			return fmt.Errorf("%s: %w", prefix, err)
		}
		*out = append(*out, T(prefix, t))
	case string:
		*out = append(*out, Str(prefix, v))
	case int:
		*out = append(*out, Int(prefix, int64(v)))
	case int64:
		*out = append(*out, Int(prefix, v))
	case bool:
		b := int64(0)
		if v {
			b = 1
		}
		*out = append(*out, Int(prefix, b))
	case float64:
		*out = append(*out, Float(prefix, v))
	}
	return nil
}
