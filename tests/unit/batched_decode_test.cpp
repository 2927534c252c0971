// Batched KV-cache decode (Gpt::decode through the Generator): N prompts of different lengths
// decoded in one batch give, for each, exactly the tokens of that prompt generated alone
// (greedy and seeded sampling, with prefill split into chunks); a row's logits equal those of
// the same row decoded alone within 1e-6 of the largest logit; a sequence joining a running batch
// changes no other sequence's tokens; a cancelled sequence frees its slot; a prefill budget
// splits a long prompt over steps, oldest prompt first, while running sequences decode each step;
// a prompt that starts with a freed slot's tokens reuses their keys and values (the same tokens).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "generate/generator.h"
#include "models/gpt.h"
#include "models/kv_cache.h"
#include "test_models.h"

namespace tessera::generate {
namespace {

using testing::small_prompt;

GenerateOptions options_for(int i) {
  GenerateOptions o;
  o.max_tokens = 12 + 3 * i;
  o.stop_at_eot = false;
  o.sampling.temperature = i % 2 == 0 ? 0.0f : 0.9f;  // greedy and sampled rows side by side
  o.sampling.top_k = i % 3 == 0 ? 0 : 25;
  o.sampling.seed = 100 + i;
  return o;
}

std::vector<int32_t> alone(models::Gpt& gpt, const std::vector<int32_t>& prompt,
                           const GenerateOptions& o) {
  Generator g(gpt, 1);
  auto out = g.generate(prompt, o, nullptr);
  EXPECT_TRUE(out.is_ok()) << out.status().message();
  return out.is_ok() ? *out : std::vector<int32_t>{};
}

TEST(BatchedDecode, EachPromptGivesTheTokensItGivesAlone) {
  // B * T = 48 rows per decode call: prompts of 20 + 17 + 11 + 5 + 1 tokens cannot be prefilled
  // in one call, so prefill is chunked across steps while earlier sequences already decode.
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(3);
  const std::vector<int> lengths = {20, 1, 17, 5, 11};
  std::vector<std::vector<int32_t>> prompts;
  std::vector<GenerateOptions> options;
  for (size_t i = 0; i < lengths.size(); ++i) {
    prompts.push_back(small_prompt(lengths[i], static_cast<int>(i)));
    options.push_back(options_for(static_cast<int>(i)));
  }
  Generator batch(gpt, static_cast<int64_t>(prompts.size()));
  auto together = batch.generate_batch(prompts, options);
  ASSERT_TRUE(together.is_ok()) << together.status().message();
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto reference = alone(gpt, prompts[i], options[i]);
    ASSERT_EQ(reference.size(), static_cast<size_t>(options[i].max_tokens));
    EXPECT_EQ((*together)[i], reference) << "prompt " << i << " of length " << lengths[i];
  }
  // And the KV path agrees with full recomputation for the longest prompt, sampled.
  GenerateOptions recompute = options[2];
  recompute.use_kv_cache = false;
  EXPECT_EQ((*together)[2], alone(gpt, prompts[2], recompute));
}

// The rows of one decode call that prefills `prompt` whole into cache slot `slot`, appended.
struct Rows {
  std::vector<int32_t> tokens, slots, positions;
  void add_prompt(const std::vector<int32_t>& prompt, int slot) {
    for (size_t t = 0; t < prompt.size(); ++t) {
      tokens.push_back(prompt[t]);
      slots.push_back(slot);
      positions.push_back(static_cast<int32_t>(t));
    }
  }
  const float* decode(models::Gpt& gpt, models::KvCache& cache) const {
    return gpt.decode(cache, tokens.data(), slots.data(), positions.data(),
                      static_cast<int64_t>(tokens.size()));
  }
};

TEST(BatchedDecode, RowLogitsEqualThoseOfTheRowAloneToRounding) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(5);
  const int64_t Vp = gpt.padded_vocab_local();
  // Three sequences prefilled together (slot 0: 6 tokens, slot 1: 2, slot 2: 9), then one decode
  // row each at their own positions.
  models::KvCache batch_cache(gpt, 3);
  const std::vector<int> lengths = {6, 2, 9};
  Rows prefill;
  for (int s = 0; s < 3; ++s) prefill.add_prompt(small_prompt(lengths[s], s), s);
  prefill.decode(gpt, batch_cache);
  const std::vector<int32_t> next = {4, 40, 77}, next_slots = {0, 1, 2}, next_pos = {6, 2, 9};
  const float* batched =
      gpt.decode(batch_cache, next.data(), next_slots.data(), next_pos.data(), 3);
  std::vector<float> batched_rows(batched, batched + 3 * Vp);
  for (int s = 0; s < 3; ++s) {
    models::KvCache cache(gpt, 1);
    const auto p = small_prompt(lengths[s], s);
    for (int t = 0; t < lengths[s]; ++t) {  // prefill one token per call this time
      const int32_t slot = 0, pos = t;
      gpt.decode(cache, &p[t], &slot, &pos, 1);
    }
    const int32_t slot = 0;
    const float* row = gpt.decode(cache, &next[s], &slot, &next_pos[s], 1);
    double max_diff = 0, max_logit = 0;
    for (int64_t v = 0; v < Vp; ++v) {
      max_diff = std::max(max_diff, std::abs(double{row[v]} - batched_rows[s * Vp + v]));
      max_logit = std::max(max_logit, std::abs(double{row[v]}));
    }
    // Weights not frozen here: past kFewRows rows the products go through OpenBLAS's GEMM,
    // which can round differently in a batch (measured once: 2.5e-7 of the largest logit), so
    // this bound is what an unfrozen model promises; frozen ones give the bits (the next test).
    EXPECT_LE(max_diff, 1e-6 * max_logit)
        << "sequence " << s << ": its logits changed with the batch by " << max_diff
        << " (max |logit| " << max_logit << ")";
  }
}

// While the weights are frozen (as they are while a Generator lives) every matmul takes the packed
// few-rows kernel, whatever the row count, so a row's logits are the same bits in a batch of
// more rows than kFewRows (here 44, as a prefill of several prompts at once) as alone. The model
// is wide enough (fc-proj's inner dimension 4C = 768) that OpenBLAS's GEMM, which the rows took
// before, splits the inner dimension into blocks and rounds differently from a single pass.
TEST(BatchedDecode, FrozenWeightsGiveARowTheSameBitsInABatchOfManyRows) {
  core::ModelConfig wide = testing::small_generation_model();
  wide.n_layer = 1;
  wide.n_embd = 192;
  models::Gpt gpt(wide, 1, 48);
  gpt.init_weights(6);
  gpt.backend().freeze_weights(true);
  const int64_t Vp = gpt.padded_vocab_local();
  models::KvCache batch_cache(gpt, 3);
  const std::vector<int> lengths = {20, 15, 9};
  Rows prefill;
  for (int s = 0; s < 3; ++s) prefill.add_prompt(small_prompt(lengths[s], s), s);
  ASSERT_GT(static_cast<int64_t>(prefill.tokens.size()), 32);  // past the GEMM's threshold
  prefill.decode(gpt, batch_cache);
  const std::vector<int32_t> next = {4, 40, 77}, next_slots = {0, 1, 2}, next_pos = {20, 15, 9};
  const float* batched =
      gpt.decode(batch_cache, next.data(), next_slots.data(), next_pos.data(), 3);
  std::vector<float> batched_rows(batched, batched + 3 * Vp);
  for (int s = 0; s < 3; ++s) {
    models::KvCache cache(gpt, 1);
    Rows alone_prefill;
    alone_prefill.add_prompt(small_prompt(lengths[s], s), 0);
    alone_prefill.decode(gpt, cache);
    const int32_t slot = 0;
    const float* row = gpt.decode(cache, &next[s], &slot, &next_pos[s], 1);
    int64_t differ = 0;
    for (int64_t v = 0; v < Vp; ++v)
      differ += std::memcmp(&row[v], &batched_rows[s * Vp + v], 4) != 0;
    EXPECT_EQ(differ, 0) << "sequence " << s << ": " << differ << " of " << Vp
                         << " logits differ from the bits it gets alone";
  }
  gpt.backend().freeze_weights(false);
}

// The generator asks decode for the logits of its sampling rows only (head_rows): they are the
// bits of those rows of a full decode, and no rows means no logits.
TEST(BatchedDecode, HeadRowsGiveThoseRowsOfTheFullLogits) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(6);
  const int64_t Vp = gpt.padded_vocab_local();
  const std::vector<int32_t> tokens = {3, 9, 27, 81, 5, 15, 45}, slots = {0, 0, 0, 0, 1, 1, 1},
                             positions = {0, 1, 2, 3, 0, 1, 2};
  const int64_t N = static_cast<int64_t>(tokens.size());
  models::KvCache full_cache(gpt, 2), head_cache(gpt, 2);
  const float* full = gpt.decode(full_cache, tokens.data(), slots.data(), positions.data(), N);
  const std::vector<float> full_rows(full, full + N * Vp);
  const std::vector<int64_t> rows = {3, 6};
  const float* head =
      gpt.decode(head_cache, tokens.data(), slots.data(), positions.data(), N, rows.data(), 2);
  for (int m = 0; m < 2; ++m) {
    for (int64_t v = 0; v < Vp; ++v) {
      ASSERT_EQ(head[m * Vp + v], full_rows[rows[m] * Vp + v]) << "row " << rows[m] << " " << v;
    }
  }
  const int64_t none = 0;
  gpt.decode(head_cache, tokens.data(), slots.data(), positions.data(), 1, &none, 0);
}

TEST(BatchedDecode, AJoiningSequenceChangesNoOtherSequence) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(7);
  const auto pa = small_prompt(4, 1), pb = small_prompt(9, 2);
  GenerateOptions oa = options_for(1), ob = options_for(2);
  oa.max_tokens = 30;
  ob.max_tokens = 15;
  const auto a_alone = alone(gpt, pa, oa), b_alone = alone(gpt, pb, ob);

  Generator g(gpt, 2);
  auto a = g.add(pa, oa);
  ASSERT_TRUE(a.is_ok());
  std::vector<int32_t> a_out, b_out;
  int b_id = -1;
  for (int step = 0; !g.idle(); ++step) {
    if (step == 8) {  // B joins while A is mid-generation
      auto b = g.add(pb, ob);
      ASSERT_TRUE(b.is_ok()) << b.status().message();
      b_id = *b;
    }
    for (const StepEvent& e : g.step()) {
      if (e.token < 0) continue;
      (e.id == *a ? a_out : b_out).push_back(e.token);
    }
  }
  EXPECT_NE(b_id, *a);
  EXPECT_EQ(a_out, a_alone);
  EXPECT_EQ(b_out, b_alone);
}

// With a prefill budget of 4 tokens, a 17-token prompt that joins a decoding sequence takes
// ceil(17 / 4) = 5 steps to its first token, and the decoding sequence emits a token in every one
// of them (without the budget the prompt would be prefilled in the first step: 48 rows fit it).
// Neither sequence's tokens change.
TEST(BatchedDecode, PrefillBudgetSplitsALongPromptWhileOthersDecodeEveryStep) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(7);
  const auto pa = small_prompt(3, 1), pb = small_prompt(17, 2);
  GenerateOptions oa = options_for(1), ob = options_for(2);
  oa.max_tokens = 30;
  ob.max_tokens = 10;
  const auto a_alone = alone(gpt, pa, oa), b_alone = alone(gpt, pb, ob);

  Generator g(gpt, 2);
  EXPECT_EQ(g.prefill_budget(), 0);
  g.set_prefill_budget(4);
  auto a = g.add(pa, oa);
  ASSERT_TRUE(a.is_ok());
  std::vector<int32_t> a_out, b_out;
  int b_id = -1, b_joined = -1, b_first = -1;
  for (int step = 0; !g.idle(); ++step) {
    if (step == 3) {
      auto b = g.add(pb, ob);
      ASSERT_TRUE(b.is_ok()) << b.status().message();
      b_id = *b;
      b_joined = step;
    }
    const size_t a_before = a_out.size();
    for (const StepEvent& e : g.step()) {
      if (e.token < 0) continue;
      if (e.id == b_id) {
        if (b_out.empty()) b_first = step;
        b_out.push_back(e.token);
      } else {
        a_out.push_back(e.token);
      }
    }
    if (a_out.size() < a_alone.size()) {
      EXPECT_EQ(a_out.size(), a_before + 1) << "step " << step << ": A did not decode";
    }
  }
  EXPECT_EQ(b_first - b_joined + 1, 5) << "steps from B's join to its first token";
  EXPECT_EQ(a_out, a_alone);
  EXPECT_EQ(b_out, b_alone);
}

// Prompts take the budget oldest first, not in cache-slot order: C (10 tokens) joins into slot
// 1, then D (3 tokens) into slot 0, freed after C joined. With a budget of 4, C is prefilled in
// steps 1-3 (4 + 4 + 2, D's first 2 tokens beside its last 2) and D finishes in step 4.
TEST(BatchedDecode, PrefillBudgetGoesToTheOldestPromptFirst) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(7);
  Generator g(gpt, 2);
  g.set_prefill_budget(4);
  GenerateOptions o = options_for(0);
  o.max_tokens = 3;
  auto x = g.add(small_prompt(2, 0), o);
  auto c = g.add(small_prompt(10, 1), o);
  ASSERT_TRUE(x.is_ok() && c.is_ok());
  g.remove(*x);
  auto d = g.add(small_prompt(3, 2), o);
  ASSERT_TRUE(d.is_ok());
  ASSERT_LT(*d, *c) << "D must take the lower slot for this test to tell the orders apart";
  int c_first = -1, d_first = -1;
  for (int step = 1; !g.idle(); ++step) {
    for (const StepEvent& e : g.step()) {
      if (e.token < 0) continue;
      if (e.id == *c && c_first < 0) c_first = step;
      if (e.id == *d && d_first < 0) d_first = step;
    }
  }
  EXPECT_EQ(c_first, 3);
  EXPECT_EQ(d_first, 4);
}

// Runs `prompt` to the end on `g`; its tokens, and the steps until its first token.
std::vector<int32_t> run_one(Generator& g, const std::vector<int32_t>& prompt,
                             const GenerateOptions& o, int* steps_to_first = nullptr) {
  auto id = g.add(prompt, o);
  EXPECT_TRUE(id.is_ok()) << id.status().message();
  std::vector<int32_t> out;
  for (int step = 1; !g.idle(); ++step) {
    for (const StepEvent& e : g.step()) {
      if (e.token < 0) continue;
      if (out.empty() && steps_to_first) *steps_to_first = step;
      out.push_back(e.token);
    }
  }
  return out;
}

// A conversation's next turn: its prompt is the last turn's prompt and answer and 3 new tokens.
// The freed slot kept the 10 + 5 tokens the first turn fed (not its last sampled token, never
// fed), so the second turn prefills 4 tokens: one step at a budget of 4, where 19 would take 5.
// The tokens equal a fresh generator's with reuse off, whose counter stays 0.
TEST(BatchedDecode, PrefixReuseFeedsOnlyTheNewTokensAndChangesNoToken) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(9);
  GenerateOptions o = options_for(1);  // sampled, seeded
  o.max_tokens = 6;
  const auto p1 = small_prompt(10, 4);
  Generator g(gpt, 2);
  g.set_prefill_budget(4);
  const auto out1 = run_one(g, p1, o);
  ASSERT_EQ(out1.size(), 6u);
  EXPECT_EQ(g.prefix_tokens_reused(), 0);
  std::vector<int32_t> p2 = p1;
  p2.insert(p2.end(), out1.begin(), out1.end());
  for (int32_t t : {3, 1, 4}) p2.push_back(t);
  int steps = 0;
  const auto out2 = run_one(g, p2, o, &steps);
  EXPECT_EQ(g.prefix_tokens_reused(), 15);
  EXPECT_EQ(steps, 1) << "4 tokens left to prefill at 4 a step";

  Generator fresh(gpt, 2);
  fresh.set_prefix_reuse(false);
  fresh.set_prefill_budget(4);
  EXPECT_EQ(run_one(fresh, p1, o), out1);
  int fresh_steps = 0;
  EXPECT_EQ(run_one(fresh, p2, o, &fresh_steps), out2);
  EXPECT_EQ(fresh_steps, 5) << "19 tokens at 4 a step";
  EXPECT_EQ(fresh.prefix_tokens_reused(), 0);
}

// add() takes the free slot with the longest kept prefix (never the whole prompt: its last token
// is fed for its logits), else the least recently taken one. Slot 0 keeps A's tokens, slot 1
// B's, slot 2 nothing.
TEST(BatchedDecode, PrefixReuseTakesTheLongestMatchElseTheLeastRecentlyUsedSlot) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(9);
  GenerateOptions o = options_for(0);
  o.max_tokens = 2;
  Generator g(gpt, 3);
  const auto a = small_prompt(8, 1), b = small_prompt(8, 2);
  ASSERT_NE(a[0], b[0]);
  auto ia = g.add(a, o);
  auto ib = g.add(b, o);
  ASSERT_TRUE(ia.is_ok() && ib.is_ok());
  EXPECT_EQ(*ia, 0);
  EXPECT_EQ(*ib, 1);
  while (!g.idle()) g.step();
  // B's first 5 tokens, then others: slot 1, 5 reused.
  std::vector<int32_t> c(b.begin(), b.begin() + 5);
  c.push_back(77);
  auto ic = g.add(c, o);
  ASSERT_TRUE(ic.is_ok());
  EXPECT_EQ(*ic, 1);
  EXPECT_EQ(g.prefix_tokens_reused(), 5);
  // Nothing matches: slot 2, never taken, is the least recently used.
  auto id = g.add({88, 89}, o);
  ASSERT_TRUE(id.is_ok());
  EXPECT_EQ(*id, 2);
  while (!g.idle()) g.step();
  // A itself again: slot 0 kept all 8 of A's tokens and 1 generated; 7 are reused, not 8.
  auto ia2 = g.add(a, o);
  ASSERT_TRUE(ia2.is_ok());
  EXPECT_EQ(*ia2, 0);
  EXPECT_EQ(g.prefix_tokens_reused(), 5 + 7);
}

// Sharing with a running sequence. A (12 tokens) is prefilled 4 a step; B (A's prompt and 2
// more) joins after step 1 and waits for A to cache its 12, copies them and prefills 2: its first
// token comes at step 4, where prefilling all 14 behind A would take until step 7. C and D, two
// copies of one 10-token prompt added together before any step, share it the same way: D copies
// C's 9 positions. Every token equals a fresh generator's without reuse.
TEST(BatchedDecode, PrefixReuseCopiesFromARunningSequenceInsteadOfPrefillingAgain) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(9);
  GenerateOptions o = options_for(1);
  o.max_tokens = 8;
  const auto a = small_prompt(12, 5);
  auto b = a;
  b.push_back(3);
  b.push_back(4);
  Generator g(gpt, 4);
  g.set_prefill_budget(4);
  Generator fresh(gpt, 1);
  fresh.set_prefix_reuse(false);

  auto ia = g.add(a, o);
  ASSERT_TRUE(ia.is_ok());
  std::vector<int32_t> a_out, b_out;
  int b_id = -1, b_first = -1;
  for (int step = 1; !g.idle(); ++step) {
    if (step == 2) {
      auto ib = g.add(b, o);
      ASSERT_TRUE(ib.is_ok());
      b_id = *ib;
    }
    for (const StepEvent& e : g.step()) {
      if (e.token < 0) continue;
      if (e.id == b_id) {
        if (b_out.empty()) b_first = step;
        EXPECT_EQ(e.cached_tokens, 12);
        b_out.push_back(e.token);
      } else {
        EXPECT_EQ(e.cached_tokens, 0);
        a_out.push_back(e.token);
      }
    }
  }
  EXPECT_EQ(b_first, 4);
  EXPECT_EQ(g.prefix_tokens_reused(), 12);
  EXPECT_EQ(a_out, fresh.generate(a, o, nullptr).value());
  EXPECT_EQ(b_out, fresh.generate(b, o, nullptr).value());

  // The first wave: two requests with one prompt, added in the same iteration.
  const auto c = small_prompt(10, 6);
  const auto before = g.prefix_tokens_reused();
  auto ic = g.add(c, o);
  auto id = g.add(c, o);
  ASSERT_TRUE(ic.is_ok() && id.is_ok());
  std::vector<int32_t> c_out, d_out;
  while (!g.idle()) {
    for (const StepEvent& e : g.step()) {
      if (e.token >= 0) (e.id == *ic ? c_out : d_out).push_back(e.token);
    }
  }
  EXPECT_EQ(g.prefix_tokens_reused() - before, 9) << "D copies C's 9 positions, not 10";
  const auto expected = fresh.generate(c, o, nullptr).value();
  EXPECT_EQ(c_out, expected);
  EXPECT_EQ(d_out, expected);
}

TEST(BatchedDecode, CancelledSequenceFreesItsSlotAndFullBatchIsAnError) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(7);
  Generator g(gpt, 1);
  auto a = g.add(small_prompt(3, 0), options_for(0));
  ASSERT_TRUE(a.is_ok());
  auto full = g.add(small_prompt(3, 1), options_for(1));
  ASSERT_FALSE(full.is_ok());
  EXPECT_NE(full.status().message().find("slots are in use"), std::string::npos);
  g.step();
  g.remove(*a);
  EXPECT_TRUE(g.idle());
  EXPECT_TRUE(g.step().empty());
  // The freed slot serves a new sequence exactly as a fresh generator would.
  const auto p = small_prompt(5, 3);
  auto b = g.add(p, options_for(3));
  ASSERT_TRUE(b.is_ok());
  std::vector<int32_t> out;
  while (!g.idle()) {
    for (const StepEvent& e : g.step()) {
      if (e.token >= 0) out.push_back(e.token);
    }
  }
  EXPECT_EQ(out, alone(gpt, p, options_for(3)));
}

// warm_up() makes the backend's frozen copies of every weight a step uses (the CPU backend packs
// them at first use: the layers' four linears and the tied head), emits nothing, leaves the
// generator idle, and changes no later output.
TEST(BatchedDecode, WarmUpPacksTheWeightsAndChangesNothingElse) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(8);
  const auto p = small_prompt(7, 2);
  const std::vector<int32_t> expected = alone(gpt, p, options_for(1));
  Generator g(gpt, 2);
  EXPECT_EQ(gpt.backend().frozen_copy_bytes(), 0u);
  g.warm_up();
  EXPECT_TRUE(g.idle());
  // Each linear of each layer and the head, in panels of 16 output columns (zero-padded), C
  // wide: qkv 3C, proj C, fc 4C, fc-proj C (4C wide), head Vp.
  const core::ModelConfig& m = gpt.config();
  const size_t C = m.n_embd, lanes = 16 * sizeof(float);
  auto panels = [&](size_t oc, size_t in) { return (oc + 15) / 16 * in * lanes; };
  const size_t per_layer = panels(3 * C, C) + panels(C, C) + panels(4 * C, C) + panels(C, 4 * C);
  EXPECT_EQ(gpt.backend().frozen_copy_bytes(),
            m.n_layer * per_layer + panels(gpt.padded_vocab_local(), C));
  std::vector<int32_t> out;
  ASSERT_TRUE(g.add(p, options_for(1)).is_ok());
  while (!g.idle()) {
    for (const StepEvent& e : g.step()) {
      if (e.token >= 0) out.push_back(e.token);
    }
  }
  EXPECT_EQ(out, expected);
}

}  // namespace
}  // namespace tessera::generate
