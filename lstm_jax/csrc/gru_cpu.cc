// The GRU recurrence as XLA FFI custom calls on CPU, in the lstm_jax._native extension.
//
//   LstmJaxGruForward       (x, W, b, U, b_hn, h0, mask) -> (out, hT, gates)   for training
//   LstmJaxGruForwardInfer  (x, W, b, U, b_hn, h0, mask) -> (out, hT)          without residuals
//   LstmJaxGruBackward      (gates, dout, W, U, dhT, mask, x, out, h0) -> (db, db_hn, dWU, dx, dh0)
//   LstmJaxGruBackwardNoDx  the same without dx, for an input that needs no gradient
//
// Shapes and semantics: gru_kernel.h. The module's init (lstm_cpu.cc) lists the LSTM handlers
// only, so these four are exported as C symbols of the shared object (default visibility, unlike
// the rest of it) and lstm_jax/native_gru.py wraps them with ctypes and jax.ffi.pycapsule.
//
// The kernel choice (LSTM_JAX_NATIVE_ISA), the thread count (LSTM_JAX_NATIVE_THREADS) and the
// thread-pool adapter are copies of lstm_cpu.cc's, whose definitions are local to that file; they
// read the same variables, so both cells run the same ISA on the same number of threads.
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "gru_kernel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
namespace lj = lstm_jax_native;

namespace {

struct Isa {
  const char* name;
  void (*forward)(const lj::GruFwdArgs&);
  void (*backward)(const lj::GruBwdArgs&);
};

Isa pick_isa() {
  const char* force = std::getenv("LSTM_JAX_NATIVE_ISA");
  const std::string want = force ? force : "";
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if ((want.empty() || want == "avx512") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
    return {"avx512", lj::gru_avx512::gru_forward, lj::gru_avx512::gru_backward};
  if ((want.empty() || want == "avx512" || want == "avx2") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return {"avx2", lj::gru_avx2::gru_forward, lj::gru_avx2::gru_backward};
#endif
  return {"generic", lj::gru_generic::gru_forward, lj::gru_generic::gru_backward};
}

const Isa& isa() {
  static const Isa chosen = pick_isa();
  return chosen;
}

int default_threads() {
  if (const char* env = std::getenv("LSTM_JAX_NATIVE_THREADS")) {
    const int n = std::atoi(env);
    if (n > 0) return n;
  }
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return 1;
}

int threads() {
  static const int n = default_threads();
  return n;
}

// lj::ParallelFor on XLA's intra-op thread pool, the caller taking part (see lstm_cpu.cc).
lj::ParallelFor on_pool(ffi::ThreadPool& pool) {
  return [&pool](int64_t n, const std::function<void(int64_t)>& f) {
    struct State {
      std::atomic<int64_t> next{0}, done{0};
      int64_t n = 0;
      const std::function<void(int64_t)>* f = nullptr;
      std::mutex m;
      std::condition_variable cv;
    };
    auto state = std::make_shared<State>();
    state->n = n;
    state->f = &f;
    auto work = [state] {
      for (int64_t i; (i = state->next.fetch_add(1)) < state->n;) {
        (*state->f)(i);
        if (state->done.fetch_add(1) + 1 == state->n) {
          std::lock_guard<std::mutex> hold(state->m);
          state->cv.notify_all();
        }
      }
    };
    for (int64_t k = 1; k < std::min<int64_t>(n, threads()); ++k) pool.Schedule(decltype(work)(work));
    work();
    std::unique_lock<std::mutex> hold(state->m);
    state->cv.wait(hold, [&] { return state->done.load() == state->n; });
  };
}

// Huge pages over a large output (the residuals: 13 MB at B=64, T=100, H=128) that the kernel
// first-touches, unless LSTM_JAX_NATIVE_HUGEPAGES=0 (as the LSTM handlers do for single buffers).
void advise_buffer(void* p, size_t bytes) {
  static const bool on = [] {
    const char* env = std::getenv("LSTM_JAX_NATIVE_HUGEPAGES");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  if (on) lj::advise_huge_pages(p, bytes);
}

template <typename Buf>
bool has_dims(const Buf& b, std::initializer_list<int64_t> want) {
  auto d = b.dimensions();
  if (d.size() != want.size()) return false;
  size_t k = 0;
  for (int64_t w : want)
    if (d[k++] != w) return false;
  return true;
}

using F32 = ffi::Buffer<ffi::F32>;
using Pred = ffi::Buffer<ffi::PRED>;
using Out = ffi::ResultBuffer<ffi::F32>;

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
  isa().forward({T, B, I, H, x.typed_data(), W.typed_data(), b.typed_data(), U.typed_data(), bhn.typed_data(),
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
  isa().backward({T, B, I, H, gates.typed_data(), dout.typed_data(), W.typed_data(), U.typed_data(), dhT.typed_data(),
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

template <int N, typename Binding>
auto f32_args(Binding b) {
  if constexpr (N == 1) return std::move(b).template Arg<F32>();
  else return f32_args<N - 1>(std::move(b).template Arg<F32>());
}

template <int N, typename Binding>
auto f32_rets(Binding b) {
  if constexpr (N == 1) return std::move(b).template Ret<F32>();
  else return f32_rets<N - 1>(std::move(b).template Ret<F32>());
}

// Forward: a thread pool, x, W, b, U, b_hn, h0, mask; first results out, hT.
auto forward_binding() { return f32_rets<2>(f32_args<6>(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()).Arg<Pred>()); }

// Backward: a thread pool; gates, dout, W, U, dhT, mask, x, out, h0; first results db, db_hn, dWU.
auto backward_binding() {
  return f32_rets<3>(f32_args<3>(f32_args<5>(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()).Arg<Pred>()));
}

}  // namespace

// The handlers, visible outside the shared object (it is built with -fvisibility=hidden).
#define LSTM_JAX_EXPORT extern "C" __attribute__((visibility("default"))) XLA_FFI_Error*
LSTM_JAX_EXPORT LstmJaxGruForward(XLA_FFI_CallFrame*);
LSTM_JAX_EXPORT LstmJaxGruForwardInfer(XLA_FFI_CallFrame*);
LSTM_JAX_EXPORT LstmJaxGruBackward(XLA_FFI_CallFrame*);
LSTM_JAX_EXPORT LstmJaxGruBackwardNoDx(XLA_FFI_CallFrame*);

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxGruForward, Forward, f32_rets<1>(forward_binding()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxGruForwardInfer, ForwardInfer, forward_binding());
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxGruBackward, Backward, f32_rets<2>(backward_binding()));
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmJaxGruBackwardNoDx, BackwardNoDx, f32_rets<1>(backward_binding()));

// The kernel the GRU handlers run ("avx512", "avx2" or "generic") and their thread count, for
// lstm_jax.native_gru (and its tests of each build).
extern "C" __attribute__((visibility("default"))) const char* LstmJaxGruIsa() { return isa().name; }
extern "C" __attribute__((visibility("default"))) int LstmJaxGruThreads() { return threads(); }
