// "No allocation inside the step loop" (docs/DESIGN.md, decision 1), counted. This binary replaces
// the global operator new (every form funnels into one counted function) and counts the calls
// made, on any thread, inside a window. The compute of a training step as tessera-train runs it
// (next batch, forward and backward over micro-batches, clipping with its tp reduction, the world
// verdict all-reduce, AdamW) must make none after warm-up, on every grid of this world; with
// dp > 1 the GradientReducer's calls are counted apart: each bucket's non-blocking all-reduce
// returns a heap Request (Communicator's interface), a few allocations a bucket, bounded. The
// whole loop of train::train() also writes a metrics record per step (nlohmann::json): measured
// per step and bounded. Not seen here: malloc inside OpenBLAS, OpenMP or MPI (C code).
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/philox.h"
#include "data/data_loader.h"
#include "data/token_shard.h"
#include "models/gpt.h"
#include "mpi_test_util.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "parallel/communicator.h"
#include "parallel/gradient_reducer.h"
#include "parallel/process_grid.h"
#include "train/trainer.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<int64_t> g_allocations{0};

void* counted_alloc(std::size_t n, std::size_t alignment) {
  if (g_counting.load(std::memory_order_relaxed)) {
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  }
  if (n == 0) n = 1;
  void* p = alignment <= alignof(std::max_align_t)
                ? std::malloc(n)
                : std::aligned_alloc(alignment, (n + alignment - 1) / alignment * alignment);
  if (p == nullptr) throw std::bad_alloc();
  return p;
}
}  // namespace

// The replaceable forms libstdc++ does not already route through these (new[] and the nothrow
// forms call operator new(size_t [, align_val_t]); delete[] calls operator delete).
void* operator new(std::size_t n) { return counted_alloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return counted_alloc(n, static_cast<std::size_t>(a));
}
// The nothrow forms too: ASan's runtime defines its own, which would not call the two above,
// and its blocks would reach the free() below (alloc-dealloc-mismatch in the sanitizer build).
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n, 0);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  try {
    return counted_alloc(n, static_cast<std::size_t>(a));
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace tessera {
namespace {

using tessera::testing::world_rank;
using tessera::testing::world_size;

// operator new calls allowed per reducer bucket per step (dp > 1), and per step of train()'s
// loop (measured: docs/RELIABILITY.md).
constexpr int64_t kAllocationsPerBucket = 6;       // measured 4.1-4.5
constexpr double kTrainerAllocationsPerStep = 64;  // measured 42.2 (1 rank), 47.2 (dp 2, 4)

// operator new calls made by fn() on any thread of this process.
template <typename Fn>
int64_t allocations_in(Fn&& fn) {
  g_allocations.store(0);
  g_counting.store(true);
  fn();
  g_counting.store(false);
  return g_allocations.load();
}

// operator new calls made by fn() inside an open window (a part of it), leaving the window's
// count running.
template <typename Fn>
int64_t allocations_of(Fn&& fn) {
  const int64_t before = g_allocations.load();
  fn();
  return g_allocations.load() - before;
}

std::string shard_path() {
  static std::string path;
  if (path.empty()) {
    char name[64];
    std::snprintf(name, sizeof name, "/tmp/tessera-mpi-alloc-%d.bin", static_cast<int>(getppid()));
    path = name;
    if (world_rank() == 0) {
      std::vector<int32_t> tokens(20000);
      for (size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = static_cast<int32_t>(core::philox_draw(9, 0, i)[0] % 250);
      }
      core::Status st = data::write_token_shard(path, tokens, 250);
      EXPECT_TRUE(st.is_ok()) << st.message();
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  return path;
}

core::ModelConfig model_config() {
  core::ModelConfig m;
  m.vocab_size = 250;
  m.pad_vocab_to = 64;  // Vp = 256
  m.max_seq_len = 32;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 32;
  return m;
}

TEST(StepAllocations, ComputeStepMakesNoneOutsideTheDpReducerOnEveryGrid) {
  const int64_t T = 16, global_batch = 8, micro = 2;
  core::OptimConfig optim;
  optim.grad_clip = 0.5;  // low enough to clip: the scaling path runs too
  for (int tp = 1; tp <= world_size(); tp *= 2) {
    parallel::ProcessGrid grid(MPI_COMM_WORLD, tp);
    const int64_t B_local = global_batch / grid.dp_size();
    models::Gpt model(model_config(), micro, T, &grid.tp_comm());
    model.init_weights(5);
    optim::AdamW adamw(model.param_set());
    std::unique_ptr<parallel::GradientReducer> reducer;
    int64_t reducer_calls = 0;  // operator new calls inside the reducer's mark_ready and finish
    std::function<void(int)> on_ready;
    if (grid.dp_size() > 1) {
      parallel::ReducerOptions ro;
      ro.bucket_mb = 0.01;  // several buckets, started during backward
      reducer = std::make_unique<parallel::GradientReducer>(model.param_set(), model.grads(),
                                                            grid.dp_comm(), ro);
      on_ready = [&](int i) { reducer_calls += allocations_of([&] { reducer->mark_ready(i); }); };
    }
    auto loader = data::DataLoader::open(shard_path(), T, 7);
    ASSERT_TRUE(loader.is_ok()) << loader.status().message();
    std::vector<int32_t> inputs(B_local * T), targets(B_local * T);
    double last_loss = 0;
    // One step as Trainer::run makes it (load_batch, forward_backward, reduce, clip_and_step).
    auto step = [&](int s) {
      loader->next_batch(global_batch, grid.dp_rank() * B_local, B_local, inputs.data(),
                         targets.data());
      model.zero_grad();
      double loss_sum = 0;
      for (int64_t m = 0; m < B_local; m += micro) {
        const int64_t rows = std::min(micro, B_local - m);
        loss_sum += model.forward(inputs.data() + m * T, targets.data() + m * T, rows, T);
        model.backward(1.0f / static_cast<float>(B_local * T),
                       reducer && m + micro >= B_local ? on_ready : nullptr);
      }
      if (reducer) reducer_calls += allocations_of([&] { reducer->finish(); });
      grid.dp_comm().all_reduce(&loss_sum, 1, parallel::ReduceOp::kSum);
      last_loss = loss_sum / static_cast<double>(global_batch * T);
      const double lr = optim::learning_rate(optim, s, 100);
      const double norm =
          optim::clip_grad_norm(model.param_set(), model.grads(), optim.grad_clip, &grid.tp_comm());
      double verdict[2] = {std::isfinite(last_loss) ? 0.0 : 1.0, std::isfinite(norm) ? 0.0 : 1.0};
      grid.world_comm().all_reduce(verdict, 2, parallel::ReduceOp::kMax);
      adamw.step(model.weights(), model.grads(), lr, s + 1, optim);
    };
    step(0);
    step(1);  // warm-up: lazily made buffers, OpenMP and MPI set-up
    reducer_calls = 0;
    const int64_t n = allocations_in([&] {
      for (int s = 2; s < 6; ++s) step(s);
    });
    const int64_t outside = n - reducer_calls;
    const int buckets = reducer ? reducer->num_buckets() : 0;
    if (world_rank() == 0) {
      std::printf(
          "step allocations: grid dp %d x tp %d: %ld operator new calls in 4 steps "
          "outside the reducer, %ld inside (%d buckets)\n",
          grid.dp_size(), tp, static_cast<long>(outside), static_cast<long>(reducer_calls),
          buckets);
    }
    EXPECT_EQ(outside, 0) << "grid dp " << grid.dp_size() << " x tp " << tp
                          << ": the compute of a training step allocated";
    // Each bucket's non-blocking all-reduce returns a heap Request (Communicator's interface)
    // holding its MPI requests and its timeline name and arguments: a few allocations a bucket.
    EXPECT_LE(reducer_calls, 4 * buckets * kAllocationsPerBucket)
        << "grid dp " << grid.dp_size() << " x tp " << tp << ", " << buckets << " buckets";
    if (reducer) {
      EXPECT_GT(buckets, 1) << "the test wants several buckets";
    }
    EXPECT_TRUE(std::isfinite(last_loss));
    // The counter sees what it should: one call inside the window is one allocation.
    EXPECT_EQ(allocations_in([] { ::operator delete(::operator new(24)); }), 1);
  }
}

// The whole step loop of train::train(): (calls of a 24-step run - calls of a 12-step run) / 12,
// set-up and the final write cancelling out. What remains per step is the metrics record: an
// nlohmann::json object of 7 entries (about 35 calls), its dump, the line written; with dp > 1
// also the reducer's bucket (one here, 25 MB). The bound is 1.5 times the measured figure.
TEST(StepAllocations, TrainerLoopAllocationsPerStepAreBounded) {
  auto run = [](int steps) {
    core::Config c;
    c.model = model_config();
    c.data.train = shard_path();
    c.data.val = "";
    c.train.seq_len = 16;
    c.train.batch_size = 8;
    c.train.steps = steps;
    c.train.val_every = 0;
    c.train.log_every = 1000;  // one progress line, the last step's, in either run
    c.train.threads = 1;
    c.train.out_dir = "/tmp/tessera-mpi-alloc-out-" + std::to_string(static_cast<int>(getppid()));
    parallel::ProcessGrid grid(MPI_COMM_WORLD, 1);
    int64_t n = allocations_in([&] {
      auto summary = train::train(c, grid);
      EXPECT_TRUE(summary.is_ok()) << summary.status().message();
    });
    return n;
  };
  const int64_t short_run = run(12), long_run = run(24);
  const double per_step = static_cast<double>(long_run - short_run) / 12.0;
  double worst = per_step;
  MPI_Allreduce(MPI_IN_PLACE, &worst, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  if (world_rank() == 0) {
    std::printf("train() loop: %.1f operator new calls per step (worst rank; 12 vs 24 steps)\n",
                worst);
  }
  EXPECT_LE(per_step, kTrainerAllocationsPerStep) << "rank " << world_rank();
}

}  // namespace
}  // namespace tessera
