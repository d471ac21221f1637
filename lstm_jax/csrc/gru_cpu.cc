// The GRU recurrence as XLA FFI custom calls on CPU, exported as PyCapsules of lstm_jax._native.
//
//   gru_fwd        (x, W, b, U, b_hn, h0, mask) -> (out, hT, gates)   for training
//   gru_fwd_infer  (x, W, b, U, b_hn, h0, mask) -> (out, hT)          without residuals
//   gru_bwd        (gates, dout, W, U, dhT, mask, x, out, h0) -> (db, db_hn, dWU, dx, dh0)
//   gru_bwd_no_dx  the same without dx, for an input that needs no gradient
//
// Shapes and semantics: gru_kernel.h. The module (runtime.cc) exports these handlers with the
// LSTM's, and they run on the same runtime (runtime.h): the same kernel build, thread count and
// thread-pool adapter.
#include <cstdint>

#include "runtime.h"

namespace lj = lstm_jax_native;
using namespace lj::runtime;

namespace {

ffi::Error forward(ffi::ThreadPool& pool, const F32& x, const F32& W, const F32& b, const F32& U, const F32& bhn,
                   const F32& h0, const Pred& mask, Out& out, Out& hT, Out* gates) {
  auto d = x.dimensions(), dw = W.dimensions();
  if (d.size() != 3 || dw.size() != 2 || dw[1] % 3 != 0)
    return ffi::Error::InvalidArgument("lstm_jax native GRU: x must be [T, B, I] and W [I, 3H]");
  const int64_t T = d[0], B = d[1], I = d[2], H = dw[1] / 3;
  if (dw[0] != I || !has_dims(b, {3 * H}) || !has_dims(U, {H, 3 * H}) || !has_dims(bhn, {H}) ||
      !has_dims(h0, {B, H}) || !has_dims(mask, {T, B}))
    return ffi::Error::InvalidArgument(
        "lstm_jax native GRU: W [I, 3H], b [3H], U [H, 3H], b_hn [H], h0 [B, H], mask [T, B] expected");
  if (!has_dims(*out, {T, B, H}) || !has_dims(*hT, {B, H}) || (gates && !has_dims(**gates, {T, B, 4 * H})))
    return ffi::Error::InvalidArgument("lstm_jax native GRU: results out [T, B, H], hT [B, H], gates [T, B, 4H] "
                                       "expected");
  if (gates) advise_buffer((*gates)->untyped_data(), (*gates)->size_bytes());
  const lj::ParallelFor parallel = on_pool(pool);
  isa().gru_forward({T, B, I, H, x.typed_data(), W.typed_data(), b.typed_data(), U.typed_data(), bhn.typed_data(),
                 h0.typed_data(), mask.typed_data(), out->typed_data(), hT->typed_data(),
                 gates ? (*gates)->typed_data() : nullptr, threads(), &parallel});
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, F32 x, F32 W, F32 b, F32 U, F32 bhn, F32 h0, Pred mask, Out out, Out hT,
                   Out gates) {
  return forward(pool, x, W, b, U, bhn, h0, mask, out, hT, &gates);
}

ffi::Error ForwardInfer(ffi::ThreadPool pool, F32 x, F32 W, F32 b, F32 U, F32 bhn, F32 h0, Pred mask, Out out,
                        Out hT) {
  return forward(pool, x, W, b, U, bhn, h0, mask, out, hT, nullptr);
}

// dx is null for the handler without it.
ffi::Error backward(ffi::ThreadPool& pool, const F32& gates, const F32& dout, const F32& W, const F32& U,
                    const F32& dhT, const Pred& mask, const F32& x, const F32& out, const F32& h0, Out& db, Out& dbhn,
                    Out& dWU, Out* dx, Out& dh0) {
  auto d = gates.dimensions(), dw = W.dimensions();
  if (d.size() != 3 || d[2] % 4 != 0 || dw.size() != 2)
    return ffi::Error::InvalidArgument("lstm_jax native GRU: gates must be [T, B, 4H] and W [I, 3H]");
  const int64_t T = d[0], B = d[1], H = d[2] / 4, I = dw[0];
  if (!has_dims(dout, {T, B, H}) || !has_dims(W, {I, 3 * H}) || !has_dims(U, {H, 3 * H}) || !has_dims(dhT, {B, H}) ||
      !has_dims(mask, {T, B}) || !has_dims(x, {T, B, I}) || !has_dims(out, {T, B, H}) || !has_dims(h0, {B, H}))
    return ffi::Error::InvalidArgument("lstm_jax native GRU: dout and out [T, B, H], x [T, B, I], U [H, 3H], "
                                       "dhT and h0 [B, H], mask [T, B] expected");
  if (!has_dims(*db, {3 * H}) || !has_dims(*dbhn, {H}) || !has_dims(*dWU, {I + H, 3 * H}) ||
      (dx && !has_dims(**dx, {T, B, I})) || !has_dims(*dh0, {B, H}))
    return ffi::Error::InvalidArgument("lstm_jax native GRU: results db [3H], db_hn [H], dWU [I + H, 3H], "
                                       "dx [T, B, I], dh0 [B, H] expected");
  if (dx) advise_buffer((*dx)->untyped_data(), (*dx)->size_bytes());
  const lj::ParallelFor parallel = on_pool(pool);
  isa().gru_backward({T, B, I, H, gates.typed_data(), dout.typed_data(), W.typed_data(), U.typed_data(), dhT.typed_data(),
                  mask.typed_data(), x.typed_data(), out.typed_data(), h0.typed_data(), db->typed_data(),
                  dbhn->typed_data(), dWU->typed_data(), dx ? (*dx)->typed_data() : nullptr, dh0->typed_data(),
                  threads(), &parallel});
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, F32 gates, F32 dout, F32 W, F32 U, F32 dhT, Pred mask, F32 x, F32 out,
                    F32 h0, Out db, Out dbhn, Out dWU, Out dx, Out dh0) {
  return backward(pool, gates, dout, W, U, dhT, mask, x, out, h0, db, dbhn, dWU, &dx, dh0);
}

ffi::Error BackwardNoDx(ffi::ThreadPool pool, F32 gates, F32 dout, F32 W, F32 U, F32 dhT, Pred mask, F32 x, F32 out,
                        F32 h0, Out db, Out dbhn, Out dWU, Out dh0) {
  return backward(pool, gates, dout, W, U, dhT, mask, x, out, h0, db, dbhn, dWU, nullptr, dh0);
}

// Forward: a thread pool, x, W, b, U, b_hn, h0, mask; first results out, hT.
auto forward_binding() { return f32_rets<2>(bind_f32_args<6>().Arg<Pred>()); }

// Backward: a thread pool; gates, dout, W, U, dhT, mask, x, out, h0; first results db, db_hn, dWU.
auto backward_binding() { return f32_rets<3>(f32_args<3>(bind_f32_args<5>().Arg<Pred>())); }

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxGruForward, Forward, f32_rets<1>(forward_binding()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxGruForwardInfer, ForwardInfer, forward_binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxGruBackward, Backward, f32_rets<2>(backward_binding()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxGruBackwardNoDx, BackwardNoDx, f32_rets<1>(backward_binding()));
