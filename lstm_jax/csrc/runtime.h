// What every FFI handler (lstm_cpu.cc, gru_cpu.cc) shares, defined once in runtime.cc: the kernel
// build for this CPU, the thread count, XLA's thread pool as a ParallelFor, huge-page advice, and
// the helpers that check and bind buffers. One choice of ISA and of threads for all the kernels.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

#include "gru_kernel.h"
#include "kernel.h"
#include "xla/ffi/api/ffi.h"

namespace lstm_jax_native::runtime {

namespace ffi = xla::ffi;

// The kernels of one ISA build.
struct Isa {
  const char* name;  // "avx512", "avx2" or "generic"
  void (*forward)(const FwdArgs*, int64_t);
  void (*backward)(const BwdArgs*, int64_t);
  void (*gru_forward)(const GruFwdArgs&);
  void (*gru_backward)(const GruBwdArgs&);
};

// The widest build the CPU supports, or a narrower one named by LSTM_JAX_NATIVE_ISA; chosen once.
const Isa& isa();

// The CPUs this process may run on, or LSTM_JAX_NATIVE_THREADS; read once.
int threads();

// ParallelFor on XLA's intra-op thread pool, threads() workers in all, the caller among them.
ParallelFor on_pool(ffi::ThreadPool& pool);

// Huge pages over one output buffer the kernel first-touches (unless LSTM_JAX_NATIVE_HUGEPAGES=0).
void advise_buffer(void* p, size_t bytes);

// Huge pages around a training forward's outputs, over the block of XLA's temporaries that holds them.
void advise_outputs(std::initializer_list<std::pair<void*, size_t>> buffers);

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

// A binding with N >= 1 more float32 arguments, or results. (A Binding cannot be moved, only
// passed on as a temporary, so the recursion ends at one.)
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

// A binding's start: XLA's intra-op thread pool, then N float32 arguments.
template <int N>
auto bind_f32_args() {
  return f32_args<N>(ffi::Ffi::Bind().Ctx<ffi::ThreadPool>());
}

}  // namespace lstm_jax_native::runtime
