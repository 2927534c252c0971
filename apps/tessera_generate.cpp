// tessera-generate: text from trained weights, streamed token by token.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <iterator>

#include "backends/backend.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/stored_config.h"
#include "core/app.h"
#include "core/log.h"
#include "core/threads.h"
#include "data/tokenizer.h"
#include "generate/generator.h"
#include "models/gpt.h"
#include "parallel/process_grid.h"

using namespace tessera;

int main(int argc, char** argv) {
  return core::run_app("tessera-generate", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{
        "Generate text from a trained model. Example: tessera-generate out/tiny/model.h5 --prompt "
        "'ROMEO:'"};
    std::string weights_path;
    std::string prompt;
    std::string tokenizer_prefix;
    generate::GenerateOptions o;
    bool greedy = false, no_cache = false, ignore_eot = false;
    int threads = 0;
    int tp = 0;
    std::string device = "cpu", dtype = "fp32";
    app.add_option("weights", weights_path,
                   "a checkpoint (.h5): model.h5 written at the end of training, a step_<n>.h5, or "
                   "a converted one")
        ->required();
    app.add_option("--prompt,-p", prompt, "prompt text (default: read stdin)");
    app.add_option("--tokenizer", tokenizer_prefix,
                   "tokenizer prefix (default: the one in the weights' config)");
    app.add_option("--max-tokens,-n", o.max_tokens, "tokens to generate")->capture_default_str();
    app.add_option("--temperature,-t", o.sampling.temperature, "sampling temperature; 0 = greedy")
        ->capture_default_str();
    app.add_option("--top-k", o.sampling.top_k, "keep the k most likely tokens (0: off)")
        ->capture_default_str();
    app.add_option("--top-p", o.sampling.top_p, "nucleus sampling mass (1: off)")
        ->capture_default_str();
    app.add_option("--seed", o.sampling.seed, "sampling seed")->capture_default_str();
    app.add_option("--threads", threads, "threads per rank (0: cores / ranks on the node)");
    app.add_option(
        "--tp", tp,
        "tensor-parallel size (default: every rank; ranks beyond one tp group repeat it)");
    app.add_option("--device", device, "cpu or cuda (one GPU per rank, from the local rank)")
        ->capture_default_str();
    app.add_option("--dtype", dtype,
                   "fp32, or bf16: GEMM operands in bf16 with fp32 accumulation, each weight "
                   "converted once (train.dtype's meaning)")
        ->check(CLI::IsMember({"fp32", "bf16"}))
        ->capture_default_str();
    app.add_flag("--greedy", greedy, "argmax decoding (same as --temperature 0)");
    app.add_flag("--ignore-eot", ignore_eot, "keep going past <|endoftext|> (emit it as text)");
    app.add_flag("--no-kv-cache", no_cache,
                 "recompute the whole prefix for every token (reference path)");
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    // Every rank checks the same arguments before the first collective, so all fail alike. The
    // rules are the library's (Generator::add/generate check them too); only the names are ours.
    TESSERA_RETURN_IF_ERROR(
        generate::validate(o, {"--temperature", "--top-k", "--top-p", "--max-tokens"}));
    if (app.count("--prompt") && prompt.empty()) {
      return core::Status::error(
          "--prompt is empty; give the text to continue, e.g. --prompt 'ROMEO:' (or leave out "
          "--prompt to read it from stdin)");
    }
    if (greedy) o.sampling.temperature = 0;
    o.use_kv_cache = !no_cache;
    o.stop_at_eot = !ignore_eot;
    // A checkpoint: model.h5 (the final weights) or step_<n>.h5, float32 or bf16; any grid.
    auto config = checkpoint::read_stored_config(weights_path);
    if (!config) return config.status();
    int world_size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    if (tp == 0) tp = world_size;
    TESSERA_RETURN_IF_ERROR(parallel::check_inference_grid(*config, tp, world_size));
    parallel::ProcessGrid grid(tp);
    const bool printer = grid.world_rank() == 0;
    // Every rank builds its backend before the first collective, so a bad --device (or no GPU
    // under cuda) fails alike everywhere with the same message.
    auto backend = backends::make_backend(device, grid.local_rank(), grid.local_size(), "--device");
    if (!backend) return backend.status();
    grid.attach_device(**backend);
    (*backend)->set_bf16_matmuls(dtype == "bf16");
    core::set_threads(threads, grid.local_size());
    if (tokenizer_prefix.empty()) tokenizer_prefix = config->data.tokenizer;
    auto tokenizer = data::load_tokenizer_for_model(tokenizer_prefix, config->model.vocab_size);
    if (!tokenizer) return tokenizer.status();
    // Decode only, unless --no-kv-cache asks for full recomputation (Gpt::forward).
    models::Gpt model(config->model, 1, config->model.max_seq_len, &grid.device_tp_comm(),
                      backend->get(), false, {},
                      no_cache ? models::Gpt::Purpose::kTrain : models::Gpt::Purpose::kInference);
    auto state = checkpoint::read_checkpoint(weights_path, model, nullptr, grid);
    if (!state) return state.status();
    if (!app.count("--prompt")) {
      // mpirun hands stdin to rank 0 only: it reads, every rank gets the same prompt.
      if (grid.world_rank() == 0) {
        prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
      }
      int64_t bytes = static_cast<int64_t>(prompt.size());
      grid.world_comm().broadcast_bytes(&bytes, sizeof bytes, 0);
      prompt.resize(bytes);
      grid.world_comm().broadcast_bytes(prompt.data(), bytes, 0);
      // Every rank has the same broadcast prompt, so all fail alike.
      if (prompt.empty()) {
        return core::Status::error(
            "the prompt read from stdin is empty; pipe some text in, or give --prompt 'TEXT'");
      }
    }
    o.eot_token = tokenizer->eot_token();
    generate::Generator generator(model, 1, &grid.tp_comm());
    if (printer) {
      std::fputs(prompt.c_str(), stdout);
      std::fflush(stdout);
    }
    auto out = generator.generate(tokenizer->encode(prompt), o, [&](int32_t token) {
      if (!printer) return;
      const std::string piece = tokenizer->decode_token(token);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    if (printer) std::fputs("\n", stdout);
    if (!out) return out.status();
    return 0;
  });
}
