// lstm_jax._native: the module that exports every native kernel's XLA FFI handlers (the LSTM's,
// lstm_cpu.cc, and the GRU's, gru_cpu.cc) as PyCapsules, and the runtime they share (runtime.h):
// one ISA choice, one thread count and one thread-pool adapter for all of them.
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <sched.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "runtime.h"

namespace lstm_jax_native::runtime {
namespace {

Isa pick_isa() {
  const char* force = std::getenv("LSTM_JAX_NATIVE_ISA");  // for tests: run a narrower kernel
  const std::string want = force ? force : "";
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if ((want.empty() || want == "avx512") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
    return {"avx512", avx512::forward, avx512::backward, avx512::gru::forward, avx512::gru::backward};
  if ((want.empty() || want == "avx512" || want == "avx2") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return {"avx2", avx2::forward, avx2::backward, avx2::gru::forward, avx2::gru::backward};
#endif
  return {"generic", generic::forward, generic::backward, generic::gru::forward, generic::gru::backward};
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

}  // namespace

const Isa& isa() {
  static const Isa chosen = pick_isa();
  return chosen;
}

int threads() {
  static const int n = default_threads();
  return n;
}

// ParallelFor on XLA's intra-op thread pool. The caller takes part: workers claim indices from
// a counter, so all the work gets done even if no pooled thread is free, and a task that starts
// after everything is claimed returns at once (it holds the shared state, never the caller's).
ParallelFor on_pool(ffi::ThreadPool& pool) {
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
    state->f = &f;  // only called for claimed indices, all of which finish before this returns
    auto work = [state] {
      for (int64_t i; (i = state->next.fetch_add(1)) < state->n;) {
        (*state->f)(i);
        if (state->done.fetch_add(1) + 1 == state->n) {
          std::lock_guard<std::mutex> hold(state->m);
          state->cv.notify_all();
        }
      }
    };
    // threads() workers in all, the caller among them. The caller is often not one of the pool's
    // threads (JAX runs the executable on its own), and a worker per index would put threads() + 1
    // of them on threads() cores, time-slicing blocks that each want a core's L2.
    for (int64_t k = 1; k < std::min<int64_t>(n, threads()); ++k)
      pool.Schedule(decltype(work)(work));  // Schedule takes an rvalue
    work();
    std::unique_lock<std::mutex> hold(state->m);
    state->cv.wait(hold, [&] { return state->done.load() == state->n; });
  };
}

// -- huge pages for XLA's temporaries -------------------------------------------------------------
//
// XLA:CPU allocates each execution's temporaries as one block, a fresh anonymous mapping, and
// unmaps it at the end, so every step first-touches all of it again: at B=128, T=100, H=256 a
// training step's 90 MB, 23,000 page faults at 4 KB. The forward kernel's outputs (the residuals
// and out) lie in that block, and so do the buffers XLA fills for the backward kernel (the
// cotangent of out). So the training forward asks for transparent huge pages (2 MB: 512 times
// fewer faults) over the block around its outputs, not only over the outputs. It is kept because a
// side-by-side measurement shows it worth more than 5% of a training step at the recorded shapes
// (docs/results.md, "Huge pages over XLA's temporaries").
// The block is the unnamed anonymous mapping that holds the outputs (found in /proc/self/maps, about
// 0.1 ms). The kernel may have merged it with neighbouring mappings, so the advice stops at the
// outputs' own size beyond them on either side, which covers the block's other temporaries without
// reaching far into memory that is not this call's. Advice changes no contents.
// LSTM_JAX_NATIVE_HUGEPAGES=0 turns all of it off.

std::atomic<int64_t> advised_blocks{0};  // blocks advised so far (for the tests)

namespace {

bool huge_pages_wanted() {
  static const bool on = [] {
    const char* env = std::getenv("LSTM_JAX_NATIVE_HUGEPAGES");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return on;
}

constexpr size_t kAdviseMinBytes = size_t{8} << 20;  // below this, faults cost less than reading the maps

struct Output {
  uintptr_t begin, end;
  uintptr_t map_lo = 0, map_hi = 0;  // the unnamed anonymous mapping that holds it, if any
};

// Fills in each output's mapping, from /proc/self/maps.
void find_mappings(std::vector<Output>& outputs) {
#if defined(__linux__)
  FILE* maps = std::fopen("/proc/self/maps", "r");
  if (maps == nullptr) return;
  char line[4096];
  while (std::fgets(line, sizeof line, maps)) {
    unsigned long lo, hi, inode;
    int name = 0;
    if (std::sscanf(line, "%lx-%lx %*s %*s %*s %lu %n", &lo, &hi, &inode, &name) < 3) continue;
    const bool unnamed_anonymous = inode == 0 && (line[name] == '\n' || line[name] == '\0');
    for (Output& o : outputs)
      if (unnamed_anonymous && lo <= o.begin && o.end <= hi) o.map_lo = lo, o.map_hi = hi;
  }
  std::fclose(maps);
#else
  (void)outputs;
#endif
}

// Whether every buffer's first page is already in memory: the block is one XLA reused from an
// earlier call, not a fresh mapping, so advice now would change nothing (advice given to it before
// still holds) and reading /proc/self/maps (about 1 ms in a process with JAX's many mappings) is saved.
bool already_touched(const std::vector<Output>& outputs) {
#if defined(__linux__)
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (const Output& o : outputs) {
    unsigned char resident = 0;
    if (mincore(reinterpret_cast<void*>(o.begin & ~(page - 1)), 1, &resident) != 0 || !(resident & 1)) return false;
  }
  return true;
#else
  (void)outputs;
  return false;
#endif
}

// The ranges advised for the outputs of the last few fresh blocks. XLA maps a step's block anew
// each time, but at the same address with the same layout, so a training loop would read
// /proc/self/maps in every forward call of every step (about 1.5% of a two-layer step's CPU); when
// a call's outputs come back exactly where an earlier call's were, the same ranges are advised
// again without reading it. Were another mapping of another size ever to hold them at those
// addresses, the advice could reach at most the outputs' size past its ends, and advice changes
// no contents.
using Spans = std::vector<std::pair<uintptr_t, uintptr_t>>;
struct AdviceCache {
  static constexpr size_t kEntries = 16;  // a step's forward calls (one per layer or stack of layers)
  std::mutex mutex;
  std::vector<std::pair<Spans, Spans>> entries;  // (outputs, ranges advised), the latest last
};

AdviceCache& advice_cache() {
  static AdviceCache* cache = new AdviceCache;  // never destroyed: FFI calls may outlive static destructors
  return *cache;
}

}  // namespace

// Huge pages over one buffer alone (unless turned off).
void advise_buffer(void* p, size_t bytes) {
  if (huge_pages_wanted()) advise_huge_pages(p, bytes);
}

// Huge pages around these buffers: per mapping, over the span of the buffers it holds widened by
// their total size on each side (within the mapping); a buffer in no such mapping gets them alone.
void advise_outputs(std::initializer_list<std::pair<void*, size_t>> buffers) {
  if (!huge_pages_wanted()) return;
  std::vector<Output> outputs;
  Spans spans;
  size_t bytes = 0;
  for (auto [p, n] : buffers) {
    outputs.push_back({reinterpret_cast<uintptr_t>(p), reinterpret_cast<uintptr_t>(p) + n});
    spans.emplace_back(outputs.back().begin, outputs.back().end);
    bytes += n;
  }
  if (bytes < kAdviseMinBytes || already_touched(outputs)) return;
  AdviceCache& cache = advice_cache();
  std::lock_guard<std::mutex> hold(cache.mutex);
  auto hit = std::find_if(cache.entries.begin(), cache.entries.end(), [&](const auto& e) { return e.first == spans; });
  if (hit == cache.entries.end()) {
    Spans ranges;
    find_mappings(outputs);
    std::vector<uintptr_t> done;  // the mappings advised by this call, by start
    for (const Output& o : outputs) {
      if (o.map_hi == 0) {
        ranges.emplace_back(o.begin, o.end);
        continue;
      }
      if (std::find(done.begin(), done.end(), o.map_lo) != done.end()) continue;
      done.push_back(o.map_lo);
      uintptr_t lo = o.begin, hi = o.end, held = 0;
      for (const Output& q : outputs)
        if (q.map_lo == o.map_lo) lo = std::min(lo, q.begin), hi = std::max(hi, q.end), held += q.end - q.begin;
      lo = lo - o.map_lo > held ? lo - held : o.map_lo;
      hi = o.map_hi - hi > held ? hi + held : o.map_hi;
      ranges.emplace_back(lo, hi);
    }
    if (cache.entries.size() == AdviceCache::kEntries) cache.entries.erase(cache.entries.begin());
    cache.entries.emplace_back(std::move(spans), std::move(ranges));
    hit = cache.entries.end() - 1;
  }
  for (auto [lo, hi] : hit->second) advise_huge_pages(reinterpret_cast<void*>(lo), hi - lo);
  advised_blocks.fetch_add(1);
}

}  // namespace lstm_jax_native::runtime

// -- the Python module -----------------------------------------------------------------------------

XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxForward);
XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxForwardInfer);
XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxBackward);
XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxBackwardNoDx);
XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxLnForward);
XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxLnBackward);
XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxGruForward);
XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxGruForwardInfer);
XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxGruBackward);
XLA_FFI_DECLARE_HANDLER_SYMBOL(LstmJaxGruBackwardNoDx);

namespace {

// Every handler, by the name it has in the module (lstm_jax.kernels.native.build registers them all).
constexpr std::pair<const char*, XLA_FFI_Error* (*)(XLA_FFI_CallFrame*)> kHandlers[] = {
    {"lstm_fwd", LstmJaxForward},         {"lstm_fwd_infer", LstmJaxForwardInfer},
    {"lstm_bwd", LstmJaxBackward},        {"lstm_bwd_no_dx", LstmJaxBackwardNoDx},
    {"lstm_ln_fwd", LstmJaxLnForward},    {"lstm_ln_bwd", LstmJaxLnBackward},
    {"gru_fwd", LstmJaxGruForward},       {"gru_fwd_infer", LstmJaxGruForwardInfer},
    {"gru_bwd", LstmJaxGruBackward},      {"gru_bwd_no_dx", LstmJaxGruBackwardNoDx},
};

PyObject* py_advised_blocks(PyObject*, PyObject*) {
  return PyLong_FromLongLong(lstm_jax_native::runtime::advised_blocks.load());
}

PyMethodDef native_methods[] = {
    {"advised_blocks", py_advised_blocks, METH_NOARGS,
     "How many of XLA's temporary blocks the training forward has asked huge pages for."},
    {nullptr, nullptr, 0, nullptr}};

PyModuleDef native_module = {PyModuleDef_HEAD_INIT, "_native",
                             "The native CPU LSTM and GRU recurrences (XLA FFI handlers as PyCapsules).", -1,
                             native_methods};

}  // namespace

PyMODINIT_FUNC PyInit__native(void) {
  namespace rt = lstm_jax_native::runtime;
  PyObject* m = PyModule_Create(&native_module);
  if (m == nullptr) return nullptr;
  bool ok = PyModule_AddStringConstant(m, "isa", rt::isa().name) == 0 &&
            PyModule_AddIntConstant(m, "threads", rt::threads()) == 0;
  for (const auto& [name, fn] : kHandlers) {
    if (!ok) break;
    PyObject* capsule = PyCapsule_New(reinterpret_cast<void*>(fn), nullptr, nullptr);
    ok = capsule != nullptr && PyModule_AddObject(m, name, capsule) == 0;
    if (!ok) Py_XDECREF(capsule);
  }
  if (!ok) {
    Py_DECREF(m);
    return nullptr;
  }
  return m;
}
