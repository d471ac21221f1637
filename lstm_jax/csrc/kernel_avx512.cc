// The LSTM and GRU kernels for AVX-512: 16-float vectors, 32 registers (a 6 x 4 tile).
#if defined(__x86_64__) || defined(_M_X64)
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512dq,avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx512f,avx512dq,avx2,fma")
#endif
#define LJ_NS avx512
#define LJ_LANES 16
#define LJ_MR 6
// 1/x from the 14-bit estimate and one Newton step (about 1 ulp): several times the throughput of a division.
#define LJ_RECIP(x)                                  \
  const V r = (V)_mm512_rcp14_ps((__m512)(x));       \
  return r * (2.0f - (x) * r);
#define LJ_STREAM(p, v) _mm512_stream_ps((p), (__m512)(v))
#define LJ_FENCE() _mm_sfence()
#include "kernel.inc"
#include "gru_kernel.inc"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
