// opchain: the C++ floor of the op-cost benchmark (cmd/opbench). It issues the same work as
// the Go (torch package) and Python (opchain.py) versions straight against LibTorch's C++ API:
//
//   chain: x (64x28 float32, requires grad); y = x; 200 times y = relu(y*w + b);
//          y.sum().backward()                         600 forward ops per iteration
//   conv:  conv2d 3x3, padding 1, of x (20x28x28x28) with w (28x28x3x3, requires grad);
//          out.sum().backward()                         1 forward op per iteration
//
// Cost per op = wall time of whole iterations (forward, sum, backward, freeing) divided by the
// forward ops of an iteration; the CPU time of the process over the same span is reported
// too (less sensitive to other load on a shared machine).
//
// Stand-alone: opchain [--case chain|conv|all] [--device cpu|cuda] [--iters N] [--trials N]
//   [--warmup N] [--threads N] prints one JSON line per case with the per-trial costs
//   (--iters 0: a per-case default; --warmup -1: iters/5; --threads 0: LibTorch's default).
// opchain --case info prints the LibTorch version, default thread count and CUDA availability.
// OPCHAIN_IDLE_THREAD=1 (diagnostic) starts an idle second thread, as a Go process has.
// opchain --case chain_held (diagnostic) runs the chain the way the Go side does through the
//   shim: each result a heap handle, all held to the end of the iteration, then freed.
// opchain --serve [--device D] [--threads N] is how cmd/opbench drives it, one trial at a time
//   interleaved with its own: it reads lines "CASE ITERS WARMUP" from stdin and answers each
//   with one JSON line {"case","wall_us_per_op","cpu_us_per_op"}; tensors persist per case.
//
// Built by third_party/native.mk into build/bin/opchain with the shim's flags and LibTorch.
#include <torch/torch.h>
#include <torch/version.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int kChainSteps = 200;  // (mul, add, relu) triples per iteration

struct Opts {
  std::string which = "all";
  std::string device = "cpu";
  int iters = 0, trials = 7, warmup = -1, threads = 0;
  bool serve = false;
};

// Case is one benchmark: an iteration and how many forward ops it counts.
struct Case {
  std::function<void()> step;
  int ops = 0;
  int default_iters = 0;
};

Case make_case(const std::string &name, const at::Device &dev) {
  auto f = torch::TensorOptions().dtype(torch::kFloat32).device(dev);
  Case c;
  if (name == "chain") {
    auto x = torch::randn({64, 28}, f).set_requires_grad(true);
    auto w = torch::full({64, 28}, 0.9, f);
    auto b = torch::full({64, 28}, 0.1, f);
    c.step = [x, w, b] {
      auto y = x;
      for (int k = 0; k < kChainSteps; k++) y = at::relu(y * w + b);
      y.sum().backward();
    };
    c.ops = 3 * kChainSteps;
    c.default_iters = 200;
  } else if (name == "chain_held") {
    // Diagnostic: the chain as the Go side issues it through the shim: every result a heap
    // handle (new at::Tensor, counted), all held until the end of the iteration, then freed.
    auto x = torch::randn({64, 28}, f).set_requires_grad(true);
    auto w = torch::full({64, 28}, 0.9, f);
    auto b = torch::full({64, 28}, 0.1, f);
    c.step = [x, w, b] {
      static std::atomic<int64_t> live{0};
      std::vector<at::Tensor *> hs;
      auto wrap = [&](at::Tensor t) {
        live.fetch_add(1, std::memory_order_relaxed);
        hs.push_back(new at::Tensor(std::move(t)));
        return hs.back();
      };
      const at::Tensor *y = &x;
      for (int k = 0; k < kChainSteps; k++) y = wrap(at::relu(*wrap(*wrap(*y * w) + b)));
      wrap(y->sum())->backward();
      for (auto *h : hs) {
        live.fetch_sub(1, std::memory_order_relaxed);
        delete h;
      }
    };
    c.ops = 3 * kChainSteps;
    c.default_iters = 200;
  } else if (name == "conv") {
    auto x = torch::randn({20, 28, 28, 28}, f);
    auto w = (torch::randn({28, 28, 3, 3}, f) * 0.1).set_requires_grad(true);
    c.step = [x, w] {
      auto y = at::conv2d(x, w, {}, {1, 1}, {1, 1}, {1, 1}, 1);
      y.sum().backward();
    };
    c.ops = 1;
    c.default_iters = dev.is_cuda() ? 500 : 20;
  } else {
    throw std::invalid_argument("unknown case " + name + " (chain or conv)");
  }
  return c;
}

void sync(const at::Device &dev) {
  if (dev.is_cuda()) torch::cuda::synchronize(dev.index());
}

double cpu_us() {  // CPU time of the whole process, all threads
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

// Times iters iterations of c; returns wall and CPU microseconds per op.
std::pair<double, double> trial(const Case &c, int iters, const at::Device &dev) {
  double c0 = cpu_us();
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < iters; i++) c.step();
  sync(dev);
  auto dt = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  double n = double(iters) * c.ops;
  return {dt / n, (cpu_us() - c0) / n};
}

void warm(const Case &c, int n, const at::Device &dev) {
  for (int i = 0; i < n; i++) c.step();
  sync(dev);
}

void print_list(const char *key, const std::vector<double> &v) {
  std::printf(",\"%s\":[", key);
  for (size_t i = 0; i < v.size(); i++) std::printf("%s%.4f", i ? "," : "", v[i]);
  std::printf("]");
}

// Runs one case stand-alone: warm-up, trials, one JSON line.
void standalone(const std::string &name, const Opts &o, const at::Device &dev) {
  Case c = make_case(name, dev);
  int iters = o.iters > 0 ? o.iters : c.default_iters;
  warm(c, o.warmup >= 0 ? o.warmup : std::max(1, iters / 5), dev);
  std::vector<double> wall, cpu;
  for (int t = 0; t < o.trials; t++) {
    auto r = trial(c, iters, dev);
    wall.push_back(r.first);
    cpu.push_back(r.second);
  }
  std::vector<double> s = wall;
  std::sort(s.begin(), s.end());
  double med = s.size() % 2 ? s[s.size() / 2] : (s[s.size() / 2 - 1] + s[s.size() / 2]) / 2;
  std::printf("{\"impl\":\"cpp\",\"case\":\"%s\",\"device\":\"%s\",\"ops_per_iter\":%d,\"iters\":%d,"
              "\"trials\":%d,\"threads\":%d,\"libtorch\":\"%s\",\"us_per_op\":%.4f,\"min_us_per_op\":%.4f",
              name.c_str(), o.device.c_str(), c.ops, iters, o.trials, at::get_num_threads(), TORCH_VERSION, med, s[0]);
  print_list("trial_us_per_op", wall);
  print_list("trial_cpu_us_per_op", cpu);
  std::printf("}\n");
  std::fflush(stdout);
}

// Answers "CASE ITERS WARMUP" lines from stdin until EOF.
int serve(const at::Device &dev) {
  std::map<std::string, Case> cases;
  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string name;
    int iters = 0, warmup = 0;
    if (!(in >> name >> iters >> warmup) || iters < 1 || warmup < 0) {
      std::fprintf(stderr, "opchain: bad request %s (want: CASE ITERS WARMUP)\n", line.c_str());
      return 2;
    }
    auto it = cases.find(name);
    if (it == cases.end()) it = cases.emplace(name, make_case(name, dev)).first;
    warm(it->second, warmup, dev);
    auto r = trial(it->second, iters, dev);
    std::printf("{\"impl\":\"cpp\",\"case\":\"%s\",\"wall_us_per_op\":%.4f,\"cpu_us_per_op\":%.4f}\n", name.c_str(),
                r.first, r.second);
    std::fflush(stdout);
  }
  return 0;
}

int intArg(const char *flag, const char *v, long lo = 0) {
  char *end = nullptr;
  long n = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || n < lo) {
    std::fprintf(stderr, "opchain: %s wants a number >= %ld, got %s\n", flag, lo, v);
    std::exit(2);
  }
  return static_cast<int>(n);
}

}  // namespace

int main(int argc, char **argv) {
  Opts o;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--serve") {
      o.serve = true;
      continue;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "opchain: %s needs a value\n", a.c_str());
      return 2;
    }
    const char *v = argv[++i];
    if (a == "--case") o.which = v;
    else if (a == "--device") o.device = v;
    else if (a == "--iters") o.iters = intArg("--iters", v);
    else if (a == "--trials") o.trials = std::max(1, intArg("--trials", v));
    else if (a == "--warmup") o.warmup = intArg("--warmup", v, -1);
    else if (a == "--threads") o.threads = intArg("--threads", v);
    else {
      std::fprintf(stderr, "opchain: unknown flag %s\n", a.c_str());
      return 2;
    }
  }
  if (o.which != "all" && o.which != "chain" && o.which != "conv" && o.which != "info" && o.which != "chain_held") {
    std::fprintf(stderr, "opchain: --case must be chain, conv, all, info or chain_held\n");
    return 2;
  }
  if (o.threads > 0) at::set_num_threads(o.threads);
  if (const char *v = std::getenv("OPCHAIN_IDLE_THREAD"); v != nullptr && *v == '1') {
    // Diagnostic: a second, idle thread, as every Go process has. glibc's malloc takes its
    // lock-free single-thread path only while a process has one thread.
    std::thread([] {
      for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
    }).detach();
  }
  if (o.which == "info") {
    std::printf("{\"impl\":\"cpp\",\"case\":\"info\",\"threads\":%d,\"libtorch\":\"%s\",\"cuda\":%s}\n",
                at::get_num_threads(), TORCH_VERSION, torch::cuda::is_available() ? "true" : "false");
    return 0;
  }
  try {
    at::Device dev(o.device);
    if (dev.is_cuda() && !torch::cuda::is_available()) {
      std::fprintf(stderr, "opchain: CUDA is not available to this LibTorch\n");
      return 3;
    }
    torch::manual_seed(1);
    if (o.serve) return serve(dev);
    if (o.which == "chain_held") {
      standalone("chain_held", o, dev);
      return 0;
    }
    if (o.which != "conv") standalone("chain", o, dev);
    if (o.which != "chain") standalone("conv", o, dev);
  } catch (const std::exception &e) {
    std::fprintf(stderr, "opchain: %s\n", e.what());
    return 1;
  }
  return 0;
}
