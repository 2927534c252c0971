// Device plumbing: selection and description, DeviceBuffer round trips and moves, DeviceArena
// offsets (256-byte aligned, non-overlapping, full-arena and out-of-memory errors), copies on an
// owned stream, zeroing, and Event ordering and timing.
#include "backends/cuda/device.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "cuda_test_util.h"

namespace tessera::backends::cuda {
namespace {

namespace tt = tessera::testing;

bool aligned_256(const void* p) { return reinterpret_cast<uintptr_t>(p) % 256 == 0; }

TEST(CudaDevice, CountSelectAndDescribe) {
  ASSERT_GE(device_count(), 1);
  const core::Status st = select_device(0, 1);
  ASSERT_TRUE(st.is_ok()) << st.message();
  // Local rank 3 of 4 wraps onto the devices there are.
  const core::Status wrapped = select_device(3, 4);
  ASSERT_TRUE(wrapped.is_ok()) << wrapped.message();
  int current = -1;
  TESSERA_CUDA_CHECK(cudaGetDevice(&current), "reading the current device");
  EXPECT_EQ(current, 3 % device_count());
  ASSERT_TRUE(select_device(0, 1).is_ok());
  const std::string d = describe_device();
  EXPECT_NE(d.find("cuda:0"), std::string::npos) << d;
  EXPECT_NE(d.find("sm_"), std::string::npos) << d;
}

TEST(CudaDevice, SelectRejectsALocalRankOutOfRange) {
  for (auto [local_rank, local_size] : {std::pair{2, 2}, std::pair{-1, 4}, std::pair{0, 0}}) {
    const core::Status st = select_device(local_rank, local_size);
    ASSERT_FALSE(st.is_ok()) << local_rank << " of " << local_size;
    EXPECT_NE(st.message().find("local rank " + std::to_string(local_rank)), std::string::npos)
        << st.message();
  }
}

TEST(CudaDevice, BufferRoundTripOnAnOwnedStreamAndMove) {
  const auto host = tt::random_floats(1000, 11);
  DeviceBuffer buf(host.size() * sizeof(float));
  EXPECT_EQ(buf.bytes(), host.size() * sizeof(float));
  EXPECT_TRUE(aligned_256(buf.data()));
  DeviceStream stream;
  copy_to_device_sync(buf.data(), host.data(), buf.bytes(), stream.get());

  DeviceBuffer moved(std::move(buf));
  EXPECT_EQ(buf.data(), nullptr);  // NOLINT(bugprone-use-after-move): checking the moved-from state
  EXPECT_EQ(buf.bytes(), 0u);
  std::vector<float> back(host.size(), NAN);
  copy_to_host_sync(back.data(), moved.as<float>(), moved.bytes(), stream.get());
  EXPECT_EQ(back, host);

  DeviceBuffer assigned;
  assigned = std::move(moved);
  std::vector<float> again(host.size(), NAN);
  copy_to_host(again.data(), assigned.data(), assigned.bytes(), stream.get());  // async variant
  stream.synchronize();
  EXPECT_EQ(again, host);
}

TEST(CudaDevice, FillZeroClearsEveryByte) {
  const auto host = tt::random_floats(777, 12);
  DeviceBuffer buf(host.size() * sizeof(float));
  DeviceStream stream;
  copy_to_device(buf.data(), host.data(), buf.bytes(), stream.get());
  fill_zero(buf.data(), buf.bytes(), stream.get());
  std::vector<float> back(host.size(), NAN);
  copy_to_host_sync(back.data(), buf.data(), buf.bytes(), stream.get());
  EXPECT_EQ(back, std::vector<float>(host.size(), 0.0f));
}

TEST(CudaDevice, AlignUpRoundsToTheArenaAlignment) {
  EXPECT_EQ(kArenaAlignment, 256u);
  EXPECT_EQ(align_up(0), 0u);
  EXPECT_EQ(align_up(1), 256u);
  EXPECT_EQ(align_up(256), 256u);
  EXPECT_EQ(align_up(257), 512u);
}

TEST(CudaDevice, ArenaHandsOutAlignedNonOverlappingOffsets) {
  // Tensors of 100, 1, 256, 0 and 300 bytes need 256 + 256 + 256 + 0 + 512 bytes.
  const size_t sizes[] = {100, 1, 256, 0, 300};
  const size_t expected_offsets[] = {0, 256, 512, 768, 768};
  size_t capacity = 0;
  for (size_t s : sizes) capacity += align_up(s);
  ASSERT_EQ(capacity, 1280u);
  auto arena = DeviceArena::create(capacity, "test arena");
  ASSERT_TRUE(arena.is_ok()) << arena.status().message();
  EXPECT_EQ(arena->capacity(), capacity);
  EXPECT_EQ(arena->name(), "test arena");
  std::vector<size_t> offsets;
  for (size_t i = 0; i < std::size(sizes); ++i) {
    auto off = arena->reserve(sizes[i], "tensor " + std::to_string(i));
    ASSERT_TRUE(off.is_ok()) << off.status().message();
    EXPECT_EQ(*off, expected_offsets[i]) << "tensor " << i;
    EXPECT_TRUE(aligned_256(arena->at(*off))) << "tensor " << i;
    EXPECT_EQ(arena->view<char>(*off), static_cast<char*>(arena->base()) + *off);
    offsets.push_back(*off);
  }
  EXPECT_EQ(arena->used(), 768u + 300u);

  // Full: one more byte does not fit; the message names the arena, the tensor and the fix.
  auto full = arena->reserve(1, "one byte too many");
  ASSERT_FALSE(full.is_ok());
  const std::string m = full.status().message();
  EXPECT_NE(m.find("test arena"), std::string::npos) << m;
  EXPECT_NE(m.find("one byte too many"), std::string::npos) << m;
  EXPECT_NE(m.find("align_up"), std::string::npos) << m;

  // Views do not overlap: fill each non-empty tensor with its own pattern, read all back.
  std::vector<std::vector<float>> patterns;
  for (size_t i = 0; i < std::size(sizes); ++i) {
    patterns.push_back(tt::random_floats(sizes[i] / sizeof(float), 20 + i));
    if (patterns[i].empty()) continue;
    copy_to_device_sync(arena->view<float>(offsets[i]), patterns[i].data(),
                        patterns[i].size() * sizeof(float), nullptr);
  }
  for (size_t i = 0; i < std::size(sizes); ++i) {
    if (patterns[i].empty()) continue;
    std::vector<float> back(patterns[i].size(), NAN);
    copy_to_host_sync(back.data(), arena->view<float>(offsets[i]), back.size() * sizeof(float),
                      nullptr);
    EXPECT_EQ(back, patterns[i]) << "tensor " << i;
  }

  // Moving the arena keeps the memory and the plan.
  DeviceArena moved = std::move(*arena);
  EXPECT_EQ(moved.capacity(), capacity);
  EXPECT_EQ(moved.used(), 768u + 300u);
  std::vector<float> back(patterns[4].size(), NAN);
  copy_to_host_sync(back.data(), moved.view<float>(offsets[4]), back.size() * sizeof(float),
                    nullptr);
  EXPECT_EQ(back, patterns[4]);
}

TEST(CudaDevice, ArenaTooLargeForTheDeviceIsAStatusNotACrash) {
  auto arena = DeviceArena::create(size_t{1} << 60, "huge");
  ASSERT_FALSE(arena.is_ok());
  const std::string m = arena.status().message();
  EXPECT_NE(m.find("huge"), std::string::npos) << m;
  EXPECT_NE(m.find("cannot allocate"), std::string::npos) << m;
  EXPECT_NE(m.find("cudaErrorMemoryAllocation"), std::string::npos) << m;
  // The failure left no sticky error behind.
  EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  DeviceBuffer after(64);
  EXPECT_NE(after.data(), nullptr);
}

TEST(CudaDevice, EventOrdersTwoStreamsAndTimesNonNegative) {
  const size_t n = size_t{1} << 22;  // 16 MiB of floats: copies long enough to race if unordered
  const auto host = tt::random_floats(n, 13);
  DeviceBuffer buf(n * sizeof(float));
  DeviceStream producer, consumer;
  Event start, stop, ready(/*timing=*/false);
  start.record(producer.get());
  copy_to_device(buf.data(), host.data(), buf.bytes(), producer.get());
  ready.record(producer.get());
  stop.record(producer.get());
  // The consumer's read must wait for the producer's copy.
  ready.wait(consumer.get());
  std::vector<float> back(n, NAN);
  copy_to_host_sync(back.data(), buf.data(), buf.bytes(), consumer.get());
  EXPECT_EQ(back, host);
  const float ms = Event::elapsed_ms(start, stop);
  EXPECT_TRUE(std::isfinite(ms));
  EXPECT_GE(ms, 0.0f);
  ready.synchronize();

  Event moved(std::move(start));
  EXPECT_EQ(start.get(), nullptr);  // NOLINT(bugprone-use-after-move)
  EXPECT_NE(moved.get(), nullptr);
}

}  // namespace
}  // namespace tessera::backends::cuda
