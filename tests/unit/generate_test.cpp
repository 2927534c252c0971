// Generation: KV-cache decoding emits exactly the tokens of full recomputation (greedy and
// sampled); end-of-text stops a sequence and is not emitted; sampling respects top-k / top-p and
// is a pure function of the seed; bad prompts fail with a message.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "core/philox.h"
#include "generate/generator.h"
#include "generate/sampler.h"
#include "models/gpt.h"
#include "test_models.h"

namespace tessera::generate {
namespace {

std::vector<int32_t> run(models::Gpt& gpt, bool kv, float temperature) {
  Generator g(gpt);
  GenerateOptions o;
  o.use_kv_cache = kv;
  o.max_tokens = 40;
  o.stop_at_eot = false;
  o.sampling.temperature = temperature;
  o.sampling.top_k = 20;
  o.sampling.seed = 11;
  std::vector<int32_t> streamed;
  auto out = g.generate({5, 17, 3}, o, [&](int32_t t) { streamed.push_back(t); });
  EXPECT_TRUE(out.is_ok()) << out.status().message();
  EXPECT_EQ(*out, streamed);
  return *out;
}

TEST(Generate, KvCacheEmitsTheTokensOfFullRecomputation) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(3);
  for (float temperature : {0.0f, 1.0f}) {
    const auto with_cache = run(gpt, true, temperature);
    const auto recomputed = run(gpt, false, temperature);
    EXPECT_EQ(with_cache.size(), 40u);
    EXPECT_EQ(with_cache, recomputed) << "temperature " << temperature;
    // Not a degenerate model: it says more than one token.
    EXPECT_GT(std::set<int32_t>(with_cache.begin(), with_cache.end()).size(), 3u);
  }
}

TEST(Generate, StopsWhenTheContextIsFull) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(3);
  Generator g(gpt);
  GenerateOptions o;
  o.max_tokens = 1000;
  o.stop_at_eot = false;
  auto out = g.generate({1, 2, 3}, o, nullptr);
  ASSERT_TRUE(out.is_ok());
  EXPECT_EQ(out->size(), 48u - 3u);
}

// End-of-text stops a sequence and is never emitted: the model's own k-th token (one it has not
// said before) is named end-of-text, and generation gives exactly the k tokens before it, on the
// KV path and the recomputation path, greedy and sampled, through generate(), step() and
// generate_batch(); with stop_at_eot off the same token is emitted and decoding goes on.
TEST(Generate, StopsAtEndOfTextWithoutEmittingIt) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(3);
  const std::vector<int32_t> prompt = {5, 17, 3};
  for (float temperature : {0.0f, 1.0f}) {
    const std::vector<int32_t> free_run = run(gpt, true, temperature);  // 40 tokens, no stop
    size_t k = 3;
    while (k < free_run.size() &&
           std::find(free_run.begin(), free_run.begin() + k, free_run[k]) != free_run.begin() + k) {
      ++k;
    }
    ASSERT_LT(k, free_run.size()) << "no new token after the third: a degenerate model";
    const int32_t eot = free_run[k];
    const std::vector<int32_t> before(free_run.begin(), free_run.begin() + k);
    GenerateOptions o;
    o.max_tokens = 40;
    o.sampling.temperature = temperature;
    o.sampling.top_k = 20;
    o.sampling.seed = 11;  // run()'s options, plus the stop
    o.stop_at_eot = true;
    o.eot_token = eot;
    for (bool kv : {true, false}) {
      o.use_kv_cache = kv;
      Generator g(gpt);
      std::vector<int32_t> streamed;
      auto out = g.generate(prompt, o, [&](int32_t t) { streamed.push_back(t); });
      ASSERT_TRUE(out.is_ok()) << out.status().message();
      EXPECT_EQ(*out, before) << "kv " << kv << ", temperature " << temperature << ", eot " << eot
                              << " at position " << k;
      EXPECT_EQ(streamed, before) << "end-of-text must not be streamed";
    }
    // step(): the last event finishes the sequence as end-of-text and carries no token.
    o.use_kv_cache = true;
    Generator g(gpt);
    auto id = g.add(prompt, o);
    ASSERT_TRUE(id.is_ok()) << id.status().message();
    std::vector<int32_t> emitted;
    StepEvent last;
    while (!g.idle()) {
      for (const StepEvent& e : g.step()) {
        if (e.token >= 0) emitted.push_back(e.token);
        last = e;
      }
    }
    EXPECT_EQ(emitted, before);
    EXPECT_EQ(last.finished, FinishReason::kEndOfText);
    EXPECT_EQ(last.token, -1);
    // In a batch, a sequence that stops leaves the other (stop_at_eot off) untouched: that one
    // emits the end-of-text token like any other and runs to max_tokens.
    GenerateOptions no_stop = o;
    no_stop.stop_at_eot = false;
    Generator batch(gpt, 2);
    auto both = batch.generate_batch({prompt, prompt}, {o, no_stop});
    ASSERT_TRUE(both.is_ok()) << both.status().message();
    EXPECT_EQ((*both)[0], before);
    EXPECT_EQ((*both)[1], free_run);
  }
}

TEST(Generate, PromptLongerThanContextIsAnError) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  Generator g(gpt);
  auto out = g.generate(std::vector<int32_t>(60, 1), GenerateOptions{}, nullptr);
  ASSERT_FALSE(out.is_ok());
  EXPECT_NE(out.status().message().find("prompt is 60 tokens"), std::string::npos);
  EXPECT_NE(out.status().message().find("shorten the prompt"), std::string::npos);
  auto bad = g.generate({1, 500}, GenerateOptions{}, nullptr);
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("outside the vocabulary"), std::string::npos);
}

TEST(Sampler, TopKAndTopPKeepOnlyTheMostLikelyTokens) {
  std::vector<float> logits = {0.0f, 3.0f, 1.0f, 2.5f, -1.0f, 2.9f};
  std::vector<float> probs;
  std::vector<int32_t> order;
  SamplingOptions o;
  o.top_k = 2;
  std::set<int32_t> seen;
  for (uint64_t i = 0; i < 500; ++i)
    seen.insert(sample_token(logits.data(), 6, o, i, probs, order));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 5}));
  o.top_k = 0;
  o.top_p = 0.5f;  // token 1 alone has p ~ 0.37 < 0.5; with token 5 the mass passes 0.5
  seen.clear();
  for (uint64_t i = 0; i < 500; ++i)
    seen.insert(sample_token(logits.data(), 6, o, i, probs, order));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 5}));
  o.temperature = 0.0f;
  EXPECT_EQ(sample_token(logits.data(), 6, o, 0, probs, order), 1);
}

TEST(Sampler, SameSeedSameTokensOtherSeedOtherTokens) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = core::standard_normal(1, 1, i);
  std::vector<float> probs;
  std::vector<int32_t> order;
  SamplingOptions a, b;
  a.seed = 1;
  b.seed = 2;
  std::vector<int32_t> ta, ta2, tb;
  for (uint64_t i = 0; i < 64; ++i) {
    ta.push_back(sample_token(logits.data(), 50, a, i, probs, order));
    ta2.push_back(sample_token(logits.data(), 50, a, i, probs, order));
    tb.push_back(sample_token(logits.data(), 50, b, i, probs, order));
  }
  EXPECT_EQ(ta, ta2);
  EXPECT_NE(ta, tb);
}

}  // namespace
}  // namespace tessera::generate
