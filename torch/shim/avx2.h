// Helpers of the shim's AVX2 CPU kernels (cpu_conv.cc, cpu_fast.cc), x86-64 only: the
// attribute that compiles a function for AVX2 and FMA (callers check cpu_avx2_fma first)
// and the mask of a row's last, partial vector.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>

#define MT_AVX2_FMA __attribute__((target("avx2,fma")))

namespace mt {

// tail_mask selects the first r (0 to 8) of eight lanes.
MT_AVX2_FMA inline __m256i tail_mask(int64_t r) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(r)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

}  // namespace mt
#endif
