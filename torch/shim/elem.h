// mt_ns_ld and mt_ns_st read and write the element types of the shim's own kernels (float32,
// bfloat16, float16) as float: LibTorch's types on the host, CUDA's in .cu files. Included
// before nodesum_math.h, whose per-element functions call them.
#pragma once

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>

__device__ __forceinline__ float mt_ns_ld(const float *p) { return *p; }
__device__ __forceinline__ float mt_ns_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float mt_ns_ld(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ void mt_ns_st(float *p, float v) { *p = v; }
__device__ __forceinline__ void mt_ns_st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); }
__device__ __forceinline__ void mt_ns_st(__half *p, float v) { *p = __float2half(v); }
#else
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "nodesum_kernels.h"

inline float mt_ns_ld(const float *p) { return *p; }
inline float mt_ns_ld(const c10::BFloat16 *p) { return static_cast<float>(*p); }
inline float mt_ns_ld(const c10::Half *p) { return static_cast<float>(*p); }
inline void mt_ns_st(float *p, float v) { *p = v; }
inline void mt_ns_st(c10::BFloat16 *p, float v) { *p = static_cast<c10::BFloat16>(v); }
inline void mt_ns_st(c10::Half *p, float v) { *p = static_cast<c10::Half>(v); }

// mt_ns_by_type calls fn with a null pointer of st's element type: c10::BFloat16,
// c10::Half, else float (the CPU loops read and write that type and compute in float).
template <class Fn>
void mt_ns_by_type(c10::ScalarType st, Fn fn) {
  switch (st) {
    case c10::ScalarType::BFloat16:
      fn(static_cast<c10::BFloat16 *>(nullptr));
      break;
    case c10::ScalarType::Half:
      fn(static_cast<c10::Half *>(nullptr));
      break;
    default:
      fn(static_cast<float *>(nullptr));
  }
}

// mt_ns_dtype is the kernels' code of st (float32, bfloat16 or float16).
inline int mt_ns_dtype(c10::ScalarType st) {
  return st == c10::ScalarType::BFloat16 ? MT_NS_BF16 : (st == c10::ScalarType::Half ? MT_NS_HALF : MT_NS_FLOAT);
}
#endif
