// The native CPU GRU recurrence (PyTorch's convention, as lstm_jax.nn.cells.GRUCell): the interface
// between the FFI handlers (gru_cpu.cc) and the per-ISA kernels (gru_kernel.inc).
//
// Arrays are time-major and row-major; gate blocks (r, z, n) of width H:
//   forward:  r = sigmoid(x W_r + b_r + h U_r),  z = sigmoid(x W_z + b_z + h U_z),
//             hn = h U_n + b_hn,  n = tanh(x W_n + b_n + r hn),  h' = (1 - z) n + z h.
//             Past a row's mask the carry is frozen and the output is zero.
//             The residuals are (r, z, n, hn) per step: [T, B, 4H].
//   backward: per step, from dh = dh_t + dout_t:
//             a_n = dh (1 - z)(1 - n^2),  a_r = a_n hn r (1 - r),  a_z = dh (h_{t-1} - n) z (1 - z),
//             g = a_n r (the gradient of hn);
//             dx = [a_r, a_z, a_n] W^T,  dh_{t-1} = dh z + [a_r, a_z, g] U^T,
//             dW = sum x^T [a_r, a_z, a_n],  dU = sum h_{t-1}^T [a_r, a_z, g],
//             db = sum [a_r, a_z, a_n],  db_hn = sum g.
// As in the LSTM kernels (kernel.h): the input
// projection runs in the same register tile as the recurrent product, rows are split into blocks
// that run the whole sequence with no synchronisation, the gate gradients of a few steps stay in
// cache and go straight into the weight gradient, and the reductions run in a fixed order.
// The mask must mark a prefix of each row (h_{t-1} is then out_{t-1} wherever a step is live).
#pragma once

#include <cstdint>

#include "kernel_common.h"

namespace lstm_jax_native {

struct GruFwdArgs {
  int64_t T, B, I, H;
  const float* x;     // [T, B, I]
  const float* W;     // [I, 3H]
  const float* bias;  // [3H]
  const float* U;     // [H, 3H]
  const float* bhn;   // [H]: the recurrent bias of n, inside the reset gate's product
  const float* h0;    // [B, H]
  const bool* mask;   // [T, B]
  float* out;         // [T, B, H]
  float* hT;          // [B, H]
  float* gates;       // [T, B, 4H]: (r, z, n, hn), or null (no residuals)
  int threads;
  const ParallelFor* parallel;
};

struct GruBwdArgs {
  int64_t T, B, I, H;
  const float* gates;  // [T, B, 4H] from the forward pass
  const float* dout;   // [T, B, H]
  const float* W;      // [I, 3H]
  const float* U;      // [H, 3H]
  const float* dhT;    // [B, H]
  const bool* mask;    // [T, B]
  const float* x;      // [T, B, I]
  const float* out;    // [T, B, H]: h_{t-1} for the weight gradient and for a_z
  const float* h0;     // [B, H]
  float* db;           // [3H]
  float* dbhn;         // [H]
  float* dWU;          // [I + H, 3H]: dW (the first I rows), then dU
  float* dx;           // [T, B, I], or null (x needs no gradient)
  float* dh0;          // [B, H]
  int threads;
  const ParallelFor* parallel;
};

// In each ISA build, beside the LSTM's kernels.
#define LSTM_JAX_DECLARE_GRU(ns)          \
  namespace ns::gru {                     \
  void forward(const GruFwdArgs& a);      \
  void backward(const GruBwdArgs& a);     \
  }
LSTM_JAX_ISAS(LSTM_JAX_DECLARE_GRU)
#undef LSTM_JAX_DECLARE_GRU

}  // namespace lstm_jax_native
