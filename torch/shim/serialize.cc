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

namespace {

struct TreeEntry {
  std::string key;
  int kind;
  at::Tensor t;
  std::string s;
  int64_t i = 0;
  double f = 0;
};
struct Tree {
  std::vector<TreeEntry> entries;
};

bool all_digits(const std::string &s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

c10::IValue key_of(const std::string &seg) {
  if (all_digits(seg) && seg.size() < 18) return c10::IValue(static_cast<int64_t>(std::stoll(seg)));
  return c10::IValue(seg);
}

// Inserts value at path into d, creating nested dicts.
void insert_path(c10::impl::GenericDict &d, const std::string &path, const c10::IValue &v) {
  auto pos = path.find('/');
  if (pos == std::string::npos) {
    d.insert_or_assign(key_of(path), v);
    return;
  }
  auto head = key_of(path.substr(0, pos));
  auto it = d.find(head);
  if (it == d.end()) {
    c10::impl::GenericDict sub(c10::AnyType::get(), c10::AnyType::get());
    d.insert(head, sub);
    it = d.find(head);
  }
  if (!it->value().isGenericDict())
    throw std::invalid_argument("path '" + path + "' goes through a non-dict value");
  auto sub = it->value().toGenericDict();
  insert_path(sub, path.substr(pos + 1), v);
}

void flatten(const std::string &prefix, const c10::IValue &v, Tree &t) {
  if (v.isGenericDict()) {
    for (const auto &e : v.toGenericDict()) {
      std::string k;
      if (e.key().isString()) {
        k = e.key().toStringRef();
      } else if (e.key().isInt()) {
        k = std::to_string(e.key().toInt());
      } else {
        continue;
      }
      flatten(prefix.empty() ? k : prefix + "/" + k, e.value(), t);
    }
    return;
  }
  TreeEntry en;
  en.key = prefix;
  if (v.isTensor()) {
    en.kind = 0;
    en.t = v.toTensor();
  } else if (v.isString()) {
    en.kind = 1;
    en.s = v.toStringRef();
  } else if (v.isInt()) {
    en.kind = 2;
    en.i = v.toInt();
  } else if (v.isDouble()) {
    en.kind = 3;
    en.f = v.toDouble();
  } else if (v.isBool()) {
    en.kind = 2;
    en.i = v.toBool() ? 1 : 0;
  } else {
    return;
  }
  t.entries.push_back(std::move(en));
}

Tree &TR(mt_tree t) { return *static_cast<Tree *>(t); }

}  // namespace

extern "C" {

char *mt_save_tree(const char **keys, const int *kinds, mt_tensor *ts, const char **strs,
                   const int64_t *ints, const double *floats, int64_t n, const char *path) {
  MT_TRY
  c10::impl::GenericDict root(c10::AnyType::get(), c10::AnyType::get());
  for (int64_t i = 0; i < n; i++) {
    c10::IValue v;
    switch (kinds[i]) {
      case 0: v = T(ts[i]).detach().cpu(); break;
      case 1: v = std::string(strs[i]); break;
      case 2: v = ints[i]; break;
      case 3: v = floats[i]; break;
      case 4: v = c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get()); break;
      default: throw std::invalid_argument("unknown value kind");
    }
    insert_path(root, keys[i], v);
  }
  auto bytes = torch::pickle_save(c10::IValue(root));
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(std::string("cannot open ") + path + " for writing");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) throw std::runtime_error(std::string("write failed: ") + path);
  MT_CATCH("save")
}

char *mt_load_tree(const char *path, mt_tree *out) {
  MT_TRY
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(std::string("cannot open ") + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto v = torch::pickle_load(bytes);
  auto t = new Tree;
  flatten("", v, *t);
  *out = t;
  MT_CATCH("load")
}

int64_t mt_tree_size(mt_tree t) { return static_cast<int64_t>(TR(t).entries.size()); }
const char *mt_tree_key(mt_tree t, int64_t i) { return TR(t).entries[i].key.c_str(); }
int mt_tree_kind(mt_tree t, int64_t i) { return TR(t).entries[i].kind; }
mt_tensor mt_tree_tensor(mt_tree t, int64_t i) { return wrap(TR(t).entries[i].t); }
const char *mt_tree_str(mt_tree t, int64_t i) { return TR(t).entries[i].s.c_str(); }
int64_t mt_tree_int(mt_tree t, int64_t i) { return TR(t).entries[i].i; }
double mt_tree_float(mt_tree t, int64_t i) { return TR(t).entries[i].f; }
void mt_tree_free(mt_tree t) { delete static_cast<Tree *>(t); }

}  // extern "C"
