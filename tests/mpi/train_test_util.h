// Training runs shared by the MPI tests (training_test, zero_test): a small GPT on a shared
// shard of learnable tokens, run by train() on a grid of a given communicator, and the exact
// resume check.
#pragma once

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
#include "mpi_test_util.h"
#include "parallel/process_grid.h"
#include "train/trainer.h"

namespace tessera::testing {

// A shard of random tokens shared by all ranks (rank 0 writes it).
inline std::string shared_shard() {
  static std::string path;
  if (path.empty()) {
    char name[64];
    std::snprintf(name, sizeof name, "/tmp/tessera-mpi-train-%d.bin", static_cast<int>(getppid()));
    path = name;
    if (world_rank() == 0) {
      std::vector<int32_t> tokens(20000);
      // A learnable stream: mostly a repeating pattern with noise, so the loss moves.
      for (size_t i = 0; i < tokens.size(); ++i) {
        const uint32_t r = core::philox_draw(5, 0, i)[0];
        tokens[i] =
            (r % 4 == 0) ? static_cast<int32_t>(r % 250) : static_cast<int32_t>((i * 7) % 50);
      }
      core::Status st = data::write_token_shard(path, tokens, 250);
      EXPECT_TRUE(st.is_ok()) << st.message();
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  return path;
}

inline core::Config small_config(int tp) {
  core::Config c;
  c.model.vocab_size = 250;
  c.model.pad_vocab_to = 64;  // Vp = 256: divisible by every tp used here
  c.model.max_seq_len = 32;
  c.model.n_layer = 2;
  c.model.n_head = 4;
  c.model.n_embd = 32;
  c.data.train = shared_shard();
  c.data.val = "";
  c.train.seq_len = 16;
  c.train.batch_size = 8;
  c.train.steps = 20;
  c.train.val_every = 0;
  c.train.threads = 1;
  // One directory for the whole world (the final weights file is written collectively);
  // run() gives each rank its own when it trains alone on MPI_COMM_SELF.
  c.train.out_dir = "/tmp/tessera-mpi-train-out-" + std::to_string(static_cast<int>(getppid()));
  c.optim.lr = 1e-2;
  c.optim.warmup_steps = 2;
  c.parallel.tp = tp;
  return c;
}

inline std::vector<double> run(core::Config c, MPI_Comm world) {
  if (world == MPI_COMM_SELF) c.train.out_dir += "-self" + std::to_string(world_rank());
  parallel::ProcessGrid grid(world, c.parallel.tp);
  auto summary = train::train(c, grid);
  EXPECT_TRUE(summary.is_ok()) << summary.status().message();
  return summary.is_ok() ? summary->losses : std::vector<double>{};
}

// Largest relative difference of b from a, element by element; infinite when the lengths differ.
inline double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double worst = a.size() == b.size() ? 0.0 : INFINITY;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    worst = std::max(worst, std::fabs(a[i] - b[i]) / std::fabs(b[i]));
  }
  return worst;
}

// A checkpoint directory shared by all ranks (rank 0's name), emptied first.
inline std::string fresh_checkpoint_dir(const std::string& tag) {
  const std::string dir = "/tmp/tessera-mpi-ckpt-" + std::to_string(getppid()) + "-" + tag;
  if (world_rank() == 0) std::filesystem::remove_all(dir);
  MPI_Barrier(MPI_COMM_WORLD);
  return dir;
}

// Trains c (20 steps) on MPI_COMM_WORLD, checkpointing every 10 steps into a fresh directory named
// by `tag`, resumes it from step 10 and expects steps 11-20 to be the same bits; `what` names the
// case in a failure.
inline void expect_exact_resume(core::Config c, const std::string& tag, const std::string& what) {
  c.checkpoint.dir = fresh_checkpoint_dir(tag);
  c.checkpoint.every = 10;
  const std::vector<double> full = run(c, MPI_COMM_WORLD);
  ASSERT_EQ(full.size(), 20u) << what;
  c.checkpoint.resume = checkpoint::checkpoint_path(c.checkpoint.dir, 10);
  const std::vector<double> resumed = run(c, MPI_COMM_WORLD);
  ASSERT_EQ(resumed.size(), 10u) << what;
  for (int i = 0; i < 10; ++i) EXPECT_EQ(resumed[i], full[10 + i]) << what << ", step " << 11 + i;
}

}  // namespace tessera::testing
