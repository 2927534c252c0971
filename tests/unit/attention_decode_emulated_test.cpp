// The CUDA decode attention kernel (generation and serving on the GPU), compiled for the host and
// run under the emulation of the CUDA execution model (emulated_cuda.h), against the CPU backend's
// attention_decode on the same paged cache: rows of different slots at different positions
// (position 0, inside the first block, past a block boundary, and past 1024 so the kernel's online
// softmax spans two tiles of scores, the second holding the largest score), slots whose block
// tables are shuffled, at 1e-5. A row's result
// must not depend on its batch: each row alone gives the same bits as in the batch.
#include <gtest/gtest.h>

// The emulation first: it defines the CUDA keywords the kernel's header uses.
// clang-format off
#include "emulated_cuda.h"
#include "backends/cuda/decode_kernels.cuh"
// clang-format on

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/attention_decode.h"
#include "backends/kv_pages.h"

namespace tessera::backends::cuda::decode_kernels {
namespace {

namespace emu = tessera::testing::emulated_cuda;

double rel_error(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    num += (double{got[i]} - want[i]) * (double{got[i]} - want[i]);
    den += double{want[i]} * want[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

TEST(AttentionDecodeEmulated, MatchesTheCpuKernelOnAPagedCache) {
  constexpr int64_t C = 64, NH = 2, HS = C / NH, block_size = 16, blocks_per_slot = 72;
  constexpr int64_t n_slots = 3, n_blocks = n_slots * blocks_per_slot;  // 1152 positions a slot
  std::mt19937 gen(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> k_cache(n_blocks * block_size * C), v_cache(k_cache.size());
  for (float& x : k_cache) x = dist(gen);
  for (float& x : v_cache) x = dist(gen);
  // Each slot's blocks, shuffled over the pool.
  std::vector<int32_t> table(n_slots * blocks_per_slot);
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), gen);
  const KvPages pages{table.data(), blocks_per_slot, block_size};

  const std::vector<int32_t> slots = {0, 2, 1, 2}, positions = {0, 9, 40, 1100};
  const auto N = static_cast<int64_t>(slots.size());
  std::vector<float> qkv(N * 3 * C);
  for (float& x : qkv) x = dist(gen);
  // The last row's largest score in its second tile (position 1090 > 1024): its key is 3 q, so
  // the running max moves and the first tile's sums must be rescaled.
  const int64_t row1090 =
      int64_t{table[2 * blocks_per_slot + 1090 / block_size]} * block_size + 1090 % block_size;
  for (int64_t c = 0; c < C; ++c) k_cache[row1090 * C + c] = 3.0f * qkv[3 * 3 * C + c];

  std::vector<float> want(N * C);
  cpu::attention_decode(want.data(), qkv.data(), k_cache.data(), v_cache.data(), pages,
                        slots.data(), positions.data(), N, C, NH);

  // One block per (row, head), kThreads threads; dynamic shared memory 2 * HS floats.
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  auto run = [&](int64_t rows, const int32_t* s, const int32_t* p, const float* q, float* out) {
    return emu::launch(emu::dim3(static_cast<unsigned>(rows * NH)), kThreads, [&] {
      attention_decode_kernel(out, q, k_cache.data(), v_cache.data(), table.data(), blocks_per_slot,
                              block_size, s, p, C, NH, HS, scale);
    });
  };
  std::vector<float> got(N * C, std::numeric_limits<float>::quiet_NaN());
  for (const std::string& e : run(N, slots.data(), positions.data(), qkv.data(), got.data())) {
    ADD_FAILURE() << e;
  }
  EXPECT_LE(rel_error(got, want), 1e-5);
  for (int64_t i = 0; i < N; ++i) {
    std::vector<float> row(C, std::numeric_limits<float>::quiet_NaN());
    for (const std::string& e :
         run(1, slots.data() + i, positions.data() + i, qkv.data() + i * 3 * C, row.data())) {
      ADD_FAILURE() << e;
    }
    EXPECT_TRUE(std::equal(row.begin(), row.end(), got.begin() + i * C))
        << "row " << i << " alone differs from the row in the batch";
  }
}

}  // namespace
}  // namespace tessera::backends::cuda::decode_kernels
