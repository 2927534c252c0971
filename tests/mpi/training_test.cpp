// Training on the dp x tp grid: layout invariance (same seed and global batch give the same
// losses on every grid), DP equivalence with gradient accumulation, and tp-replicated gradients
// that stay identical across tp ranks. Runs at 1, 2 and 4 ranks; each checks every grid its
// world size allows against a 1 x 1 run made on MPI_COMM_SELF.
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "checkpoint/checkpoint.h"
#include "core/config.h"
#include "core/philox.h"
#include "data/token_shard.h"
#include "models/gpt.h"
#include "mpi_test_util.h"
#include "optim/optimizer.h"
#include "parallel/process_grid.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace tessera {
namespace {

using tessera::testing::expect_exact_resume;
using tessera::testing::fresh_checkpoint_dir;
using tessera::testing::max_rel_diff;
using tessera::testing::run;
using tessera::testing::shared_shard;
using tessera::testing::small_config;
using tessera::testing::world_rank;
using tessera::testing::world_size;

// Runs config_for(tp) on MPI_COMM_WORLD for every tp (power of two) dividing the world and
// expects its losses within relative `tolerance` of `reference` (the 1 x 1 run), printing each.
template <typename ConfigFor>
void expect_losses_on_every_grid(ConfigFor config_for, const std::vector<double>& reference,
                                 const char* what, double tolerance) {
  for (int tp = 1; tp <= world_size(); tp *= 2) {
    if (world_size() % tp != 0) continue;
    const std::vector<double> losses = run(config_for(tp), MPI_COMM_WORLD);
    ASSERT_EQ(losses.size(), reference.size());
    const double diff = max_rel_diff(losses, reference);
    if (world_rank() == 0) {
      std::printf(
          "%s: grid dp %d x tp %d vs 1 x 1: max relative loss difference over %zu steps %.3g\n",
          what, world_size() / tp, tp, reference.size(), diff);
    }
    EXPECT_LT(diff, tolerance) << what << ", grid dp " << world_size() / tp << " x tp " << tp;
  }
}

TEST(Training, LayoutInvarianceOnEveryGridOfThisWorld) {
  const std::vector<double> reference = run(small_config(1), MPI_COMM_SELF);
  ASSERT_EQ(reference.size(), 20u);
  EXPECT_LT(reference.back(), reference.front() - 0.5) << "the loss should fall";
  expect_losses_on_every_grid(small_config, reference, "layout invariance", 1e-5);
}

// train.dtype: bf16 (GEMM operands rounded to bf16, products summed in fp32, fp32 master weights
// and moments): the 20 losses follow fp32's within 1% and differ from them (the rounding is on),
// and every grid gives the 1 x 1 bf16 losses. Across grids the fp32 partial sums differ in their
// last bits (tp reductions), which flips an occasional operand to the neighbouring bf16 value, so
// the bar is looser than fp32's 1e-5.
// train() checks the grid itself, not only tessera-train before it: with a batch that dp does not
// divide it would otherwise train on dp x (batch_size / dp) sequences a step, not batch_size, and
// the losses would leave the 1 x 1 run's. Every rank gets the error, before any collective.
TEST(Training, ABatchThatDpDoesNotDivideIsRefusedOnEveryRank) {
  if (world_size() == 1) GTEST_SKIP() << "one rank: dp 1 divides every batch";
  core::Config c = small_config(1);
  c.train.batch_size = world_size() + 1;  // dp = world size (tp 1)
  parallel::ProcessGrid grid(MPI_COMM_WORLD, 1);
  const auto summary = train::train(c, grid);
  ASSERT_FALSE(summary.is_ok()) << "trained on a batch of " << c.train.batch_size << " at dp "
                                << world_size();
  const std::string want = "train.batch_size " + std::to_string(world_size() + 1) +
                           " is not divisible by dp " + std::to_string(world_size());
  EXPECT_NE(summary.status().message().find(want), std::string::npos) << summary.status().message();
}

TEST(Training, Bf16TracksFp32AndIsLayoutInvariant) {
  auto bf16_config = [](int tp) {
    core::Config c = small_config(tp);
    c.train.dtype = "bf16";
    return c;
  };
  const std::vector<double> fp32 = run(small_config(1), MPI_COMM_SELF);
  const std::vector<double> reference = run(bf16_config(1), MPI_COMM_SELF);
  ASSERT_EQ(reference.size(), 20u);
  const double vs_fp32 = max_rel_diff(reference, fp32);
  if (world_rank() == 0)
    std::printf("bf16 vs fp32, 1 x 1: max relative loss difference %.3g\n", vs_fp32);
  EXPECT_LT(vs_fp32, 1e-2);
  EXPECT_GT(vs_fp32, 1e-6) << "bf16 gave fp32's losses: were the operands rounded?";
  expect_losses_on_every_grid(bf16_config, reference, "bf16 layout invariance", 1e-3);
}

TEST(Training, ValidationLossIsTheSameOnEveryGrid) {
  auto val_loss = [](int tp, MPI_Comm world) {
    core::Config c = small_config(tp);
    c.data.val = shared_shard();
    c.train.val_every = 5;
    c.train.val_batches = 3;
    c.train.steps = 5;
    if (world == MPI_COMM_SELF) c.train.out_dir += "-self" + std::to_string(world_rank());
    parallel::ProcessGrid grid(world, tp);
    auto summary = train::train(c, grid);
    EXPECT_TRUE(summary.is_ok()) << summary.status().message();
    return summary.is_ok() ? summary->final_val_loss : -1.0;
  };
  const double reference = val_loss(1, MPI_COMM_SELF);
  ASSERT_GT(reference, 0);
  for (int tp = 1; tp <= world_size(); tp *= 2) {
    EXPECT_NEAR(val_loss(tp, MPI_COMM_WORLD), reference, 1e-5 * reference)
        << "grid dp " << world_size() / tp << " x tp " << tp;
  }
}

TEST(Training, GradientAccumulationEqualsTheWholeBatch) {
  core::Config whole = small_config(1);
  core::Config accumulated = small_config(1);
  accumulated.train.micro_batch_size = 8 / world_size() / 2 > 0 ? 8 / world_size() / 2 : 1;
  const std::vector<double> a = run(whole, MPI_COMM_WORLD);
  const std::vector<double> b = run(accumulated, MPI_COMM_WORLD);
  EXPECT_LT(max_rel_diff(b, a), 1e-5);
}

TEST(Training, ReplicatedGradientsStayIdenticalAcrossTp) {
  const int tp = world_size();
  core::Config c = small_config(tp);
  parallel::ProcessGrid grid(MPI_COMM_WORLD, tp);
  models::Gpt model(c.model, 2, 16, &grid.tp_comm());
  model.init_weights(3);
  optim::AdamW adamw(model.param_set());
  std::vector<int32_t> tokens(32), targets(32);
  for (int step = 0; step < 5; ++step) {
    for (int i = 0; i < 32; ++i) {
      tokens[i] = static_cast<int32_t>(core::philox_draw(9, step, i)[0] % 250);
      targets[i] = static_cast<int32_t>(core::philox_draw(9, step + 100, i)[0] % 250);
    }
    model.zero_grad();
    model.forward(tokens.data(), targets.data(), 2, 16);
    model.backward(1.0f / 32);
    optim::clip_grad_norm(model.param_set(), model.grads(), 1.0, &grid.tp_comm());
    adamw.step(model.weights(), model.grads(), 1e-2, step + 1, c.optim);
  }
  const params::ParamSet& ps = model.param_set();
  int replicated = 0;
  for (int i = 0; i < ps.size(); ++i) {
    if (!ps.specs()[i].replicated()) continue;
    ++replicated;
    const int64_t n = ps.local_numel(i);
    std::vector<float> all(n * tp);
    grid.tp_comm().all_gather(all.data(), ps.view(model.grads(), i).f32(), n);
    for (int r = 1; r < tp; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        ASSERT_EQ(all[r * n + j], all[j])
            << ps.specs()[i].name << " element " << j << " differs between tp rank 0 and " << r;
      }
    }
  }
  EXPECT_EQ(replicated, 1 + 6 * c.model.n_layer + 2);  // wpe, ln x2 + row-parallel biases x2, ln_f
}

// In fp32 and in bf16 (activations and GEMM operands rounded the same way on every run: the
// resumed steps are the same bits too).
TEST(Training, ExactResumeIsBitIdenticalOnEveryGrid) {
  for (const std::string dtype : {"fp32", "bf16"}) {
    for (int tp = 1; tp <= world_size(); tp *= 2) {
      core::Config c = small_config(tp);
      c.train.dtype = dtype;
      expect_exact_resume(
          c, "exact-" + dtype + "-" + std::to_string(tp),
          dtype + " on dp " + std::to_string(world_size() / tp) + " x tp " + std::to_string(tp));
    }
  }
}

TEST(Training, ResumeOnAnotherGridStaysWithinLayoutTolerance) {
  // Written at 2 x 2 on 4 ranks (at dp 1 x tp world below that), resumed on every grid of this
  // world and at 1 x 1.
  const int tp_writer = world_size() >= 4 ? 2 : world_size();
  core::Config c = small_config(tp_writer);
  c.checkpoint.dir = fresh_checkpoint_dir("regrid");
  c.checkpoint.every = 10;
  const std::vector<double> full = run(c, MPI_COMM_WORLD);
  ASSERT_EQ(full.size(), 20u);
  const std::vector<double> expected(full.begin() + 10, full.end());
  auto resume_at = [&](int tp, MPI_Comm world, int ranks) {
    core::Config r = small_config(tp);
    r.checkpoint.resume = checkpoint::checkpoint_path(c.checkpoint.dir, 10);
    r.train.out_dir += "-regrid";
    const std::vector<double> resumed = run(r, world);
    ASSERT_EQ(resumed.size(), 10u);
    const double diff = max_rel_diff(resumed, expected);
    if (world_rank() == 0) {
      std::printf(
          "resume on another grid: written at dp %d x tp %d, resumed at dp %d x tp %d: "
          "max relative loss difference %.3g\n",
          world_size() / tp_writer, tp_writer, ranks / tp, tp, diff);
    }
    EXPECT_LT(diff, 1e-5) << "resumed at dp " << ranks / tp << " x tp " << tp;
  };
  for (int tp = 1; tp <= world_size(); tp *= 2) {
    if (world_size() % tp == 0) resume_at(tp, MPI_COMM_WORLD, world_size());
  }
  resume_at(1, MPI_COMM_SELF, 1);
}

}  // namespace
}  // namespace tessera
