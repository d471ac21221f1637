// The LSTM recurrence as XLA FFI custom calls on CPU, exported as PyCapsules of lstm_jax._native.
//
//   lstm_fwd          (x, W, b, U, p, R, c0, h0, a0, mask) -> (out, cT, hT, aT, gates, cprev)   for training
//   lstm_fwd_infer    (x, W, b, U, p, R, c0, h0, a0, mask) -> (out, cT, hT, aT)      without residuals
//   lstm_bwd          (gates, cprev, dout, W, U, p, R, dcT, dhT, daT, mask, x, out, h0, a0)
//                         -> (db, dWU, dp, dR, dx, dc0, dh0, da0)
//   lstm_bwd_no_dx    the same without dx, for an input that needs no gradient
//
// Each runs N layers side by side (kernel.h): every array but x [T, B, I] and mask [T, B] has a
// leading N, and out and dout are [T, B, N H]. The int32 attributes: `variant` (kernel.h's Variant:
// the standard cell or a peephole variant) and `reversed` (bit l: layer l runs backwards over each
// row's valid prefix). p and dp are the peepholes [N, 3H] and their gradient, [N, 0] without them;
// R and dR FGR's gate recurrence [N, 3H, 3H] and its gradient, and a0, aT, daT, da0 the gates part
// of its carry [N, B, 3H], all with 0 for 3H in the other variants.
// Shapes and semantics: kernel.h. The module (runtime.cc) exports these handlers with the GRU's;
// the kernel build and the thread count are the runtime's (runtime.h).
#include <cstdint>
#include <string>
#include <vector>

#include "runtime.h"

namespace lj = lstm_jax_native;
using namespace lj::runtime;

namespace {

// The layers' shape (N layers of one variant, side by side: see kernel.h), read from U [N, H, G].
struct Shape {
  int64_t N, T, B, I, H, G;
};

// The variant is one the kernels are built for, the reversed bits name layers there are, and p
// (or dp) has its shape: [N, 3H], or [N, 0] without peepholes.
template <typename Buf>
ffi::Error check_variant(int32_t variant, int32_t reversed, const Buf& p, const Shape& s) {
  if (!lj::known_variant(variant))
    return ffi::Error::InvalidArgument("lstm_jax native: unknown LSTM variant " + std::to_string(variant));
  if (reversed < 0 || s.N > 31 || reversed >> s.N)
    return ffi::Error::InvalidArgument("lstm_jax native: the reversed bits name layers that are not there");
  if (!has_dims(p, {s.N, variant & lj::kPeephole ? 3 * s.H : 0}))
    return ffi::Error::InvalidArgument("lstm_jax native: peepholes p [N, 3H] (or [N, 0] without them) expected");
  return ffi::Error::Success();
}

// FGR's R [N, A, A] and gates carry [N, B, A] (A = 3H with kGateRecurrence, else 0).
int64_t gates_carry(int32_t variant, const Shape& s) { return variant & lj::kGateRecurrence ? 3 * s.H : 0; }

template <typename Buf>
bool has_gates_carry(int32_t variant, const Shape& s, const Buf& b) {
  return has_dims(b, {s.N, s.B, gates_carry(variant, s)});
}

// N, H and G from U [N, H, G]; T, B, I from x [T, B, I].
ffi::Error read_shape(const F32& x, const F32& U, int32_t variant, Shape& s) {
  auto d = x.dimensions(), du = U.dimensions();
  if (d.size() != 3 || du.size() != 3)
    return ffi::Error::InvalidArgument("lstm_jax native: x must be [T, B, I] and U [N, H, G]");
  s = {du[0], d[0], d[1], d[2], du[1], lj::gate_count(variant) * du[1]};
  return ffi::Error::Success();
}

// Each reversed row's length: the prefix its mask column marks (empty where no layer is reversed).
std::vector<int64_t> lengths(const Pred& mask, int32_t reversed, const Shape& s) {
  std::vector<int64_t> len;
  if (reversed == 0) return len;
  len.assign(s.B, 0);
  const bool* m = mask.typed_data();
  for (int64_t t = 0; t < s.T; ++t)
    for (int64_t b = 0; b < s.B; ++b) len[b] += m[t * s.B + b];
  return len;
}

ffi::Error check_forward(const F32& x, const F32& W, const F32& b, const F32& U, const F32& p, const F32& R,
                         const F32& c0, const F32& h0, const F32& a0, const Pred& mask, Out& out, Out& cT, Out& hT,
                         Out& aT, int32_t variant, int32_t reversed, Shape& s) {
  if (auto err = read_shape(x, U, variant, s); err.failure()) return err;
  if (auto err = check_variant(variant, reversed, p, s); err.failure()) return err;
  const auto [N, T, B, I, H, G] = s;
  if (!has_dims(W, {N, I, G}) || !has_dims(b, {N, G}) || !has_dims(c0, {N, B, H}) || !has_dims(h0, {N, B, H}) ||
      !has_dims(mask, {T, B}))
    return ffi::Error::InvalidArgument("lstm_jax native: W [N, I, G], b [N, G], U [N, H, G] (G = the variant's "
                                       "gates times H), c0 and h0 [N, B, H], mask [T, B] expected");
  if (!has_dims(*out, {T, B, N * H}) || !has_dims(*cT, {N, B, H}) || !has_dims(*hT, {N, B, H}))
    return ffi::Error::InvalidArgument("lstm_jax native: results out [T, B, N H], cT and hT [N, B, H] expected");
  const int64_t A = gates_carry(variant, s);
  if (!has_dims(R, {N, A, A}) || !has_gates_carry(variant, s, a0) || !has_gates_carry(variant, s, *aT))
    return ffi::Error::InvalidArgument("lstm_jax native: R [N, 3H, 3H], a0 and aT [N, B, 3H] expected with the gate "
                                       "recurrence (with 0 for 3H without it)");
  return ffi::Error::Success();
}

// gates and cprev are null without residuals.
void forward(ffi::ThreadPool& pool, const Shape& s, const F32& x, const F32& W, const F32& b, const F32& U,
             const F32& p, const F32& R, const F32& c0, const F32& h0, const F32& a0, const Pred& mask, Out& out,
             Out& cT, Out& hT, Out& aT, float* gates, float* cprev, int32_t variant, int32_t reversed) {
  const auto [N, T, B, I, H, G] = s;
  const int64_t A = gates_carry(variant, s);
  const lj::ParallelFor parallel = on_pool(pool);
  const std::vector<int64_t> len = lengths(mask, reversed, s);
  std::vector<lj::FwdArgs> layers;
  for (int64_t l = 0; l < N; ++l)
    layers.push_back({T, B, I, H, variant, variant & lj::kPeephole ? p.typed_data() + l * 3 * H : nullptr, N * H,
                      reversed >> l & 1 ? len.data() : nullptr, x.typed_data(), W.typed_data() + l * I * G,
                      b.typed_data() + l * G, U.typed_data() + l * H * G, c0.typed_data() + l * B * H,
                      h0.typed_data() + l * B * H, mask.typed_data(), out->typed_data() + l * H,
                      cT->typed_data() + l * B * H, hT->typed_data() + l * B * H,
                      gates ? gates + l * T * B * G : nullptr, cprev ? cprev + l * T * B * H : nullptr, nullptr,
                      nullptr, nullptr, threads(), &parallel, A ? R.typed_data() + l * A * A : nullptr,
                      A ? a0.typed_data() + l * B * A : nullptr, A ? aT->typed_data() + l * B * A : nullptr});
  isa().forward(layers.data(), N);
}

ffi::Error Forward(ffi::ThreadPool pool, F32 x, F32 W, F32 b, F32 U, F32 p, F32 R, F32 c0, F32 h0, F32 a0,
                   Pred mask, Out out, Out cT, Out hT, Out aT, Out gates, Out cprev, int32_t variant,
                   int32_t reversed) {
  Shape s;
  if (auto err = check_forward(x, W, b, U, p, R, c0, h0, a0, mask, out, cT, hT, aT, variant, reversed, s);
      err.failure())
    return err;
  if (!has_dims(*gates, {s.N, s.T, s.B, s.G}) || !has_dims(*cprev, {s.N, s.T, s.B, s.H}))
    return ffi::Error::InvalidArgument("lstm_jax native: results gates [N, T, B, G] and cprev [N, T, B, H] expected");
  advise_outputs({{out->untyped_data(), out->size_bytes()}, {gates->untyped_data(), gates->size_bytes()},
                  {cprev->untyped_data(), cprev->size_bytes()}});
  forward(pool, s, x, W, b, U, p, R, c0, h0, a0, mask, out, cT, hT, aT, gates->typed_data(), cprev->typed_data(),
          variant, reversed);
  return ffi::Error::Success();
}

ffi::Error ForwardInfer(ffi::ThreadPool pool, F32 x, F32 W, F32 b, F32 U, F32 p, F32 R, F32 c0, F32 h0, F32 a0,
                        Pred mask, Out out, Out cT, Out hT, Out aT, int32_t variant, int32_t reversed) {
  Shape s;
  if (auto err = check_forward(x, W, b, U, p, R, c0, h0, a0, mask, out, cT, hT, aT, variant, reversed, s);
      err.failure())
    return err;
  advise_buffer(out->untyped_data(), out->size_bytes());
  forward(pool, s, x, W, b, U, p, R, c0, h0, a0, mask, out, cT, hT, aT, nullptr, nullptr, variant, reversed);
  return ffi::Error::Success();
}

// dx is null for lstm_bwd_no_dx.
ffi::Error backward(ffi::ThreadPool& pool, const F32& gates, const F32& cprev, const F32& dout, const F32& W,
                    const F32& U, const F32& p, const F32& R, const F32& dcT, const F32& dhT, const F32& daT,
                    const Pred& mask, const F32& x, const F32& out, const F32& h0, const F32& a0, Out& db, Out& dWU,
                    Out& dp, Out& dR, Out* dx, Out& dc0, Out& dh0, Out& da0, int32_t variant, int32_t reversed) {
  Shape s;
  if (auto err = read_shape(x, U, variant, s); err.failure()) return err;
  if (auto err = check_variant(variant, reversed, p, s); err.failure()) return err;
  if (auto err = check_variant(variant, reversed, *dp, s); err.failure()) return err;
  const auto [N, T, B, I, H, G] = s;
  if (!has_dims(gates, {N, T, B, G}) || !has_dims(cprev, {N, T, B, H}) || !has_dims(dout, {T, B, N * H}) ||
      !has_dims(W, {N, I, G}) || !has_dims(dcT, {N, B, H}) || !has_dims(dhT, {N, B, H}) || !has_dims(mask, {T, B}) ||
      !has_dims(out, {T, B, N * H}) || !has_dims(h0, {N, B, H}))
    return ffi::Error::InvalidArgument("lstm_jax native: gates [N, T, B, G], cprev [N, T, B, H], dout and out "
                                       "[T, B, N H], x [T, B, I], W [N, I, G], U [N, H, G], dcT, dhT and h0 "
                                       "[N, B, H], mask [T, B] expected");
  if (!has_dims(*db, {N, G}) || !has_dims(*dWU, {N, I + H, G}) || (dx && !has_dims(**dx, {N, T, B, I})) ||
      !has_dims(*dc0, {N, B, H}) || !has_dims(*dh0, {N, B, H}))
    return ffi::Error::InvalidArgument("lstm_jax native: results db [N, G], dWU [N, I + H, G], dx [N, T, B, I], "
                                       "dc0 and dh0 [N, B, H] expected");
  const int64_t A = gates_carry(variant, s);
  if (!has_dims(R, {N, A, A}) || !has_dims(*dR, {N, A, A}) || !has_gates_carry(variant, s, a0) ||
      !has_gates_carry(variant, s, daT) || !has_gates_carry(variant, s, *da0))
    return ffi::Error::InvalidArgument("lstm_jax native: R and dR [N, 3H, 3H], a0, daT and da0 [N, B, 3H] expected "
                                       "with the gate recurrence (with 0 for 3H without it)");
  if (dx) advise_buffer((*dx)->untyped_data(), (*dx)->size_bytes());
  const lj::ParallelFor parallel = on_pool(pool);
  const std::vector<int64_t> len = lengths(mask, reversed, s);
  const bool peep = variant & lj::kPeephole;
  std::vector<lj::BwdArgs> layers;
  for (int64_t l = 0; l < N; ++l)
    layers.push_back({T, B, I, H, variant, peep ? p.typed_data() + l * 3 * H : nullptr, N * H,
                      reversed >> l & 1 ? len.data() : nullptr, gates.typed_data() + l * T * B * G,
                      cprev.typed_data() + l * T * B * H, dout.typed_data() + l * H, W.typed_data() + l * I * G,
                      U.typed_data() + l * H * G, dcT.typed_data() + l * B * H, dhT.typed_data() + l * B * H,
                      mask.typed_data(), x.typed_data(), out.typed_data() + l * H, h0.typed_data() + l * B * H,
                      db->typed_data() + l * G, dWU->typed_data() + l * (I + H) * G,
                      peep ? dp->typed_data() + l * 3 * H : nullptr, nullptr, nullptr, nullptr,
                      dx ? (*dx)->typed_data() + l * T * B * I : nullptr,
                      dc0->typed_data() + l * B * H, dh0->typed_data() + l * B * H, threads(), &parallel,
                      A ? R.typed_data() + l * A * A : nullptr, A ? a0.typed_data() + l * B * A : nullptr,
                      A ? daT.typed_data() + l * B * A : nullptr, A ? dR->typed_data() + l * A * A : nullptr,
                      A ? da0->typed_data() + l * B * A : nullptr});
  isa().backward(layers.data(), N);
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, F32 gates, F32 cprev, F32 dout, F32 W, F32 U, F32 p, F32 R, F32 dcT,
                    F32 dhT, F32 daT, Pred mask, F32 x, F32 out, F32 h0, F32 a0, Out db, Out dWU, Out dp, Out dR,
                    Out dx, Out dc0, Out dh0, Out da0, int32_t variant, int32_t reversed) {
  return backward(pool, gates, cprev, dout, W, U, p, R, dcT, dhT, daT, mask, x, out, h0, a0, db, dWU, dp, dR, &dx,
                  dc0, dh0, da0, variant, reversed);
}

ffi::Error BackwardNoDx(ffi::ThreadPool pool, F32 gates, F32 cprev, F32 dout, F32 W, F32 U, F32 p, F32 R, F32 dcT,
                        F32 dhT, F32 daT, Pred mask, F32 x, F32 out, F32 h0, F32 a0, Out db, Out dWU, Out dp,
                        Out dR, Out dc0, Out dh0, Out da0, int32_t variant, int32_t reversed) {
  return backward(pool, gates, cprev, dout, W, U, p, R, dcT, dhT, daT, mask, x, out, h0, a0, db, dWU, dp, dR,
                  nullptr, dc0, dh0, da0, variant, reversed);
}

// -- the layer-normalised LSTM (kernel.h's kLayerNorm) -----------------------------------------------
//
//   lstm_ln_fwd  (x, W, U, ln, c0, h0, mask) -> (out, cT, hT, cprev, nhu, rstd)
//   lstm_ln_bwd  (cprev, nhu, rstd, dout, x, W, U, ln, dcT, dhT, mask, out, h0) -> (dWU, dln, dx, dc0, dh0)
//
// x [T, B, I], W [I, 4H], U [H, 4H], ln [14H] (alpha_x, b, alpha_h, alpha_c, beta_c), c0, h0 [B, H];
// cprev [T, B, H], nhu [T, B, 4H] and rstd [T, B, 5] are residuals (kernel.h); dWU [I + H, 4H] is dW
// over dU. The backward's int32 attribute `with_dx`: 0 skips dx (then [0, B, I]). One layer, forward
// in time.

constexpr int kLn = lj::kStandard | lj::kLayerNorm;

ffi::Error check_ln(const F32& x, const F32& W, const F32& U, const F32& ln, const F32& h0, const Pred& mask,
                    int64_t& T, int64_t& B, int64_t& I, int64_t& H) {
  auto dx = x.dimensions(), du = U.dimensions();
  if (dx.size() != 3 || du.size() != 2)
    return ffi::Error::InvalidArgument("lstm_jax native: x must be [T, B, I] and U [H, 4H]");
  T = dx[0], B = dx[1], I = dx[2], H = du[0];
  if (!has_dims(W, {I, 4 * H}) || !has_dims(U, {H, 4 * H}) || !has_dims(ln, {14 * H}) || !has_dims(h0, {B, H}) ||
      !has_dims(mask, {T, B}))
    return ffi::Error::InvalidArgument("lstm_jax native: W [I, 4H], U [H, 4H], ln [14H], h0 [B, H], mask [T, B] "
                                       "expected");
  return ffi::Error::Success();
}

ffi::Error LnForward(ffi::ThreadPool pool, F32 x, F32 W, F32 U, F32 ln, F32 c0, F32 h0, Pred mask, Out out, Out cT,
                     Out hT, Out cprev, Out nhu, Out rstd) {
  int64_t T, B, I, H;
  if (auto err = check_ln(x, W, U, ln, h0, mask, T, B, I, H); err.failure()) return err;
  if (!has_dims(c0, {B, H}) || !has_dims(*out, {T, B, H}) || !has_dims(*cT, {B, H}) || !has_dims(*hT, {B, H}) ||
      !has_dims(*cprev, {T, B, H}) || !has_dims(*nhu, {T, B, 4 * H}) || !has_dims(*rstd, {T, B, 5}))
    return ffi::Error::InvalidArgument("lstm_jax native: c0 [B, H]; results out, cprev [T, B, H], cT, hT [B, H], "
                                       "nhu [T, B, 4H], rstd [T, B, 5] expected");
  advise_outputs({{out->untyped_data(), out->size_bytes()}, {nhu->untyped_data(), nhu->size_bytes()},
                  {cprev->untyped_data(), cprev->size_bytes()}});
  const lj::ParallelFor parallel = on_pool(pool);
  const lj::FwdArgs a{T, B, I, H, kLn, nullptr, H, nullptr, x.typed_data(), W.typed_data(), nullptr, U.typed_data(),
                      c0.typed_data(), h0.typed_data(), mask.typed_data(), out->typed_data(), cT->typed_data(),
                      hT->typed_data(), nullptr, cprev->typed_data(), ln.typed_data(), nhu->typed_data(),
                      rstd->typed_data(), threads(), &parallel};
  isa().forward(&a, 1);
  return ffi::Error::Success();
}

ffi::Error LnBackward(ffi::ThreadPool pool, F32 cprev, F32 nhu, F32 rstd, F32 dout, F32 x, F32 W, F32 U, F32 ln,
                      F32 dcT, F32 dhT, Pred mask, F32 out, F32 h0, Out dWU, Out dln, Out dx, Out dc0, Out dh0,
                      int32_t with_dx) {
  int64_t T, B, I, H;
  if (auto err = check_ln(x, W, U, ln, h0, mask, T, B, I, H); err.failure()) return err;
  if (!has_dims(nhu, {T, B, 4 * H}) || !has_dims(cprev, {T, B, H}) || !has_dims(rstd, {T, B, 5}) ||
      !has_dims(dout, {T, B, H}) || !has_dims(out, {T, B, H}) || !has_dims(dcT, {B, H}) || !has_dims(dhT, {B, H}) ||
      !has_dims(*dWU, {I + H, 4 * H}) || !has_dims(*dln, {14 * H}) || !has_dims(*dx, {with_dx ? T : 0, B, I}) ||
      !has_dims(*dc0, {B, H}) || !has_dims(*dh0, {B, H}))
    return ffi::Error::InvalidArgument("lstm_jax native: the layer-normalised LSTM's backward arguments do not "
                                       "match its forward pass's shapes");
  if (with_dx) advise_buffer(dx->untyped_data(), dx->size_bytes());
  const lj::ParallelFor parallel = on_pool(pool);
  const lj::BwdArgs a{T, B, I, H, kLn, nullptr, H, nullptr, nullptr, cprev.typed_data(), dout.typed_data(),
                      W.typed_data(), U.typed_data(), dcT.typed_data(), dhT.typed_data(), mask.typed_data(),
                      x.typed_data(), out.typed_data(), h0.typed_data(), nullptr, dWU->typed_data(),
                      dln->typed_data(), ln.typed_data(), nhu.typed_data(), rstd.typed_data(),
                      with_dx ? dx->typed_data() : nullptr, dc0->typed_data(), dh0->typed_data(), threads(), &parallel};
  isa().backward(&a, 1);
  return ffi::Error::Success();
}

}  // namespace

// The two forward handlers share their arguments (a thread pool, x, W, b, U, p, R, c0, h0, a0, mask)
// and first results (out, cT, hT, aT); the variant attribute comes last.
static auto forward_binding() { return f32_rets<4>(bind_f32_args<9>().Arg<Pred>()); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxForward, Forward,
                              f32_rets<2>(forward_binding()).Attr<int32_t>("variant").Attr<int32_t>("reversed"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxForwardInfer, ForwardInfer,
                              forward_binding().Attr<int32_t>("variant").Attr<int32_t>("reversed"));

// The backward handlers' arguments (a thread pool; gates, cprev, dout, W, U, p, R, dcT, dhT, daT,
// mask, x, out, h0, a0) and first results (db, dWU, dp, dR).
static auto backward_binding() { return f32_rets<4>(f32_args<4>(bind_f32_args<10>().Arg<Pred>())); }

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxBackward, Backward,
                              f32_rets<4>(backward_binding()).Attr<int32_t>("variant").Attr<int32_t>("reversed"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxLnForward, LnForward, f32_rets<6>(bind_f32_args<6>().Arg<Pred>()));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxLnBackward, LnBackward,
                              f32_rets<5>(f32_args<2>(bind_f32_args<10>().Arg<Pred>())).Attr<int32_t>("with_dx"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxBackwardNoDx, BackwardNoDx,
                              f32_rets<3>(backward_binding()).Attr<int32_t>("variant").Attr<int32_t>("reversed"));

