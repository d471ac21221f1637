// The native CPU LSTM recurrence: the interface between the FFI handlers and the per-ISA kernels.
//
// The forward pass computes the input projection x_t W with the recurrent product, in the same
// register tile, so no [T, B, 4H] projection is ever written or read back. Arrays are time-major
// and row-major, gate blocks (i, f, o, g) of width H:
//   forward:  z_t = x_t W + b + h_{t-1} U;  i, f, o = sigmoid;  g = tanh;  c_t = f c + i g;
//             h_t = o tanh(c_t). Past a row's mask the carry is frozen and the output is zero.
//   backward: per step the gate gradient dz_t, dh_{t-1} = dz_t U^T and (optionally) dx_t = dz_t W^T;
//             db = sum of dz_t, and [dW; dU] = sum of [x_t, h_{t-1}]^T dz_t. dz never goes to memory:
//             a few steps of it are kept in cache and added into the weight gradient as one matmul.
// The mask must mark a prefix of each row (so h_{t-1} is out_{t-1} wherever dz_t is not zero).
//
// The same kernels run Greff et al.'s peephole LSTM and its one-change variants (lstm_jax.nn.cells),
// chosen by a Variant (below): a gate left out is the constant 1 and has no weight block (the
// blocks keep the order i, f, o, g of those present, G = NG H); with peepholes p [3H] (p_i, p_f,
// p_o; zeros for an absent gate) i = sigmoid(z_i + p_i c), f = sigmoid(z_f + p_f c) and
// o = sigmoid(z_o + p_o c_t) (the new cell state); CIFG couples f = 1 - i; NIAF has g = z_g and
// NOAF h_t = o c_t. The backward pass then also gives dp = sum over steps and rows of
// (dz_i c, dz_f c, dz_o c_t). Greff's FGR (kGateRecurrence, with the peephole cell) adds the
// previous step's activated gates a_{t-1} = [i f o]_{t-1} [B, 3H] through R [3H, 3H] to z_ifo:
// z_t = x_t W + b + h_{t-1} U + [a_{t-1} R, 0]. a is a third part of the carry (a0, aT), frozen
// past a row's length like c and h; the backward pass carries its gradient da (da_{t-1} = dz_ifo,t
// R^T, added into step t-1's gate gradients) and sums dR = sum a_{t-1}^T dz_ifo,t with dW and dU.
// Rows of the batch are independent, so each thread owns a block of rows for the whole sequence
// and the threads never synchronise between steps.
//
// One call may run N layers of one shape side by side (both directions of a bidirectional layer):
// each has its own weights, state and residuals, they read the same x, and they write their
// outputs into one [T, B, N H] array (row stride ldo = N H), each its own H columns. A layer that
// runs reversed reads each row's valid prefix backwards: its step s reads x_{len-1-s} and writes
// out_{len-1-s} (len: the row's length, the prefix the mask marks); past the prefix it is frozen
// and writes zeros at time s, as always. So its outputs come out aligned with the input and no
// reversal of x or of the outputs is ever written. Its residuals stay in step order.
#pragma once

#include <cstdint>

#include "kernel_common.h"

namespace lstm_jax_native {

// Which LSTM runs: a bit set. The standard cell is kInput | kForget | kOutput.
enum Variant : int {
  kInput = 1,        // an input gate i (else i = 1)
  kForget = 2,       // a forget gate f (else f = 1, or 1 - i with kCoupled)
  kOutput = 4,       // an output gate o (else o = 1)
  kCoupled = 8,      // f = 1 - i (CIFG; without kForget)
  kLinearInput = 16, // g = z_g (NIAF)
  kLinearOutput = 32,// h = o c (NOAF)
  kPeephole = 64,    // peepholes p_i, p_f, p_o
  kLayerNorm = 128,  // the layer-normalised LSTM (with kStandard; see below)
  kGateRecurrence = 256,  // FGR: the gates also read the previous step's gates (with kStandard | kPeephole)
};
constexpr int kStandard = kInput | kForget | kOutput;
// The variants the kernels are built for (each its own instantiation): the standard LSTM and
// Greff's peephole, NIG, NFG, NOG, NIAF, NOAF, CIFG and FGR.
#define LSTM_JAX_VARIANTS(X)                                                                       \
  X(kStandard) X(kStandard | kPeephole) X(kForget | kOutput | kPeephole)                          \
  X(kInput | kOutput | kPeephole) X(kInput | kForget | kPeephole)                                 \
  X(kStandard | kLinearInput | kPeephole) X(kStandard | kLinearOutput | kPeephole)                \
  X(kInput | kOutput | kCoupled | kPeephole) X(kStandard | kLayerNorm)                            \
  X(kStandard | kPeephole | kGateRecurrence)

// Gate blocks of a variant: its sigmoid gates and g.
constexpr int gate_count(int v) { return !!(v & kInput) + !!(v & kForget) + !!(v & kOutput) + 1; }

inline bool known_variant(int v) {
#define LSTM_JAX_IS(k) if (v == (k)) return true;
  LSTM_JAX_VARIANTS(LSTM_JAX_IS)
#undef LSTM_JAX_IS
  return false;
}

// kLayerNorm (lstm_jax.nn.cells.LayerNormLSTMCell): z = α_x LN(x W) + b + α_h LN(h U) per gate block
// and h = o tanh(α_c LN(c_t) + β_c), LN(v) = (v - mean v) / sqrt(var v + 1e-5) over H. The tile
// computes x W and h U apart (no bias: b is among the gains), and the kernels normalise them row by
// row with the rest. The backward pass returns [dW; dU], dx, and the gradients of the gains and b
// (α_x, b, α_h, α_c, β_c) in place of dp. The forward pass keeps LN(h U) [T, B, 4H], the cell state
// entering each step and the five 1/sqrt(var + eps) of h U's blocks and c_t per step and row
// [T, B, 5], but not the gates: the backward pass recomputes x W (I multiply-adds per unit), its
// normalisation and the gates, which keeps a training step's temporaries [T, B, 8H] smaller.
constexpr float kLayerNormEps = 1e-5f;

struct FwdArgs {
  int64_t T, B, I, H;  // the gate blocks G = gate_count(variant) H
  int variant;
  const float* peep;   // [3H] (p_i, p_f, p_o), or null without kPeephole
  int64_t ldo;         // the row stride of out: H, or N H for N layers side by side
  const int64_t* len;  // [B] the rows' lengths for a reversed layer, or null (forward in time)
  const float* x;      // [T, B, I]
  const float* W;      // [I, G]
  const float* bias;   // [G]
  const float* U;      // [H, G]
  const float* c0;     // [B, H]
  const float* h0;     // [B, H]
  const bool* mask;    // [T, B]
  float* out;          // [T, B, H]
  float* cT;           // [B, H]
  float* hT;           // [B, H]
  float* gates;        // [T, B, G] activated gates, or null (no residuals)
  float* cprev;        // [T, B, H] cell state entering each step, or null
  const float* ln;     // kLayerNorm: [14H] (α_x [4H], b [4H], α_h [4H], α_c [H], β_c [H]); else null
  float* nhu;          // kLayerNorm with residuals: [T, B, 4H] LN(h U); else null (gates is null with kLayerNorm)
  float* rstd;         // kLayerNorm with residuals: [T, B, 5]; else null
  int threads;
  const ParallelFor* parallel;
  const float* R;      // kGateRecurrence: [3H, 3H]; else null (left out of an initialiser: null)
  const float* a0;     // kGateRecurrence: [B, 3H] the gates before the first step; else null
  float* aT;           // kGateRecurrence: [B, 3H] the gates of each row's last valid step; else null
};

struct BwdArgs {
  int64_t T, B, I, H;
  int variant;
  const float* peep;   // [3H], or null without kPeephole
  int64_t ldo;         // the row stride of dout and out (as in FwdArgs)
  const int64_t* len;  // as in FwdArgs
  const float* gates;  // [T, B, G] from the forward pass
  const float* cprev;  // [T, B, H]
  const float* dout;   // [T, B, H]
  const float* W;      // [I, G]
  const float* U;      // [H, G]
  const float* dcT;    // [B, H]
  const float* dhT;    // [B, H]
  const bool* mask;    // [T, B]
  const float* x;      // [T, B, I] the forward pass's input
  const float* out;    // [T, B, H] its output: h_{t-1} for the weight gradient
  const float* h0;     // [B, H]
  float* db;           // [G]: the sum of dz over steps and rows
  float* dWU;          // [I + H, G]: dW (the first I rows), then dU
  float* dpeep;        // [3H]: dp, or [14H] the gradient of ln with kLayerNorm; else null
  const float* ln;     // kLayerNorm: as in FwdArgs, with the residuals nhu and rstd (gates is null)
  const float* nhu;
  const float* rstd;
  float* dx;           // [T, B, I]: dz W^T, or null (x needs no gradient)
  float* dc0;          // [B, H]
  float* dh0;          // [B, H]
  int threads;
  const ParallelFor* parallel;
  const float* R;      // kGateRecurrence: [3H, 3H], a0 [B, 3H] and daT [B, 3H]; else null
  const float* a0;
  const float* daT;
  float* dR;           // kGateRecurrence: [3H, 3H] and da0 [B, 3H]; else null
  float* da0;
};

// The time step s of a row reads and writes (see above).
inline int64_t time_of(const int64_t* len, int64_t s, int64_t row) {
  return len != nullptr && s < len[row] ? len[row] - 1 - s : s;
}

// n layers of one shape and variant (threads and parallel are those of the first), in each ISA build.
#define LSTM_JAX_DECLARE_LSTM(ns)                   \
  namespace ns {                                    \
  void forward(const FwdArgs* layers, int64_t n);   \
  void backward(const BwdArgs* layers, int64_t n);  \
  }
LSTM_JAX_ISAS(LSTM_JAX_DECLARE_LSTM)
#undef LSTM_JAX_DECLARE_LSTM

}  // namespace lstm_jax_native
