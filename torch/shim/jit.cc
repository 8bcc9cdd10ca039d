// TorchScript modules: creation, attributes, compilation, save/load with extra files, forward.
#include "jit.h"

#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <torch/script.h>

#include <memory>

#include "common.h"

using mt::T;
using mt::wrap;

namespace {

torch::jit::Module &M(mt_module m) {
  if (m == nullptr) throw std::invalid_argument("module is closed (nil handle)");
  return *static_cast<torch::jit::Module *>(m);
}

// set adds attribute name of type ty or replaces the value of an existing one of the
// same type.
void set_attr(torch::jit::Module &mod, const char *name, const c10::TypePtr &ty, c10::IValue v) {
  const auto &cls = mod.type();
  if (cls->hasAttribute(name)) {
    const auto &have = cls->getAttribute(name);
    if (*have != *ty) {
      throw std::invalid_argument(std::string("attribute ") + name + " has type " +
                                  have->repr_str() + ", cannot set a " + ty->repr_str());
    }
    mod.setattr(name, std::move(v));
    return;
  }
  mod.register_attribute(name, ty, std::move(v));
}

std::string extra_key(const char *name) { return std::string("extra/") + name; }

}  // namespace

extern "C" {

char *mt_jit_new(const char *name, mt_module *out) {
  MT_TRY
  std::string n(name);
  if (n.empty()) throw std::invalid_argument("empty module name");
  if (n.rfind("__torch__.", 0) != 0) n = "__torch__." + n;
  *out = new torch::jit::Module(c10::QualifiedName(n));
  MT_CATCH("jit_new")
}

void mt_jit_free(mt_module m) { delete static_cast<torch::jit::Module *>(m); }

char *mt_jit_register_parameter(mt_module m, const char *name, mt_tensor t, bool requires_grad) {
  MT_TRY
  auto v = T(t).detach().to(at::kCPU, /*non_blocking=*/false, /*copy=*/true);
  v.set_requires_grad(requires_grad);
  M(m).register_parameter(name, v, /*is_buffer=*/false);
  MT_CATCH("jit_register_parameter", t)
}

char *mt_jit_register_buffer(mt_module m, const char *name, mt_tensor t) {
  MT_TRY
  M(m).register_buffer(name, T(t).detach().to(at::kCPU, false, true));
  MT_CATCH("jit_register_buffer", t)
}

char *mt_jit_set_str(mt_module m, const char *name, const char *v) {
  MT_TRY
  set_attr(M(m), name, c10::StringType::get(), c10::IValue(std::string(v)));
  MT_CATCH("jit_set_attr")
}

char *mt_jit_set_int(mt_module m, const char *name, int64_t v) {
  MT_TRY
  set_attr(M(m), name, c10::IntType::get(), c10::IValue(v));
  MT_CATCH("jit_set_attr")
}

char *mt_jit_set_float(mt_module m, const char *name, double v) {
  MT_TRY
  set_attr(M(m), name, c10::FloatType::get(), c10::IValue(v));
  MT_CATCH("jit_set_attr")
}

char *mt_jit_set_bool(mt_module m, const char *name, bool v) {
  MT_TRY
  set_attr(M(m), name, c10::BoolType::get(), c10::IValue(v));
  MT_CATCH("jit_set_attr")
}

char *mt_jit_attr(mt_module m, const char *name, int *kind, char **s, int64_t *i, double *f,
                  mt_tensor *t) {
  MT_TRY
  auto &mod = M(m);
  if (!mod.hasattr(name)) throw std::invalid_argument(std::string("no attribute ") + name);
  auto v = mod.attr(name);
  if (v.isString()) {
    *kind = MT_JIT_STR;
    if (s) *s = mt::dup(v.toStringRef());
  } else if (v.isInt()) {
    *kind = MT_JIT_INT;
    if (i) *i = v.toInt();
  } else if (v.isDouble()) {
    *kind = MT_JIT_FLOAT;
    if (f) *f = v.toDouble();
  } else if (v.isBool()) {
    *kind = MT_JIT_BOOL;
    if (i) *i = v.toBool() ? 1 : 0;
  } else if (v.isTensor()) {
    *kind = MT_JIT_TENSOR;
    if (t) *t = wrap(v.toTensor());
  } else {
    *kind = MT_JIT_OTHER;
    if (s) *s = mt::dup(v.type()->repr_str());
  }
  MT_CATCH("jit_attr")
}

char *mt_jit_define(mt_module m, const char *src) {
  MT_TRY
  M(m).define(src);
  MT_CATCH("jit_define")
}

char *mt_jit_train(mt_module m, bool on) {
  MT_TRY
  M(m).train(on);
  MT_CATCH("jit_train")
}

char *mt_jit_save(mt_module m, const char *path, const char **names, const char **data,
                  const int64_t *lens, int64_t n) {
  MT_TRY
  torch::jit::ExtraFilesMap extra;
  for (int64_t k = 0; k < n; k++) {
    extra[names[k]] = std::string(data[k], static_cast<size_t>(lens[k]));
  }
  M(m).save(path, extra);
  MT_CATCH("jit_save")
}

char *mt_jit_load(const char *path, int dev_type, int dev_index, mt_module *out) {
  MT_TRY
  auto mod = torch::jit::load(path, mt::device(dev_type, dev_index));
  *out = new torch::jit::Module(std::move(mod));
  MT_CATCH("jit_load")
}

char *mt_jit_extra_names(const char *path, char **out) {
  MT_TRY
  caffe2::serialize::PyTorchStreamReader reader(path);
  std::string joined;
  for (const auto &r : reader.getAllRecords()) {
    if (r.rfind("extra/", 0) != 0) continue;
    if (!joined.empty()) joined += '\n';
    joined += r.substr(6);
  }
  *out = mt::dup(joined);
  MT_CATCH("jit_extra_names")
}

char *mt_jit_extra_read(const char *path, const char *name, bool *found, char **data,
                        int64_t *len) {
  MT_TRY
  caffe2::serialize::PyTorchStreamReader reader(path);
  const auto key = extra_key(name);
  *found = reader.hasRecord(key);
  *data = nullptr;
  *len = 0;
  if (*found) {
    auto rec = reader.getRecord(key);
    const auto &ptr = std::get<0>(rec);
    const auto size = std::get<1>(rec);
    char *buf = static_cast<char *>(std::malloc(size + 1));
    if (buf == nullptr) throw std::bad_alloc();
    if (size > 0) std::memcpy(buf, ptr.get(), size);
    buf[size] = 0;
    *data = buf;
    *len = static_cast<int64_t>(size);
  }
  MT_CATCH("jit_extra_read")
}

char *mt_jit_forward(mt_module m, mt_tensor *inputs, int64_t n, bool no_grad, bool optimize,
                     mt_tensor *out) {
  MT_TRY
  std::vector<c10::IValue> args;
  args.reserve(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; k++) args.emplace_back(T(inputs[k]));
  c10::IValue r;
  {
    std::unique_ptr<torch::NoGradGuard> guard;
    if (no_grad) guard = std::make_unique<torch::NoGradGuard>();
    torch::jit::GraphOptimizerEnabledGuard opt(optimize);
    r = M(m).forward(std::move(args));
  }
  if (!r.isTensor()) {
    throw std::runtime_error("forward returned " + r.type()->repr_str() + ", not a Tensor");
  }
  *out = wrap(r.toTensor());
  MT_CATCH("jit_forward", n > 0 ? inputs[0] : nullptr)
}

}  // extern "C"
