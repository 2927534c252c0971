// MpiCommunicator verbs over MPI_COMM_WORLD at any world size: expected values are derived from
// rank numbers; the chunked paths (counts above one MPI call's limit) are run with a lowered limit.
#include "parallel/communicator.h"

#include <gtest/gtest.h>
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "mpi_test_util.h"
#include "parallel/timeline.h"

namespace tessera::parallel {
namespace {

using tessera::testing::world_rank;
using tessera::testing::world_size;

// bf16 of a float that bf16 represents exactly (the top 16 bits).
uint16_t exact_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  EXPECT_EQ(bits & 0xFFFFu, 0u) << f << " is not exactly a bf16 value";
  return static_cast<uint16_t>(bits >> 16);
}

float bf16_value(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Runs each test twice over world communicators: one MPI call per verb, and a per-call limit of 3
// elements so that every verb takes its chunked path (count 10 in chunks of 3).
class CommunicatorVerbs : public ::testing::Test {
 protected:
  CommunicatorVerbs() {
    comms_.push_back(std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world"));
    comms_.push_back(std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, "world"));
    comms_.back()->set_max_elements_per_call(3);
  }
  std::vector<std::unique_ptr<MpiCommunicator>> comms_;
  const int world_rank_ = world_rank();
  const int world_size_ = world_size();
  const int64_t count_ = 10;
  // Sum over ranks of r: size (size - 1) / 2.
  const double rank_sum_ = world_size_ * (world_size_ - 1) / 2.0;
};

TEST_F(CommunicatorVerbs, RankAndSizeMatchTheWorld) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    EXPECT_EQ(comm->rank(), world_rank_);
    EXPECT_EQ(comm->size(), world_size_);
    EXPECT_EQ(comm->name(), "world");
    int result = MPI_UNEQUAL;
    MPI_Comm_compare(comm->comm(), MPI_COMM_WORLD, &result);
    EXPECT_EQ(result, MPI_CONGRUENT) << "the communicator is a duplicate, not the world itself";
  }
}

TEST_F(CommunicatorVerbs, AllReduceSumAddsEveryRanksValues) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    std::vector<float> buf(count_);
    for (int64_t i = 0; i < count_; ++i) buf[i] = static_cast<float>(world_rank_ + i);
    comm->all_reduce_sum(buf.data(), count_);
    for (int64_t i = 0; i < count_; ++i)
      EXPECT_EQ(buf[i], world_size_ * i + rank_sum_) << "i=" << i;
  }
}

TEST_F(CommunicatorVerbs, AllReduceMaxTakesTheLargest) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    // Even i: -rank (max 0); odd i: rank (max size - 1).
    std::vector<float> buf(count_);
    for (int64_t i = 0; i < count_; ++i)
      buf[i] = static_cast<float>(i % 2 ? world_rank_ : -world_rank_);
    comm->all_reduce_max(buf.data(), count_);
    for (int64_t i = 0; i < count_; ++i)
      EXPECT_EQ(buf[i], i % 2 ? world_size_ - 1 : 0) << "i=" << i;
  }
}

TEST_F(CommunicatorVerbs, AllReduceDoubleKeepsDoublePrecision) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    // 1 + rank * 2^-40 is not a float; the sum size + 2^-40 rank_sum is exact in double.
    std::vector<double> buf(count_);
    for (int64_t i = 0; i < count_; ++i) buf[i] = i + 1.0 + world_rank_ * std::ldexp(1.0, -40);
    comm->all_reduce(buf.data(), count_, ReduceOp::kSum);
    for (int64_t i = 0; i < count_; ++i) {
      EXPECT_EQ(buf[i], world_size_ * (i + 1.0) + rank_sum_ * std::ldexp(1.0, -40)) << "i=" << i;
    }
    std::vector<double> mx(count_, static_cast<double>(world_rank_));
    comm->all_reduce(mx.data(), count_, ReduceOp::kMax);
    for (double v : mx) EXPECT_EQ(v, world_size_ - 1.0);
  }
}

TEST_F(CommunicatorVerbs, AllReduceAvgDividesTheSumBySize) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    std::vector<float> buf(count_);
    for (int64_t i = 0; i < count_; ++i) buf[i] = static_cast<float>(2 * (world_rank_ + 1) + i);
    comm->all_reduce_avg(buf.data(), count_);
    // mean of 2 (r + 1) over r = size + 1.
    for (int64_t i = 0; i < count_; ++i)
      EXPECT_FLOAT_EQ(buf[i], world_size_ + 1.0f + i) << "i=" << i;
  }
}

TEST_F(CommunicatorVerbs, AllGatherPlacesRankIBlockAtI) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    std::vector<float> send(count_);
    for (int64_t j = 0; j < count_; ++j) send[j] = static_cast<float>(100 * world_rank_ + j);
    std::vector<float> recv(world_size_ * count_, -1.0f);
    comm->all_gather(recv.data(), send.data(), count_);
    for (int i = 0; i < world_size_; ++i) {
      for (int64_t j = 0; j < count_; ++j) {
        EXPECT_EQ(recv[i * count_ + j], 100.0f * i + j) << "block " << i << " element " << j;
      }
    }
  }
}

TEST_F(CommunicatorVerbs, AllGatherInPlace) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    std::vector<float> buf(world_size_ * count_, -1.0f);
    for (int64_t j = 0; j < count_; ++j)
      buf[world_rank_ * count_ + j] = static_cast<float>(100 * world_rank_ + j);
    comm->all_gather(buf.data(), buf.data() + world_rank_ * count_, count_);
    for (int i = 0; i < world_size_; ++i) {
      for (int64_t j = 0; j < count_; ++j) {
        EXPECT_EQ(buf[i * count_ + j], 100.0f * i + j) << "block " << i << " element " << j;
      }
    }
  }
}

TEST_F(CommunicatorVerbs, ReduceScatterGivesRankIItsBlockSummed) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    // send[i * count + j] on rank r = 1000 r + 10 i + j; recv[j] on rank i = sum over r.
    std::vector<float> send(world_size_ * count_);
    for (int i = 0; i < world_size_; ++i) {
      for (int64_t j = 0; j < count_; ++j)
        send[i * count_ + j] = 1000.0f * world_rank_ + 10.0f * i + j;
    }
    std::vector<float> recv(count_, -1.0f);
    comm->reduce_scatter(recv.data(), send.data(), count_);
    for (int64_t j = 0; j < count_; ++j) {
      EXPECT_EQ(recv[j], 1000.0 * rank_sum_ + world_size_ * (10.0 * world_rank_ + j)) << "j=" << j;
    }
  }
}

// The blocked pair (sequence parallelism's one call per mapping): 3 blocks of count floats.
// With the per-call limit of 3 both fall back to a chunked call per block.
TEST_F(CommunicatorVerbs, AllGatherBlocksPlacesRankIBlockBAtBSizePlusI) {
  const int64_t blocks = 3;
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call" : "chunks of 3 elements, a call per block");
    MpiCommunicator* comm = comms_[c].get();
    std::vector<float> send(blocks * count_);
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t j = 0; j < count_; ++j)
        send[b * count_ + j] = static_cast<float>(1000 * b + 100 * world_rank_ + j);
    }
    std::vector<float> recv(blocks * world_size_ * count_, -1.0f);
    comm->all_gather_blocks(recv.data(), send.data(), blocks, count_);
    for (int64_t b = 0; b < blocks; ++b) {
      for (int i = 0; i < world_size_; ++i) {
        for (int64_t j = 0; j < count_; ++j) {
          EXPECT_EQ(recv[(b * world_size_ + i) * count_ + j], 1000.0f * b + 100.0f * i + j)
              << "block " << b << " rank " << i << " element " << j;
        }
      }
    }
  }
}

TEST_F(CommunicatorVerbs, ReduceScatterBlocksGivesRankIItsPieceOfEveryBlockSummed) {
  const int64_t blocks = 3;
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call" : "chunks of 3 elements, a call per block");
    MpiCommunicator* comm = comms_[c].get();
    // send[(b size + i) count + j] on rank r = 10000 r + 1000 b + 10 i + j.
    std::vector<float> send(blocks * world_size_ * count_);
    for (int64_t b = 0; b < blocks; ++b) {
      for (int i = 0; i < world_size_; ++i) {
        for (int64_t j = 0; j < count_; ++j) {
          send[(b * world_size_ + i) * count_ + j] =
              10000.0f * world_rank_ + 1000.0f * b + 10.0f * i + j;
        }
      }
    }
    std::vector<float> recv(blocks * count_, -1.0f);
    comm->reduce_scatter_blocks(recv.data(), send.data(), blocks, count_);
    for (int64_t b = 0; b < blocks; ++b) {
      for (int64_t j = 0; j < count_; ++j) {
        EXPECT_EQ(recv[b * count_ + j],
                  10000.0 * rank_sum_ + world_size_ * (1000.0 * b + 10.0 * world_rank_ + j))
            << "block " << b << " element " << j;
      }
    }
  }
}

TEST_F(CommunicatorVerbs, BroadcastCopiesTheRootsBuffer) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    const int root = world_size_ - 1;  // non-zero whenever size > 1
    std::vector<float> buf(count_);
    for (int64_t i = 0; i < count_; ++i) buf[i] = static_cast<float>(world_rank_ * 100 + i);
    comm->broadcast(buf.data(), count_, root);
    for (int64_t i = 0; i < count_; ++i) EXPECT_EQ(buf[i], root * 100.0f + i) << "i=" << i;

    std::string text =
        "from rank " + std::to_string(world_rank_) + "!!";  // equal lengths below 10 ranks
    comm->broadcast_bytes(text.data(), static_cast<int64_t>(text.size()), root);
    EXPECT_EQ(text, "from rank " + std::to_string(root) + "!!");
  }
}

TEST_F(CommunicatorVerbs, AsyncF32SumCompletesThroughTestAndWait) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    std::vector<float> buf(count_);
    for (int64_t i = 0; i < count_; ++i) buf[i] = static_cast<float>(world_rank_ + 2 * i);
    auto request = comm->all_reduce_sum_async(buf.data(), count_, WireType::kF32);
    // test() must make progress on its own: poll (bounded) until done.
    bool done = false;
    for (int polls = 0; polls < 10000000 && !done; ++polls) done = request->test();
    EXPECT_TRUE(done) << "test() never reported completion";
    request->wait();  // a completed request waits for nothing
    EXPECT_TRUE(request->test());
    for (int64_t i = 0; i < count_; ++i)
      EXPECT_EQ(buf[i], rank_sum_ + world_size_ * 2.0 * i) << "i=" << i;
  }
}

TEST_F(CommunicatorVerbs, AsyncBf16SumIsWithinBf16Rounding) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    // Rank r contributes (i % 8) + r / 4 (exact in bf16); the exact sum size (i % 8) + rank_sum / 4
    // is below 64 with quarter steps, so bf16 (8 significant bits) holds it and every partial sum
    // exactly: the result must be exact whatever order MPI adds in.
    std::vector<uint16_t> buf(count_);
    for (int64_t i = 0; i < count_; ++i)
      buf[i] = exact_bf16(static_cast<float>(i % 8) + world_rank_ / 4.0f);
    auto request = comm->all_reduce_sum_async(buf.data(), count_, WireType::kBF16);
    request->wait();
    for (int64_t i = 0; i < count_; ++i) {
      const double expected = world_size_ * static_cast<double>(i % 8) + rank_sum_ / 4.0;
      EXPECT_EQ(bf16_value(buf[i]), expected) << "i=" << i;
    }

    // Rounding to nearest even: rank 0 holds {1, 1 + 2^-7}, rank 1 holds {2^-8, 2^-8}, other
    // ranks 0 (adding 0 is exact, so the order does not matter). 1 + 2^-8 is a tie between 1
    // (even) and 1 + 2^-7 (odd): it rounds to 1. 1 + 3 2^-8 is a tie between 1 + 2^-7 (odd) and
    // 1 + 2^-6 (even): it rounds up (truncation would give 1 + 2^-7).
    std::vector<uint16_t> ties(2, exact_bf16(0.0f));
    if (world_rank_ == 0) ties = {exact_bf16(1.0f), exact_bf16(1.0f + std::ldexp(1.0f, -7))};
    if (world_rank_ == 1)
      ties = {exact_bf16(std::ldexp(1.0f, -8)), exact_bf16(std::ldexp(1.0f, -8))};
    comm->all_reduce_sum_async(ties.data(), 2, WireType::kBF16)->wait();
    EXPECT_EQ(bf16_value(ties[0]), 1.0f);
    EXPECT_EQ(bf16_value(ties[1]),
              world_size_ > 1 ? 1.0f + std::ldexp(1.0f, -6) : 1.0f + std::ldexp(1.0f, -7));
  }
}

TEST_F(CommunicatorVerbs, DestroyingAPendingRequestWaitsForIt) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    std::vector<float> buf(count_, static_cast<float>(world_rank_));
    comm->all_reduce_sum_async(buf.data(), count_, WireType::kF32);  // destroyed at once
    for (float v : buf) EXPECT_EQ(v, rank_sum_);
  }
}

// Rank r arrives r * 50 ms late: no rank may leave the barrier before the last one has reached it.
// Every rank checks its own exit time against the latest arrival, on std::chrono::steady_clock
// (CLOCK_MONOTONIC: one clock for the processes of one node; Open MPI's MPI_Wtime counts from each
// process's MPI_Init, so it is not comparable across ranks).
double seconds_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

TEST_F(CommunicatorVerbs, BarrierReturnsOnEveryRank) {
  for (size_t c = 0; c < comms_.size(); ++c) {
    SCOPED_TRACE(c == 0 ? "one MPI call per verb" : "chunks of 3 elements");
    MpiCommunicator* comm = comms_[c].get();
    MPI_Barrier(MPI_COMM_WORLD);  // line the ranks up, then stagger them
    std::this_thread::sleep_for(std::chrono::milliseconds(50 * world_rank_));
    const double before = seconds_now();
    comm->barrier();
    const double after = seconds_now();
    double latest_before = 0.0;
    MPI_Allreduce(&before, &latest_before, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    EXPECT_GE(after, latest_before) << "rank " << world_rank_ << " left the barrier "
                                    << latest_before - after << " s before the last rank arrived";
  }
}

TEST_F(CommunicatorVerbs, RecordsEachCollectiveOnTheTimeline) {
  MpiCommunicator comm(MPI_COMM_WORLD, "world");
  Timeline timeline(world_rank());
  comm.set_timeline(&timeline);
  std::vector<float> buf(16, 1.0f);
  comm.all_reduce_sum(buf.data(), 16);
  auto request = comm.all_reduce_sum_async(buf.data(), 8, WireType::kF32);
  EXPECT_EQ(timeline.size(), 1u) << "an async event is recorded on completion";
  request->wait();
  EXPECT_EQ(timeline.size(), 2u);
  comm.barrier();
  comm.set_timeline(nullptr);
  comm.barrier();
  EXPECT_EQ(timeline.size(), 3u) << "no events once the timeline is unset";

  const std::string path =
      ::testing::TempDir() + "tessera_comm_timeline_" + std::to_string(world_rank()) + ".json";
  ASSERT_TRUE(timeline.write(path).is_ok());
  std::ifstream in(path);
  const nlohmann::json trace = nlohmann::json::parse(in);
  std::vector<nlohmann::json> events;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "X") events.push_back(e);
  }
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["name"], "world.all_reduce");
  EXPECT_EQ(events[0]["args"]["bytes"], 64);
  EXPECT_EQ(events[1]["name"], "world.all_reduce_async");
  EXPECT_EQ(events[1]["args"]["bytes"], 32);
  EXPECT_EQ(events[1]["args"]["wire"], "f32");
  EXPECT_EQ(events[2]["name"], "world.barrier");
  for (const auto& e : events) {
    EXPECT_EQ(e["cat"], "collective");
    EXPECT_EQ(e["tid"], static_cast<int>(Lane::kCommunication));
    EXPECT_EQ(e["pid"], world_rank());
  }
  std::remove(path.c_str());
}

}  // namespace
}  // namespace tessera::parallel
