// What every native kernel (the LSTM's, kernel.h, and the GRU's, gru_kernel.h) shares with its
// caller: the thread interface, the scratch-memory pool and the ISA builds.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#if defined(__linux__)
#include <sys/mman.h>
#endif

// The ISA builds: each kernel_<isa>.cc compiles every kernel into namespace lstm_jax_native::<isa>.
#if defined(__x86_64__) || defined(_M_X64)
#define LSTM_JAX_ISAS(X) X(generic) X(avx2) X(avx512)
#else
#define LSTM_JAX_ISAS(X) X(generic)
#endif

namespace lstm_jax_native {

// Runs f(0), ..., f(n - 1), possibly at the same time, and returns when all have finished. The FFI
// layer runs them on XLA's own intra-op threads, so that they do not compete with XLA's workers.
using ParallelFor = std::function<void(int64_t n, const std::function<void(int64_t)>& f)>;

// Asks for transparent huge pages over [p, p + bytes): large buffers first touched by a kernel
// then take a few faults instead of thousands (where THP is in 'madvise' mode; else a no-op).
inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)p, (void)bytes;
#endif
}

// Scratch memory, 64-byte aligned, handed back to a process-wide pool for the next call. Fresh
// memory is fresh pages, and every first touch of one is a fault: a training step would fault in
// its packed weights, gradient partials and dz chunks anew on every call (thousands of faults,
// several ms on a shared VM). The pool keeps at most kScratchPoolBytes; past that, buffers are freed.
class Scratch {
 public:
  explicit Scratch(size_t floats) : bytes_((floats * sizeof(float) + 63) / 64 * 64) {
    {
      std::lock_guard<std::mutex> hold(mutex());
      auto it = pool().lower_bound(bytes_);
      if (it != pool().end() && it->first <= 2 * bytes_) {  // never tie up a much larger buffer
        bytes_ = it->first;
        p = static_cast<float*>(it->second);
        pooled() -= bytes_;
        pool().erase(it);
        return;
      }
    }
    p = static_cast<float*>(std::aligned_alloc(64, bytes_ ? bytes_ : 64));
    if (bytes_ >= (size_t{4} << 20)) advise_huge_pages(p, bytes_);
  }
  ~Scratch() {
    std::lock_guard<std::mutex> hold(mutex());
    if (pooled() + bytes_ > kScratchPoolBytes) {
      std::free(p);
      return;
    }
    pool().emplace(bytes_, p);
    pooled() += bytes_;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  float* p;

 private:
  static constexpr size_t kScratchPoolBytes = size_t{256} << 20;
  static std::mutex& mutex() {
    static std::mutex m;
    return m;
  }
  static std::multimap<size_t, void*>& pool() {
    static auto* m = new std::multimap<size_t, void*>;  // never destroyed: no teardown-order hazards
    return *m;
  }
  static size_t& pooled() {
    static size_t n = 0;
    return n;
  }
  size_t bytes_;
};

}  // namespace lstm_jax_native
