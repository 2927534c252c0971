// tessera-generate: text from trained weights, streamed token by token.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <iostream>
#include <iterator>

#include "checkpoint/interim_weights.h"
#include "core/app.h"
#include "core/log.h"
#include "core/threads.h"
#include "data/tokenizer.h"
#include "generate/generator.h"
#include "models/gpt.h"

using namespace tessera;

int main(int argc, char** argv) {
  return core::run_app("tessera-generate", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{"Generate text from a trained model. Example: tessera-generate out/tiny/model.tsw --prompt 'ROMEO:'"};
    std::string weights_path;
    std::string prompt;
    std::string tokenizer_prefix;
    generate::GenerateOptions o;
    bool greedy = false, no_cache = false, ignore_eot = false;
    int threads = 0;
    app.add_option("weights", weights_path, "weights file written by tessera-train")->required();
    app.add_option("--prompt,-p", prompt, "prompt text (default: read stdin)");
    app.add_option("--tokenizer", tokenizer_prefix, "tokenizer prefix (default: the one in the weights' config)");
    app.add_option("--max-tokens,-n", o.max_tokens, "tokens to generate")->capture_default_str();
    app.add_option("--temperature,-t", o.sampling.temperature, "sampling temperature; 0 = greedy")->capture_default_str();
    app.add_option("--top-k", o.sampling.top_k, "keep the k most likely tokens (0: off)")->capture_default_str();
    app.add_option("--top-p", o.sampling.top_p, "nucleus sampling mass (1: off)")->capture_default_str();
    app.add_option("--seed", o.sampling.seed, "sampling seed")->capture_default_str();
    app.add_option("--threads", threads, "threads (0: all cores)");
    app.add_flag("--greedy", greedy, "argmax decoding (same as --temperature 0)");
    app.add_flag("--ignore-eot", ignore_eot, "keep going past <|endoftext|> (emit it as text)");
    app.add_flag("--no-kv-cache", no_cache, "recompute the whole prefix for every token (reference path)");
    try {
      app.parse(ac, av);
    } catch (const CLI::CallForHelp& e) {
      return app.exit(e);
    } catch (const CLI::ParseError& e) {
      return core::Status::error("command line: " + std::string(e.what()) + "; see --help");
    }
    if (greedy) o.sampling.temperature = 0;
    o.use_kv_cache = !no_cache;
    o.stop_at_eot = !ignore_eot;
    core::set_threads(threads, 1);
    auto config = checkpoint::read_interim_config(weights_path);
    if (!config) return config.status();
    if (tokenizer_prefix.empty()) tokenizer_prefix = config->data.tokenizer;
    auto tokenizer = data::Tokenizer::load_prefix(tokenizer_prefix);
    if (!tokenizer) return tokenizer.status();
    if (tokenizer->vocab_size() != config->model.vocab_size) {
      return core::Status::error("tokenizer '" + tokenizer_prefix + "' has " +
                                 std::to_string(tokenizer->vocab_size()) + " tokens, the model " +
                                 std::to_string(config->model.vocab_size) +
                                 "; pass the tokenizer the model was trained with (--tokenizer)");
    }
    models::Gpt model(config->model, 1, config->model.max_seq_len);
    TESSERA_RETURN_IF_ERROR(checkpoint::load_interim_weights(weights_path, model));
    if (!app.count("--prompt")) {
      prompt.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    }
    o.eot_token = tokenizer->eot_token();
    generate::Generator generator(model);
    std::fputs(prompt.c_str(), stdout);
    std::fflush(stdout);
    auto out = generator.generate(tokenizer->encode(prompt), o, [&](int32_t token) {
      const std::string piece = tokenizer->decode_token(token);
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    });
    std::fputs("\n", stdout);
    if (!out) return out.status();
    return 0;
  });
}
