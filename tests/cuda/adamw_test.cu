// The CUDA AdamW update against its CPU twin (backends/cpu/adamw.h, fp32 like the kernel): three
// steps with fresh gradients and a changing learning rate, with and without weight decay, and the
// bf16 working copy written by the same kernel.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "backends/cpu/adamw.h"
#include "backends/cuda/adamw.h"
#include "core/bf16.h"
#include "cuda_test_util.h"

namespace tessera::backends::cuda {
namespace {

using testing::DeviceArray;
using testing::random_floats;
using testing::rel_error;

// The same fp32 operations in the same order on both sides; they may differ only where one
// compiler fuses a multiply-add the other does not (1 ulp per step), so 3 steps stay near 1e-7.
constexpr double kTolerance = 1e-6;

backends::AdamWHyper hyper(int64_t step) {
  // GPT-2-like settings; the learning rate changes per step as a schedule would change it.
  return backends::AdamWHyper{6e-4f * static_cast<float>(step), 0.9f, 0.95f, 1e-8f, 0.1f, step};
}

// Runs three steps on the CPU twin and on the GPU from the same start and returns both.
struct State {  // one side's weights and moments after the steps
  std::vector<float> param, m, v;
};
void three_steps(int64_t n, bool decay, uint32_t seed, State* cpu, State* gpu) {
  const auto param0 = random_floats(n, seed, 0.02f);
  *cpu = State{param0, std::vector<float>(n, 0.0f), std::vector<float>(n, 0.0f)};
  DeviceArray<float> param(param0), m(std::vector<float>(n, 0.0f)), v(std::vector<float>(n, 0.0f));
  DeviceArray<float> grad(n);
  for (int64_t step = 1; step <= 3; ++step) {
    const auto g = random_floats(n, seed + 100 + static_cast<uint32_t>(step), 0.01f);
    backends::cpu::adamw_update(cpu->param.data(), g.data(), cpu->m.data(), cpu->v.data(), n,
                                hyper(step), decay);
    grad.upload(g);
    adamw_update(param.get(), grad.get(), m.get(), v.get(), n, hyper(step), decay, nullptr,
                 nullptr);
  }
  *gpu = State{param.download(), m.download(), v.download()};
}

class CudaAdamW : public ::testing::TestWithParam<int64_t> {};

TEST_P(CudaAdamW, ThreeStepsMatchTheCpuTwin) {
  const int64_t n = GetParam();
  for (const bool decay : {true, false}) {
    State cpu, gpu;
    three_steps(n, decay, 5, &cpu, &gpu);
    EXPECT_LE(rel_error(gpu.param, cpu.param), kTolerance) << "param, decay " << decay;
    EXPECT_LE(rel_error(gpu.m, cpu.m), kTolerance) << "m, decay " << decay;
    EXPECT_LE(rel_error(gpu.v, cpu.v), kTolerance) << "v, decay " << decay;
  }
}

// The decay flag reaches the kernel: without it the weights differ from the decayed CPU run by
// the summed lr · weight_decay of the three steps (3.6e-4 relative), far above the tolerance.
TEST_P(CudaAdamW, DecayFlagChangesTheWeights) {
  const int64_t n = GetParam();
  State cpu_decay, gpu_decay, cpu_plain, gpu_plain;
  three_steps(n, true, 9, &cpu_decay, &gpu_decay);
  three_steps(n, false, 9, &cpu_plain, &gpu_plain);
  EXPECT_GT(rel_error(gpu_plain.param, cpu_decay.param), 100 * kTolerance);
  EXPECT_LE(rel_error(gpu_plain.param, cpu_plain.param), kTolerance);
}

TEST_P(CudaAdamW, Bf16CopyIsTheUpdatedMasterRounded) {
  const int64_t n = GetParam();
  const auto param0 = random_floats(n, 13, 0.02f);
  const auto g = random_floats(n, 14, 0.01f);
  std::vector<float> cpu_param = param0, cpu_m(n, 0.0f), cpu_v(n, 0.0f);
  backends::cpu::adamw_update(cpu_param.data(), g.data(), cpu_m.data(), cpu_v.data(), n, hyper(1),
                              true);

  DeviceArray<float> param(param0), grad(g), m(std::vector<float>(n, 0.0f));
  DeviceArray<float> v(std::vector<float>(n, 0.0f));
  DeviceArray<uint16_t> param_bf16(n);
  param_bf16.poison();
  adamw_update(param.get(), grad.get(), m.get(), v.get(), n, hyper(1), true, param_bf16.get(),
               nullptr);
  const auto master = param.download();
  const auto copy = param_bf16.download();
  EXPECT_LE(rel_error(master, cpu_param), kTolerance);
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) mismatches += copy[i] != core::to_bf16(master[i]);
  EXPECT_EQ(mismatches, 0) << "every bf16 element is the fp32 master rounded to nearest even";
}

INSTANTIATE_TEST_SUITE_P(Sizes, CudaAdamW, ::testing::Values(int64_t{37}, int64_t{1000003}),
                         [](const ::testing::TestParamInfo<int64_t>& param_info) {
                           return "n" + std::to_string(param_info.param);
                         });

TEST(CudaAdamWEdges, StepZeroIsRefused) {
  DeviceArray<float> buf(4);
  EXPECT_THROW(
      adamw_update(buf.get(), buf.get(), buf.get(), buf.get(), 4, hyper(0), true, nullptr, nullptr),
      tessera::Error);
}

}  // namespace
}  // namespace tessera::backends::cuda
