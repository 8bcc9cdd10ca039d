// C interface of metanas-go's TorchScript modules (torch::jit::Module): build a module in
// C++ (parameters, buffers, attributes, methods compiled from TorchScript source), save it
// in the format torch.jit.load reads (with extra files), load modules saved by Python or by
// us, and run their forward method. Conventions as in shim.h: every function that can fail
// returns NULL on success or a malloc'd error message (free it with mt_free_str); strings
// returned through out parameters are malloc'd (free with mt_free_str); tensors returned
// are new handles (free with mt_tensor_free); a module handle is freed with mt_jit_free.
#pragma once
#include "shim.h"

#ifdef __cplusplus
extern "C" {
#endif

// Attribute kinds of mt_jit_attr.
enum {
  MT_JIT_STR = 0,
  MT_JIT_INT = 1,
  MT_JIT_FLOAT = 2,
  MT_JIT_BOOL = 3,
  MT_JIT_TENSOR = 4,
  MT_JIT_OTHER = 5,
};

// Creates an empty module whose class is named "__torch__.<name>" (name must be a
// dotted Python identifier).
char *mt_jit_new(const char *name, mt_module *out);
void mt_jit_free(mt_module m);

// Registers a parameter (requires_grad as given) or a buffer under name: the module keeps
// a detached copy of t on the CPU, so later changes of t do not reach it.
char *mt_jit_register_parameter(mt_module m, const char *name, mt_tensor t, bool requires_grad);
char *mt_jit_register_buffer(mt_module m, const char *name, mt_tensor t);

// Adds an attribute or sets an existing one (which must have the same type). Attributes
// are visible to TorchScript code as self.<name> and to Python as module.<name>.
char *mt_jit_set_str(mt_module m, const char *name, const char *v);
char *mt_jit_set_int(mt_module m, const char *name, int64_t v);
char *mt_jit_set_float(mt_module m, const char *name, double v);
char *mt_jit_set_bool(mt_module m, const char *name, bool v);

// Reads attribute (or parameter, buffer) name: *kind is one of MT_JIT_*; the value is
// written to the matching out parameter (*s malloc'd, *t a new handle); MT_JIT_OTHER
// writes the type's name to *s. Out parameters may be NULL when not wanted.
char *mt_jit_attr(mt_module m, const char *name, int *kind, char **s, int64_t *i, double *f,
                  mt_tensor *t);

// Compiles TorchScript source (one or more `def` methods using self) into the module.
char *mt_jit_define(mt_module m, const char *src);

// Sets the module's (and its submodules') training flag.
char *mt_jit_train(mt_module m, bool on);

// Saves the module to path; names[k] / data[k] (lens[k] bytes) are extra files, read in
// Python with torch.jit.load(path, _extra_files={...}).
char *mt_jit_save(mt_module m, const char *path, const char **names, const char **data,
                  const int64_t *lens, int64_t n);

// Loads a module saved by mt_jit_save or Python's torch.jit.save, its tensors on the
// device (dev_type 0 cpu, 1 cuda).
char *mt_jit_load(const char *path, int dev_type, int dev_index, mt_module *out);

// Lists the extra files of a saved module (names joined by '\n', malloc'd) without
// loading it, and reads one: *found is false when the file is absent.
char *mt_jit_extra_names(const char *path, char **out);
char *mt_jit_extra_read(const char *path, const char *name, bool *found, char **data,
                        int64_t *len);

// Calls the module's forward method on the input tensors, with gradient recording off
// when no_grad is set and TorchScript's graph optimizer (profiling, specialisation, fusion)
// off when optimize is not set, both restored afterwards on the calling thread; the
// result must be a tensor.
char *mt_jit_forward(mt_module m, mt_tensor *inputs, int64_t n, bool no_grad, bool optimize,
                     mt_tensor *out);

#ifdef __cplusplus
}
#endif
