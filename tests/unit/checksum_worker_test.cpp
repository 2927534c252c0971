// ChecksumWorker: the background thread gives exactly shard_checksum's values, for many queued
// shards at once, and wait() returns at once when nothing is queued.
#include "checkpoint/checksum_worker.h"

#include <gtest/gtest.h>

#include <vector>

#include "checkpoint/checksum.h"
#include "core/config.h"
#include "models/gpt.h"

namespace tessera::checkpoint {
namespace {

TEST(ChecksumWorker, GivesShardChecksumsValuesForEveryQueuedShard) {
  core::ModelConfig m;
  m.vocab_size = 300;
  m.pad_vocab_to = 128;
  m.max_seq_len = 16;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 32;
  const std::vector<params::ParamSpec> specs = models::Gpt::param_specs(m);
  const int tp = 2, rank = 1;
  params::ParamSet set(specs, rank, tp);
  core::Tensor arena = set.make_twin();
  set.initialise(arena, 9);
  std::vector<uint64_t> got(specs.size(), 0), want(specs.size(), 0);
  ChecksumWorker worker;
  worker.wait();                             // nothing queued
  for (int round = 0; round < 2; ++round) {  // the worker is reusable after wait()
    for (int i = 0; i < set.size(); ++i) {
      got[i] = 0;
      worker.submit(specs[i], set.view(arena, i).f32(), set.local_numel(i), rank, tp, &got[i]);
    }
    worker.wait();
    for (int i = 0; i < set.size(); ++i) {
      want[i] = shard_checksum(specs[i], set.view(arena, i).f32(), set.local_numel(i), rank, tp);
      EXPECT_EQ(got[i], want[i]) << specs[i].name << " round " << round;
      EXPECT_NE(got[i], 0u) << specs[i].name;  // initialised weights (zeros hash non-zero too)
    }
  }
}

TEST(ChecksumWorker, DestroyingItFinishesTheQueuedWork) {
  std::vector<float> x(1 << 16, 0.25f);
  const params::ParamSpec spec{"x", {1 << 16}};
  uint64_t out = 0;
  {
    ChecksumWorker worker;
    worker.submit(spec, x.data(), static_cast<int64_t>(x.size()), 0, 1, &out);
  }
  EXPECT_EQ(out, tensor_checksum(x.data(), static_cast<int64_t>(x.size())));
}

}  // namespace
}  // namespace tessera::checkpoint
