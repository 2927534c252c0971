// tessera-train: trains a GPT from a YAML config (+ --set overrides), writing metrics and weights.
#include <CLI/CLI.hpp>

#include "core/app.h"
#include "core/config.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "parallel/process_grid.h"
#include "train/trainer.h"

using namespace tessera;

int main(int argc, char** argv) {
  return core::run_app("tessera-train", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{
        "Train a GPT-2 family model. Example: tessera-train configs/tiny.yaml --set "
        "train.steps=100"};
    std::string config_path = "configs/tiny.yaml";
    std::vector<std::string> overrides;
    app.add_option("config", config_path, "YAML config file")->capture_default_str();
    app.add_option("--set", overrides, "override a key: --set train.steps=100 (repeatable)");
    bool resume = false;
    app.add_flag("--resume", resume,
                 "continue from <checkpoint.dir>/latest (same as --set checkpoint.resume=latest)");
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    if (resume) overrides.push_back("checkpoint.resume=latest");
    auto config = core::load_config(config_path, overrides);
    if (!config) return config.status();
    int world_size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    // Every rank checks the grid shape before the first collective, so all fail alike.
    TESSERA_RETURN_IF_ERROR(parallel::check_grid(*config, world_size));
    // The tokenizer makes the weights usable (tessera-generate loads it from the stored config):
    // it must load, and hold no more tokens than the model. Every rank checks, before any
    // collective. An empty data.tokenizer trains without one.
    if (const std::string& prefix = config->data.tokenizer; !prefix.empty()) {
      auto tokenizer = data::Tokenizer::load_prefix(prefix);
      if (!tokenizer) return tokenizer.status().with_context("data.tokenizer: ");
      if (tokenizer->vocab_size() > config->model.vocab_size) {
        return core::Status::error(
            "data.tokenizer '" + prefix + "' has " + std::to_string(tokenizer->vocab_size()) +
            " tokens, more than model.vocab_size " + std::to_string(config->model.vocab_size) +
            "; set model.vocab_size: " + std::to_string(tokenizer->vocab_size()) +
            ", or data.tokenizer to the tokenizer that wrote data.train");
      }
    }
    parallel::ProcessGrid grid(config->parallel.tp);
    core::log_info("resolved config:\n" + config->to_yaml());
    auto summary = train::train(*config, grid);
    if (!summary) return summary.status();
    return 0;
  });
}
