#include "common.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/record_function.h>
#include <torch/version.h>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <malloc.h>
#include <mutex>
#include <unordered_map>
#include <vector>
#ifdef WITH_CUDA
#include <ATen/cuda/CUDAGeneratorImpl.h>
#include <c10/cuda/CUDAStream.h>
#endif

namespace mt {

std::atomic<int64_t> live_tensors{0};
std::atomic<int64_t> host_syncs{0};

std::string shape_str(mt_tensor t) {
  if (t == nullptr) return "none";
  const at::Tensor &x = T(t);
  if (!x.defined()) return "undefined";
  std::ostringstream o;
  o << "[";
  for (int64_t i = 0; i < x.dim(); i++) o << (i ? ", " : "") << x.size(i);
  o << "]";
  return o.str();
}

char *error(const char *op, const std::exception &e, std::initializer_list<mt_tensor> inputs) {
  std::string msg;
  if (auto ce = dynamic_cast<const c10::Error *>(&e)) {
    msg = ce->what_without_backtrace();
  } else {
    msg = e.what();
  }
  // Keep the first lines only: LibTorch appends long context in some builds.
  auto pos = msg.find("\nException raised from");
  if (pos != std::string::npos) msg = msg.substr(0, pos);
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  std::ostringstream o;
  o << op << ": " << msg;
  if (inputs.size() > 0) {
    o << " (input shapes ";
    bool first = true;
    for (auto t : inputs) {
      o << (first ? "" : ", ") << shape_str(t);
      first = false;
    }
    o << ")";
  }
  return dup(o.str());
}

at::ScalarType dtype(int code) {
  switch (code) {
    case 0: return at::kFloat;
    case 1: return at::kDouble;
    case 2: return at::kLong;
    case 3: return at::kByte;
    case 4: return at::kBool;
    case 5: return at::kHalf;
    case 6: return at::kBFloat16;
  }
  throw std::invalid_argument("unknown dtype code " + std::to_string(code));
}

int dtype_code(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kLong: return 2;
    case at::kByte: return 3;
    case at::kBool: return 4;
    case at::kHalf: return 5;
    case at::kBFloat16: return 6;
    default: return -1;
  }
}

at::Device device(int type, int index) {
  if (type == 0) return at::Device(at::kCPU);
  return at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(index));
}

at::TensorOptions options(int dt, int dev_type, int dev_index) {
  return at::TensorOptions().dtype(dtype(dt)).device(device(dev_type, dev_index));
}

void mul_by(std::vector<at::Tensor> &ts, const at::Tensor &s) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 1)
  at::_foreach_mul_(ts, s);
#else
  for (auto &t : ts) t.mul_(s);  // no tensor-scalar _foreach_mul_ before 2.1
#endif
}

std::vector<at::Tensor> tensors(mt_tensor *ts, int64_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (int64_t i = 0; i < n; i++) v.push_back(T(ts[i]));
  return v;
}

bool cpu_avx2_fma() {
#if defined(__x86_64__)
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return ok;
#else
  return false;
#endif
}

bool env_is(const char *name, const char *value) {
  const char *v = std::getenv(name);
  return v != nullptr && std::string(v) == value;
}

}  // namespace mt

using mt::T;
using mt::wrap;

extern "C" {

void mt_free_str(char *s) { std::free(s); }

void mt_tensor_free(mt_tensor t) {
  if (t == nullptr) return;
  mt::live_tensors.fetch_sub(1, std::memory_order_relaxed);
  delete static_cast<at::Tensor *>(t);
}

void mt_tensor_free_many(mt_tensor *ts, int64_t n) {
  for (int64_t i = 0; i < n; i++) mt_tensor_free(ts[i]);
}

int64_t mt_live_tensors(void) { return mt::live_tensors.load(); }

bool mt_cuda_available(void) { return torch::cuda::is_available(); }
int64_t mt_cuda_device_count(void) { return static_cast<int64_t>(torch::cuda::device_count()); }
void mt_manual_seed(uint64_t seed) { torch::manual_seed(seed); }

char *mt_cuda_manual_seed_all(uint64_t seed) {
  MT_TRY
  torch::cuda::manual_seed_all(seed);
  MT_CATCH("cuda_manual_seed_all")
}

void mt_set_num_threads(int n) { at::set_num_threads(n); }
int mt_get_num_threads(void) { return at::get_num_threads(); }
void mt_set_cudnn_benchmark(bool on) { at::globalContext().setBenchmarkCuDNN(on); }

void mt_set_allow_tf32(bool conv, bool matmul) {
  at::globalContext().setAllowTF32CuDNN(conv);
  at::globalContext().setAllowTF32CuBLAS(matmul);
}

char *mt_synchronize(int device_index) {
  MT_TRY
  mt::host_syncs.fetch_add(1);
#ifdef WITH_CUDA
  if (torch::cuda::is_available()) torch::cuda::synchronize(device_index);
#else
  (void)device_index;
#endif
  MT_CATCH("synchronize")
}

char *mt_use_stream(int device_index, bool pool) {
  MT_TRY
#ifdef WITH_CUDA
  auto idx = static_cast<c10::DeviceIndex>(device_index);
  c10::cuda::setCurrentCUDAStream(pool ? c10::cuda::getStreamFromPool(false, idx)
                                        : c10::cuda::getDefaultCUDAStream(idx));
#else
  (void)device_index;
  if (pool) throw std::runtime_error("CUDA streams need a LibTorch with CUDA");
#endif
  MT_CATCH("use_stream")
}

char *mt_sync_stream(int device_index) {
  MT_TRY
  mt::host_syncs.fetch_add(1);
#ifdef WITH_CUDA
  c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_index)).synchronize();
#else
  (void)device_index;
#endif
  MT_CATCH("sync_stream")
}

int64_t mt_sync_count(void) { return mt::host_syncs.load(); }

namespace {
std::atomic<int64_t> aten_calls{0};
std::once_flag count_once;

std::unique_ptr<at::ObserverContext> count_call(const at::RecordFunction &fn) {
  const char *n = fn.name();
  if (n != nullptr && std::strncmp(n, "aten::", 6) == 0) aten_calls.fetch_add(1, std::memory_order_relaxed);
  return nullptr;
}
}  // namespace

void mt_count_ops(void) {
  std::call_once(count_once, [] {
    at::addGlobalCallback(at::RecordFunctionCallback(count_call).scopes({at::RecordScope::FUNCTION}));
  });
}

int64_t mt_op_count(void) { return aten_calls.load(); }

namespace {
// Self-time profile of operator calls: per thread a stack of open calls; a call's self time
// is its duration less that of the calls nested in it.
struct OpFrame {
  std::chrono::steady_clock::time_point start;
  double child_us;
  const char *name;
};
struct OpStat {
  int64_t calls = 0;
  double self_us = 0;
};
thread_local std::vector<OpFrame> op_stack;
std::mutex prof_mu;
std::unordered_map<std::string, OpStat> prof_stats;
std::once_flag prof_once;

// METANAS_PROFILE_PARENTS=N (1 to 4): key each call by its N innermost callers,
// "outer < ... < caller < name" ("-" where the stack ends).
int prof_parents = 0;

std::unique_ptr<at::ObserverContext> prof_enter(const at::RecordFunction &fn) {
  op_stack.push_back({std::chrono::steady_clock::now(), 0, fn.name()});
  return nullptr;
}

void prof_exit(const at::RecordFunction &fn, at::ObserverContext *) {
  if (op_stack.empty()) return;
  OpFrame f = op_stack.back();
  op_stack.pop_back();
  double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - f.start).count();
  if (!op_stack.empty()) op_stack.back().child_us += us;
  const char *n = fn.name();
  std::string key = n == nullptr ? "?" : n;
  for (int i = 1; i <= prof_parents; i++) {
    const bool in = static_cast<int>(op_stack.size()) >= i;
    const char *p = in ? op_stack[op_stack.size() - i].name : nullptr;
    key = std::string(p == nullptr ? "-" : p) + " < " + key;
    if (!in) break;
  }
  std::lock_guard<std::mutex> lock(prof_mu);
  OpStat &s = prof_stats[key];
  s.calls++;
  s.self_us += us - f.child_us;
}
}  // namespace

void mt_profile_ops(void) {
  std::call_once(prof_once, [] {
    const char *e = std::getenv("METANAS_PROFILE_PARENTS");
    if (e != nullptr && e[0] >= '1' && e[0] <= '4' && e[1] == 0) prof_parents = e[0] - '0';
    at::addGlobalCallback(at::RecordFunctionCallback(prof_enter, prof_exit)
                              .scopes({at::RecordScope::FUNCTION, at::RecordScope::BACKWARD_FUNCTION}));
  });
}

}  // extern "C"

namespace {
// profile_table returns stats (guarded by mu) as malloc'd text, one "name\tcalls\tvalue"
// line per entry, largest value first, and clears them when reset is set.
template <class Stat, class Value>
char *profile_table(std::mutex &mu, std::unordered_map<std::string, Stat> &stats, bool reset, Value value) {
  std::ostringstream o;
  o.precision(15);  // totals of many seconds in microseconds keep their units digits
  {
    std::lock_guard<std::mutex> lock(mu);
    std::vector<std::pair<std::string, Stat>> v(stats.begin(), stats.end());
    std::sort(v.begin(), v.end(), [&](const auto &a, const auto &b) { return value(a.second) > value(b.second); });
    for (const auto &e : v) o << e.first << "\t" << e.second.calls << "\t" << value(e.second) << "\n";
    if (reset) stats.clear();
  }
  return mt::dup(o.str());
}
}  // namespace

namespace {
// Memory-traffic profile: per ATen operator called outside another ATen operator (by our
// code or by an autograd node; what they call inside is theirs), the bytes of the tensors
// it read and wrote. A tensor counts as its elements, at most its storage (an expanded
// tensor is read from cache); a view (an output aliasing an input of an op that is not
// in place) moves nothing; a copy, fill or zeroing writes its first argument without
// reading it. A floor of the memory traffic: kernels that pass over their data more than
// once (a batch norm's statistics, then its normalisation) or stage it (convolutions) move
// more.
struct ByteStat {
  int64_t calls = 0;
  int64_t bytes = 0;
};
struct ByteFrame {
  const char *name;
  bool top;                    // called outside another ATen operator
  std::vector<at::Tensor> ins;  // a top-level call's tensor arguments (readable at its start only)
};
thread_local std::vector<ByteFrame> byte_stack;
std::mutex bytes_mu;
std::unordered_map<std::string, ByteStat> byte_stats;
std::once_flag bytes_once;
std::atomic<bool> bytes_on{false};

bool is_aten(const char *n) { return n != nullptr && std::strncmp(n, "aten::", 6) == 0; }

void collect(const c10::IValue &v, std::vector<at::Tensor> &out) {
  if (v.isTensor()) {
    out.push_back(v.toTensor());
  } else if (v.isTensorList()) {
    for (const at::Tensor &t : v.toTensorList()) out.push_back(t);
  } else if (v.isList()) {
    for (const c10::IValue &e : v.toListRef())
      if (e.isTensor()) out.push_back(e.toTensor());
  }
}

int64_t tensor_bytes(const at::Tensor &t) {
  if (!t.defined()) return 0;
  int64_t n = t.numel() * static_cast<int64_t>(t.element_size());
  if (t.has_storage()) n = std::min<int64_t>(n, static_cast<int64_t>(t.storage().nbytes()));
  return n;
}

std::unique_ptr<at::ObserverContext> bytes_enter(const at::RecordFunction &fn) {
  const bool top = byte_stack.empty() || !is_aten(byte_stack.back().name);
  ByteFrame f{fn.name(), top, {}};
  if (top && is_aten(f.name))
    for (const c10::IValue &v : fn.inputs()) collect(v, f.ins);
  byte_stack.push_back(std::move(f));
  return nullptr;
}

void bytes_exit(const at::RecordFunction &fn, at::ObserverContext *) {
  if (byte_stack.empty()) return;
  ByteFrame f = std::move(byte_stack.back());
  byte_stack.pop_back();
  const char *name = f.name;
  if (!f.top || !is_aten(name) || std::strstr(name, "empty") != nullptr) return;
  const std::vector<at::Tensor> &ins = f.ins;
  std::vector<at::Tensor> outs;
  for (const c10::IValue &v : fn.outputs()) collect(v, outs);
  const size_t len = std::strlen(name);
  const bool in_place = len > 0 && name[len - 1] == '_';
  int64_t bytes = 0;
  bool view = false;
  if (!in_place)
    for (const auto &o : outs)
      for (const auto &i : ins)
        view = view || (o.defined() && i.defined() && o.has_storage() && i.has_storage() && o.is_alias_of(i));
  if (!view) {
    for (const auto &t : ins) bytes += tensor_bytes(t);
    for (const auto &t : outs) bytes += tensor_bytes(t);
    const std::string n(name);
    if ((n == "aten::copy_" || n == "aten::fill_" || n == "aten::zero_") && !ins.empty()) bytes -= tensor_bytes(ins[0]);
  }
  std::lock_guard<std::mutex> lock(bytes_mu);
  ByteStat &s = byte_stats[name];
  s.calls++;
  s.bytes += bytes;
}
}  // namespace

namespace mt {
void add_profile_bytes(const char *name, int64_t bytes) {
  if (!bytes_on.load(std::memory_order_relaxed)) return;
  if (!byte_stack.empty() && is_aten(byte_stack.back().name)) return;  // inside an operator: its bytes
  std::lock_guard<std::mutex> lock(bytes_mu);
  ByteStat &s = byte_stats[name];
  s.calls++;
  s.bytes += bytes;
}
}  // namespace mt

extern "C" {

char *mt_op_profile(bool reset) {
  return profile_table(prof_mu, prof_stats, reset, [](const OpStat &s) { return s.self_us; });
}

void mt_profile_bytes(void) {
  std::call_once(bytes_once, [] {
    at::addGlobalCallback(at::RecordFunctionCallback(bytes_enter, bytes_exit)
                              .needsInputs(true)
                              .needsOutputs(true)
                              .scopes({at::RecordScope::FUNCTION}));
    bytes_on = true;
  });
}

char *mt_bytes_profile(bool reset) {
  return profile_table(bytes_mu, byte_stats, reset, [](const ByteStat &s) { return s.bytes; });
}
void mt_set_grad_enabled(bool on) { at::GradMode::set_enabled(on); }
bool mt_is_grad_enabled(void) { return at::GradMode::is_enabled(); }

char *mt_from_data(const void *data, int dt, const int64_t *shape, int ndim, int dev_type,
                   int dev_index, bool requires_grad, mt_tensor *out) {
  MT_TRY
  auto sizes = at::IntArrayRef(shape, ndim);
  auto host = torch::empty(sizes, mt::options(dt, 0, 0));
  std::memcpy(host.data_ptr(), data, host.numel() * host.element_size());
  auto t = dev_type == 0 ? host : host.to(mt::device(dev_type, dev_index));
  if (requires_grad) t.set_requires_grad(true);
  *out = wrap(t);
  MT_CATCH("from_data")
}

char *mt_from_u8_images(const uint8_t *data, const int64_t *shape, int ndim, double scale,
                        int dev_type, int dev_index, mt_tensor *out) {
  MT_TRY
  auto sizes = at::IntArrayRef(shape, ndim);
  // On CUDA the bytes go through pinned memory (LibTorch's caching host allocator) and are
  // copied asynchronously: the host does not wait for the transfer.
  bool cuda = dev_type != 0;
  auto host = torch::empty(sizes, torch::TensorOptions().dtype(torch::kByte).pinned_memory(cuda));
  std::memcpy(host.data_ptr(), data, host.numel());
  auto t = cuda ? host.to(mt::device(dev_type, dev_index), at::kByte, /*non_blocking=*/true) : host;
  t = t.to(at::kFloat).mul_(scale);
  *out = wrap(t);
  MT_CATCH("from_u8_images")
}

char *mt_full(const int64_t *shape, int ndim, double value, int dt, int dev_type, int dev_index,
              bool requires_grad, mt_tensor *out) {
  MT_TRY
  auto t = torch::full(at::IntArrayRef(shape, ndim), value, mt::options(dt, dev_type, dev_index));
  if (requires_grad) t.set_requires_grad(true);
  *out = wrap(t);
  MT_CATCH("full")
}

char *mt_randn(const int64_t *shape, int ndim, int dt, int dev_type, int dev_index,
               bool requires_grad, mt_tensor *out) {
  MT_TRY
  auto t = torch::randn(at::IntArrayRef(shape, ndim), mt::options(dt, dev_type, dev_index));
  if (requires_grad) t.set_requires_grad(true);
  *out = wrap(t);
  MT_CATCH("randn")
}

char *mt_rand(const int64_t *shape, int ndim, int dt, int dev_type, int dev_index,
              mt_tensor *out) {
  MT_TRY
  *out = wrap(torch::rand(at::IntArrayRef(shape, ndim), mt::options(dt, dev_type, dev_index)));
  MT_CATCH("rand")
}

char *mt_bernoulli(const int64_t *shape, int ndim, double p, int dt, int dev_type, int dev_index,
                   mt_tensor *out) {
  MT_TRY
  auto t = torch::empty(at::IntArrayRef(shape, ndim), mt::options(dt, dev_type, dev_index));
  t.bernoulli_(p);
  *out = wrap(t);
  MT_CATCH("bernoulli")
}

char *mt_generator_new(uint64_t seed, int dev_type, int dev_index, mt_generator *out) {
  MT_TRY
  at::Generator g;
#ifdef WITH_CUDA
  if (dev_type == 1) {
    g = at::cuda::detail::createCUDAGenerator(static_cast<c10::DeviceIndex>(dev_index));
  } else {
    g = at::make_generator<at::CPUGeneratorImpl>(seed);
  }
#else
  (void)dev_index;
  if (dev_type == 1) throw std::invalid_argument("CUDA generator requested in a CPU-only build");
  g = at::make_generator<at::CPUGeneratorImpl>(seed);
#endif
  g.set_current_seed(seed);
  *out = new at::Generator(g);
  MT_CATCH("generator")
}

void mt_generator_seed(mt_generator g, uint64_t seed) {
  auto &gen = *static_cast<at::Generator *>(g);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
}

void mt_generator_free(mt_generator g) { delete static_cast<at::Generator *>(g); }

static c10::optional<at::Generator> optgen(mt_generator g) {
  if (g == nullptr) return c10::nullopt;
  return *static_cast<at::Generator *>(g);
}

char *mt_bernoulli_gen(const int64_t *shape, int ndim, double p, int dt, int dev_type,
                       int dev_index, mt_generator gen, mt_tensor *out) {
  MT_TRY
  auto t = torch::empty(at::IntArrayRef(shape, ndim), mt::options(dt, dev_type, dev_index));
  t.bernoulli_(p, optgen(gen));
  *out = wrap(t);
  MT_CATCH("bernoulli")
}

char *mt_rand_gen(const int64_t *shape, int ndim, int dt, int dev_type, int dev_index,
                  mt_generator gen, mt_tensor *out) {
  MT_TRY
  auto t = torch::empty(at::IntArrayRef(shape, ndim), mt::options(dt, dev_type, dev_index));
  t.uniform_(0, 1, optgen(gen));
  *out = wrap(t);
  MT_CATCH("rand")
}

char *mt_arange(int64_t n, int dt, int dev_type, int dev_index, mt_tensor *out) {
  MT_TRY
  *out = wrap(torch::arange(n, mt::options(dt, dev_type, dev_index)));
  MT_CATCH("arange")
}

char *mt_shape(mt_tensor t, int64_t *dims, int *ndim) {
  MT_TRY
  const auto &x = T(t);
  if (x.dim() > 8) throw std::invalid_argument("more than 8 dimensions");
  *ndim = static_cast<int>(x.dim());
  for (int64_t i = 0; i < x.dim(); i++) dims[i] = x.size(i);
  MT_CATCH("shape")
}

char *mt_info(mt_tensor t, int *dt, int *dev_type, int *dev_index, bool *requires_grad,
              bool *defined) {
  MT_TRY
  const auto &x = T(t);
  *defined = x.defined();
  if (!x.defined()) return nullptr;
  *dt = mt::dtype_code(x.scalar_type());
  *dev_type = x.device().is_cuda() ? 1 : 0;
  *dev_index = x.device().has_index() ? x.device().index() : 0;
  *requires_grad = x.requires_grad();
  MT_CATCH("info")
}

char *mt_to_host(mt_tensor t, void *dst, int dt, int64_t numel) {
  MT_TRY
  mt::host_syncs.fetch_add(1);
  auto x = T(t).detach().to(at::Device(at::kCPU), mt::dtype(dt)).contiguous();
  if (x.numel() != numel)
    throw std::invalid_argument("tensor has " + std::to_string(x.numel()) +
                                " elements, destination " + std::to_string(numel));
  std::memcpy(dst, x.data_ptr(), numel * x.element_size());
  MT_CATCH("to_host", t)
}

char *mt_item(mt_tensor t, double *out) {
  MT_TRY
  mt::host_syncs.fetch_add(1);
  *out = T(t).item<double>();
  MT_CATCH("item", t)
}

char *mt_to(mt_tensor t, int dt, int dev_type, int dev_index, bool non_blocking, mt_tensor *out) {
  MT_TRY
  *out = wrap(T(t).to(mt::device(dev_type, dev_index), mt::dtype(dt), non_blocking));
  MT_CATCH("to", t)
}

char *mt_pin_memory(mt_tensor t, mt_tensor *out) {
  MT_TRY
  *out = wrap(torch::cuda::is_available() ? T(t).pin_memory() : T(t));
  MT_CATCH("pin_memory", t)
}

char *mt_to_string(mt_tensor t, char **out) {
  MT_TRY
  std::ostringstream o;
  o << T(t);
  *out = mt::dup(o.str());
  MT_CATCH("to_string", t)
}

void mt_host_heap(int64_t *in_use, int64_t *free_kept) {
  struct mallinfo2 m = mallinfo2();
  *in_use = static_cast<int64_t>(m.uordblks + m.hblkhd);
  *free_kept = static_cast<int64_t>(m.fordblks);
}

void mt_trim_host_heap(void) { malloc_trim(0); }

}  // extern "C"
