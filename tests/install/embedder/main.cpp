// Loads a Tessera checkpoint and continues a prompt by 30 tokens (temperature 0.8, seed 7, as
// tessera-generate --temperature 0.8 --seed 7 -n 30): the embedder of docs/INSTALL.md.
// Usage: embedder CHECKPOINT.h5 TOKENIZER_PREFIX PROMPT
#include <cstdio>

#include "backends/backend.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/stored_config.h"
#include "core/app.h"
#include "data/tokenizer.h"
#include "generate/generator.h"
#include "models/gpt.h"
#include "parallel/process_grid.h"

using namespace tessera;

int main(int argc, char** argv) {
  return core::run_app("embedder", argc, argv, [](int ac, char** av) -> core::Result<int> {
    if (ac != 4) return core::Status::error("usage: embedder CHECKPOINT TOKENIZER PROMPT");
    auto config = checkpoint::read_stored_config(av[1]);
    if (!config) return config.status();
    parallel::ProcessGrid grid(/*tp_size=*/1);
    auto backend = backends::make_backend("cpu", grid.local_rank(), grid.local_size());
    if (!backend) return backend.status();
    auto tokenizer = data::load_tokenizer_for_model(av[2], config->model.vocab_size);
    if (!tokenizer) return tokenizer.status();
    models::Gpt model(config->model, 1, config->model.max_seq_len, &grid.tp_comm(), backend->get());
    auto state = checkpoint::read_checkpoint(av[1], model, nullptr, grid);
    if (!state) return state.status();
    generate::GenerateOptions options;
    options.max_tokens = 30;
    options.sampling.temperature = 0.8f;
    options.sampling.seed = 7;
    options.eot_token = tokenizer->eot_token();
    generate::Generator generator(model, 1, &grid.tp_comm());
    std::fputs(av[3], stdout);
    auto out = generator.generate(tokenizer->encode(av[3]), options, [&](int32_t token) {
      std::fputs(tokenizer->decode_token(token).c_str(), stdout);
    });
    std::fputs("\n", stdout);
    return out ? core::Result<int>(0) : core::Result<int>(out.status());
  });
}
