// NcclCommunicator on device memory under mpirun (1, 2, 4 ranks; ranks may share a GPU): every
// verb's result (ZeRO-1's sharded pieces too) against values derived from rank numbers, exact
// (small integers are exact in float and bf16), plus ordering after the compute stream, a
// sub-communicator, and the error path (an NCCL error aborts the communicator and throws).
#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "../cuda/cuda_test_util.h"
#include "core/error.h"

namespace tessera::parallel {
namespace {

using testing::DeviceArray;

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

int world_size() {
  int s = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &s);
  return s;
}

// bf16 bits of f (round to nearest even; the test values are exact anyway) and back.
uint16_t to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  bits += 0x7FFFu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// 1 + 2 + ... + n.
int triangle(int n) { return n * (n + 1) / 2; }

// An odd count, not a multiple of any NCCL chunk or warp size.
constexpr int64_t kCount = 1003;

TEST(NcclCommunicator, RankAndSizeAreTheMpiOnes) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  EXPECT_EQ(comm.rank(), world_rank());
  EXPECT_EQ(comm.size(), world_size());
  EXPECT_EQ(comm.name(), "world");
}

TEST(NcclCommunicator, AllReduceSumAndMaxOfFloats) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  std::vector<float> sum_in(kCount), max_in(kCount);
  for (int64_t i = 0; i < kCount; ++i) {
    sum_in[i] = static_cast<float>((r + 1) * (i % 17 + 1));
    max_in[i] = static_cast<float>(r * 1000 + i);
  }
  DeviceArray<float> sum_buf(sum_in), max_buf(max_in);
  comm.all_reduce_sum(sum_buf.get(), kCount);
  comm.all_reduce_max(max_buf.get(), kCount);
  std::vector<float> sum_expected(kCount), max_expected(kCount);
  for (int64_t i = 0; i < kCount; ++i) {
    sum_expected[i] = static_cast<float>(triangle(n) * (i % 17 + 1));
    max_expected[i] = static_cast<float>((n - 1) * 1000 + i);
  }
  EXPECT_EQ(sum_buf.download(), sum_expected);
  EXPECT_EQ(max_buf.download(), max_expected);
}

TEST(NcclCommunicator, AllReduceSumOfDoubles) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  std::vector<double> in(kCount), expected(kCount);
  for (int64_t i = 0; i < kCount; ++i) {
    in[i] = 0.5 * (r + 1) + static_cast<double>(i);
    expected[i] = 0.5 * triangle(n) + static_cast<double>(n) * i;
  }
  DeviceArray<double> buf(in);
  comm.all_reduce(buf.get(), kCount, ReduceOp::kSum);
  EXPECT_EQ(buf.download(), expected);
}

TEST(NcclCommunicator, AllReduceAvgIsTheSumOverSize) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  std::vector<float> in(kCount);
  for (int64_t i = 0; i < kCount; ++i) in[i] = static_cast<float>(r + i % 100);
  DeviceArray<float> buf(in);
  comm.all_reduce_avg(buf.get(), kCount);
  const auto out = buf.download();
  // Mean of r + c over r = 0..n-1 is (n-1)/2 + c; NCCL may pre-scale by 1/n, so allow rounding.
  int64_t wrong = 0;
  for (int64_t i = 0; i < kCount; ++i) {
    const double expected = 0.5 * (n - 1) + static_cast<double>(i % 100);
    wrong += !(std::fabs(out[i] - expected) <= 1e-5 * (1.0 + expected));
  }
  EXPECT_EQ(wrong, 0);
}

TEST(NcclCommunicator, AllGatherPlacesRankIAtBlockI) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  const int64_t count = 37;
  std::vector<float> send(count), expected(n * count);
  for (int64_t i = 0; i < count; ++i) send[i] = static_cast<float>(r * 100 + i);
  for (int j = 0; j < n; ++j) {
    for (int64_t i = 0; i < count; ++i) expected[j * count + i] = static_cast<float>(j * 100 + i);
  }
  DeviceArray<float> send_dev(send), recv(n * count);
  recv.poison();
  comm.all_gather(recv.get(), send_dev.get(), count);
  EXPECT_EQ(recv.download(), expected) << "out of place";

  // In place: this rank's block of recv is its send buffer.
  DeviceArray<float> in_place(n * count);
  in_place.poison();
  TESSERA_CUDA_CHECK(cudaMemcpy(in_place.get() + r * count, send.data(), count * sizeof(float),
                                cudaMemcpyHostToDevice),
                     "filling this rank's block");
  comm.all_gather(in_place.get(), in_place.get() + r * count, count);
  EXPECT_EQ(in_place.download(), expected) << "in place";
}

TEST(NcclCommunicator, ReduceScatterGivesRankIItsBlockSum) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  const int64_t count = 41;
  // send[j * count + i] on rank s = (s + 1) * (j + 1) + i; rank j receives
  // sum_s ((s + 1) * (j + 1) + i) = (j + 1) * n(n+1)/2 + n * i.
  std::vector<float> send(n * count), expected(count);
  for (int j = 0; j < n; ++j) {
    for (int64_t i = 0; i < count; ++i) {
      send[j * count + i] = static_cast<float>((r + 1) * (j + 1) + i);
    }
  }
  for (int64_t i = 0; i < count; ++i) {
    expected[i] = static_cast<float>((r + 1) * triangle(n) + n * i);
  }
  DeviceArray<float> send_dev(send), recv(count);
  recv.poison();
  comm.reduce_scatter(recv.get(), send_dev.get(), count);
  EXPECT_EQ(recv.download(), expected);
}

// The blocked pair (sequence parallelism: a block per sequence, one NCCL group per call).
TEST(NcclCommunicator, BlockedAllGatherAndReduceScatterPlaceEveryBlock) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  const int64_t blocks = 3, count = 29;
  std::vector<float> send(blocks * count), gathered(blocks * n * count);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t i = 0; i < count; ++i)
      send[b * count + i] = static_cast<float>(1000 * b + 100 * r + i);
    for (int j = 0; j < n; ++j) {
      for (int64_t i = 0; i < count; ++i) {
        gathered[(b * n + j) * count + i] = static_cast<float>(1000 * b + 100 * j + i);
      }
    }
  }
  DeviceArray<float> send_dev(send), recv(blocks * n * count);
  recv.poison();
  comm.all_gather_blocks(recv.get(), send_dev.get(), blocks, count);
  EXPECT_EQ(recv.download(), gathered);

  // Every rank reduce-scatters the gathered buffer: rank j's block b = n * (its piece of b).
  DeviceArray<float> mine(blocks * count);
  mine.poison();
  comm.reduce_scatter_blocks(mine.get(), recv.get(), blocks, count);
  std::vector<float> expected(blocks * count);
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t i = 0; i < count; ++i)
      expected[b * count + i] = n * static_cast<float>(1000 * b + 100 * r + i);
  }
  EXPECT_EQ(mine.download(), expected);
}

// ZeRO-1's sharded pair (communicator.h's piece_of): counts below, at and above the size, a
// multiple of it (NCCL's own reduce-scatter / all-gather) and uneven ones (a grouped reduce or
// broadcast per piece): each rank's piece holds the sum in place, and the gather overwrites
// everything else (poisoned here) with the owners' values. Small integers: exact in any order.
TEST(NcclCommunicator, ShardedPiecesReduceScatterAndAllGatherInPlace) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  for (const int64_t count : {int64_t{1}, int64_t{3}, int64_t{4 * 37}, kCount}) {
    std::vector<float> in(count), expected(count);
    for (int64_t j = 0; j < count; ++j) {
      in[j] = static_cast<float>((r + 1) * (j % 7 + 1));
      expected[j] = static_cast<float>(triangle(n) * (j % 7 + 1));
    }
    DeviceArray<float> buf(in);
    comm.reduce_scatter_sum_async(buf.get(), count)->wait();
    const Piece mine = piece_of(count, n, r);
    std::vector<float> got = buf.download();
    for (int64_t j = mine.begin; j < mine.end; ++j) {
      ASSERT_EQ(got[j], expected[j]) << "count " << count << " j " << j;
    }
    for (int64_t j = 0; j < count; ++j) {
      if (j < mine.begin || j >= mine.end) got[j] = std::nanf("");
    }
    buf.upload(got);
    comm.all_gather_pieces(buf.get(), count);
    EXPECT_EQ(buf.download(), expected) << "count " << count;
  }
}

TEST(NcclCommunicator, BroadcastFloatsAndBytesFromARoot) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  const int root = n - 1;
  std::vector<float> floats(kCount), floats_expected(kCount);
  for (int64_t i = 0; i < kCount; ++i) {
    floats[i] = static_cast<float>(r * 10 + i);
    floats_expected[i] = static_cast<float>(root * 10 + i);
  }
  DeviceArray<float> floats_dev(floats);
  comm.broadcast(floats_dev.get(), kCount, root);
  EXPECT_EQ(floats_dev.download(), floats_expected);

  const int64_t bytes = 1001;
  std::vector<uint8_t> raw(bytes), raw_expected(bytes);
  for (int64_t i = 0; i < bytes; ++i) {
    raw[i] = static_cast<uint8_t>(i * 7 + r);
    raw_expected[i] = static_cast<uint8_t>(i * 7);  // root 0
  }
  DeviceArray<uint8_t> raw_dev(raw);
  comm.broadcast_bytes(raw_dev.get(), bytes, 0);
  EXPECT_EQ(raw_dev.download(), raw_expected);
}

TEST(NcclCommunicator, BarrierCompletesAndLeavesTheCommunicatorUsable) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  EXPECT_NO_THROW(comm.barrier());
  EXPECT_NO_THROW(comm.barrier());
  DeviceArray<float> one(std::vector<float>{1.0f});
  comm.all_reduce_sum(one.get(), 1);
  EXPECT_EQ(one.download(), std::vector<float>{static_cast<float>(comm.size())});
}

TEST(NcclCommunicator, AsyncSumsInF32AndBf16CompleteInAnyWaitOrder) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  std::vector<float> f32(kCount), f32_expected(kCount);
  std::vector<uint16_t> bf16(kCount), bf16_expected(kCount);
  for (int64_t i = 0; i < kCount; ++i) {
    // At most 4 * 5 per rank and 10 * 5 summed: integers bf16 holds exactly.
    f32[i] = static_cast<float>((r + 1) * (i % 5 + 1));
    f32_expected[i] = static_cast<float>(triangle(n) * (i % 5 + 1));
    bf16[i] = to_bf16(static_cast<float>((r + 1) * (i % 5 + 1)));
    bf16_expected[i] = to_bf16(static_cast<float>(triangle(n) * (i % 5 + 1)));
  }
  ASSERT_EQ(from_bf16(bf16_expected[4]), static_cast<float>(triangle(n) * 5));
  DeviceArray<float> f32_dev(f32);
  DeviceArray<uint16_t> bf16_dev(bf16);
  auto first = comm.all_reduce_sum_async(f32_dev.get(), kCount, WireType::kF32);
  auto second = comm.all_reduce_sum_async(bf16_dev.get(), kCount, WireType::kBF16);
  second->wait();
  while (!first->test()) {
  }
  EXPECT_TRUE(first->test());  // stays complete
  EXPECT_EQ(f32_dev.download(), f32_expected);
  EXPECT_EQ(bf16_dev.download(), bf16_expected);
}

TEST(NcclCommunicator, DestroyingAnUnfinishedRequestWaitsForIt) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  std::vector<float> in(kCount, static_cast<float>(r + 1));
  DeviceArray<float> buf(in);
  comm.all_reduce_sum_async(buf.get(), kCount, WireType::kF32).reset();
  EXPECT_EQ(buf.download(), std::vector<float>(kCount, static_cast<float>(triangle(n))));
}

// The collective must see what the compute stream wrote before the call: a large host-to-device
// copy enqueued on a user stream, then an all-reduce at once. Without the ordering event NCCL
// would read the poisoned (NaN) buffer while the copy is still running.
TEST(NcclCommunicator, CollectivesRunAfterTheComputeStream) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  const int r = comm.rank(), n = comm.size();
  const int64_t count = int64_t{1} << 24;  // 64 MiB: the copy takes milliseconds
  float* host = nullptr;
  TESSERA_CUDA_CHECK(cudaMallocHost(&host, count * sizeof(float)), "allocating pinned memory");
  for (int64_t i = 0; i < count; ++i) host[i] = static_cast<float>((r + 1) * (i % 3 + 1));
  cudaStream_t compute = nullptr;
  TESSERA_CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), "a stream");
  comm.set_compute_stream(compute);
  EXPECT_EQ(comm.compute_stream(), compute);
  {
    DeviceArray<float> buf(count);
    buf.poison();  // on the legacy stream, which a non-blocking stream does not wait for
    TESSERA_CUDA_CHECK(cudaDeviceSynchronize(), "finishing the poisoning");
    TESSERA_CUDA_CHECK(
        cudaMemcpyAsync(buf.get(), host, count * sizeof(float), cudaMemcpyHostToDevice, compute),
        "copying on the compute stream");
    comm.all_reduce_sum(buf.get(), count);
    const auto out = buf.download();
    int64_t wrong = 0;
    for (int64_t i = 0; i < count; ++i) {
      wrong += out[i] != static_cast<float>(triangle(n) * (i % 3 + 1));
    }
    EXPECT_EQ(wrong, 0);
  }
  comm.set_compute_stream(nullptr);
  cudaStreamDestroy(compute);
  cudaFreeHost(host);
}

// Two NCCL communicators at once: world, and even/odd world ranks (the shape of dp and tp
// groups), each summing world ranks over its own members.
TEST(NcclCommunicator, SubCommunicatorReducesOverItsMembersOnly) {
  NcclCommunicator world(MPI_COMM_WORLD, "world");
  const int r = world_rank(), n = world_size();
  MPI_Comm half = MPI_COMM_NULL;
  ASSERT_EQ(MPI_Comm_split(MPI_COMM_WORLD, r % 2, r, &half), MPI_SUCCESS);
  {
    NcclCommunicator group(half, "half");
    int expected_sum = 0, expected_size = 0;
    for (int s = r % 2; s < n; s += 2) {
      expected_sum += s;
      ++expected_size;
    }
    EXPECT_EQ(group.size(), expected_size);
    EXPECT_EQ(group.rank(), r / 2);
    DeviceArray<float> in_group(std::vector<float>{static_cast<float>(r)});
    DeviceArray<float> in_world(std::vector<float>{static_cast<float>(r)});
    group.all_reduce_sum(in_group.get(), 1);
    world.all_reduce_sum(in_world.get(), 1);
    EXPECT_EQ(in_group.download(), std::vector<float>{static_cast<float>(expected_sum)});
    EXPECT_EQ(in_world.download(), std::vector<float>{static_cast<float>(triangle(n - 1))});
  }
  MPI_Comm_free(&half);
}

// Every rank passes the same bad root, so every rank gets NCCL's invalid-argument error: the
// communicator aborts, the Error names the call and NCCL's reason, and further use is refused.
TEST(NcclCommunicator, AnNcclErrorAbortsTheCommunicatorAndThrows) {
  NcclCommunicator comm(MPI_COMM_WORLD, "world");
  DeviceArray<float> buf(std::vector<float>(8, 1.0f));
  try {
    comm.broadcast(buf.get(), 8, comm.size() + 3);
    FAIL() << "no throw for root " << comm.size() + 3;
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("ncclBroadcast"), std::string::npos) << m;
    EXPECT_NE(m.find("broadcasting floats over NCCL"), std::string::npos) << m;
    EXPECT_NE(m.find("aborted"), std::string::npos) << m;
  }
  EXPECT_THROW(comm.barrier(), Error);
}

}  // namespace
}  // namespace tessera::parallel
