// The paged KV cache (models/kv_cache.h, backends/kv_pages.h): attention over positions held in
// scrambled blocks gives the bits of a contiguous cache; blocks are taken as positions grow,
// shared by reference, copied before a write to a shared one, and given back when no slot holds
// them; a Generator with a pool smaller than max_sequences x the context serves every sequence
// with the tokens it gets alone, refuses what the reserved pool cannot hold, and gives back the
// kept blocks of the least recently used free slot first when a step needs blocks. A model built
// for inference (decode only) generates the same tokens in less memory.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "backends/backend.h"
#include "generate/generator.h"
#include "models/gpt.h"
#include "models/kv_cache.h"
#include "test_models.h"

namespace tessera::generate {
namespace {

std::vector<float> random_floats(size_t n, uint32_t seed) {
  std::vector<float> v(n);
  uint32_t x = seed * 2654435761u + 1;
  for (float& f : v) {
    x = x * 1664525u + 1013904223u;
    f = static_cast<float>(x >> 8) / static_cast<float>(1u << 24) * 2.0f - 1.0f;
  }
  return v;
}

// Two slots' rows appended and attended through a contiguous cache (one block of the whole
// context per slot) and through a paged one (blocks of 4 positions, the table handing out the
// pool's blocks last first, so every slot's positions sit in reversed, interleaved blocks): the
// same cache contents position by position and the same output bits.
TEST(PagedKvCache, AttentionIsTheSameBitsWhateverBlocksHoldThePositions) {
  backends::Backend& cpu = backends::cpu_backend();
  constexpr int64_t maxT = 24, C = 32, NH = 4, n_slots = 2, bs = 4, bps = maxT / bs;
  std::vector<int32_t> identity = {0, 1};
  const backends::KvPages contiguous{identity.data(), 1, maxT};
  std::vector<int32_t> scrambled(n_slots * bps);
  for (int64_t b = 0; b < n_slots * bps; ++b) {
    // Slot s's block j is pool block (n_blocks - 1) - (2 j + s): the slots alternate, reversed.
    const int64_t s = b / bps, j = b % bps;
    scrambled[b] = static_cast<int32_t>(n_slots * bps - 1 - (2 * j + s));
  }
  const backends::KvPages paged{scrambled.data(), bps, bs};
  std::vector<float> k1(n_slots * maxT * C, 0.f), v1 = k1, k2 = k1, v2 = k1;

  // Slot 0: 17 positions, slot 1: 9, one call; then one decode row each.
  std::vector<int32_t> slots, positions;
  for (int32_t t = 0; t < 17; ++t) slots.push_back(0), positions.push_back(t);
  for (int32_t t = 0; t < 9; ++t) slots.push_back(1), positions.push_back(t);
  for (int call = 0; call < 2; ++call) {
    const auto N = static_cast<int64_t>(slots.size());
    const std::vector<float> qkv = random_floats(N * 3 * C, 7 + call);
    std::vector<float> out1(N * C), out2(N * C);
    cpu.kv_append(k1.data(), v1.data(), qkv.data(), contiguous, slots.data(), positions.data(), N,
                  C);
    cpu.kv_append(k2.data(), v2.data(), qkv.data(), paged, slots.data(), positions.data(), N, C);
    cpu.attention_decode(out1.data(), qkv.data(), k1.data(), v1.data(), contiguous, slots.data(),
                         positions.data(), N, C, NH);
    cpu.attention_decode(out2.data(), qkv.data(), k2.data(), v2.data(), paged, slots.data(),
                         positions.data(), N, C, NH);
    EXPECT_EQ(std::memcmp(out1.data(), out2.data(), out1.size() * sizeof(float)), 0)
        << "call " << call << ": the paged cache's attention differs from the contiguous one's";
    for (int64_t i = 0; i < N; ++i) {
      const int64_t p = positions[i], s = slots[i];
      const int64_t row2 = scrambled[s * bps + p / bs] * bs + p % bs;
      EXPECT_EQ(std::memcmp(&k1[(s * maxT + p) * C], &k2[row2 * C], C * sizeof(float)), 0)
          << "key of slot " << s << " position " << p;
      EXPECT_EQ(std::memcmp(&v1[(s * maxT + p) * C], &v2[row2 * C], C * sizeof(float)), 0)
          << "value of slot " << s << " position " << p;
    }
    slots = {1, 0};
    positions = {9, 17};
  }
}

// The block accounting: context 48 in blocks of 16 (3 a slot), a pool of 5.
TEST(PagedKvCache, BlocksAreTakenSharedCopiedOnWriteAndGivenBack) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  models::KvCache cache(gpt, 3, 5);
  ASSERT_EQ(cache.block_size(), 16);
  ASSERT_EQ(cache.blocks_per_slot(), 3);
  EXPECT_EQ(cache.bytes(), int64_t{2} * 2 * 5 * 16 * 32 * 4) << "k and v, 2 layers, 5 blocks";
  EXPECT_EQ(models::KvCache(gpt, 3).n_blocks(), 9) << "no pool size: every slot its context";

  EXPECT_EQ(cache.blocks_needed(0, 0, 20), 2);
  cache.make_writable(0, 0, 20);
  EXPECT_EQ(cache.held_blocks(0), 2);
  EXPECT_EQ(cache.free_blocks(), 3);
  EXPECT_EQ(cache.blocks_needed(0, 20, 32), 0) << "the rest of its own second block";
  // Mark slot 0's second block in every layer, to see it copied.
  const backends::KvPages p0 = cache.pages();
  const int32_t second = p0.block_table[1];
  for (int64_t layer = 0; layer < 2; ++layer) {
    for (int64_t i = 0; i < 16 * 32; ++i) {
      cache.k(layer)[second * 16 * 32 + i] = static_cast<float>(layer * 1000 + i);
      cache.v(layer)[second * 16 * 32 + i] = static_cast<float>(-layer * 1000 - i);
    }
  }

  cache.share(0, 1, 20);  // slot 1 takes both blocks by reference
  EXPECT_EQ(cache.held_blocks(1), 2);
  EXPECT_EQ(cache.free_blocks(), 3) << "sharing takes no block";
  EXPECT_EQ(cache.blocks_needed(1, 20, 21), 1) << "writing into the shared second block copies it";
  EXPECT_EQ(cache.blocks_needed(0, 20, 21), 1) << "for either holder";
  cache.make_writable(1, 20, 21);
  EXPECT_EQ(cache.free_blocks(), 2);
  const backends::KvPages p1 = cache.pages();
  const int32_t copy = p1.block_table[3 + 1];
  EXPECT_NE(copy, second);
  EXPECT_EQ(p1.block_table[3 + 0], p1.block_table[0]) << "the first block stays shared";
  for (int64_t layer = 0; layer < 2; ++layer) {
    EXPECT_EQ(std::memcmp(cache.k(layer) + copy * 16 * 32, cache.k(layer) + second * 16 * 32,
                          16 * 32 * sizeof(float)),
              0)
        << "layer " << layer << ": the copy holds the shared block's keys";
    EXPECT_EQ(std::memcmp(cache.v(layer) + copy * 16 * 32, cache.v(layer) + second * 16 * 32,
                          16 * 32 * sizeof(float)),
              0)
        << "layer " << layer << ": and its values";
  }
  EXPECT_EQ(cache.blocks_needed(0, 20, 21), 0) << "slot 0 holds its second block alone again";

  cache.truncate(0, 0);
  EXPECT_EQ(cache.held_blocks(0), 0);
  EXPECT_EQ(cache.free_blocks(), 3) << "only the unshared block went back";
  cache.make_writable(1, 21, 48);
  EXPECT_EQ(cache.held_blocks(1), 3);
  EXPECT_EQ(cache.free_blocks(), 2);
  cache.truncate(1, 16);
  EXPECT_EQ(cache.held_blocks(1), 1);
  EXPECT_EQ(cache.free_blocks(), 4);
  cache.truncate(1, 0);
  EXPECT_EQ(cache.free_blocks(), 5);
}

std::vector<int32_t> paged_prompt(int length, int salt) {
  std::vector<int32_t> p;
  for (int i = 0; i < length; ++i) p.push_back((5 * i + 11 * salt + 3) % 90);
  return p;
}

GenerateOptions paged_options(int i, int max_tokens) {
  GenerateOptions o;
  o.max_tokens = max_tokens;
  o.stop_at_eot = false;
  o.sampling.temperature = i % 2 == 0 ? 0.0f : 0.8f;
  o.sampling.seed = 40 + i;
  return o;
}

// Eight sequences of at most 16 positions (prompt + max_tokens) each reserve one block: a pool of
// 8 blocks runs all eight together where whole contexts would take 24, a third of the memory,
// and each emits the tokens it emits alone in a generator of whole-context slots.
TEST(PagedKvCache, ASmallPoolRunsEverySequenceWithTheTokensItGetsAlone) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(21);
  Generator paged(gpt, 8, nullptr, 8);
  Generator whole(gpt, 1);
  EXPECT_EQ(paged.kv_cache().bytes() * 3, models::KvCache(gpt, 8).bytes());
  std::vector<std::vector<int32_t>> prompts;
  std::vector<GenerateOptions> options;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(paged_prompt(3 + i, i));
    options.push_back(paged_options(i, 13 - i));
    ASSERT_EQ(paged.kv_blocks_for(3 + i, 13 - i), 1);
  }
  auto together = paged.generate_batch(prompts, options);
  ASSERT_TRUE(together.is_ok()) << together.status().message();
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ((*together)[i], whole.generate(prompts[i], options[i], nullptr).value())
        << "sequence " << i;
  }
  EXPECT_EQ(paged.kv_blocks_reserved(), 0);
}

// Adds `prompt` to an idle generator and steps until it is idle again: the tokens emitted.
std::vector<int32_t> run(Generator& g, const std::vector<int32_t>& prompt,
                         const GenerateOptions& o) {
  std::vector<int32_t> out;
  auto id = g.add(prompt, o);
  EXPECT_TRUE(id.is_ok()) << id.status().message();
  while (!g.idle()) {
    for (const StepEvent& e : g.step()) {
      if (e.token >= 0) out.push_back(e.token);
    }
  }
  return out;
}

// Pool of 4 blocks: A (30 + 10 = 40 positions) reserves 3; B (10 + 10) needs 2 and is refused,
// naming the blocks; once A leaves, B runs.
TEST(PagedKvCache, AddRefusesWhatTheReservedPoolCannotHold) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(22);
  Generator g(gpt, 4, nullptr, 4);
  auto a = g.add(paged_prompt(30, 1), paged_options(0, 10));
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ(g.kv_blocks_reserved(), 3);
  auto b = g.add(paged_prompt(10, 2), paged_options(1, 10));
  ASSERT_FALSE(b.is_ok());
  EXPECT_NE(b.status().message().find("reserves 2 blocks of 16 positions"), std::string::npos)
      << b.status().message();
  EXPECT_NE(b.status().message().find("hold 3 of the 4"), std::string::npos)
      << b.status().message();
  while (!g.idle()) g.step();
  EXPECT_EQ(g.kv_blocks_reserved(), 0);
  Generator whole(gpt, 1);
  EXPECT_EQ(run(g, paged_prompt(10, 2), paged_options(1, 10)),
            whole.generate(paged_prompt(10, 2), paged_options(1, 10), nullptr).value());
}

// Pool of 3 blocks, 3 slots. A and B (1 block each) finish and their slots keep their blocks
// (1 block left free). C needs 2: the step gives back the kept blocks of A's slot, the least
// recently taken, not B's. Then B's prompt again reuses its kept positions and A's finds none;
// every token equals a whole-context generator's.
TEST(PagedKvCache, KeptBlocksGoBackLeastRecentlyUsedFirstWhenThePoolRunsShort) {
  models::Gpt gpt(testing::small_generation_model(), 1, 48);
  gpt.init_weights(23);
  Generator g(gpt, 3, nullptr, 3);
  Generator whole(gpt, 1);
  const auto a = paged_prompt(10, 1), b = paged_prompt(10, 2), c = paged_prompt(20, 3);
  const GenerateOptions o = paged_options(1, 4);
  EXPECT_EQ(run(g, a, o), whole.generate(a, o, nullptr).value());
  EXPECT_EQ(run(g, b, o), whole.generate(b, o, nullptr).value());
  EXPECT_EQ(g.kv_cache().free_blocks(), 1) << "A's and B's slots keep a block each";
  EXPECT_EQ(run(g, c, o), whole.generate(c, o, nullptr).value());
  EXPECT_EQ(g.kv_cache().held_blocks(0), 0) << "A's slot gave its block back";
  EXPECT_EQ(g.kv_cache().held_blocks(1), 1) << "B's slot kept its block";
  EXPECT_EQ(g.prefix_tokens_reused(), 0);
  EXPECT_EQ(run(g, b, o), whole.generate(b, o, nullptr).value());
  EXPECT_EQ(g.prefix_tokens_reused(), 9) << "B's prompt but its last token, kept";
  EXPECT_EQ(run(g, a, o), whole.generate(a, o, nullptr).value());
  EXPECT_EQ(g.prefix_tokens_reused(), 9) << "nothing of A's was kept";
}

}  // namespace
}  // namespace tessera::generate

namespace tessera::generate {
namespace {

// A model built for inference (decode only) leaves out the gradients, the backward scratch and
// the attention probabilities, and generates exactly the tokens of a model built for training
// with the same weights; full recomputation on it is refused by name.
TEST(InferenceModel, DecodesTheSameTokensInLessMemory) {
  models::Gpt train(testing::small_generation_model(), 1, 48);
  train.init_weights(24);
  models::Gpt infer(testing::small_generation_model(), 1, 48, nullptr, nullptr, false, {},
                    models::Gpt::Purpose::kInference);
  ASSERT_EQ(infer.weights().bytes(), train.weights().bytes());
  std::memcpy(infer.weights().raw(), train.weights().raw(), train.weights().bytes());
  EXPECT_TRUE(infer.inference_only());
  EXPECT_FALSE(train.inference_only());
  EXPECT_FALSE(infer.grads().defined());
  // The gradients, 2 layers x 4 heads x 48 x 48 probabilities, and the second layer's
  // activations (it shares the first's): at least its 6 residual-stream tensors, its qkv and
  // attention output and its two MLP activations, (48, 18 x 32) floats; then the backward
  // scratch and dlogits.
  const int64_t saved = train.allocated_bytes() - infer.allocated_bytes();
  EXPECT_GE(saved,
            static_cast<int64_t>(train.grads().bytes()) + 2 * 4 * 48 * 48 * 4 + 48 * 18 * 32 * 4)
      << "train " << train.allocated_bytes() << " bytes, inference " << infer.allocated_bytes();
  // The layers share their activations: twice the layers, the same arena.
  core::ModelConfig deeper = testing::small_generation_model();
  deeper.n_layer = 4;
  models::Gpt infer4(deeper, 1, 48, nullptr, nullptr, false, {}, models::Gpt::Purpose::kInference);
  models::Gpt train4(deeper, 1, 48);
  EXPECT_EQ(infer4.activation_bytes(), infer.activation_bytes());
  EXPECT_GT(train4.activation_bytes(), train.activation_bytes());

  std::vector<std::vector<int32_t>> prompts = {paged_prompt(7, 1), paged_prompt(12, 2),
                                               paged_prompt(3, 3)};
  std::vector<GenerateOptions> options = {paged_options(0, 9), paged_options(1, 11),
                                          paged_options(2, 5)};
  std::vector<std::vector<int32_t>> from_train, from_infer;
  {
    Generator g(train, 3);
    from_train = g.generate_batch(prompts, options).value();
  }
  {
    Generator g(infer, 3);
    from_infer = g.generate_batch(prompts, options).value();
    GenerateOptions full = options[0];
    full.use_kv_cache = false;
    auto refused = g.generate(prompts[0], full, nullptr);
    ASSERT_FALSE(refused.is_ok());
    EXPECT_NE(refused.status().message().find("needs a model built for training"),
              std::string::npos)
        << refused.status().message();
  }
  EXPECT_EQ(from_infer, from_train);
}

}  // namespace
}  // namespace tessera::generate
