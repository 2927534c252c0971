// The fused (flash) CUDA attention kernels, compiled for the host and run under an emulation of the
// CUDA execution model (emulated_cuda.h: a block's 128 threads as fibers, __syncthreads and warp
// shuffles as barriers), against the CPU attention kernels run in double: out, the softmax
// statistics and each of dq, dk, dv at 1e-5, at each head size the kernels take (32, 64, 128) and
// at lengths that end inside a block of 16 rows and a tile of 32 (T = 1, 17, 33, 37, 50, 66: up
// to 3 tiles, with scores large enough that the online max rescales across them). The
// emulation also fails a run in which lanes of a warp reach different shuffles, threads of a block
// reach __syncthreads unequally, or a shared array is read before it is written (NaN).
//
// The same source runs on GPUs (tests/cuda/flash_attention_test.cu); this test runs everywhere, so
// the kernels' indexing, masking, tiling and online softmax are checked in CI without a GPU. It
// does not check what only a GPU has: its memory model, the intrinsics' precision, speed.
#include <gtest/gtest.h>

// The emulation first: it defines the CUDA keywords the kernels' header uses.
// clang-format off
#include "emulated_cuda.h"
#include "backends/cuda/flash_attention_kernels.cuh"
// clang-format on

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backends/cpu/attention.h"
#include "core/bf16.h"

namespace tessera::backends::cuda::flash {
namespace {

namespace emu = tessera::testing::emulated_cuda;

struct Sizes {
  int64_t B, T, NH, HS;
  float scale;  // of the random inputs: larger scores exercise the online max's rescaling
};

double rel_error(const std::vector<float>& got, const std::vector<double>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i])) return INFINITY;
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}
// Part 0 (q), 1 (k) or 2 (v) of every row of a (rows, 3C) tensor.
template <typename T>
std::vector<T> part(const std::vector<T>& x, int64_t rows, int64_t C, int p) {
  std::vector<T> out(static_cast<size_t>(rows * C));
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t c = 0; c < C; ++c) out[i * C + c] = x[i * 3 * C + p * C + c];
  }
  return out;
}

template <int HS, typename In = float, typename Out = float>
std::vector<std::string> run_kernels(Out* out, float* stats, float* dqkv, float* d_rows,
                                     const In* qkv, const float* dout, const Sizes& s) {
  const int64_t C = s.NH * HS, T = s.T, NH = s.NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const emu::dim3 grid(static_cast<unsigned>((T + kRowsPerBlock - 1) / kRowsPerBlock),
                       static_cast<unsigned>(s.B * NH));
  std::vector<std::string> errors;
  for (const auto& kernel : std::vector<std::function<void()>>{
           [&] { flash_forward_kernel<HS, In, Out>(out, stats, qkv, T, C, NH, scale); },
           [&] {
             flash_backward_query_kernel<HS, In>(dqkv, d_rows, dout, qkv, stats, T, C, NH, scale);
           },
           [&] {
             flash_backward_key_value_kernel<HS, In>(dqkv, d_rows, dout, qkv, stats, T, C, NH,
                                                     scale);
           }}) {
    for (std::string& e : emu::launch(grid, kThreads, kernel)) errors.push_back(std::move(e));
  }
  return errors;
}

class FlashAttentionEmulated : public ::testing::TestWithParam<Sizes> {};

TEST_P(FlashAttentionEmulated, MatchesTheCpuKernelsInDouble) {
  const Sizes s = GetParam();
  const int64_t B = s.B, T = s.T, NH = s.NH, C = NH * s.HS;
  std::mt19937 gen(static_cast<uint32_t>(T * 131 + s.HS));
  std::normal_distribution<float> dist(0.0f, s.scale);
  std::vector<float> qkv(B * T * 3 * C), dout(B * T * C);
  for (float& x : qkv) x = dist(gen);
  for (float& x : dout) x = dist(gen);

  // Outputs and the workspace start NaN: an element no kernel writes fails.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> out(B * T * C, nan), stats(B * NH * T * 2, nan), dqkv(B * T * 3 * C, nan);
  std::vector<float> d_rows(B * NH * T, nan);
  std::vector<std::string> errors;
  switch (s.HS) {
    case 32:
      errors = run_kernels<32>(out.data(), stats.data(), dqkv.data(), d_rows.data(), qkv.data(),
                               dout.data(), s);
      break;
    case 64:
      errors = run_kernels<64>(out.data(), stats.data(), dqkv.data(), d_rows.data(), qkv.data(),
                               dout.data(), s);
      break;
    default:
      errors = run_kernels<128>(out.data(), stats.data(), dqkv.data(), d_rows.data(), qkv.data(),
                                dout.data(), s);
  }
  for (const std::string& e : errors) ADD_FAILURE() << e;

  const std::vector<double> qkv_d(qkv.begin(), qkv.end()), dout_d(dout.begin(), dout.end());
  std::vector<double> out_ref(B * T * C), stats_ref(B * NH * T * 2), dqkv_ref(B * T * 3 * C);
  std::vector<double> ws(cpu::attention_workspace_size(B, T, C, NH));
  cpu::attention_forward(out_ref.data(), stats_ref.data(), ws.data(), qkv_d.data(), B, T, C, NH);
  cpu::attention_backward(dqkv_ref.data(), ws.data(), dout_d.data(), qkv_d.data(), stats_ref.data(),
                          B, T, C, NH);
  constexpr double kTolerance = 1e-5;
  EXPECT_LE(rel_error(out, out_ref), kTolerance) << "out";
  EXPECT_LE(rel_error(stats, stats_ref), kTolerance) << "stats";
  const char* names[] = {"dq", "dk", "dv"};
  for (int p = 0; p < 3; ++p) {
    EXPECT_LE(rel_error(part(dqkv, B * T, C, p), part(dqkv_ref, B * T, C, p)), kTolerance)
        << names[p];
  }
}

// bf16 activations: the kernels on bf16 qkv (read exactly) writing a bf16 out give the bits of
// the fp32 kernels on the same values widened, out rounded to nearest even once: statistics,
// workspace and dqkv bit for bit, out = core::to_bf16 of the fp32 out.
template <int HS>
void expect_bf16_is_fp32_on_the_same_values(const Sizes& s) {
  const int64_t B = s.B, T = s.T, NH = s.NH, C = NH * HS;
  std::mt19937 gen(static_cast<uint32_t>(T * 17 + HS));
  std::normal_distribution<float> dist(0.0f, s.scale);
  std::vector<uint16_t> qkv16(B * T * 3 * C);
  std::vector<float> qkv32(qkv16.size()), dout(B * T * C);
  for (size_t i = 0; i < qkv16.size(); ++i) {
    qkv16[i] = core::to_bf16(dist(gen));
    qkv32[i] = core::from_bf16(qkv16[i]);
  }
  for (float& x : dout) x = dist(gen);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  struct Outputs {
    std::vector<float> stats, dqkv, d_rows;
  };
  auto fresh = [&] {
    return Outputs{std::vector<float>(B * NH * T * 2, nan), std::vector<float>(B * T * 3 * C, nan),
                   std::vector<float>(B * NH * T, nan)};
  };
  Outputs a = fresh(), b = fresh();
  std::vector<float> out32(B * T * C, nan);
  std::vector<uint16_t> out16(B * T * C, 0x7FC0);
  for (const std::string& e : run_kernels<HS>(out32.data(), a.stats.data(), a.dqkv.data(),
                                              a.d_rows.data(), qkv32.data(), dout.data(), s)) {
    ADD_FAILURE() << "fp32: " << e;
  }
  for (const std::string& e :
       run_kernels<HS, uint16_t, uint16_t>(out16.data(), b.stats.data(), b.dqkv.data(),
                                           b.d_rows.data(), qkv16.data(), dout.data(), s)) {
    ADD_FAILURE() << "bf16: " << e;
  }
  auto same_bits = [](const std::vector<float>& x, const std::vector<float>& y) {
    return std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
  };
  EXPECT_TRUE(same_bits(a.stats, b.stats)) << "stats";
  EXPECT_TRUE(same_bits(a.d_rows, b.d_rows)) << "the workspace (D_t)";
  EXPECT_TRUE(same_bits(a.dqkv, b.dqkv)) << "dqkv";
  int64_t wrong = 0;
  for (size_t i = 0; i < out16.size(); ++i) wrong += out16[i] != core::to_bf16(out32[i]);
  EXPECT_EQ(wrong, 0) << "out elements that are not the fp32 out rounded once";
}

TEST(FlashAttentionEmulatedBf16, ReadsBf16QkvAndRoundsItsOutputOnce) {
  expect_bf16_is_fp32_on_the_same_values<32>(Sizes{1, 37, 1, 32, 2.0f});
  expect_bf16_is_fp32_on_the_same_values<64>(Sizes{1, 20, 1, 64, 1.0f});
  expect_bf16_is_fp32_on_the_same_values<128>(Sizes{1, 17, 1, 128, 1.0f});
}

INSTANTIATE_TEST_SUITE_P(Sizes, FlashAttentionEmulated,
                         ::testing::Values(Sizes{1, 1, 2, 32, 1.0f}, Sizes{1, 37, 2, 32, 1.0f},
                                           Sizes{1, 50, 1, 32, 3.0f}, Sizes{1, 33, 1, 64, 1.0f},
                                           Sizes{1, 17, 1, 128, 1.0f}, Sizes{1, 66, 1, 32, 4.0f}),
                         [](const ::testing::TestParamInfo<Sizes>& p) {
                           const Sizes& s = p.param;
                           std::string name = "B";       // appended piece by piece: GCC 12's
                           name += std::to_string(s.B);  // -Wrestrict misfires on "x" + str
                           name += "_T";
                           name += std::to_string(s.T);
                           name += "_NH";
                           name += std::to_string(s.NH);
                           name += "_HS";
                           name += std::to_string(s.HS);
                           if (s.scale != 1.0f) name += "_large_scores";
                           return name;
                         });

}  // namespace
}  // namespace tessera::backends::cuda::flash
