// A small emulation of the CUDA execution model, enough to run device code written for warps of 32
// on the host: each thread of a block is a fiber (ucontext) on the calling thread, blocks run one
// after another, and the fibers switch only at __syncthreads (a barrier of the block) and at warp
// shuffles (a barrier of the warp at which every lane posts its value and reads its source
// lane's). Include it BEFORE the kernels' header: it defines the CUDA keywords and TESSERA_SHARED
// for the host.
//
// What it checks besides the results: every lane of a warp reaches the same shuffles, every thread
// of a block reaches __syncthreads as often as the others, no barrier waits forever (a deadlock is
// an error, found at once: no fiber can run), and shared arrays hold NaN at the start of each
// block (a read before any write shows). What it does not model: the GPU's memory model (the
// fibers interleave only at barriers), the intrinsics' own precision, timing.
//
// Not under AddressSanitizer: it switches stacks without telling it (the sanitized test runs
// leave this test out; docs/RELIABILITY.md).
#pragma once

#include <ucontext.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace tessera::testing::emulated_cuda {

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned x_, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

constexpr int kWarpSize = 32;

enum class State { kRunnable, kAtShuffle, kAtSync, kDone };

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack;
  State state = State::kRunnable;
  int64_t shuffles = 0, syncs = 0;  // reached so far
  float posted = 0, result = 0;     // at a shuffle: this lane's value, then its source's
  int source = 0;
};

// The run in progress (one block at a time, on one thread).
struct Run {
  std::vector<Fiber> fibers;
  ucontext_t scheduler;
  int current = 0;
  const std::function<void()>* kernel = nullptr;
  std::vector<std::string> errors;
};
inline Run* run = nullptr;

// What device code reads; the scheduler sets them before it switches to a fiber.
inline dim3 threadIdx, blockIdx, blockDim, gridDim;

// Every shared array, so that a block starts with it poisoned: floats NaN, integers all ones
// bits (-1: an index read before it is written points outside any array).
struct SharedArray {
  void* data;
  size_t bytes;
  bool is_float;
};
inline std::vector<SharedArray> shared_arrays;
inline void poison(const SharedArray& s) {
  if (s.is_float) {
    float* f = static_cast<float*>(s.data);
    for (size_t i = 0; i < s.bytes / sizeof(float); ++i) {
      f[i] = std::numeric_limits<float>::quiet_NaN();
    }
  } else {
    std::memset(s.data, 0xFF, s.bytes);
  }
}
template <typename T>
void register_shared(T* data, size_t count) {
  for (const SharedArray& s : shared_arrays) {
    if (s.data == data) return;
  }
  shared_arrays.push_back({data, count * sizeof(T), std::is_same_v<T, float>});
  poison(shared_arrays.back());
}
// Dynamic shared memory (extern __shared__): one buffer of the most a kernel gets without opting
// in, 48 KiB.
constexpr size_t kDynamicSharedBytes = 48 * 1024;

inline void yield_to_scheduler() {
  Fiber& f = run->fibers[run->current];
  swapcontext(&f.context, &run->scheduler);
}

inline void __syncthreads() {
  Fiber& f = run->fibers[run->current];
  ++f.syncs;
  f.state = State::kAtSync;
  yield_to_scheduler();
}
inline float shuffle(float v, int source_lane) {
  Fiber& f = run->fibers[run->current];
  ++f.shuffles;
  f.posted = v;
  f.source = source_lane;
  f.state = State::kAtShuffle;
  yield_to_scheduler();
  return run->fibers[run->current].result;
}
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  if (mask != 0xffffffffu) run->errors.push_back("a shuffle with a partial mask");
  return shuffle(v, static_cast<int>(threadIdx.x % kWarpSize) ^ lane_mask);
}
inline float __shfl_sync(unsigned mask, float v, int source_lane) {
  if (mask != 0xffffffffu) run->errors.push_back("a shuffle with a partial mask");
  return shuffle(v, source_lane);
}
// A float's bits and back.
inline float __uint_as_float(unsigned bits) { return std::bit_cast<float>(bits); }
inline unsigned __float_as_uint(float x) { return std::bit_cast<unsigned>(x); }
// A product rounded on its own (a call: never contracted with what follows).
inline float __fmul_rn(float a, float b) {
  volatile float p = a * b;
  return p;
}

inline void fiber_entry() {
  (*run->kernel)();
  run->fibers[run->current].state = State::kDone;
  // Returning resumes uc_link: the scheduler.
}

// Releases the barriers every fiber has reached; false when a barrier can never be released (a
// deadlock: lanes of a warp at different points, threads of the block at different barriers).
inline bool release_barriers(Run& r, int threads) {
  bool released = false;
  for (int w0 = 0; w0 < threads; w0 += kWarpSize) {
    int at_shuffle = 0;
    for (int l = 0; l < kWarpSize && w0 + l < threads; ++l) {
      at_shuffle += r.fibers[w0 + l].state == State::kAtShuffle;
    }
    if (at_shuffle == 0 || at_shuffle != kWarpSize) continue;
    for (int l = 1; l < kWarpSize; ++l) {
      if (r.fibers[w0 + l].shuffles != r.fibers[w0].shuffles) {
        r.errors.push_back("divergent shuffle in warp " + std::to_string(w0 / kWarpSize));
        return false;
      }
    }
    for (int l = 0; l < kWarpSize; ++l) {
      Fiber& f = r.fibers[w0 + l];
      f.result = r.fibers[w0 + f.source].posted;
      f.state = State::kRunnable;
    }
    released = true;
  }
  int at_sync = 0;
  for (int t = 0; t < threads; ++t) at_sync += r.fibers[t].state == State::kAtSync;
  if (at_sync == threads) {
    for (int t = 1; t < threads; ++t) {
      if (r.fibers[t].syncs != r.fibers[0].syncs) {
        r.errors.push_back("threads at different __syncthreads");
        return false;
      }
    }
    for (Fiber& f : r.fibers) f.state = State::kRunnable;
    released = true;
  }
  return released;
}

// A fiber set to run fiber_entry from the start on its own stack, then return to `scheduler`.
// Out of line: getcontext returns here only once (the context is only ever entered through
// makecontext's entry), but the compiler cannot know that about the caller's loop.
[[gnu::noinline]] inline void prepare(Fiber& f, size_t stack_bytes, ucontext_t* scheduler) {
  f.state = State::kRunnable;
  f.shuffles = f.syncs = 0;
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack.get();
  f.context.uc_stack.ss_size = stack_bytes;
  f.context.uc_link = scheduler;
  makecontext(&f.context, fiber_entry, 0);
}

// Runs kernel() for every block of `grid` with `threads` threads each (1-D blocks, a multiple of
// the warp size). Returns the errors seen (empty: none).
inline std::vector<std::string> launch(dim3 grid, int threads,
                                       const std::function<void()>& kernel) {
  constexpr size_t kStackBytes = 256 * 1024;
  Run r;
  r.kernel = &kernel;
  r.fibers.resize(static_cast<size_t>(threads));
  for (Fiber& f : r.fibers) f.stack = std::make_unique<char[]>(kStackBytes);
  run = &r;
  for (unsigned by = 0; by < grid.y && r.errors.empty(); ++by) {
    for (unsigned bx = 0; bx < grid.x && r.errors.empty(); ++bx) {
      for (const SharedArray& s : shared_arrays) poison(s);
      blockIdx = dim3(bx, by);
      blockDim = dim3(static_cast<unsigned>(threads));
      gridDim = grid;
      for (Fiber& f : r.fibers) prepare(f, kStackBytes, &r.scheduler);
      const std::string where = "block (" + std::to_string(bx) + ", " + std::to_string(by) + "): ";
      for (;;) {
        bool ran = false;
        for (int t = 0; t < threads; ++t) {
          if (r.fibers[t].state != State::kRunnable) continue;
          r.current = t;
          threadIdx = dim3(static_cast<unsigned>(t));
          swapcontext(&r.scheduler, &r.fibers[t].context);
          ran = true;
        }
        bool all_done = true;
        for (const Fiber& f : r.fibers) all_done &= f.state == State::kDone;
        if (all_done) break;
        if (!release_barriers(r, threads) && !ran) {
          if (r.errors.empty())
            r.errors.push_back("deadlock: threads wait at barriers never released");
          // Fibers left suspended are abandoned with their stacks (nothing on them owns memory).
          break;
        }
        if (!r.errors.empty()) break;
      }
      for (std::string& e : r.errors) e.insert(0, where);
    }
  }
  run = nullptr;
  return r.errors;
}

}  // namespace tessera::testing::emulated_cuda

// The CUDA keywords for device code compiled on the host.
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define TESSERA_SHARED(type, name, count) \
  static type name[count];                \
  ::tessera::testing::emulated_cuda::register_shared(name, count)
#define TESSERA_DYNAMIC_SHARED(type, name)                                                 \
  static type name[::tessera::testing::emulated_cuda::kDynamicSharedBytes / sizeof(type)]; \
  ::tessera::testing::emulated_cuda::register_shared(                                      \
      name, ::tessera::testing::emulated_cuda::kDynamicSharedBytes / sizeof(type))
using ::tessera::testing::emulated_cuda::__float_as_uint;
using ::tessera::testing::emulated_cuda::__fmul_rn;
using ::tessera::testing::emulated_cuda::__shfl_sync;
using ::tessera::testing::emulated_cuda::__shfl_xor_sync;
using ::tessera::testing::emulated_cuda::__syncthreads;
using ::tessera::testing::emulated_cuda::__uint_as_float;
using ::tessera::testing::emulated_cuda::blockIdx;
using ::tessera::testing::emulated_cuda::threadIdx;
