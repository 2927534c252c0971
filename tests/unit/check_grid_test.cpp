// check_grid: the grid shapes every rank rejects alike before the first collective; each message
// names the number to change and its value.
#include <gtest/gtest.h>

#include <string>

#include "core/config.h"
#include "parallel/process_grid.h"

namespace tessera::parallel {
namespace {

// Defaults: vocab 4096 padded to 128 (= 4096), n_head 4, n_embd 128, batch 16, micro 0.
core::Config config_with_tp(int tp) {
  core::Config config;
  config.parallel.tp = tp;
  return config;
}

std::string error_of(const core::Config& config, int world_size) {
  const core::Status status = check_grid(config, world_size);
  EXPECT_FALSE(status.is_ok()) << "expected check_grid to reject world size " << world_size
                               << " with tp " << config.parallel.tp;
  return status.message();
}

TEST(CheckGrid, AcceptsEveryGridTheDefaultsAllow) {
  for (int world_size : {1, 2, 4, 8}) {
    for (int tp : {1, 2, 4}) {
      if (world_size % tp != 0) continue;
      const core::Status status = check_grid(config_with_tp(tp), world_size);
      EXPECT_TRUE(status.is_ok()) << "world " << world_size << " tp " << tp << ": "
                                  << status.message();
    }
  }
}

TEST(CheckGrid, WorldSizeNotDivisibleByTp) {
  EXPECT_EQ(error_of(config_with_tp(4), 6),
            "grid: world size 6 is not divisible by parallel.tp 4; run on a multiple of 4 ranks "
            "or change parallel.tp");
  EXPECT_EQ(error_of(config_with_tp(4), 2),
            "grid: world size 2 is not divisible by parallel.tp 4; run on a multiple of 4 ranks "
            "or change parallel.tp");
}

TEST(CheckGrid, TpBelowOne) {
  EXPECT_EQ(error_of(config_with_tp(0), 4),
            "grid: parallel.tp 0 must be at least 1; use 1 for no tensor parallelism");
}

TEST(CheckGrid, HeadsNotDivisibleByTp) {
  core::Config config = config_with_tp(4);
  config.model.n_head = 6;
  config.model.n_embd = 384;
  EXPECT_EQ(error_of(config, 8),
            "grid: model.n_head 6 is not divisible by parallel.tp 4; each tp rank holds n_head / "
            "tp heads: change parallel.tp to a divisor of model.n_head, or change model.n_head");
}

TEST(CheckGrid, EmbeddingNotDivisibleByTp) {
  core::Config config = config_with_tp(8);
  config.model.n_head = 8;
  config.model.n_embd = 100;
  EXPECT_EQ(error_of(config, 8),
            "grid: model.n_embd 100 is not divisible by parallel.tp 8; change parallel.tp to a "
            "divisor of model.n_embd, or change model.n_embd");
}

TEST(CheckGrid, PaddedVocabularyNotDivisibleByTp) {
  core::Config config = config_with_tp(4);
  config.model.vocab_size = 50257;
  config.model.pad_vocab_to = 2;  // 50258 = 2 x 25129: not a multiple of 4
  EXPECT_EQ(error_of(config, 4),
            "grid: model.vocab_size 50257 padded to model.pad_vocab_to 2 (= 50258) is not "
            "divisible by parallel.tp 4; change model.pad_vocab_to to a multiple of 4, or "
            "change parallel.tp");
  config.model.pad_vocab_to = 64;  // 50304 = 64 x 786
  EXPECT_TRUE(check_grid(config, 4).is_ok());
}

TEST(CheckGrid, BatchNotDivisibleByDp) {
  core::Config config = config_with_tp(2);
  config.train.batch_size = 10;
  EXPECT_EQ(error_of(config, 16),
            "grid: train.batch_size 10 is not divisible by dp 8 (world size 16 / parallel.tp 2) "
            "with train.micro_batch_size 0 (= batch_size / dp); change train.batch_size to a "
            "multiple of 8, or run on another number of ranks");
  config.train.batch_size = 16;
  EXPECT_TRUE(check_grid(config, 16).is_ok());
}

TEST(CheckGrid, BatchNotDivisibleByDpTimesMicroBatch) {
  core::Config config = config_with_tp(2);
  config.train.batch_size = 12;
  config.train.micro_batch_size = 4;
  EXPECT_EQ(error_of(config, 4),
            "grid: train.batch_size 12 is not divisible by dp 2 (world size 4 / parallel.tp 2) x "
            "train.micro_batch_size 4 (= 8); change train.batch_size to a multiple of 8, or "
            "change train.micro_batch_size");
  config.train.micro_batch_size = 3;  // 12 = 2 x 3 x 2 accumulation steps
  EXPECT_TRUE(check_grid(config, 4).is_ok());
}

TEST(CheckGrid, SequenceParallelNeedsSeqLenDivisibleByTp) {
  core::Config config = config_with_tp(4);
  config.train.seq_len = 30;
  EXPECT_TRUE(check_grid(config, 4).is_ok()) << "without sequence parallelism any seq_len fits";
  config.parallel.sequence_parallel = true;
  EXPECT_EQ(error_of(config, 4),
            "grid: train.seq_len 30 is not divisible by parallel.tp 4 with "
            "parallel.sequence_parallel true (each tp rank holds seq_len / tp rows of every "
            "sequence); change train.seq_len to a multiple of 4, or set "
            "parallel.sequence_parallel=false");
  config.train.seq_len = 32;
  EXPECT_TRUE(check_grid(config, 4).is_ok());
  // Generation never shards: a training config's flag does not constrain its tp.
  config.train.seq_len = 30;
  EXPECT_TRUE(check_inference_grid(config, 4, 4).is_ok());
}

TEST(CheckGrid, ReportsTheFirstProblemInDocumentedOrder) {
  // Every check fails: the world size comes first.
  core::Config config = config_with_tp(3);
  config.model.n_head = 4;
  EXPECT_EQ(error_of(config, 4).rfind("grid: world size 4", 0), 0u);
}

}  // namespace
}  // namespace tessera::parallel
