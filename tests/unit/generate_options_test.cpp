// Generation options are checked in one place (generate::validate): a bad temperature, top-k,
// top-p or max-tokens is an error naming the option, the value and the allowed range, and the
// Generator refuses such options in add(), generate() and generate_batch() before any step.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "generate/generator.h"
#include "generate/sampler.h"
#include "models/gpt.h"
#include "test_models.h"

namespace tessera::generate {
namespace {

// Expects `st` to be an error whose message holds every one of `words`.
void expect_error_with(const core::Status& st, const std::vector<std::string>& words) {
  ASSERT_FALSE(st.is_ok()) << "expected an error holding '" << words.front() << "'";
  for (const std::string& w : words) {
    EXPECT_NE(st.message().find(w), std::string::npos) << "'" << w << "' not in: " << st.message();
  }
}

GenerateOptions with_temperature(float t) {
  GenerateOptions o;
  o.sampling.temperature = t;
  return o;
}

TEST(GenerateOptions, DefaultsAndBoundariesAreValid) {
  EXPECT_TRUE(validate(GenerateOptions{}).is_ok());
  GenerateOptions o;
  o.sampling.temperature = 0.0f;  // greedy
  o.sampling.top_k = 0;           // off
  o.sampling.top_p = 1.0f;        // off
  o.max_tokens = 1;
  EXPECT_TRUE(validate(o).is_ok()) << validate(o).message();
  o.sampling.temperature = 100.0f;
  o.sampling.top_k = 1000000;  // more than the vocabulary: off in effect
  o.sampling.top_p = 1e-6f;
  EXPECT_TRUE(validate(o).is_ok()) << validate(o).message();
}

TEST(GenerateOptions, TemperatureMustBeFiniteAndNonNegative) {
  expect_error_with(validate(with_temperature(-1.0f)), {"temperature -1", ">= 0", "finite"});
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  expect_error_with(validate(with_temperature(nan)), {"temperature nan", ">= 0"});
  expect_error_with(validate(with_temperature(inf)), {"temperature inf", "finite"});
  expect_error_with(validate(with_temperature(-inf)), {"temperature -inf"});
}

TEST(GenerateOptions, TopKMustBeNonNegative) {
  GenerateOptions o;
  o.sampling.top_k = -3;
  expect_error_with(validate(o), {"top_k -3", ">= 0", "0: off"});
}

TEST(GenerateOptions, TopPMustLieInZeroExclusiveToOneInclusive) {
  for (float p : {1.5f, -1.0f, 0.0f, std::numeric_limits<float>::quiet_NaN()}) {
    GenerateOptions o;
    o.sampling.top_p = p;
    std::ostringstream value;
    value << p;
    expect_error_with(validate(o), {"top_p " + value.str(), "0 < top_p <= 1"});
  }
}

TEST(GenerateOptions, MaxTokensMustBeAtLeastOne) {
  for (int n : {0, -5}) {
    GenerateOptions o;
    o.max_tokens = n;
    expect_error_with(validate(o), {"max_tokens " + std::to_string(n), ">= 1"});
  }
}

TEST(GenerateOptions, MessagesUseTheCallersNames) {
  const OptionNames flags{"--temperature", "--top-k", "--top-p", "--max-tokens"};
  GenerateOptions o;
  o.sampling.top_p = 1.5f;
  expect_error_with(validate(o, flags), {"--top-p 1.5", "0 < top_p <= 1"});
  o = GenerateOptions{};
  o.max_tokens = -5;
  expect_error_with(validate(o, flags), {"--max-tokens -5"});
  o = GenerateOptions{};
  o.sampling.top_k = -3;
  expect_error_with(validate(o, flags), {"--top-k -3"});
  expect_error_with(validate(with_temperature(-1.0f), flags), {"--temperature -1"});
  // The sampling rules alone, for a caller that has no max_tokens.
  expect_error_with(validate(with_temperature(-1.0f).sampling, flags), {"--temperature -1"});
}

TEST(GenerateOptions, GeneratorRefusesBadOptionsBeforeAnyStep) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(3);
  Generator g(gpt, 2);
  GenerateOptions bad;
  bad.sampling.top_p = 0.0f;
  for (bool kv : {true, false}) {
    bad.use_kv_cache = kv;
    bool called = false;
    auto out = g.generate({1, 2, 3}, bad, [&](int32_t) { called = true; });
    ASSERT_FALSE(out.is_ok());
    EXPECT_NE(out.status().message().find("top_p 0"), std::string::npos) << out.status().message();
    EXPECT_FALSE(called);
  }
  auto id = g.add({1, 2, 3}, bad);
  ASSERT_FALSE(id.is_ok());
  EXPECT_NE(id.status().message().find("top_p 0"), std::string::npos);
  EXPECT_TRUE(g.idle());
  // max_tokens 0 joined a sequence that then emitted one token; now it is refused.
  GenerateOptions zero;
  zero.max_tokens = 0;
  auto z = g.add({1, 2, 3}, zero);
  ASSERT_FALSE(z.is_ok());
  EXPECT_NE(z.status().message().find("max_tokens 0"), std::string::npos);
  EXPECT_TRUE(g.idle());
  // A batch with one bad request fails whole, naming which, and leaves the generator idle.
  GenerateOptions good;
  good.max_tokens = 4;
  auto batch = g.generate_batch({{1, 2}, {3, 4}}, {good, zero});
  ASSERT_FALSE(batch.is_ok());
  EXPECT_NE(batch.status().message().find("prompt 1: max_tokens 0"), std::string::npos)
      << batch.status().message();
  EXPECT_TRUE(g.idle());
  // Still usable afterwards.
  auto ok = g.generate({1, 2, 3}, good, nullptr);
  ASSERT_TRUE(ok.is_ok()) << ok.status().message();
  EXPECT_LE(ok->size(), 4u);
}

}  // namespace
}  // namespace tessera::generate
