// Training throughput of one rank: tokens/s and MFU for a GPT config at a given B and T, with a
// per-kernel-family time breakdown on the CPU. Random tokens; each step is forward, backward
// (over B / micro-batch micro-batches, gradients accumulated), clipping and AdamW, as
// bench/torch_train_bench.py and bench/torch_gpu_train_bench.py do for PyTorch. Also reports the
// model's activation arena and the process's peak resident set.
// MFU is against the measured sgemm peak of this machine's BLAS on the CPU; on CUDA against
// --peak-tflops (the GPU's bf16 GEMM peak, measured by bench/torch_gpu_train_bench.py in the same
// run: bench/run_gpu_bench.sh), and none without it.
// Usage: bench_train --config configs/gpt2-124m.yaml --batch 4 --seq 64 --steps 10 --threads 2
//        [--dtype bf16] [--device cuda] [--micro-batch 16] [--peak-tflops 790]
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
#include "parallel/process_grid.h"
#include "train/peak.h"

using namespace tessera;

int main(int argc, char** argv) {
  return core::run_app("bench_train", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{"Tessera training benchmark (one rank, CPU or CUDA)"};
    std::string config_path = "configs/tiny.yaml";
    int64_t B = 4, T = 64, micro = 0;
    int steps = 10, warmup = 2, threads = 0;
    double peak_tflops = 0;
    std::string dtype = "fp32", device = "cpu";
    app.add_option("--config", config_path);
    app.add_option("--batch", B);
    app.add_option("--seq", T);
    app.add_option("--steps", steps);
    app.add_option("--warmup", warmup);
    app.add_option("--threads", threads);
    app.add_option("--dtype", dtype, "fp32, or bf16 activations and GEMM operands (train.dtype)")
        ->check(CLI::IsMember({"fp32", "bf16"}));
    app.add_option("--device", device, "cpu or cuda (train.device)")
        ->check(CLI::IsMember({"cpu", "cuda"}));
    app.add_option("--micro-batch", micro,
                   "sequences per forward/backward (0: the whole batch); must divide --batch")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--peak-tflops", peak_tflops,
                   "the GEMM peak MFU is taken against (0: measure sgemm on the CPU; none on CUDA)")
        ->check(CLI::NonNegativeNumber);
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    auto config = core::load_config(config_path, {"train.seq_len=" + std::to_string(T)});
    if (!config) return config.status();
    const core::ModelConfig& mc = config->model;
    if (micro == 0) micro = B;
    if (B % micro != 0) {
      return core::Status::error("--micro-batch " + std::to_string(micro) +
                                 " does not divide --batch " + std::to_string(B) +
                                 "; give a divisor of the batch (or 0 for the whole batch)");
    }
    const int nthreads = core::set_threads(threads, 1);
    parallel::ProcessGrid grid(1);
    auto made = backends::make_backend(device, grid.local_rank(), grid.local_size(), "--device");
    if (!made) return made.status();
    backends::Backend& backend = **made;
    grid.attach_device(backend);
    const bool on_cpu = backend.device() == core::Device::kCpu;
    // 2048^3 (17 GFLOP a run): large enough that the figure is the BLAS peak, not its start-up.
    const double peak_gflops = peak_tflops > 0 ? peak_tflops * 1e3
                               : on_cpu        ? train::measure_sgemm_gflops(2048, 5)
                                               : 0.0;

    backend.set_bf16_matmuls(dtype == "bf16");
    // As train.dtype: bf16 does: bf16 GEMM operands and activations.
    models::Gpt model(mc, micro, T, &grid.device_tp_comm(), &backend, false, {},
                      models::Gpt::Purpose::kTrain,
                      dtype == "bf16" ? core::DType::kBF16 : core::DType::kF32);
    model.init_weights(1);
    optim::AdamW adamw(model.param_set(), &backend);
    std::vector<int32_t> tokens(B * T), targets(B * T);
    for (int64_t i = 0; i < B * T; ++i) {
      tokens[i] = static_cast<int32_t>(core::philox_draw(7, 0, i)[0] % mc.vocab_size);
      targets[i] = static_cast<int32_t>(core::philox_draw(7, 1, i)[0] % mc.vocab_size);
    }
    std::vector<double> step_ms;
    // Mean loss of each step: the same batch every step, so it must fall (a device that computes
    // garbage fast is not a result).
    std::vector<double> losses;
    for (int s = 0; s < warmup + steps; ++s) {
      if (s == warmup && on_cpu) {  // CUDA profiling waits on the stream around every kernel
        model.set_profiling(true);
        model.kernel_times() = {};
      }
      core::Timer t;
      model.zero_grad();
      double loss_sum = 0;
      for (int64_t b0 = 0; b0 < B; b0 += micro) {
        loss_sum += model.forward(tokens.data() + b0 * T, targets.data() + b0 * T, micro, T);
        model.backward(1.0f / static_cast<float>(B * T));
      }
      losses.push_back(loss_sum / static_cast<double>(B * T));
      optim::clip_grad_norm(model.param_set(), model.grads(), 1.0, nullptr, &backend);
      adamw.step(model.weights(), model.grads(), 1e-4, s + 1, config->optim);
      backend.synchronize();  // a device step is timed to its end, not to its last launch
      if (s >= warmup) step_ms.push_back(t.seconds() * 1e3);
    }
    std::vector<double> sorted = step_ms;
    std::sort(sorted.begin(), sorted.end());
    const double median_ms = sorted[sorted.size() / 2];
    const double tps = static_cast<double>(B * T) / (median_ms / 1e3);
    const double mfu =
        peak_gflops > 0 ? models::Gpt::flops_per_token(mc, T) * tps / (peak_gflops * 1e9) : 0.0;
    const models::KernelTimes& kt = model.kernel_times();
    const double per = 1e3 / steps;  // ms per step
    nlohmann::json out = {
        {"impl", "tessera"},
        {"config", config_path},
        {"B", B},
        {"T", T},
        {"micro_batch", micro},
        {"threads", nthreads},
        {"device", device},
        {"backend", backend.describe()},
        {"dtype", dtype},
        {"params", model.param_set().global_param_count(true)},
        {"tokens_per_s", tps},
        {"step_ms_median", median_ms},
        {"step_ms_min", sorted.front()},
        {"steps", steps},
        {"peak_gflops", peak_gflops},
        {"peak_source", peak_tflops > 0 ? "--peak-tflops" : (on_cpu ? "sgemm" : "none")},
        {"mfu", mfu},
        {"loss_first", losses.front()},
        {"loss_last", losses.back()},
        {"activation_mib", static_cast<double>(model.activation_bytes()) / 1048576.0},
        {"activation_scratch_mib",
         static_cast<double>(backend.activation_scratch_bytes()) / 1048576.0},
        {"model_allocated_mib", static_cast<double>(model.allocated_bytes()) / 1048576.0},
        {"peak_rss_mib", bench::peak_rss_mib()}};
    if (on_cpu) {
      out["kernel_ms_per_step"] = {
          {"matmul", kt.matmul * per},       {"attention", kt.attention * per},
          {"layernorm", kt.layernorm * per}, {"gelu", kt.gelu * per},
          {"xent", kt.xent * per},           {"embedding", kt.embedding * per},
          {"other", kt.other * per},         {"optimizer_and_rest", median_ms - kt.total() * per}};
    }
    std::printf("%s\n", out.dump().c_str());
    return 0;
  });
}
