// The plain CUDA attention kernels against their CPU twin run in double on the same inputs:
// out, the saved softmax statistics and every part of dqkv (q, k and v gradients), with odd sizes
// (T = 37, HS = 16) and GPT-2's (T = 256, NH = 12, HS = 64).
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "backends/cpu/attention.h"
#include "backends/cuda/attention.h"
#include "cuda_test_util.h"

namespace tessera::backends::cuda {
namespace {

using testing::DeviceArray;
using testing::qkv_part;
using testing::random_floats;
using testing::rel_error;
using testing::to_double;
using testing::to_float;

// fp32 against a double reference: the kernels sum in a different order from BLAS, over at most
// T = 256 terms, which leaves them near 1e-7 relative; 1e-5 is the project's fp32 bar.
constexpr double kTolerance = 1e-5;

struct Sizes {
  int64_t B, T, NH, HS;
};

class CudaAttention : public ::testing::TestWithParam<Sizes> {};

TEST_P(CudaAttention, ForwardAndBackwardMatchTheCpuTwinInDouble) {
  const auto [B, T, NH, HS] = GetParam();
  const int64_t C = NH * HS;
  const auto qkv = random_floats(B * T * 3 * C, 101);
  const auto dout = random_floats(B * T * C, 102);

  // CPU reference in double.
  const auto qkv_d = to_double(qkv);
  const auto dout_d = to_double(dout);
  std::vector<double> out_ref(B * T * C), stats_ref(B * NH * T * 2), dqkv_ref(B * T * 3 * C);
  std::vector<double> ws_cpu(cpu::attention_workspace_size(B, T, C, NH));
  cpu::attention_forward(out_ref.data(), stats_ref.data(), ws_cpu.data(), qkv_d.data(), B, T, C,
                         NH);
  cpu::attention_backward(dqkv_ref.data(), ws_cpu.data(), dout_d.data(), qkv_d.data(),
                          stats_ref.data(), B, T, C, NH);

  // GPU, outputs poisoned (NaN) so an unwritten element fails; dqkv poisoned too, which also
  // shows that backward overwrites rather than accumulates.
  DeviceArray<float> qkv_dev(qkv), dout_dev(dout);
  DeviceArray<float> out_dev(B * T * C), stats_dev(B * NH * T * 2), dqkv_dev(B * T * 3 * C);
  DeviceArray<float> ws_dev(attention_workspace_size(B, T, C, NH));
  out_dev.poison();
  stats_dev.poison();
  dqkv_dev.poison();
  ws_dev.poison();
  attention_forward(out_dev.get(), stats_dev.get(), ws_dev.get(), qkv_dev.get(), B, T, C, NH,
                    nullptr);
  attention_backward(dqkv_dev.get(), ws_dev.get(), dout_dev.get(), qkv_dev.get(), stats_dev.get(),
                     B, T, C, NH, nullptr);

  EXPECT_LE(rel_error(out_dev.download(), to_float(out_ref)), kTolerance) << "out";
  // [max score, 1 / sum] per row: the statistics backward recomputes the probabilities from.
  EXPECT_LE(rel_error(stats_dev.download(), to_float(stats_ref)), kTolerance) << "stats";

  const auto dqkv = dqkv_dev.download();
  const auto dqkv_reff = to_float(dqkv_ref);
  const char* names[] = {"dq", "dk", "dv"};
  for (int part = 0; part < 3; ++part) {
    EXPECT_LE(rel_error(qkv_part(dqkv, B * T, C, part), qkv_part(dqkv_reff, B * T, C, part)),
              kTolerance)
        << names[part];
  }
}

INSTANTIATE_TEST_SUITE_P(Sizes, CudaAttention,
                         ::testing::Values(Sizes{2, 37, 4, 16}, Sizes{1, 1, 2, 8},
                                           Sizes{2, 256, 12, 64}),
                         [](const ::testing::TestParamInfo<Sizes>& param_info) {
                           const Sizes& s = param_info.param;
                           return "B" + std::to_string(s.B) + "_T" + std::to_string(s.T) + "_NH" +
                                  std::to_string(s.NH) + "_HS" + std::to_string(s.HS);
                         });

// No atomics: two runs on the same inputs agree bit for bit.
TEST(CudaAttentionDeterminism, TwoRunsAreBitIdentical) {
  const int64_t B = 1, T = 65, NH = 3, HS = 32, C = NH * HS;
  DeviceArray<float> qkv(random_floats(B * T * 3 * C, 201)), dout(random_floats(B * T * C, 202));
  DeviceArray<float> out(B * T * C), stats(B * NH * T * 2), dqkv(B * T * 3 * C);
  DeviceArray<float> ws(attention_workspace_size(B, T, C, NH));
  std::vector<float> first[3];
  for (int run = 0; run < 2; ++run) {
    attention_forward(out.get(), stats.get(), ws.get(), qkv.get(), B, T, C, NH, nullptr);
    attention_backward(dqkv.get(), ws.get(), dout.get(), qkv.get(), stats.get(), B, T, C, NH,
                       nullptr);
    const std::vector<float> got[3] = {out.download(), stats.download(), dqkv.download()};
    if (run == 0) {
      for (int i = 0; i < 3; ++i) first[i] = got[i];
    } else {
      for (int i = 0; i < 3; ++i) EXPECT_EQ(got[i], first[i]) << "output " << i;
    }
  }
}

}  // namespace
}  // namespace tessera::backends::cuda
