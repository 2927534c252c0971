// Data-parallel gradient averaging: the GradientReducer (mark every parameter ready in backward
// order, then finish) against one raw MPI_Allreduce of the same bytes, for the GPT-2 layouts of
// the tiny config and of GPT-2 small (124M), and ZeRO-1's reduce-scatter + all-gather of the
// same arena. Medians over repetitions, one JSON line per case.
// Usage: mpirun -n 2 bench_reducer [--reps 5] [--bucket-mb 25] [--models tiny,gpt2-124m]
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "core/app.h"
#include "core/config.h"
#include "core/error.h"
#include "core/threads.h"
#include "core/timer.h"
#include "models/gpt.h"
#include "parallel/communicator.h"
#include "parallel/gradient_reducer.h"
#include "params/param_spec.h"

using namespace tessera;

namespace {

using tessera::bench::median;

// The model section of configs/<name>.yaml (tiny, gpt2-124m, ...).
core::ModelConfig model_config(const std::string& name) {
  auto config =
      core::load_config(std::string(TESSERA_SOURCE_DIR) + "/configs/" + name + ".yaml", {});
  if (!config) throw Error(config.status().message());
  return config->model;
}

// Rank-dependent gradient values; the reducer overwrites them with averages every repetition.
void fill(const core::Tensor& grads, int rank) {
  float* g = grads.f32();
  for (int64_t i = 0; i < grads.numel(); ++i) g[i] = static_cast<float>((i % 97) * 0.01 + rank);
}

// Times `body` `reps` times (after one warm-up), each between barriers; the slowest rank's time
// counts (MPI_MAX), as a step does.
template <typename F>
double median_ms(int reps, F body) {
  std::vector<double> ms;
  for (int r = 0; r <= reps; ++r) {
    MPI_Barrier(MPI_COMM_WORLD);
    core::Timer timer;
    body();
    double t = timer.seconds() * 1e3;
    MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (r > 0) ms.push_back(t);
  }
  return median(ms);
}

}  // namespace

int main(int argc, char** argv) {
  return core::run_app("bench_reducer", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{"Tessera gradient reducer benchmark"};
    int reps = 5;
    double bucket_mb = 25.0;
    std::string models = "tiny,gpt2-124m";
    bool bf16 = true;
    app.add_option("--reps", reps, "timed repetitions per case (after one warm-up)");
    app.add_option("--bucket-mb", bucket_mb, "reducer bucket cap (MiB)");
    app.add_option("--models", models, "comma-separated: tiny, gpt2-124m");
    app.add_option("--bf16", bf16, "also time the bf16-compressed reducer");
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    core::set_threads(1, 1);
    parallel::MpiCommunicator dp_comm(MPI_COMM_WORLD, "dp");
    const int dp_rank = dp_comm.rank();

    std::stringstream list(models);
    std::string name;
    while (std::getline(list, name, ',')) {
      if (name != "tiny" && name != "gpt2-124m") {
        return core::Status::error("bench_reducer: unknown model '" + name +
                                   "'; use tiny or gpt2-124m");
      }
      const params::ParamSet params(models::Gpt::param_specs(model_config(name)), 0, 1);
      const int n = params.size();
      core::Tensor grads = params.make_twin();
      fill(grads, dp_rank);
      const int64_t floats = params.total_local_numel();

      parallel::GradientReducer reducer(params, grads, dp_comm,
                                        parallel::ReducerOptions{bucket_mb, true, false});
      const double reducer_ms = median_ms(reps, [&] {
        for (int i = n - 1; i >= 0; --i) reducer.mark_ready(i);
        reducer.finish();
      });

      // ZeRO-1's exchange (optim.zero 1): the sharded reducer's reduce-scatters, then the
      // all-gather of the pieces (of the gradients here; the trainer gathers the weights, the
      // same bytes), against the all-reduces above: the same bytes on the wire.
      parallel::ReducerOptions sharded_options;
      sharded_options.bucket_mb = bucket_mb;
      sharded_options.shard = true;
      parallel::GradientReducer sharded(params, grads, dp_comm, sharded_options);
      double scatter_ms = 0.0;
      const double sharded_ms = median_ms(reps, [&] {
        core::Timer scatter;
        for (int i = n - 1; i >= 0; --i) sharded.mark_ready(i);
        sharded.finish();
        scatter_ms = scatter.seconds() * 1e3;  // the last repetition's, rank 0's
        sharded.all_gather_owned(grads);
      });

      // The peer: one blocking, in-place MPI_Allreduce of the whole arena (no averaging).
      core::Tensor raw = core::Tensor::zeros({floats});
      fill(raw, dp_rank);
      const double raw_ms = median_ms(reps, [&] {
        MPI_Allreduce(MPI_IN_PLACE, raw.f32(), static_cast<int>(floats), MPI_FLOAT, MPI_SUM,
                      MPI_COMM_WORLD);
      });

      // What a separate f32 fusion buffer would add: copy in and copy back (two passes).
      core::Tensor fusion = core::Tensor::zeros({floats});
      const double copies_ms = median_ms(reps, [&] {
        std::memcpy(fusion.f32(), grads.f32(), floats * sizeof(float));
        std::memcpy(grads.f32(), fusion.f32(), floats * sizeof(float));
      });

      double bf16_ms = 0.0;
      int64_t bf16_bytes = 0;
      if (bf16) {
        parallel::GradientReducer compressed(params, grads, dp_comm,
                                             parallel::ReducerOptions{bucket_mb, true, true});
        bf16_ms = median_ms(reps, [&] {
          for (int i = n - 1; i >= 0; --i) compressed.mark_ready(i);
          compressed.finish();
        });
        bf16_bytes = compressed.wire_bytes_per_step();
      }

      if (dp_rank == 0) {
        nlohmann::json line = {{"bench", "reducer"},
                               {"model", name},
                               {"dp", dp_comm.size()},
                               {"params", n},
                               {"floats", floats},
                               {"bucket_mb", bucket_mb},
                               {"buckets", reducer.num_buckets()},
                               {"wire_bytes", reducer.wire_bytes_per_step()},
                               {"reps", reps},
                               {"reducer_ms", reducer_ms},
                               {"raw_allreduce_ms", raw_ms},
                               {"reducer_vs_raw", raw_ms / reducer_ms},
                               {"fusion_copy_ms", copies_ms},
                               {"zero1_ms", sharded_ms},
                               {"zero1_reduce_scatter_ms_last", scatter_ms}};
        if (bf16) {
          line["reducer_bf16_ms"] = bf16_ms;
          line["bf16_wire_bytes"] = bf16_bytes;
        }
        std::printf("%s\n", line.dump().c_str());
        std::printf(
            "# %s: reducer %.1f ms, raw MPI_Allreduce %.1f ms -> reducer at %.1f%% of raw "
            "(goal >= 95%%)\n",
            name.c_str(), reducer_ms, raw_ms, 100.0 * raw_ms / reducer_ms);
        std::printf("# %s: ZeRO-1 reduce-scatter + all-gather %.1f ms (%.2fx the reducer's)\n",
                    name.c_str(), sharded_ms, sharded_ms / reducer_ms);
        std::fflush(stdout);
      }
    }
    return 0;
  });
}
