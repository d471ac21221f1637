// The LSTM and GRU kernels for AVX2 + FMA: 8-float vectors, 16 registers (a 2 x 4 tile).
#if defined(__x86_64__) || defined(_M_X64)
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>
#include <immintrin.h>
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif
#define LJ_NS avx2
#define LJ_LANES 8
#define LJ_MR 2
#define LJ_STREAM(p, v) _mm256_stream_ps((p), (__m256)(v))
#define LJ_FENCE() _mm_sfence()
#include "kernel.inc"
#include "gru_kernel.inc"
#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
