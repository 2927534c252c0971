// Training throughput on a dp x tp process grid: tokens/s of the global batch (b sequences per dp
// rank), each step forward, backward with the GradientReducer's mark_ready hooked in, reducer
// finish, clipping over tp and AdamW, as src/train/trainer.cpp runs it, on random tokens.
// With --timeline: the fraction of bucket all-reduce time that lies inside backward compute.
// Usage: mpirun -n 2 bench_grid --config configs/gpt2-124m.yaml --batch-per-rank 2 --seq 64 --tp 1
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "core/app.h"
#include "core/config.h"
#include "core/philox.h"
#include "core/threads.h"
#include "core/timer.h"
#include "models/gpt.h"
#include "optim/optimizer.h"
#include "parallel/gradient_reducer.h"
#include "parallel/node_shared_arenas.h"
#include "parallel/process_grid.h"
#include "parallel/timeline.h"
#include "train/peak.h"

using namespace tessera;

namespace {

using tessera::bench::median;

// What a rank's trace says about its timed steps (events starting at or after since_us).
struct OverlapStats {
  double overlap_fraction = 0;   // all-reduce time inside backward / all-reduce time
  double allreduce_ms = 0;       // bucket all-reduce event time, summed over buckets
  double allreduce_wall_ms = 0;  // union of the bucket all-reduce events (buckets run together)
  double backward_ms = 0;        // union of backward compute events
  double finish_ms = 0;          // reducer.finish: the wait left after backward
};

// The union of [start, end) intervals, as disjoint sorted intervals.
std::vector<std::pair<double, double>> merge(std::vector<std::pair<double, double>> intervals) {
  std::sort(intervals.begin(), intervals.end());
  std::vector<std::pair<double, double>> merged;
  for (const auto& iv : intervals) {
    if (!merged.empty() && iv.first <= merged.back().second) {
      merged.back().second = std::max(merged.back().second, iv.second);
    } else {
      merged.push_back(iv);
    }
  }
  return merged;
}

// Reads the Chrome trace this rank wrote (Timeline::write) and measures, over the timed steps,
// how much of the "bucket <b> allreduce" events (communication lane) lies inside the union of
// the "backward" compute events. Per-step figures are totals / steps.
core::Result<OverlapStats> overlap_from_trace(const std::string& path, double since_us, int steps) {
  std::ifstream in(path);
  if (!in) {
    return core::Status::error("bench_grid: cannot read back timeline '" + path +
                               "'; check --timeline's directory");
  }
  const nlohmann::json trace = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!trace.is_object() || !trace.contains("traceEvents")) {
    return core::Status::error("bench_grid: timeline '" + path + "' is not a Chrome trace");
  }
  using Interval = std::pair<double, double>;
  std::vector<Interval> backward, allreduce;
  double finish_us = 0;
  for (const nlohmann::json& e : trace["traceEvents"]) {
    if (e.value("ph", "") != "X") continue;
    const double ts = e.value("ts", 0.0), dur = e.value("dur", 0.0);
    if (ts < since_us) continue;
    const std::string name = e.value("name", "");
    const int tid = e.value("tid", 0);
    if (e.value("cat", "") == "backward" && tid == static_cast<int>(parallel::Lane::kCompute)) {
      backward.emplace_back(ts, ts + dur);
    } else if (tid == static_cast<int>(parallel::Lane::kCommunication) &&
               name.rfind("bucket ", 0) == 0 && name.size() > 10 &&
               name.compare(name.size() - 10, 10, " allreduce") == 0) {
      allreduce.emplace_back(ts, ts + dur);
    } else if (name == "reducer.finish") {
      finish_us += dur;
    }
  }
  const std::vector<Interval> merged = merge(backward);
  double total_us = 0, inside_us = 0, backward_us = 0, allreduce_wall_us = 0;
  for (const Interval& m : merged) backward_us += m.second - m.first;
  for (const Interval& m : merge(allreduce)) allreduce_wall_us += m.second - m.first;
  for (const Interval& a : allreduce) {
    total_us += a.second - a.first;
    for (const Interval& m : merged) {
      const double lo = std::max(a.first, m.first), hi = std::min(a.second, m.second);
      if (hi > lo) inside_us += hi - lo;
    }
  }
  OverlapStats s;
  s.overlap_fraction = total_us > 0 ? inside_us / total_us : 0.0;
  s.allreduce_ms = total_us / 1e3 / steps;
  s.allreduce_wall_ms = allreduce_wall_us / 1e3 / steps;
  s.backward_ms = backward_us / 1e3 / steps;
  s.finish_ms = finish_us / 1e3 / steps;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  return core::run_app("bench_grid", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{"Tessera training-step benchmark on a dp x tp process grid"};
    std::string config_path = "configs/tiny.yaml", timeline_path;
    int64_t B_local = 4, T = 64;
    int tp = 1, steps = 10, warmup = 2, threads = 1;
    double bucket_mb = 25.0;
    bool no_overlap = false, dense_embedding = false, no_poll = false, average_pass = false;
    int zero = 0;
    bool node_shared = false;
    bool sequence_parallel = false;
    app.add_option("--config", config_path, "model config (its model: section is used)");
    app.add_option("--batch-per-rank", B_local, "b: sequences per dp rank (global = b x dp)");
    app.add_option("--seq", T, "T: tokens per sequence");
    app.add_option("--tp", tp, "tensor-parallel size; dp = world size / tp");
    app.add_option("--steps", steps, "timed steps");
    app.add_option("--warmup", warmup, "untimed steps first");
    app.add_option("--threads", threads, "threads per rank (0: cores / ranks on the node)");
    app.add_option("--bucket-mb", bucket_mb, "GradientReducer bucket cap (MiB)");
    app.add_flag("--no-overlap", no_overlap, "start every bucket in finish(), after backward");
    app.add_flag("--average-pass", average_pass,
                 "the reducer averages after the sum (else the loss scale divides by dp)");
    app.add_flag("--no-poll", no_poll, "no reducer progress test between backward GEMMs");
    app.add_flag("--dense-embedding", dense_embedding,
                 "all-reduce wte's gradient whole at the end (no sparse-rows split)");
    app.add_option("--zero", zero, "1: ZeRO-1, AdamW moments sharded over dp (optim.zero)")
        ->check(CLI::IsMember({0, 1}));
    app.add_flag("--node-shared", node_shared,
                 "gradients (and with --zero 1 weights) in memory the dp group shares "
                 "(parallel.node_shared on; the MPI exchange otherwise)");
    app.add_flag("--sequence-parallel", sequence_parallel,
                 "shard the layernorm/residual regions along the sequence over tp "
                 "(parallel.sequence_parallel)");
    app.add_option("--timeline", timeline_path,
                   "write a trace per rank (<path>.rank<r>) and report the overlap fraction");
    try {
      app.parse(ac, av);
    } catch (const CLI::ParseError& e) {
      return core::Status::error(std::string(e.what()) + "; see bench_grid --help");
    }
    if (B_local < 1 || T < 1 || steps < 1 || warmup < 0 || bucket_mb <= 0) {
      return core::Status::error("bench_grid: need --batch-per-rank >= 1 (got " +
                                 std::to_string(B_local) + "), --seq >= 1 (got " +
                                 std::to_string(T) + "), --steps >= 1 (got " +
                                 std::to_string(steps) + "), --warmup >= 0 (got " +
                                 std::to_string(warmup) + ") and --bucket-mb > 0");
    }
    int world_size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    const int64_t dp_guess = tp >= 1 && world_size % tp == 0 ? world_size / tp : 1;
    auto config = core::load_config(
        config_path,
        {"train.seq_len=" + std::to_string(T), "parallel.tp=" + std::to_string(tp),
         "train.batch_size=" + std::to_string(B_local * dp_guess), "train.micro_batch_size=0"});
    if (!config) return config.status();
    TESSERA_RETURN_IF_ERROR(parallel::check_grid(*config, world_size));
    const core::ModelConfig& mc = config->model;

    parallel::ProcessGrid grid(tp);
    const int dp_size = grid.dp_size(), dp_rank = grid.dp_rank();
    const int64_t global_batch = B_local * dp_size;
    const int nthreads = core::set_threads(threads, grid.local_size());

    std::unique_ptr<parallel::Timeline> timeline;
    if (!timeline_path.empty()) timeline = std::make_unique<parallel::Timeline>(grid.world_rank());
    if (sequence_parallel && (tp < 2 || T % tp != 0)) {
      return core::Status::error("bench_grid: --sequence-parallel needs --tp >= 2 dividing --seq");
    }
    // As the trainer: the dp group's arenas shared by its ranks (parallel.node_shared).
    std::shared_ptr<parallel::NodeSharedArenas> shared;
    models::Gpt::Arenas arenas;
    if (node_shared && dp_size > 1) {
      const int64_t numel =
          params::ParamSet(models::Gpt::param_specs(mc), grid.tp_rank(), grid.tp_size())
              .total_local_numel();
      std::string why;
      shared = parallel::NodeSharedArenas::create(grid.dp_comm(), numel, zero == 1 ? 2 : 1, &why);
      if (!shared) return core::Status::error("bench_grid: --node-shared: " + why);
      if (zero == 1) arenas.weights = shared->arena(0);
      arenas.grads = shared->arena(zero == 1 ? 1 : 0);
    }
    models::Gpt model(mc, B_local, T, &grid.tp_comm(), nullptr, sequence_parallel, arenas);
    model.init_weights(1);
    model.set_timeline(timeline.get());
    std::unique_ptr<parallel::GradientReducer> reducer;
    // As the trainer decides: wte's gradient split into a dense and a sparse-rows exchange.
    const params::ParamSet& ps = model.param_set();
    const int wte = ps.index_of("wte");
    const bool sparse = !dense_embedding && !shared &&
                        parallel::sparse_rows_pay(dp_size, B_local * T, ps.local_shape(wte)[0]);
    if (dp_size > 1) {
      parallel::ReducerOptions ro;
      ro.bucket_mb = bucket_mb;
      ro.overlap = !no_overlap;
      ro.shard = zero == 1;
      ro.node_shared = shared;
      ro.average = average_pass;  // as the trainer: the loss scale divides by dp instead
      if (sparse) {
        ro.sparse_param = wte;
        ro.sparse_capacity = B_local * T;
        ro.sparse_width = ps.local_shape(wte)[1];
      }
      reducer = std::make_unique<parallel::GradientReducer>(ps, model.grads(), grid.dp_comm(), ro,
                                                            timeline.get());
    }
    // As the trainer builds it: sharded over dp with optim.zero 1 (and dp > 1).
    std::unique_ptr<optim::AdamW> adamw =
        reducer && zero == 1
            ? std::make_unique<optim::AdamW>(model.param_set(), reducer->owned_ranges())
            : std::make_unique<optim::AdamW>(model.param_set());
    const std::function<void(int)> on_ready = [&](int i) { reducer->mark_ready(i); };
    if (reducer && !no_poll) model.set_backward_poll([&] { reducer->poll(); });
    models::Gpt::SparseRowsHook sparse_rows;
    if (sparse && reducer) {
      sparse_rows = [&](int, const int32_t* ids, const float* values, int64_t n) {
        reducer->add_sparse_rows(ids, values, n);
      };
    }
    // Each rank measures its share of the machine at the same moment; the shares are summed.
    double peak_gflops = train::measure_sgemm_gflops();
    grid.world_comm().all_reduce(&peak_gflops, 1, parallel::ReduceOp::kSum);

    // This dp rank's slice of the global batch; tp ranks of one dp rank see the same tokens.
    std::vector<int32_t> tokens(B_local * T), targets(B_local * T);
    for (int64_t i = 0; i < B_local * T; ++i) {
      const uint64_t g = static_cast<uint64_t>(dp_rank * B_local * T + i);
      tokens[i] = static_cast<int32_t>(core::philox_draw(7, 0, g)[0] % mc.vocab_size);
      targets[i] = static_cast<int32_t>(core::philox_draw(7, 1, g)[0] % mc.vocab_size);
    }
    const float loss_scale =
        1.0f / static_cast<float>(B_local * T * (reducer && !average_pass ? dp_size : 1));

    std::vector<double> step_ms;
    double timed_since_us = 0;
    for (int s = 0; s < warmup + steps; ++s) {
      MPI_Barrier(MPI_COMM_WORLD);
      if (s == warmup) timed_since_us = core::now_us();
      core::Timer timer;
      model.zero_grad();
      double loss_sum = 0;
      {
        parallel::Timeline::Scope scope(timeline.get(), "forward", "forward");
        loss_sum = model.forward(tokens.data(), targets.data(), B_local, T);
      }
      model.backward(loss_scale, reducer ? on_ready : nullptr, sparse_rows);
      if (reducer) reducer->finish();
      if (dp_size > 1) grid.dp_comm().all_reduce(&loss_sum, 1, parallel::ReduceOp::kSum);
      {
        parallel::Timeline::Scope scope(timeline.get(), "optimizer", "optimizer");
        if (adamw->sharded()) {
          optim::clip_grad_norm_sharded(model.param_set(), model.grads(), adamw->segments(), 1.0,
                                        &grid.tp_comm(), grid.dp_comm());
          adamw->step(model.weights(), model.grads(), 1e-4, s + 1, config->optim);
          reducer->all_gather_owned(model.weights());
        } else {
          optim::clip_grad_norm(model.param_set(), model.grads(), 1.0, &grid.tp_comm());
          adamw->step(model.weights(), model.grads(), 1e-4, s + 1, config->optim);
        }
      }
      // A step lasts as long as its slowest rank.
      double ms = timer.seconds() * 1e3;
      MPI_Allreduce(MPI_IN_PLACE, &ms, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      if (s >= warmup) step_ms.push_back(ms);
    }

    const double median_ms = median(step_ms);
    const double tps = static_cast<double>(global_batch * T) / (median_ms / 1e3);
    const double mfu = models::Gpt::flops_per_token(mc, T) * tps / (peak_gflops * 1e9);
    nlohmann::json out = {{"impl", "tessera"},
                          {"config", config_path},
                          {"world", grid.world_size()},
                          {"dp", dp_size},
                          {"tp", grid.tp_size()},
                          {"B_per_rank", B_local},
                          {"B_global", global_batch},
                          {"T", T},
                          {"threads", nthreads},
                          {"tokens_per_s", tps},
                          {"step_ms_median", median_ms},
                          {"step_ms_min", *std::min_element(step_ms.begin(), step_ms.end())},
                          {"steps", steps},
                          {"warmup", warmup},
                          {"sgemm_gflops", peak_gflops},
                          {"mfu", mfu},
                          {"zero", zero},
                          {"node_shared", shared != nullptr},
                          {"sequence_parallel", sequence_parallel}};
    // Memory per rank: the arenas (rank 0's; equal on every rank up to one bucket of moments)
    // and the peak resident set, the largest over ranks.
    const double mib = 1024.0 * 1024.0;
    double peak_rss_mib = bench::peak_rss_mib();
    grid.world_comm().all_reduce(&peak_rss_mib, 1, parallel::ReduceOp::kMax);
    out["weights_mib"] = static_cast<double>(model.weights().bytes()) / mib;
    out["grads_mib"] = static_cast<double>(model.grads().bytes()) / mib;
    out["moments_mib"] = static_cast<double>(adamw->state_bytes()) / mib;
    out["activations_mib"] = static_cast<double>(model.activation_bytes()) / mib;
    out["peak_rss_mib_max_rank"] = peak_rss_mib;
    if (reducer) {
      out["bucket_mb"] = bucket_mb;
      out["buckets"] = reducer->num_buckets();
      out["overlap"] = !no_overlap;
      out["sparse_embedding"] = sparse;
      out["backward_poll"] = !no_poll;
      out["average_pass"] = average_pass;
    }
    if (timeline) {
      const std::string path = grid.world_size() == 1
                                   ? timeline_path
                                   : timeline_path + ".rank" + std::to_string(grid.world_rank());
      TESSERA_RETURN_IF_ERROR(timeline->write(path));
      auto stats = overlap_from_trace(path, timed_since_us, steps);
      if (!stats) return stats.status();
      // Rank 0's figures, and the overlap fraction's mean over ranks.
      double mean_fraction = stats->overlap_fraction / grid.world_size();
      grid.world_comm().all_reduce(&mean_fraction, 1, parallel::ReduceOp::kSum);
      out["timeline"] = path;
      out["overlap_fraction"] = stats->overlap_fraction;
      out["overlap_fraction_mean_ranks"] = mean_fraction;
      out["allreduce_ms_per_step"] = stats->allreduce_ms;
      out["allreduce_wall_ms_per_step"] = stats->allreduce_wall_ms;
      out["backward_ms_per_step"] = stats->backward_ms;
      out["finish_wait_ms_per_step"] = stats->finish_ms;
    }
    if (grid.world_rank() == 0) {
      std::printf("%s\n", out.dump().c_str());
      std::fflush(stdout);
    }
    return 0;
  });
}
