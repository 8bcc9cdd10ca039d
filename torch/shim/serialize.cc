// Named tensors in PyTorch's file format through LibTorch's own pickler.
#include <caffe2/serialize/inline_container.h>
#include <torch/csrc/jit/serialization/export.h>
#include <torch/csrc/jit/serialization/pickler.h>

#include <fstream>
#include <iterator>

#include "common.h"

using mt::T;
using mt::wrap;

namespace {

void write_file(const char *path, const std::vector<char> &bytes) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(std::string("cannot open ") + path + " for writing");
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  if (!f) throw std::runtime_error(std::string("write failed: ") + path);
}

// save_bytes writes v as torch.save does (a zip archive holding data.pkl and one record per
// tensor storage), like torch::pickle_save but without TorchScript's type tags on dicts
// and lists (torch.jit._pickle.restore_type_tag), which torch.load refuses by default
// since PyTorch 2.6 (weights_only=True). The file then holds plain dicts, lists, strings,
// numbers and tensors, all of which weights_only loading accepts.
std::vector<char> save_bytes(const c10::IValue &v) {
  std::vector<char> pkl;
  torch::jit::Pickler pickler([&](const char *b, size_t n) { pkl.insert(pkl.end(), b, b + n); },
                              nullptr, nullptr, nullptr, nullptr, /*tag_aggregates=*/false);
  pickler.protocol();
  pickler.pushIValue(v);
  pickler.stop();
  std::vector<char> out;
  out.reserve(pkl.size());
  caffe2::serialize::PyTorchStreamWriter writer([&](const void *b, size_t n) {
    auto c = static_cast<const char *>(b);
    out.insert(out.end(), c, c + n);
    return n;
  });
  torch::jit::writeArchiveAndTensors("data", pkl.data(), pkl.size(), pickler.tensorData(), writer);
  writer.writeEndOfFile();
  return out;
}

std::vector<char> read_file(const char *path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(std::string("cannot open ") + path);
  return std::vector<char>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

}  // namespace

extern "C" {

char *mt_save(const char **names, mt_tensor *ts, int64_t n, const char *path) {
  MT_TRY
  c10::Dict<std::string, at::Tensor> d;
  for (int64_t i = 0; i < n; i++) d.insert(names[i], T(ts[i]).detach().cpu());
  auto bytes = save_bytes(c10::IValue(d));
  write_file(path, bytes);
  MT_CATCH("save")
}


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

c10::impl::GenericDict new_dict() {
  return c10::impl::GenericDict(c10::AnyType::get(), c10::AnyType::get());
}

// Inserts v at path below container c, a dict or a list (an IValue handle sharing the
// container). Missing dicts on the way are created. A path segment below a list is an
// index: the list's length appends (a new dict when the path goes on), a smaller index
// replaces that element or goes into it; a larger one is an error, so list elements must
// come in order.
void insert_path(const c10::IValue &c, const std::string &path, const c10::IValue &v) {
  auto pos = path.find('/');
  const bool last = pos == std::string::npos;
  const std::string head = last ? path : path.substr(0, pos);
  const std::string rest = last ? std::string() : path.substr(pos + 1);
  if (c.isGenericDict()) {
    auto d = c.toGenericDict();
    auto key = key_of(head);
    if (last) {
      d.insert_or_assign(key, v);
      return;
    }
    auto it = d.find(key);
    if (it == d.end()) {
      d.insert(key, new_dict());
      it = d.find(key);
    }
    insert_path(it->value(), rest, v);
    return;
  }
  if (c.isList()) {
    auto l = c.toList();
    if (!all_digits(head) || head.size() >= 18)
      throw std::invalid_argument("path segment '" + head + "' indexes a list: use 0, 1, ...");
    auto i = static_cast<size_t>(std::stoll(head));
    if (i > l.size())
      throw std::invalid_argument("list index " + head + " given before index " +
                                  std::to_string(l.size()) + ": list elements must come in order");
    if (i == l.size()) l.push_back(last ? v : c10::IValue(new_dict()));
    else if (last) l.set(i, v);
    if (!last) insert_path(l.get(i), rest, v);
    return;
  }
  throw std::invalid_argument("path goes through a value that is neither a dict nor a list at '" + head + "'");
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
  if (v.isList() || v.isTuple()) {
    // Elements under their index, as the nested dicts' int keys (a list's own node has no
    // entry, like a dict's).
    size_t i = 0;
    auto visit = [&](const c10::IValue &e) {
      auto k = std::to_string(i++);
      flatten(prefix.empty() ? k : prefix + "/" + k, e, t);
    };
    if (v.isList()) {
      for (const auto &e : v.toListRef()) visit(e);
    } else {
      for (const auto &e : v.toTupleRef().elements()) visit(e);
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
  // kinds: 0 tensor, 1 string, 2 int, 3 float, 4 empty dict, 5 empty list (filled by the
  // entries below its path, in index order).
  c10::IValue root(new_dict());
  for (int64_t i = 0; i < n; i++) {
    c10::IValue v;
    switch (kinds[i]) {
      case 0: v = T(ts[i]).detach().cpu(); break;
      case 1: v = std::string(strs[i]); break;
      case 2: v = ints[i]; break;
      case 3: v = floats[i]; break;
      case 4: v = new_dict(); break;
      case 5: v = c10::impl::GenericList(c10::AnyType::get()); break;
      default: throw std::invalid_argument("unknown value kind");
    }
    try {
      insert_path(root, keys[i], v);
    } catch (const std::invalid_argument &e) {
      throw std::invalid_argument(std::string("key '") + keys[i] + "': " + e.what());
    }
  }
  auto bytes = save_bytes(root);
  write_file(path, bytes);
  MT_CATCH("save")
}

char *mt_load_tree(const char *path, mt_tree *out) {
  MT_TRY
  auto bytes = read_file(path);
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
