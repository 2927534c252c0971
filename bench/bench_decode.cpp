// Decode-step speed of one rank: the batched KV-cache step of generation and serving
// (generate::Generator, models::Gpt::decode) at R sequences, for a GPT config with random
// weights. Each sequence is a prompt of P tokens (prefilled together in the first steps), then
// one decode row per step; reports the median prefill and decode step times (and a warm
// one-sequence prefill, --prefill-reps times), output tokens/s,
// the matmul share and its multiply-add rate (CPU). docs/PERF.md "Serving" uses it to explain
// tessera-serve's concurrency figures.
// --new N (> 0) also times whole generations as Hugging Face `generate` is timed (issue 13's
// generation anchor): Generator::generate_batch of the R prompts, greedy, exactly N new tokens
// each, prefill included; after one untimed run, --runs timed ones; reports R * N / median
// seconds as generate_tokens_per_s.
// Usage: bench_decode --config configs/gpt2-124m.yaml --rows 16 --prompt 64 --steps 20
//        [--device cuda] [--dtype bf16] [--new 128 --runs 3]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <vector>

#include "backends/backend.h"
#include "core/app.h"
#include "core/config.h"
#include "core/threads.h"
#include "core/timer.h"
#include "generate/generator.h"
#include "models/gpt.h"
#include "parallel/process_grid.h"

using namespace tessera;

namespace {
double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}
}  // namespace

int main(int argc, char** argv) {
  return core::run_app("bench_decode", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{"Tessera decode-step benchmark (one rank)"};
    std::string config_path = "configs/gpt2-124m.yaml";
    int rows = 16, prompt = 64, steps = 20, threads = 0, prefill_reps = 5, new_tokens = 0, runs = 3;
    std::string device = "cpu", dtype = "fp32";
    app.add_option("--config", config_path, "model config (its model section)");
    app.add_option("--rows", rows, "sequences decoding at once");
    app.add_option("--prompt", prompt, "prompt tokens of each sequence");
    app.add_option("--steps", steps, "decode steps timed");
    app.add_option("--threads", threads, "compute threads (0: all cores)");
    app.add_option("--prefill-reps", prefill_reps, "warm one-sequence prefills timed")
        ->check(CLI::PositiveNumber);
    app.add_option("--device", device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}));
    app.add_option("--dtype", dtype, "fp32, or bf16 GEMM operands")
        ->check(CLI::IsMember({"fp32", "bf16"}));
    app.add_option("--new", new_tokens, "also time whole generations of this many new tokens")
        ->check(CLI::NonNegativeNumber);
    app.add_option("--runs", runs, "timed whole generations (--new)")->check(CLI::PositiveNumber);
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    auto config = core::load_config(config_path, {});
    if (!config) return config.status();
    const core::ModelConfig& mc = config->model;
    const int nthreads = core::set_threads(threads, 1);
    parallel::ProcessGrid grid(1);
    auto made = backends::make_backend(device, grid.local_rank(), grid.local_size(), "--device");
    if (!made) return made.status();
    backends::Backend& backend = **made;
    grid.attach_device(backend);
    const bool on_cpu = backend.device() == core::Device::kCpu;
    backend.set_bf16_matmuls(dtype == "bf16");
    models::Gpt model(mc, 1, mc.max_seq_len, &grid.device_tp_comm(), &backend, false, {},
                      models::Gpt::Purpose::kInference);
    model.init_weights(1);
    generate::Generator gen(model, rows, &grid.tp_comm());
    generate::GenerateOptions o;
    o.max_tokens = steps + 2;
    o.stop_at_eot = false;
    o.sampling.temperature = 0;
    for (int r = 0; r < rows; ++r) {
      std::vector<int32_t> p(prompt);
      for (int i = 0; i < prompt; ++i) p[i] = (37 * i + 101 * r + 1) % mc.vocab_size;
      auto id = gen.add(p, o);
      if (!id) return id.status();
    }
    // Prefill: steps until every sequence has its first token.
    std::vector<double> prefill_ms, decode_ms;
    int sampled = 0;
    while (sampled < rows) {
      core::Timer t;
      for (const auto& e : gen.step()) sampled += e.token >= 0;
      prefill_ms.push_back(t.seconds() * 1e3);
    }
    gen.step();                   // warm-up decode step
    model.set_profiling(on_cpu);  // CUDA profiling waits on the stream around every kernel
    model.kernel_times() = {};
    for (int s = 0; s < steps; ++s) {
      core::Timer t;
      gen.step();
      decode_ms.push_back(t.seconds() * 1e3);
    }
    const backends::KernelTimes k = model.kernel_times();
    // A warm prefill (what a server's request pays once the weights are packed and the caches
    // are hot; the first prefill above pays the packing): one sequence's whole prompt in one
    // step, alone in the batch, `prefill_reps` times.
    for (int r = 0; r < rows; ++r) gen.remove(r);
    std::vector<double> warm_ms;
    model.kernel_times() = {};
    for (int rep = 0; rep < prefill_reps; ++rep) {
      std::vector<int32_t> p(prompt);
      for (int i = 0; i < prompt; ++i) p[i] = (53 * i + 7 * rep + 3) % mc.vocab_size;
      auto id = gen.add(p, o);
      if (!id) return id.status();
      core::Timer t;
      gen.step();
      warm_ms.push_back(t.seconds() * 1e3);
      gen.remove(*id);
    }
    const backends::KernelTimes kp = model.kernel_times();
    model.set_profiling(false);
    // Whole generations, as Hugging Face generate is timed: the R prompts prefilled and decoded
    // to exactly new_tokens each (greedy, end-of-text ignored), one untimed run first.
    std::vector<double> generate_s;
    if (new_tokens > 0) {
      std::vector<std::vector<int32_t>> prompts(rows, std::vector<int32_t>(prompt));
      for (int r = 0; r < rows; ++r) {
        for (int i = 0; i < prompt; ++i) prompts[r][i] = (29 * i + 67 * r + 5) % mc.vocab_size;
      }
      generate::GenerateOptions g;
      g.max_tokens = new_tokens;
      g.stop_at_eot = false;
      g.sampling.temperature = 0;
      g.use_kv_cache = true;
      const std::vector<generate::GenerateOptions> options(rows, g);
      for (int run = 0; run <= runs; ++run) {
        core::Timer t;
        auto out = gen.generate_batch(prompts, options);
        if (!out) return out.status();
        for (const auto& seq : *out) {
          if (static_cast<int>(seq.size()) != new_tokens) {
            return core::Status::error("bench_decode: a generation stopped at " +
                                       std::to_string(seq.size()) + " of --new " +
                                       std::to_string(new_tokens) +
                                       " tokens (the context is full: lower --prompt or --new)");
          }
        }
        if (run > 0) generate_s.push_back(t.seconds());
      }
    }
    double warm_total_ms = 0;
    for (double d : warm_ms) warm_total_ms += d;
    double total_ms = 0;
    for (double d : decode_ms) total_ms += d;
    // Multiply-adds of one decode row's matmuls: 12 C^2 per layer (qkv, proj, fc, fc2) + head.
    const double C = mc.n_embd, fma_row = 12.0 * C * C * mc.n_layer + C * mc.padded_vocab_size();
    nlohmann::json j = {{"config", config_path},
                        {"rows", rows},
                        {"prompt", prompt},
                        {"threads", nthreads},
                        {"device", device},
                        {"backend", backend.describe()},
                        {"dtype", dtype},
                        {"prefill_steps", prefill_ms.size()},
                        {"prefill_ms_total",
                         [&] {
                           double s = 0;
                           for (double d : prefill_ms) s += d;
                           return s;
                         }()},
                        {"warm_prefill_ms_median", median(warm_ms)},
                        {"warm_prefill_matmul_share", kp.matmul * 1e3 / warm_total_ms},
                        {"warm_prefill_matmul_gflops",
                         2.0 * 12.0 * C * C * mc.n_layer * prompt * prefill_reps / kp.matmul / 1e9},
                        {"decode_step_ms_median", median(decode_ms)},
                        {"output_tokens_per_s", rows * 1e3 / median(decode_ms)},
                        {"matmul_share", k.matmul * 1e3 / total_ms},
                        {"matmul_gfma_per_s", fma_row * rows * steps / k.matmul / 1e9}};
    if (new_tokens > 0) {
      j["new_tokens"] = new_tokens;
      j["generate_runs_s"] = generate_s;
      j["generate_tokens_per_s"] = rows * static_cast<double>(new_tokens) / median(generate_s);
    }
    if (!on_cpu) {  // no kernel times off the CPU: the shares below would be 0 / 0
      for (const char* key : {"warm_prefill_matmul_share", "warm_prefill_matmul_gflops",
                              "matmul_share", "matmul_gfma_per_s"}) {
        j.erase(key);
      }
    }
    std::printf("%s\n", j.dump().c_str());
    return 0;
  });
}
