// DataLoader: every sequence once per epoch, seeded and epoch-dependent order, dp slices equal to
// the single-rank batch (DESIGN.md "DP equivalence"), exact resume from a cursor, clear errors.
#include "data/data_loader.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "scratch_dir.h"

namespace tessera::data {
namespace {

constexpr int64_t kT = 8;

using tessera::testing::temp_path;

// Two shards whose token values say where they came from: shard 0 holds 0..100 (12 sequences of
// 8 + 1), shard 1 holds 10000..10056 (7 sequences). 19 sequences in all.
std::string two_shards() {
  std::vector<int32_t> a(101), b(57);
  std::iota(a.begin(), a.end(), 0);
  std::iota(b.begin(), b.end(), 10000);
  const std::string pa = temp_path("a.bin"), pb = temp_path("b.bin");
  EXPECT_TRUE(write_token_shard(pa, a, 20000).is_ok());
  EXPECT_TRUE(write_token_shard(pb, b, 20000).is_ok());
  return pa + "," + pb;
}

DataLoader open_loader(const std::string& paths, uint64_t seed) {
  core::Result<DataLoader> loader = DataLoader::open(paths, kT, seed);
  EXPECT_TRUE(loader.is_ok()) << loader.status().message();
  return std::move(loader).value();
}

// The first input token of each sequence of one global batch of size `global_batch`, taken as
// dp_size slices of global_batch / dp_size, each by its own loader.
std::vector<int32_t> batch_starts(std::vector<DataLoader>& ranks, int64_t global_batch) {
  const auto dp_size = static_cast<int64_t>(ranks.size());
  const int64_t b = global_batch / dp_size;
  std::vector<int32_t> starts;
  for (int64_t dp_rank = 0; dp_rank < dp_size; ++dp_rank) {
    std::vector<int32_t> inputs(b * kT), targets(b * kT);
    ranks[dp_rank].next_batch(global_batch, dp_rank * b, b, inputs.data(), targets.data());
    for (int64_t j = 0; j < b; ++j) starts.push_back(inputs[j * kT]);
  }
  return starts;
}

// The sequence starts (first input token) of `steps` steps of batch 1: the epoch order.
std::vector<int32_t> order_of(DataLoader& loader, int steps) {
  std::vector<int32_t> out;
  std::vector<int32_t> in(kT), tgt(kT);
  for (int i = 0; i < steps; ++i) {
    loader.next_batch(1, 0, 1, in.data(), tgt.data());
    out.push_back(in[0]);
  }
  return out;
}

TEST(DataLoader, CountsSequencesWithinShards) {
  DataLoader loader = open_loader(two_shards(), 1);
  EXPECT_EQ(loader.num_tokens(), 158);
  EXPECT_EQ(loader.num_sequences(), 19);  // (101 - 1) / 8 + (57 - 1) / 8
}

TEST(DataLoader, EverySequenceOncePerEpochAndTargetsShiftByOne) {
  DataLoader loader = open_loader(two_shards(), 7);
  std::set<int32_t> expected;
  for (int32_t s = 0; s < 12; ++s) expected.insert(s * kT);
  for (int32_t s = 0; s < 7; ++s) expected.insert(10000 + s * kT);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::set<int32_t> seen;
    std::vector<int32_t> in(kT), tgt(kT);
    for (int i = 0; i < 19; ++i) {
      loader.next_batch(1, 0, 1, in.data(), tgt.data());
      // Rows are consecutive tokens of one shard (no sequence crosses a boundary) and the target
      // is the input shifted by one.
      for (int64_t t = 0; t < kT; ++t) {
        ASSERT_EQ(in[t], in[0] + t);
        ASSERT_EQ(tgt[t], in[t] + 1);
      }
      seen.insert(in[0]);
    }
    EXPECT_EQ(seen, expected) << "epoch " << epoch;
    EXPECT_EQ(loader.cursor().epoch, epoch);
  }
}

TEST(DataLoader, SameSeedSameOrderOtherSeedOrEpochDiffers) {
  const std::string paths = two_shards();
  DataLoader a = open_loader(paths, 42), b = open_loader(paths, 42), c = open_loader(paths, 43);
  std::vector<int32_t> order_a = order_of(a, 3 * 19);
  EXPECT_EQ(order_a, order_of(b, 3 * 19));
  EXPECT_NE(order_a, order_of(c, 3 * 19));
  std::vector<int32_t> epoch0(order_a.begin(), order_a.begin() + 19);
  std::vector<int32_t> epoch1(order_a.begin() + 19, order_a.begin() + 38);
  EXPECT_NE(epoch0, epoch1);
  // The order is not simply the file order.
  std::vector<int32_t> sorted = epoch0;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_NE(epoch0, sorted);
}

TEST(DataLoader, DropsTheTailThatCannotFillABatch) {
  DataLoader loader = open_loader(two_shards(), 3);
  std::vector<int32_t> in(5 * kT), tgt(5 * kT);
  for (int step = 0; step < 3; ++step) loader.next_batch(5, 0, 5, in.data(), tgt.data());
  EXPECT_EQ(loader.cursor().epoch, 0);
  EXPECT_EQ(loader.cursor().position, 15);
  loader.next_batch(5, 0, 5, in.data(), tgt.data());  // 4 left < 5: epoch 1 starts
  EXPECT_EQ(loader.cursor().epoch, 1);
  EXPECT_EQ(loader.cursor().position, 5);
  EXPECT_EQ(in[0], loader.sequence_at(1, 0) < 12 ? loader.sequence_at(1, 0) * kT
                                                 : 10000 + (loader.sequence_at(1, 0) - 12) * kT);
}

TEST(DataLoader, DataParallelSlicesEqualTheSingleRankBatch) {
  const std::string paths = two_shards();
  for (int dp_size : {2, 3, 4}) {
    const int64_t b = 2, global_batch = dp_size * b;
    std::vector<DataLoader> single, ranks;
    single.push_back(open_loader(paths, 11));
    for (int r = 0; r < dp_size; ++r) ranks.push_back(open_loader(paths, 11));
    for (int step = 0; step < 12; ++step) {  // crosses several epoch boundaries
      ASSERT_EQ(batch_starts(ranks, global_batch), batch_starts(single, global_batch))
          << "dp " << dp_size << " step " << step;
      for (const DataLoader& r : ranks) {
        EXPECT_EQ(r.cursor().epoch, single[0].cursor().epoch);
        EXPECT_EQ(r.cursor().position, single[0].cursor().position);
      }
    }
  }
}

TEST(DataLoader, CursorRestoreContinuesTheSameSequences) {
  const std::string paths = two_shards();
  DataLoader first = open_loader(paths, 5);
  std::vector<int32_t> in(4 * kT), tgt(4 * kT);
  for (int step = 0; step < 6; ++step) first.next_batch(4, 0, 4, in.data(), tgt.data());
  const LoaderCursor saved = first.cursor();
  EXPECT_EQ(saved.epoch, 1);
  std::vector<DataLoader> a, b;
  a.push_back(std::move(first));
  b.push_back(open_loader(paths, 5));  // a fresh process resuming from the checkpoint
  b[0].set_cursor(saved);
  for (int step = 0; step < 8; ++step) {
    ASSERT_EQ(batch_starts(a, 4), batch_starts(b, 4)) << "step " << step;
  }
}

TEST(DataLoader, TooFewSequencesForTheBatchIsAnError) {
  const std::string paths = two_shards();
  DataLoader loader = open_loader(paths, 1);
  core::Status st = loader.validate_batch(20);
  ASSERT_FALSE(st.is_ok());
  EXPECT_EQ(st.message(), "data '" + paths +
                              "': 158 tokens hold 19 sequences of T + 1 = 9 tokens, fewer than "
                              "the global batch of 20; use more data, a smaller batch or a "
                              "shorter sequence length");
  EXPECT_TRUE(loader.validate_batch(19).is_ok());
  std::vector<int32_t> in(20 * kT), tgt(20 * kT);
  EXPECT_THROW(loader.next_batch(20, 0, 20, in.data(), tgt.data()), Error);
}

TEST(DataLoader, OpenErrorsNameTheData) {
  const std::string paths = two_shards();
  core::Result<DataLoader> bad_t = DataLoader::open(paths, 0, 1);
  ASSERT_FALSE(bad_t.is_ok());
  EXPECT_NE(bad_t.status().message().find("sequence length T = 0 must be positive"),
            std::string::npos);

  core::Result<DataLoader> missing = DataLoader::open(paths + ",/nonexistent/c.bin", kT, 1);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("data file '/nonexistent/c.bin': cannot open"),
            std::string::npos)
      << missing.status().message();

  const std::string small = temp_path("small.bin");
  ASSERT_TRUE(write_token_shard(small, {1, 2, 3}, 10).is_ok());
  core::Result<DataLoader> too_short = DataLoader::open(small, kT, 1);
  ASSERT_FALSE(too_short.is_ok());
  EXPECT_EQ(too_short.status().message(),
            "data '" + small +
                "': 3 tokens hold no sequence of T + 1 = 9 tokens; use more data "
                "or a shorter sequence length");

  core::Result<DataLoader> empty_entry = DataLoader::open(small + ",", kT, 1);
  ASSERT_FALSE(empty_entry.is_ok());
  EXPECT_NE(empty_entry.status().message().find("empty entry"), std::string::npos);
}

}  // namespace
}  // namespace tessera::data
