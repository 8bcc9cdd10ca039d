// A caching allocator for LibTorch's CPU tensors: freed data blocks are kept in size classes
// and handed out again instead of going back to malloc. A training step allocates and frees
// the same sizes over and over; glibc serves blocks above its thread cache's 1 KiB through
// its bins (searching, splitting, consolidating) and gives the top of the heap back to the
// kernel, so that the next step faults the pages in again. The pool does neither.
//
// Blocks are 64-byte aligned, as c10's own CPU allocator gives them. Each carries a 64-byte
// header before its data with its size class, so the deleter is a plain function and the
// data pointer is its own context (LibTorch's "simple" data pointers). Classes: multiples of
// 64 bytes up to 1 KiB, then eight per power of two (at most 12.5 % rounding), up to 1 GiB;
// larger blocks go straight to malloc and back. Each thread keeps up to 16 MiB of blocks of
// at most 256 KiB behind a lock of its own (uncontended but for a trim); the shared free
// lists are capped at METANAS_CPU_POOL_MAX_MB (default 2048; 0 keeps nothing), past which a
// freed block goes back to malloc.
// mt_cpu_pool_trim empties the pool, every thread's cache included (the trainer calls it with
// malloc_trim, once per meta-epoch: a cache left on a thread that does not allocate again
// kept up to 16 MiB each, and resident memory moved with the threads the Go scheduler had
// used). METANAS_CPU_POOL=0 leaves LibTorch's allocator in place.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>
#include <vector>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>

#include "common.h"

namespace mt {
namespace {

constexpr size_t kAlign = 64;   // c10's alignment of CPU tensor data
constexpr size_t kHeader = 64;  // keeps the data aligned
constexpr int kSmallClasses = 16;        // 64 .. 1024 bytes in steps of 64
constexpr int kSubClasses = 8;           // per power of two above 1 KiB
constexpr int kMaxLog = 30;              // pooled up to 1 GiB
constexpr int kClasses = kSmallClasses + (kMaxLog - 10) * kSubClasses;
constexpr int kDirect = -1;              // header class of a block malloc serves directly

struct Header {
  int32_t cls;
  uint64_t bytes;  // the block's capacity (data bytes)
};
static_assert(sizeof(Header) <= kHeader, "header");

// class_of returns the size class of n bytes (> 0) and its capacity, or kDirect.
int class_of(size_t n, size_t *cap) {
  if (n <= 1024) {
    size_t k = (n + 63) / 64;
    *cap = k * 64;
    return static_cast<int>(k) - 1;
  }
  int e = 63 - __builtin_clzll(static_cast<unsigned long long>(n - 1));  // 2^e < n <= 2^(e+1)
  if (e >= kMaxLog) {
    *cap = n;
    return kDirect;
  }
  size_t step = size_t{1} << (e - 3);  // 2^e / 8
  size_t k = (n + step - 1) / step;    // 9..16 steps: n is in (2^e, 2^(e+1)]
  *cap = k * step;
  return kSmallClasses + (e - 10) * kSubClasses + static_cast<int>(k) - 9;
}

struct FreeList {
  std::mutex mu;
  std::vector<void *> blocks;  // data pointers
};

// Counters one thread writes (relaxed loads and stores, no read-modify-write) and any
// thread may read for mt_cpu_pool_stats.
struct Counters {
  std::atomic<int64_t> in_use{0}, hits{0}, misses{0}, local_bytes{0};
  void add(std::atomic<int64_t> &c, int64_t v) { c.store(c.load(std::memory_order_relaxed) + v, std::memory_order_relaxed); }
};

struct Local;

struct Pool {
  FreeList lists[kClasses];
  std::atomic<int64_t> cached{0};       // bytes in the shared free lists
  std::atomic<int64_t> gone_in_use{0};  // in_use changes on threads whose cache is gone
  // Bytes handed out over all threads, and their highest value since the last reset
  // (mt_cpu_pool_peak).
  std::atomic<int64_t> total{0}, peak{0};
  int64_t max_cached = int64_t{2048} << 20;
  std::mutex reg_mu;                 // guards threads, locals and retired
  std::vector<Counters *> threads;   // live threads' counters
  std::vector<Local *> locals;       // live threads' caches (mt_cpu_pool_trim empties them)
  int64_t retired_in_use = 0, retired_hits = 0, retired_misses = 0;
};

Pool &pool() {
  static Pool *p = [] {  // never destroyed: tensors may be freed during exit
    auto *q = new Pool;
    if (const char *v = std::getenv("METANAS_CPU_POOL_MAX_MB")) {
      char *end = nullptr;
      long long mb = std::strtoll(v, &end, 10);
      if (end != v && *end == '\0' && mb >= 0 && mb < (int64_t{1} << 40)) {
        q->max_cached = static_cast<int64_t>(mb) << 20;
      } else {
        std::fprintf(stderr, "metanas: METANAS_CPU_POOL_MAX_MB=%s is not a number of MiB (0 or more); using 2048\n", v);
      }
    }
    return q;
  }();
  return *p;
}

inline Header *header(void *data) { return reinterpret_cast<Header *>(static_cast<char *>(data) - kHeader); }

void *fresh_block(size_t cap, int cls) {
  void *base = nullptr;
  if (cap > SIZE_MAX - kHeader) return nullptr;
  if (posix_memalign(&base, kAlign, kHeader + cap) != 0) return nullptr;
  auto *h = static_cast<Header *>(base);
  h->cls = cls;
  h->bytes = cap;
  return static_cast<char *>(base) + kHeader;
}

void free_block(void *data) { std::free(header(data)); }

// Set once a thread's cache is destroyed (thread exit): later frees on that thread, as
// during a C++ program's static destruction, use the shared lists.
thread_local bool tl_gone = false;

// Each thread keeps up to kLocalDepth free blocks per class of at most 256 KiB (and
// kLocalBytes in all) behind its own lock; beyond that, and for larger blocks, the shared
// lists.
// A step frees its intermediates together (a Scope's Reset), hundreds of one class at once,
// so the depth is in the thousands.
constexpr size_t kLocalDepth = 4096;
constexpr int64_t kLocalBytes = int64_t{16} << 20;
constexpr int kLocalClasses = kSmallClasses + (18 - 10) * kSubClasses;  // classes up to 256 KiB

struct Local {
  std::mutex mu;  // the owner's allocations and frees, and mt_cpu_pool_trim
  std::vector<void *> blocks[kLocalClasses];
  int64_t bytes = 0;
  Counters *c;

  Local() : c(new Counters) {
    Pool &p = pool();
    std::lock_guard<std::mutex> g(p.reg_mu);
    p.threads.push_back(c);
    p.locals.push_back(this);
  }
  ~Local() {
    tl_gone = true;
    Pool &p = pool();
    {
      std::lock_guard<std::mutex> g(p.reg_mu);
      p.threads.erase(std::find(p.threads.begin(), p.threads.end(), c));
      p.locals.erase(std::find(p.locals.begin(), p.locals.end(), this));
      p.retired_in_use += c->in_use.load();
      p.retired_hits += c->hits.load();
      p.retired_misses += c->misses.load();
    }
    std::lock_guard<std::mutex> g(mu);
    drop();
    delete c;
  }
  // drop frees every block this thread holds (mu held) and returns their bytes.
  int64_t drop() {
    int64_t freed = bytes;
    for (auto &b : blocks) {
      for (void *d : b) free_block(d);
      b.clear();
    }
    bytes = 0;
    c->local_bytes.store(0, std::memory_order_relaxed);
    return freed;
  }
};

Local *local() {
  if (tl_gone) return nullptr;
  thread_local Local l;
  return &l;
}

void release(void *data) {
  if (data == nullptr) return;
  Pool &p = pool();
  Local *l = local();
  Header *h = header(data);
  auto bytes = static_cast<int64_t>(h->bytes);
  int cls = h->cls;
  p.total.fetch_sub(bytes, std::memory_order_relaxed);
  if (l == nullptr) {
    p.gone_in_use.fetch_sub(bytes, std::memory_order_relaxed);
  } else {
    l->c->add(l->c->in_use, -bytes);
  }
  if (cls == kDirect) {
    free_block(data);
    return;
  }
  if (l != nullptr && cls < kLocalClasses) {
    std::lock_guard<std::mutex> g(l->mu);
    if (l->blocks[cls].size() < kLocalDepth && l->bytes + bytes <= std::min(kLocalBytes, p.max_cached)) {
      l->blocks[cls].push_back(data);
      l->bytes += bytes;
      l->c->local_bytes.store(l->bytes, std::memory_order_relaxed);
      return;
    }
  }
  if (p.cached.load(std::memory_order_relaxed) + bytes <= p.max_cached) {
    FreeList &f = p.lists[cls];
    std::lock_guard<std::mutex> g(f.mu);
    f.blocks.push_back(data);
    p.cached.fetch_add(bytes, std::memory_order_relaxed);
    return;
  }
  free_block(data);
}

void *acquire(size_t n) {
  Pool &p = pool();
  Local *l = local();
  size_t cap = 0;
  int cls = class_of(n, &cap);
  void *data = nullptr;
  if (l != nullptr && cls != kDirect && cls < kLocalClasses) {
    std::lock_guard<std::mutex> g(l->mu);
    if (!l->blocks[cls].empty()) {
      data = l->blocks[cls].back();
      l->blocks[cls].pop_back();
      l->bytes -= static_cast<int64_t>(cap);
      l->c->local_bytes.store(l->bytes, std::memory_order_relaxed);
    }
  }
  if (data == nullptr && cls != kDirect) {
    FreeList &f = p.lists[cls];
    std::lock_guard<std::mutex> g(f.mu);
    if (!f.blocks.empty()) {
      data = f.blocks.back();
      f.blocks.pop_back();
      p.cached.fetch_sub(static_cast<int64_t>(cap), std::memory_order_relaxed);
    }
  }
  bool hit = data != nullptr;
  if (!hit) {
    data = fresh_block(cap, cls);
    if (data == nullptr) {
      // Give the pool's free blocks back and try once more before failing (no lock held).
      mt_cpu_pool_trim();
      data = fresh_block(cap, cls);
    }
    TORCH_CHECK(data != nullptr, "CPU pool: out of memory allocating ", n, " bytes");
  }
  const int64_t now = p.total.fetch_add(static_cast<int64_t>(cap), std::memory_order_relaxed) + static_cast<int64_t>(cap);
  for (int64_t pk = p.peak.load(std::memory_order_relaxed);
       now > pk && !p.peak.compare_exchange_weak(pk, now, std::memory_order_relaxed);) {
  }
  if (l == nullptr) {
    p.gone_in_use.fetch_add(static_cast<int64_t>(cap), std::memory_order_relaxed);
  } else {
    l->c->add(hit ? l->c->hits : l->c->misses, 1);
    l->c->add(l->c->in_use, static_cast<int64_t>(cap));
  }
  return data;
}

// PoolAllocator serves LibTorch's CPU allocations from the pool. allocate and copy_data are
// declared both ways LibTorch has had them (const allocate before 2.3, copy_data from 2.3 on),
// without override, so that the class fits either.
struct PoolAllocator final : public c10::Allocator {
  c10::DataPtr make(size_t n) const {
    if (n == 0) return {nullptr, nullptr, &release, c10::Device(c10::DeviceType::CPU)};
    void *d = acquire(n);
    return {d, d, &release, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DataPtr allocate(size_t n) const { return make(n); }
  c10::DataPtr allocate(size_t n) { return make(n); }
  c10::DeleterFnPtr raw_deleter() const { return &release; }
  void copy_data(void *dest, const void *src, std::size_t count) const { std::memcpy(dest, src, count); }
};

PoolAllocator g_pool_allocator;
std::atomic<bool> g_enabled{false};

struct Install {
  Install() {
    if (!env_is("METANAS_CPU_POOL", "0")) mt_cpu_pool_enable(true);
  }
} g_install;

}  // namespace
}  // namespace mt

extern "C" {

void mt_cpu_pool_enable(bool on) {
  c10::Allocator *a = on ? static_cast<c10::Allocator *>(&mt::g_pool_allocator) : c10::GetDefaultCPUAllocator();
  c10::SetAllocator(c10::DeviceType::CPU, a, 255);
  mt::g_enabled.store(on);
}

bool mt_cpu_pool_enabled(void) { return mt::g_enabled.load(); }

int64_t mt_cpu_pool_trim(void) {
  mt::Pool &p = mt::pool();
  int64_t freed = 0;
  for (auto &l : p.lists) {
    std::vector<void *> take;
    {
      std::lock_guard<std::mutex> g(l.mu);
      take.swap(l.blocks);
    }
    for (void *d : take) {
      freed += static_cast<int64_t>(mt::header(d)->bytes);
      mt::free_block(d);
    }
  }
  p.cached.fetch_sub(freed, std::memory_order_relaxed);
  // Every thread's cache, the threads that will not allocate again included.
  std::lock_guard<std::mutex> g(p.reg_mu);
  for (mt::Local *l : p.locals) {
    std::lock_guard<std::mutex> lg(l->mu);
    freed += l->drop();
  }
  return freed;
}

int64_t mt_cpu_pool_peak(bool reset) {
  mt::Pool &p = mt::pool();
  const int64_t pk = p.peak.load();
  if (reset) p.peak.store(p.total.load());
  return pk;
}

void mt_cpu_pool_stats(int64_t *cached, int64_t *in_use, int64_t *hits, int64_t *misses) {
  mt::Pool &p = mt::pool();
  std::lock_guard<std::mutex> g(p.reg_mu);
  *cached = p.cached.load();
  *in_use = p.retired_in_use + p.gone_in_use.load();
  *hits = p.retired_hits;
  *misses = p.retired_misses;
  for (mt::Counters *c : p.threads) {
    *cached += c->local_bytes.load();
    *in_use += c->in_use.load();
    *hits += c->hits.load();
    *misses += c->misses.load();
  }
}

}  // extern "C"

extern "C" char *mt_cpu_pool_selftest(void) {
  using namespace mt;
  std::ostringstream bad;
  // Size classes: every size fits its class, wastes at most an eighth (64 bytes when small),
  // and classes grow with the size and map to one capacity each.
  std::vector<size_t> sizes;
  for (size_t n = 1; n <= 5000; n++) sizes.push_back(n);
  for (int e = 10; e <= 32; e++) {
    for (long d = -70; d <= 70; d++) sizes.push_back((size_t{1} << e) + d);
    for (int k = 1; k < 8; k++) sizes.push_back((size_t{1} << e) + k * ((size_t{1} << e) / 8) + 1);
  }
  std::sort(sizes.begin(), sizes.end());
  std::vector<size_t> cap_of(kClasses, 0);
  int last = -1;
  for (size_t n : sizes) {
    size_t cap = 0;
    int c = class_of(n, &cap);
    bool small = n <= 1024;
    if (cap < n || (small && cap >= n + 64) || (!small && c != kDirect && 8 * (cap - n) >= n)) {
      bad << "size " << n << ": capacity " << cap << "; ";
    }
    if (c == kDirect) {
      if (n <= (size_t{1} << kMaxLog)) bad << "size " << n << " not pooled; ";
      continue;
    }
    if (c < 0 || c >= kClasses) {
      bad << "size " << n << ": class " << c << "; ";
      continue;
    }
    if (c < last) bad << "size " << n << ": class " << c << " after " << last << "; ";
    if (cap_of[c] != 0 && cap_of[c] != cap) bad << "class " << c << ": capacities " << cap_of[c] << " and " << cap << "; ";
    cap_of[c] = cap;
    last = c;
  }
  // Blocks: aligned as c10's, and a freed block is what the same thread gets next.
  if (mt_cpu_pool_enabled()) {
    c10::Allocator *a = c10::GetCPUAllocator();
    for (size_t n : {size_t{1}, size_t{100}, size_t{4096}, size_t{7168}, size_t{300000}, size_t{5} << 20}) {
      void *first = nullptr;
      {
        c10::DataPtr d = a->allocate(n);
        first = d.get();
        if (reinterpret_cast<uintptr_t>(first) % kAlign != 0) bad << "size " << n << ": unaligned block; ";
        std::memset(first, 1, n);
      }
      c10::DataPtr again = a->allocate(n);
      if (static_cast<int64_t>(n) <= pool().max_cached / 2 && again.get() != first) bad << "size " << n << ": freed block not reused; ";
    }
  }
  std::string s = bad.str();
  return s.empty() ? nullptr : dup("cpu pool: " + s);
}
