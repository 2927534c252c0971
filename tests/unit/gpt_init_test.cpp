// GPT-2's initialisation (Radford et al. 2019, section 2.3; nanoGPT's _init_weights): every weight
// matrix and both embeddings are normal(0, 0.02), the two residual projections of each block
// (attn.proj, mlp.proj) normal(0, 0.02 / sqrt(2 L)), every bias 0, every layernorm weight 1.
// Checked on the model's initialised weights, by name, independently of the ParamSpec table that
// produced them: mean, standard deviation and the normal's 1- and 2-sigma mass. That tp shards
// hold exactly the slices of these tensors is checked bitwise by ParamSpec.
// ShardsInitialiseToSlicesOfTheWholeTensor (unit) and ShardedModel.GatheredShards... (MPI).
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "core/config.h"
#include "models/gpt.h"

namespace tessera::models {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The moments of n values, and the fraction within 1 and 2 of `sigma` of zero.
struct Moments {
  double mean = 0, std = 0, within1 = 0, within2 = 0, max_abs = 0;
};

Moments moments(const float* x, int64_t n, double sigma) {
  double sum = 0, sumsq = 0;
  int64_t in1 = 0, in2 = 0;
  Moments m;
  for (int64_t i = 0; i < n; ++i) {
    sum += x[i];
    sumsq += static_cast<double>(x[i]) * x[i];
    in1 += std::fabs(x[i]) < sigma;
    in2 += std::fabs(x[i]) < 2 * sigma;
    m.max_abs = std::max(m.max_abs, static_cast<double>(std::fabs(x[i])));
  }
  m.mean = sum / n;
  m.std = std::sqrt(sumsq / n - m.mean * m.mean);
  m.within1 = static_cast<double>(in1) / n;
  m.within2 = static_cast<double>(in2) / n;
  return m;
}

TEST(GptInit, Gpt2StandardDeviationsZeroBiasesUnitLayernorms) {
  core::ModelConfig mc;  // the defaults: init_std 0.02 as GPT-2
  ASSERT_EQ(mc.init_std, 0.02);
  mc.vocab_size = 1000;
  mc.pad_vocab_to = 128;  // Vp = 1024: 24 padding rows
  mc.max_seq_len = 128;
  mc.n_layer = 6;
  mc.n_head = 4;
  mc.n_embd = 128;
  const int64_t C = mc.n_embd, V = mc.vocab_size, Vp = mc.padded_vocab_size();
  Gpt gpt(mc, 1, 16);
  gpt.init_weights(1337);
  const double residual_std = 0.02 / std::sqrt(2.0 * mc.n_layer);  // 0.00577 at L = 6
  int normals = 0, residuals = 0, zeros = 0, ones = 0;
  for (const ParamSpec& s : gpt.param_set().specs()) {
    const core::Tensor t = gpt.param(s.name);
    const float* x = t.f32();
    int64_t n = core::shape_numel(s.global_shape);
    ASSERT_EQ(n, t.numel()) << s.name << ": tp = 1 holds the whole tensor";
    const bool layernorm = s.name.find("ln_") != std::string::npos;
    if (ends_with(s.name, ".bias")) {
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], 0.0f) << s.name << "[" << i << "]";
      ++zeros;
      continue;
    }
    if (layernorm) {
      ASSERT_TRUE(ends_with(s.name, ".weight")) << s.name;
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], 1.0f) << s.name << "[" << i << "]";
      ++ones;
      continue;
    }
    if (s.name == "wte") {
      // Padding rows (V..Vp) are zero; the real rows are the normal tensor.
      for (int64_t i = V * C; i < Vp * C; ++i) ASSERT_EQ(x[i], 0.0f) << "wte padding [" << i << "]";
      n = V * C;
    }
    const bool residual =
        ends_with(s.name, ".attn.proj.weight") || ends_with(s.name, ".mlp.proj.weight");
    const double sigma = residual ? residual_std : 0.02;
    (residual ? residuals : normals)++;
    const Moments m = moments(x, n, sigma);
    // Standard errors: mean sigma / sqrt(n), std about sigma / sqrt(2 n) (0.6% of sigma for the
    // smallest tensor here, C * C = 16384 values); the bounds are several of them, and a wrong
    // scale (0.02 where 0.02 / sqrt(12) belongs, or the reverse) is off by a factor 3.5.
    const double se = sigma / std::sqrt(static_cast<double>(n));
    EXPECT_LT(std::fabs(m.mean), 5 * se) << s.name << " mean " << m.mean;
    EXPECT_NEAR(m.std / sigma, 1.0, 0.03) << s.name << " std " << m.std << ", want " << sigma;
    // A normal holds 68.27% within 1 sigma and 95.45% within 2 (a uniform of the same std:
    // 57.7% and 100%; a truncated normal at 2 sigma: 100% within 2).
    EXPECT_NEAR(m.within1, 0.6827, 0.015) << s.name;
    EXPECT_NEAR(m.within2, 0.9545, 0.008) << s.name;
    EXPECT_GT(m.max_abs, 3.5 * sigma) << s.name << ": tails cut off";
    EXPECT_LT(m.max_abs, 7 * sigma) << s.name;
  }
  // Every parameter was checked: wte, wpe and qkv + fc per layer; attn.proj + mlp.proj per layer;
  // 6 biases per layer (4 linear, 2 layernorm) + ln_f's; 2 layernorm weights per layer + ln_f's.
  EXPECT_EQ(normals, 2 + 2 * mc.n_layer);
  EXPECT_EQ(residuals, 2 * mc.n_layer);
  EXPECT_EQ(zeros, 6 * mc.n_layer + 1);
  EXPECT_EQ(ones, 2 * mc.n_layer + 1);
}

// Another seed gives other numbers with the same statistics; the same seed the same numbers.
TEST(GptInit, SeedChangesTheValuesNotTheirScale) {
  core::ModelConfig mc;
  mc.vocab_size = 256;
  mc.pad_vocab_to = 128;
  mc.max_seq_len = 32;
  mc.n_layer = 2;
  mc.n_head = 2;
  mc.n_embd = 64;
  Gpt a(mc, 1, 8), b(mc, 1, 8), c(mc, 1, 8);
  a.init_weights(1);
  b.init_weights(2);
  c.init_weights(1);
  const core::Tensor wa = a.param("h.1.mlp.fc.weight"), wb = b.param("h.1.mlp.fc.weight"),
                     wc = c.param("h.1.mlp.fc.weight");
  int64_t same = 0;
  for (int64_t i = 0; i < wa.numel(); ++i) {
    same += wa.f32()[i] == wb.f32()[i];
    ASSERT_EQ(wa.f32()[i], wc.f32()[i]) << i;
  }
  EXPECT_EQ(same, 0);
  EXPECT_NEAR(moments(wb.f32(), wb.numel(), 0.02).std / 0.02, 1.0, 0.03);
}

}  // namespace
}  // namespace tessera::models
