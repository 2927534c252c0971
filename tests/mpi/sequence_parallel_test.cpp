// Sequence parallelism (parallel.sequence_parallel): the same gradients as without it at every
// tp of this world, layout invariance of the losses at every grid (against a 1 x 1 run and the
// same grid without it), checkpoints that cross the setting both ways, and the activation arena
// that shrinks. Runs at 1, 2 and 4 ranks (at tp 1 the setting is a no-op and must stay one).
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/config.h"
#include "core/philox.h"
#include "data/token_shard.h"
#include "models/gpt.h"
#include "mpi_test_util.h"
#include "parallel/process_grid.h"
#include "train/trainer.h"
#include "train_test_util.h"

namespace tessera {
namespace {

using tessera::testing::max_rel_diff;
using tessera::testing::run;
using tessera::testing::world_rank;
using tessera::testing::world_size;

// tp = 1, 2, 4 as far as this world allows.
std::vector<int> sp_tp_sizes() {
  std::vector<int> sizes;
  for (int tp = 1; tp <= world_size(); tp *= 2) {
    if (world_size() % tp == 0) sizes.push_back(tp);
  }
  return sizes;
}

// The model and run of tests/mpi/training_test.cpp (seq_len 16: divisible by every tp here),
// with or without sequence parallelism.
core::Config small_config(int tp, bool sequence_parallel) {
  core::Config c = tessera::testing::small_config(tp);
  c.parallel.sequence_parallel = sequence_parallel;
  return c;
}

// Two micro-batches (the second accumulates onto the first's gradients, as gradient
// accumulation does) through a model built with and one without sequence parallelism, from the
// same weights: every loss and every gradient shard agrees to float rounding, and every
// replicated gradient (layernorms, wpe, row-parallel biases: the ones sequence parallelism
// makes partial) is bit-identical across the tp ranks.
TEST(SequenceParallel, GradientsEqualThoseWithoutItAtEveryTp) {
  for (int tp : sp_tp_sizes()) {
    SCOPED_TRACE("tp " + std::to_string(tp));
    const core::Config c = small_config(tp, true);
    parallel::ProcessGrid grid(MPI_COMM_WORLD, tp);
    const int64_t B = 2, T = 16;
    models::Gpt plain(c.model, B, T, &grid.tp_comm());
    models::Gpt sharded(c.model, B, T, &grid.tp_comm(), nullptr, /*sequence_parallel=*/true);
    EXPECT_EQ(sharded.seq_shards(), tp);
    plain.init_weights(3);
    sharded.init_weights(3);
    std::vector<int32_t> tokens(B * T), targets(B * T);
    for (int micro = 0; micro < 2; ++micro) {
      for (int64_t i = 0; i < B * T; ++i) {
        tokens[i] = static_cast<int32_t>(core::philox_draw(9, micro, i)[0] % 250);
        targets[i] = static_cast<int32_t>(core::philox_draw(9, micro + 100, i)[0] % 250);
      }
      targets[5] = -1;  // an ignored target
      int64_t n_plain = 0, n_sharded = 0;
      const double loss_plain = plain.forward(tokens.data(), targets.data(), B, T, &n_plain);
      const double loss_sharded = sharded.forward(tokens.data(), targets.data(), B, T, &n_sharded);
      EXPECT_EQ(n_sharded, n_plain);
      EXPECT_NEAR(loss_sharded, loss_plain, 1e-6 * std::fabs(loss_plain)) << "micro " << micro;
      plain.backward(1.0f / 64);
      sharded.backward(1.0f / 64);
    }
    const params::ParamSet& ps = plain.param_set();
    for (int i = 0; i < ps.size(); ++i) {
      const int64_t n = ps.local_numel(i);
      const float* g0 = ps.view(plain.grads(), i).f32();
      const float* g1 = ps.view(sharded.grads(), i).f32();
      double scale = 0, worst = 0;
      for (int64_t j = 0; j < n; ++j) scale = std::max(scale, std::fabs(double{g0[j]}));
      for (int64_t j = 0; j < n; ++j) worst = std::max(worst, std::fabs(double{g1[j]} - g0[j]));
      EXPECT_LE(worst, 1e-5 * scale + 1e-12) << ps.specs()[i].name << " (max |g| " << scale << ")";
      if (!ps.specs()[i].replicated()) continue;
      std::vector<float> all(n * tp);
      grid.tp_comm().all_gather(all.data(), g1, n);
      for (int r = 1; r < tp; ++r) {
        for (int64_t j = 0; j < n; ++j) {
          ASSERT_EQ(all[r * n + j], all[j])
              << ps.specs()[i].name << " element " << j << " differs between tp rank 0 and " << r;
        }
      }
    }
    // The arena: the layernorm/residual tensors shrink by tp, two (B*T, C) scratch buffers join.
    if (tp == 1) {
      EXPECT_EQ(sharded.activation_bytes(), plain.activation_bytes());
    } else {
      EXPECT_LT(sharded.activation_bytes(), plain.activation_bytes());
    }
    if (world_rank() == 0) {
      std::printf("sequence parallel at tp %d: activation arena %lld bytes (without: %lld)\n", tp,
                  static_cast<long long>(sharded.activation_bytes()),
                  static_cast<long long>(plain.activation_bytes()));
    }
  }
}

TEST(SequenceParallel, LayoutInvarianceOnEveryGridOfThisWorld) {
  const std::vector<double> reference = run(small_config(1, false), MPI_COMM_SELF);
  ASSERT_EQ(reference.size(), 20u);
  for (int tp : sp_tp_sizes()) {
    const std::vector<double> with = run(small_config(tp, true), MPI_COMM_WORLD);
    const std::vector<double> without = run(small_config(tp, false), MPI_COMM_WORLD);
    const double vs_reference = max_rel_diff(with, reference);
    const double vs_without = max_rel_diff(with, without);
    if (world_rank() == 0) {
      std::printf(
          "sequence parallel at dp %d x tp %d: max relative loss difference over 20 steps "
          "%.3g vs 1 x 1, %.3g vs the same grid without it\n",
          world_size() / tp, tp, vs_reference, vs_without);
    }
    EXPECT_LT(vs_reference, 1e-5) << "grid dp " << world_size() / tp << " x tp " << tp;
    EXPECT_LT(vs_without, 1e-5) << "grid dp " << world_size() / tp << " x tp " << tp;
  }
}

// A checkpoint directory shared by all ranks (rank 0's name), emptied first.
std::string fresh_checkpoint_dir(const std::string& tag) {
  const std::string dir = "/tmp/tessera-mpi-seqpar-ckpt-" + std::to_string(getppid()) + "-" + tag;
  if (world_rank() == 0) std::filesystem::remove_all(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

// The stored layout does not depend on the setting: a run written with it resumes without it,
// and the other way round, at the largest tp of this world, within the layout tolerance.
TEST(SequenceParallel, CheckpointsCrossTheSettingBothWays) {
  const int tp = world_size();
  for (bool written_with : {true, false}) {
    core::Config c = small_config(tp, written_with);
    c.checkpoint.dir = fresh_checkpoint_dir(written_with ? "on" : "off");
    c.checkpoint.every = 10;
    const std::vector<double> full = run(c, MPI_COMM_WORLD);
    ASSERT_EQ(full.size(), 20u);
    core::Config r = small_config(tp, !written_with);
    r.checkpoint.resume = checkpoint::checkpoint_path(c.checkpoint.dir, 10);
    r.train.out_dir += "-resumed";
    const std::vector<double> resumed = run(r, MPI_COMM_WORLD);
    ASSERT_EQ(resumed.size(), 10u);
    const double diff = max_rel_diff(resumed, std::vector<double>(full.begin() + 10, full.end()));
    if (world_rank() == 0) {
      std::printf(
          "checkpoint written with sequence_parallel %s at tp %d, resumed with it %s: max "
          "relative loss difference %.3g\n",
          written_with ? "on" : "off", tp, written_with ? "off" : "on", diff);
    }
    EXPECT_LT(diff, 1e-5) << "written with sequence_parallel " << written_with;
  }
}

}  // namespace
}  // namespace tessera
