// Named tensors in PyTorch's file format through LibTorch's own pickler.
#include <fstream>
#include <iterator>

#include "common.h"

using mt::T;
using mt::wrap;

namespace {
struct Dict {
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
};
}  // namespace

extern "C" {

char *mt_save(const char **names, mt_tensor *ts, int64_t n, const char *path) {
  MT_TRY
  c10::Dict<std::string, at::Tensor> d;
  for (int64_t i = 0; i < n; i++) d.insert(names[i], T(ts[i]).detach().cpu());
  auto bytes = torch::pickle_save(c10::IValue(d));
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(std::string("cannot open ") + path + " for writing");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) throw std::runtime_error(std::string("write failed: ") + path);
  MT_CATCH("save")
}

char *mt_load(const char *path, mt_dict *out) {
  MT_TRY
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(std::string("cannot open ") + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto v = torch::pickle_load(bytes);
  if (!v.isGenericDict()) throw std::runtime_error("file does not hold a dict");
  auto d = new Dict;
  for (const auto &e : v.toGenericDict()) {
    if (!e.key().isString() || !e.value().isTensor()) continue;
    d->names.push_back(e.key().toStringRef());
    d->tensors.push_back(e.value().toTensor());
  }
  *out = d;
  MT_CATCH("load")
}

int64_t mt_dict_size(mt_dict d) {
  return static_cast<int64_t>(static_cast<Dict *>(d)->names.size());
}

const char *mt_dict_name(mt_dict d, int64_t i) {
  return static_cast<Dict *>(d)->names[i].c_str();
}

mt_tensor mt_dict_tensor(mt_dict d, int64_t i) { return wrap(static_cast<Dict *>(d)->tensors[i]); }

void mt_dict_free(mt_dict d) { delete static_cast<Dict *>(d); }

}  // extern "C"
