// The native CPU LSTM recurrence: the interface between the FFI handlers and the per-ISA kernels.
//
// The forward pass computes the input projection x_t W with the recurrent product, in the same
// register tile, so no [T, B, 4H] projection is ever written or read back. The weight gradients
// stay large XLA matmuls. Arrays are time-major and row-major, gate blocks (i, f, o, g) of width H:
//   forward:  z_t = x_t W + b + h_{t-1} U;  i, f, o = sigmoid;  g = tanh;  c_t = f c + i g;
//             h_t = o tanh(c_t). Past a row's mask the carry is frozen and the output is zero.
//   backward: per step the gate gradient dz_t (written over the saved gates),
//             dh_{t-1} = dz_t U^T and dx_t = dz_t W^T; and db, the sum of dz.
// Rows of the batch are independent, so each thread owns a block of rows for the whole sequence
// and the threads never synchronise between steps.
#pragma once

#include <cstdint>
#include <functional>

namespace lstm_jax_native {

// Runs f(0), ..., f(n - 1), possibly at the same time, and returns when all have finished. The FFI
// layer runs them on XLA's own intra-op threads, so that they do not compete with XLA's workers.
using ParallelFor = std::function<void(int64_t n, const std::function<void(int64_t)>& f)>;

struct FwdArgs {
  int64_t T, B, I, H;
  const float* x;      // [T, B, I]
  const float* W;      // [I, 4H]
  const float* bias;   // [4H]
  const float* U;      // [H, 4H]
  const float* c0;     // [B, H]
  const float* h0;     // [B, H]
  const bool* mask;    // [T, B]
  float* out;          // [T, B, H]
  float* cT;           // [B, H]
  float* hT;           // [B, H]
  float* gates;        // [T, B, 4H] activated gates, or null (no residuals)
  float* cprev;        // [T, B, H] cell state entering each step, or null
  float* xh;           // [T, B, I + H] each step's [x_t, h_{t-1}], or null: the weight gradient is xh^T dz
  int threads;
  const ParallelFor* parallel;
};

struct BwdArgs {
  int64_t T, B, I, H;
  const float* gates;  // [T, B, 4H] from the forward pass
  const float* cprev;  // [T, B, H]
  const float* dout;   // [T, B, H]
  const float* W;      // [I, 4H]
  const float* U;      // [H, 4H]
  const float* dcT;    // [B, H]
  const float* dhT;    // [B, H]
  const bool* mask;    // [T, B]
  float* dz;           // [T, B, 4H]; may alias gates
  float* db;           // [4H]: the sum of dz over steps and rows
  float* dx;           // [T, B, I]: dz W^T
  float* dc0;          // [B, H]
  float* dh0;          // [B, H]
  int threads;
  const ParallelFor* parallel;
};

#define LSTM_JAX_DECLARE_ISA(ns)        \
  namespace ns {                        \
  void forward(const FwdArgs& a);       \
  void backward(const BwdArgs& a);      \
  }

LSTM_JAX_DECLARE_ISA(generic)
#if defined(__x86_64__) || defined(_M_X64)
LSTM_JAX_DECLARE_ISA(avx2)
LSTM_JAX_DECLARE_ISA(avx512)
#endif

}  // namespace lstm_jax_native
