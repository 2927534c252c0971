// The fused (flash) CUDA attention kernels against the CPU kernels run in double on the same
// inputs, as the plain CUDA kernels are tested (attention_test.cu): out, the saved statistics and
// each of dq, dk, dv, at every head size they take (32, 64, 128) and at lengths that end inside a
// block and a tile (T = 1, 37, 100) as well as GPT-2's (T = 256, NH = 12, HS = 64); then the fused
// kernels against the plain CUDA ones, two runs bit for bit, and the sizes they refuse.
#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "backends/cpu/attention.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/flash_attention.h"
#include "core/error.h"
#include "cuda_test_util.h"

namespace tessera::backends::cuda {
namespace {

using testing::DeviceArray;
using testing::qkv_part;
using testing::random_floats;
using testing::rel_error;
using testing::to_double;
using testing::to_float;

// fp32 against a double reference; the project's fp32 bar.
constexpr double kTolerance = 1e-5;

struct Sizes {
  int64_t B, T, NH, HS;
};
std::string name_of(const ::testing::TestParamInfo<Sizes>& p) {
  const Sizes& s = p.param;
  return "B" + std::to_string(s.B) + "_T" + std::to_string(s.T) + "_NH" + std::to_string(s.NH) +
         "_HS" + std::to_string(s.HS);
}

// Runs the fused forward and backward; outputs and workspace poisoned (NaN) first.
struct FusedRun {
  std::vector<float> out, stats, dqkv;
};
FusedRun run_fused(const std::vector<float>& qkv, const std::vector<float>& dout, const Sizes& s) {
  const int64_t C = s.NH * s.HS;
  DeviceArray<float> qkv_dev(qkv), dout_dev(dout);
  DeviceArray<float> out(s.B * s.T * C), stats(s.B * s.NH * s.T * 2), dqkv(s.B * s.T * 3 * C);
  DeviceArray<float> ws(flash_attention_workspace_size(s.B, s.T, C, s.NH));
  out.poison();
  stats.poison();
  dqkv.poison();
  ws.poison();
  flash_attention_forward(out.get(), stats.get(), qkv_dev.get(), s.B, s.T, C, s.NH, nullptr);
  flash_attention_backward(dqkv.get(), ws.get(), dout_dev.get(), qkv_dev.get(), stats.get(), s.B,
                           s.T, C, s.NH, nullptr);
  return {out.download(), stats.download(), dqkv.download()};
}

class FlashAttention : public ::testing::TestWithParam<Sizes> {};

TEST_P(FlashAttention, ForwardAndBackwardMatchTheCpuKernelsInDouble) {
  const Sizes s = GetParam();
  const auto [B, T, NH, HS] = s;
  const int64_t C = NH * HS;
  ASSERT_TRUE(flash_attention_supports(HS));
  const auto qkv = random_floats(B * T * 3 * C, 401);
  const auto dout = random_floats(B * T * C, 402);

  const auto qkv_d = to_double(qkv), dout_d = to_double(dout);
  std::vector<double> out_ref(B * T * C), stats_ref(B * NH * T * 2), dqkv_ref(B * T * 3 * C);
  std::vector<double> ws_cpu(cpu::attention_workspace_size(B, T, C, NH));
  cpu::attention_forward(out_ref.data(), stats_ref.data(), ws_cpu.data(), qkv_d.data(), B, T, C,
                         NH);
  cpu::attention_backward(dqkv_ref.data(), ws_cpu.data(), dout_d.data(), qkv_d.data(),
                          stats_ref.data(), B, T, C, NH);

  const FusedRun got = run_fused(qkv, dout, s);
  EXPECT_LE(rel_error(got.out, to_float(out_ref)), kTolerance) << "out";
  EXPECT_LE(rel_error(got.stats, to_float(stats_ref)), kTolerance) << "stats";
  const auto dqkv_reff = to_float(dqkv_ref);
  const char* names[] = {"dq", "dk", "dv"};
  for (int part = 0; part < 3; ++part) {
    EXPECT_LE(rel_error(qkv_part(got.dqkv, B * T, C, part), qkv_part(dqkv_reff, B * T, C, part)),
              kTolerance)
        << names[part];
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, FlashAttention,
                         ::testing::Values(Sizes{1, 1, 2, 32}, Sizes{2, 37, 4, 32},
                                           Sizes{2, 100, 3, 64}, Sizes{1, 37, 2, 128},
                                           Sizes{2, 256, 12, 64}),
                         name_of);

// The fused kernels against the plain CUDA ones on GPT-2's shape at T = 512 (tiles of both sides
// many times over): the same results to fp32 rounding.
TEST(FlashAttentionVsPlain, SameResultsAsThePlainKernels) {
  const Sizes s{2, 512, 12, 64};
  const int64_t C = s.NH * s.HS;
  const auto qkv = random_floats(s.B * s.T * 3 * C, 411);
  const auto dout = random_floats(s.B * s.T * C, 412);
  DeviceArray<float> qkv_dev(qkv), dout_dev(dout);
  DeviceArray<float> out(s.B * s.T * C), stats(s.B * s.NH * s.T * 2), dqkv(s.B * s.T * 3 * C);
  DeviceArray<float> ws(attention_workspace_size(s.B, s.T, C, s.NH));
  attention_forward(out.get(), stats.get(), ws.get(), qkv_dev.get(), s.B, s.T, C, s.NH, nullptr);
  attention_backward(dqkv.get(), ws.get(), dout_dev.get(), qkv_dev.get(), stats.get(), s.B, s.T, C,
                     s.NH, nullptr);
  const FusedRun fused = run_fused(qkv, dout, s);
  EXPECT_LE(rel_error(fused.out, out.download()), kTolerance) << "out";
  EXPECT_LE(rel_error(fused.stats, stats.download()), kTolerance) << "stats";
  EXPECT_LE(rel_error(fused.dqkv, dqkv.download()), kTolerance) << "dqkv";
}

// No atomics: two runs agree bit for bit.
TEST(FlashAttentionDeterminism, TwoRunsAreBitIdentical) {
  const Sizes s{1, 65, 3, 32};
  const int64_t C = s.NH * s.HS;
  const auto qkv = random_floats(s.B * s.T * 3 * C, 421);
  const auto dout = random_floats(s.B * s.T * C, 422);
  const FusedRun a = run_fused(qkv, dout, s), b = run_fused(qkv, dout, s);
  EXPECT_EQ(a.out, b.out);
  EXPECT_EQ(a.stats, b.stats);
  EXPECT_EQ(a.dqkv, b.dqkv);
}

// Head sizes the lanes cannot split evenly are the plain kernels' (CudaBackend falls back).
TEST(FlashAttentionSizes, OtherHeadSizesAreRefused) {
  EXPECT_FALSE(flash_attention_supports(16));
  EXPECT_FALSE(flash_attention_supports(96));
  EXPECT_FALSE(flash_attention_supports(256));
  DeviceArray<float> qkv(3 * 48), out(48), stats(6);
  EXPECT_THROW(flash_attention_forward(out.get(), stats.get(), qkv.get(), 1, 1, 48, 3, nullptr),
               Error);
}

}  // namespace
}  // namespace tessera::backends::cuda
