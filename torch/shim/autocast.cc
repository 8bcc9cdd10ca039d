// Autocast: a thread's lowering of convolutions and matrix products to a 16-bit float type.
#include <ATen/autocast_mode.h>
#include <torch/version.h>

#include "common.h"

namespace {

// The LibTorch >= 2.4 API takes the device type; older ones have a function per device.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
bool autocast_on(bool cuda) { return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU); }
at::ScalarType autocast_type(bool cuda) { return at::autocast::get_autocast_dtype(cuda ? at::kCUDA : at::kCPU); }
void set_autocast(bool cuda, bool on, at::ScalarType st) {
  at::autocast::set_autocast_enabled(cuda ? at::kCUDA : at::kCPU, on);
  at::autocast::set_autocast_dtype(cuda ? at::kCUDA : at::kCPU, st);
}
#else
bool autocast_on(bool cuda) { return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled(); }
at::ScalarType autocast_type(bool cuda) {
  return cuda ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast(bool cuda, bool on, at::ScalarType st) {
  if (cuda) {
    at::autocast::set_enabled(on);
    at::autocast::set_autocast_gpu_dtype(st);
  } else {
    at::autocast::set_cpu_enabled(on);
    at::autocast::set_autocast_cpu_dtype(st);
  }
}
#endif

}  // namespace

namespace mt {

bool autocast_cpu() { return autocast_on(false); }
bool autocast_active(bool cuda) { return autocast_on(cuda); }
at::ScalarType autocast_dtype(bool cuda) { return autocast_type(cuda); }

}  // namespace mt

extern "C" {

char *mt_autocast(bool cuda, bool on, int dtype, bool cache, bool *prev_on, int *prev_dtype, bool *prev_cache) {
  MT_TRY
  const auto st = mt::dtype(dtype);
  // Turning it off (a restore) takes any type, so that it cannot fail there.
  if (on && st != at::kBFloat16 && st != at::kHalf) throw std::invalid_argument("autocast lowers to bfloat16 or float16 only");
  *prev_on = autocast_on(cuda);
  *prev_dtype = mt::dtype_code(autocast_type(cuda));
  *prev_cache = at::autocast::is_autocast_cache_enabled();
  set_autocast(cuda, on, st);
  at::autocast::set_autocast_cache_enabled(cache);
  MT_CATCH("autocast")
}

}  // extern "C"
