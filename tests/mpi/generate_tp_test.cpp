// Tensor-parallel generation: greedy and sampled tokens with tp = world size (heads and the
// vocabulary split, logits gathered, the same counter RNG on every rank) equal those of tp = 1,
// with and without the KV cache.
#include <gtest/gtest.h>
#include <mpi.h>

#include "generate/generator.h"
#include "models/gpt.h"
#include "parallel/process_grid.h"

namespace tessera::generate {
namespace {

core::ModelConfig model_config() {
  core::ModelConfig m;
  m.vocab_size = 201;
  m.pad_vocab_to = 64;  // Vp = 256
  m.max_seq_len = 40;
  m.n_layer = 2;
  m.n_head = 4;
  m.n_embd = 32;
  m.init_std = 0.2;  // far from uniform logits, so greedy choices are well separated
  return m;
}

std::vector<int32_t> generate_on(MPI_Comm world, int tp, bool kv, float temperature) {
  parallel::ProcessGrid grid(world, tp);
  models::Gpt model(model_config(), 1, 40, &grid.tp_comm());
  model.init_weights(21);
  Generator g(model);
  GenerateOptions o;
  o.use_kv_cache = kv;
  o.max_tokens = 30;
  o.stop_at_eot = false;
  o.sampling.temperature = temperature;
  o.sampling.top_p = 0.9f;
  o.sampling.seed = 4;
  auto out = g.generate({3, 14, 15, 92}, o, nullptr);
  EXPECT_TRUE(out.is_ok()) << out.status().message();
  return out.is_ok() ? *out : std::vector<int32_t>{};
}

TEST(GenerateTp, TokensEqualThoseOfTpOne) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  for (float temperature : {0.0f, 1.0f}) {
    const auto reference = generate_on(MPI_COMM_SELF, 1, true, temperature);
    ASSERT_EQ(reference.size(), 30u);
    for (bool kv : {true, false}) {
      EXPECT_EQ(generate_on(MPI_COMM_WORLD, world, kv, temperature), reference)
          << "tp " << world << (kv ? " with" : " without") << " KV cache, temperature "
          << temperature;
    }
  }
}

}  // namespace
}  // namespace tessera::generate
