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
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

inline float mt_ns_ld(const float *p) { return *p; }
inline float mt_ns_ld(const c10::BFloat16 *p) { return static_cast<float>(*p); }
inline float mt_ns_ld(const c10::Half *p) { return static_cast<float>(*p); }
inline void mt_ns_st(float *p, float v) { *p = v; }
inline void mt_ns_st(c10::BFloat16 *p, float v) { *p = static_cast<c10::BFloat16>(v); }
inline void mt_ns_st(c10::Half *p, float v) { *p = static_cast<c10::Half>(v); }
#endif
