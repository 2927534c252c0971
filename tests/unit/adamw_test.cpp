// adamw_update against the update derived by hand for step 1 and against a double-precision
// reference (torch.optim.AdamW's formula, computed offline) for three steps, with and without
// decay; the threaded path against single-element calls; a 0 step is refused.
#include "backends/cpu/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "grad_check.h"

namespace tessera::backends::cpu {
namespace {

namespace tt = tessera::testing;

constexpr AdamWHyper kHyper{0.01f, 0.9f, 0.95f, 1e-8f, 0.1f, 1};

// Step 1 with m = v = 0: m / bc1 = g and sqrt(v / bc2) = |g|, so
// p1 = p0 · (1 - lr · wd) - lr · g / (|g| + eps): a step of lr against the gradient's sign.
TEST(AdamW, FirstStepMovesByLearningRateAgainstTheSign) {
  for (bool decay : {true, false}) {
    std::vector<float> p = {0.5f, -1.0f, 2.0f, 0.0f}, g = {0.1f, -0.2f, 3.0f, 0.0f};
    std::vector<float> m(4, 0.0f), v(4, 0.0f);
    const std::vector<float> p0 = p;
    adamw_update(p.data(), g.data(), m.data(), v.data(), 4, kHyper, decay);
    const double lr = kHyper.lr, keep = decay ? 1.0 - lr * kHyper.weight_decay : 1.0;
    for (int i = 0; i < 4; ++i) {
      const double expect = p0[i] * keep - lr * g[i] / (std::fabs(g[i]) + kHyper.eps);
      EXPECT_NEAR(p[i], expect, 1e-7) << "element " << i << ", decay " << decay;
      EXPECT_NEAR(m[i], (1.0 - kHyper.beta1) * g[i], 1e-8) << "m, element " << i;
      EXPECT_NEAR(v[i], (1.0 - kHyper.beta2) * g[i] * g[i], 1e-8) << "v, element " << i;
    }
  }
}

// Reference: the brief's (torch's) formula in double with the float hyperparameters, printed by
// a few lines of Python; grads below.
TEST(AdamW, ThreeStepsMatchReference) {
  const std::vector<std::vector<float>> grads = {
      {0.1f, -0.2f, 0.3f, 0.0f}, {-0.05f, 0.4f, 0.3f, 1.0f}, {0.2f, 0.0f, -0.1f, -1.0f}};
  const std::vector<std::vector<double>> expect_decay = {
      {0.48950000122724258, -0.98900000073096794, 1.988000000571752, 0.0},
      {0.48632680727207228, -0.99164474016474846, 1.9760120011428428, -0.0073495998258885295},
      {0.47935303171053212, -0.99349830532928551, 1.9679132669004171, -0.0068959508004394331}};
  const std::vector<std::vector<double>> expect_plain = {
      {0.49000000122351728, -0.99000000072351735, 1.9900000005568508, 0.0},
      {0.48731630726592717, -0.99363374015066019, 1.9800000011137016, -0.0073495998258885295},
      {0.48082885850803564, -0.9964789500479736, 1.9738772788576961, -0.0069033004002105628}};
  const std::vector<double> expect_m = {0.02360000566840173, 0.019800004920363462,
                                        0.041300009733438399, -0.01000000476837215};
  const std::vector<double> expect_v = {0.0025700006765127337, 0.009405002381950649,
                                        0.0088362526285649598, 0.097500022649764873};
  for (bool decay : {true, false}) {
    std::vector<float> p = {0.5f, -1.0f, 2.0f, 0.0f}, m(4, 0.0f), v(4, 0.0f);
    for (int s = 0; s < 3; ++s) {
      AdamWHyper h = kHyper;
      h.step = s + 1;
      adamw_update(p.data(), grads[s].data(), m.data(), v.data(), 4, h, decay);
      const auto& expect = decay ? expect_decay[s] : expect_plain[s];
      for (int i = 0; i < 4; ++i) {
        EXPECT_NEAR(p[i], expect[i], 1e-6)
            << "step " << s + 1 << " element " << i << (decay ? " with decay" : " without decay");
      }
    }
    tt::expect_all_close("m after 3 steps", m, expect_m, 1e-6);
    tt::expect_all_close("v after 3 steps", v, expect_v, 1e-6);
  }
}

// Large n takes the threaded, vectorised loop; each element must come out as it does alone.
TEST(AdamW, ThreadedPathMatchesElementByElement) {
  const int64_t n = 100000;
  auto p = tt::cast_vector<float>(tt::random_vector(n, 71));
  auto g = tt::cast_vector<float>(tt::random_vector(n, 72, 0.1));
  auto m = tt::cast_vector<float>(tt::random_vector(n, 73, 0.01));
  auto v = tt::cast_vector<float>(tt::random_vector(n, 74, 0.001));
  for (auto& x : v) x = std::fabs(x);
  auto p1 = p, m1 = m, v1 = v;
  AdamWHyper h = kHyper;
  h.step = 7;
  adamw_update(p.data(), g.data(), m.data(), v.data(), n, h, true);
  for (int64_t i = 0; i < n; ++i) {
    adamw_update(&p1[i], &g[i], &m1[i], &v1[i], 1, h, true);
  }
  tt::expect_all_close("param", p, p1, 1e-6);
  tt::expect_all_close("m", m, m1, 1e-6);
  tt::expect_all_close("v", v, v1, 1e-6);
}

TEST(AdamW, StepZeroIsRefused) {
  float p = 1.0f, g = 1.0f, m = 0.0f, v = 0.0f;
  AdamWHyper h = kHyper;
  h.step = 0;
  EXPECT_THROW(adamw_update(&p, &g, &m, &v, 1, h, true), tessera::Error);
}

}  // namespace
}  // namespace tessera::backends::cpu
