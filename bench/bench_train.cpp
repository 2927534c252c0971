// Training throughput of one rank: tokens/s and MFU (against the measured sgemm peak) for a GPT
// config at a given B and T, with a per-kernel-family time breakdown. Random tokens; each step is
// forward, backward, clipping and AdamW, as bench/torch_train_bench.py does for PyTorch. Also
// reports the model's activation arena and the process's peak resident set.
// Usage: bench_train --config configs/gpt2-124m.yaml --batch 4 --seq 64 --steps 10 --threads 2
//        [--dtype bf16]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "backends/backend.h"
#include "bench_util.h"
#include "core/app.h"
#include "core/config.h"
#include "core/philox.h"
#include "core/threads.h"
#include "core/timer.h"
#include "models/gpt.h"
#include "optim/optimizer.h"
#include "train/peak.h"

using namespace tessera;

int main(int argc, char** argv) {
  return core::run_app("bench_train", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{"Tessera CPU training benchmark"};
    std::string config_path = "configs/tiny.yaml";
    int64_t B = 4, T = 64;
    int steps = 10, warmup = 2, threads = 0;
    std::string dtype = "fp32";
    app.add_option("--config", config_path);
    app.add_option("--batch", B);
    app.add_option("--seq", T);
    app.add_option("--steps", steps);
    app.add_option("--warmup", warmup);
    app.add_option("--threads", threads);
    app.add_option("--dtype", dtype, "fp32, or bf16 GEMM operands (train.dtype)")
        ->check(CLI::IsMember({"fp32", "bf16"}));
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    auto config = core::load_config(config_path, {"train.seq_len=" + std::to_string(T)});
    if (!config) return config.status();
    const core::ModelConfig& mc = config->model;
    const int nthreads = core::set_threads(threads, 1);
    // 2048^3 (17 GFLOP a run): large enough that the figure is the BLAS peak, not its start-up.
    const double peak = train::measure_sgemm_gflops(2048, 5);

    backends::cpu_backend().set_bf16_matmuls(dtype == "bf16");
    models::Gpt model(mc, B, T);
    model.init_weights(1);
    optim::AdamW adamw(model.param_set());
    std::vector<int32_t> tokens(B * T), targets(B * T);
    for (int64_t i = 0; i < B * T; ++i) {
      tokens[i] = static_cast<int32_t>(core::philox_draw(7, 0, i)[0] % mc.vocab_size);
      targets[i] = static_cast<int32_t>(core::philox_draw(7, 1, i)[0] % mc.vocab_size);
    }
    std::vector<double> step_ms;
    for (int s = 0; s < warmup + steps; ++s) {
      if (s == warmup) {
        model.set_profiling(true);
        model.kernel_times() = {};
      }
      core::Timer t;
      model.zero_grad();
      model.forward(tokens.data(), targets.data(), B, T);
      model.backward(1.0f / static_cast<float>(B * T));
      optim::clip_grad_norm(model.param_set(), model.grads(), 1.0);
      adamw.step(model.weights(), model.grads(), 1e-4, s + 1, config->optim);
      if (s >= warmup) step_ms.push_back(t.seconds() * 1e3);
    }
    std::vector<double> sorted = step_ms;
    std::sort(sorted.begin(), sorted.end());
    const double median_ms = sorted[sorted.size() / 2];
    const double tps = static_cast<double>(B * T) / (median_ms / 1e3);
    const double mfu = models::Gpt::flops_per_token(mc, T) * tps / (peak * 1e9);
    const models::KernelTimes& kt = model.kernel_times();
    const double per = 1e3 / steps;  // ms per step
    nlohmann::json out = {
        {"impl", "tessera"},
        {"config", config_path},
        {"B", B},
        {"T", T},
        {"threads", nthreads},
        {"dtype", dtype},
        {"params", model.param_set().global_param_count(true)},
        {"tokens_per_s", tps},
        {"step_ms_median", median_ms},
        {"step_ms_min", sorted.front()},
        {"steps", steps},
        {"sgemm_gflops", peak},
        {"mfu", mfu},
        {"activation_mib", static_cast<double>(model.activation_bytes()) / 1048576.0},
        {"peak_rss_mib", bench::peak_rss_mib()},
        {"kernel_ms_per_step",
         {{"matmul", kt.matmul * per},
          {"attention", kt.attention * per},
          {"layernorm", kt.layernorm * per},
          {"gelu", kt.gelu * per},
          {"xent", kt.xent * per},
          {"embedding", kt.embedding * per},
          {"other", kt.other * per},
          {"optimizer_and_rest", median_ms - kt.total() * per}}}};
    std::printf("%s\n", out.dump().c_str());
    return 0;
  });
}
