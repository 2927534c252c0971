// tessera-plan: ranks the training layouts (dp x tp x micro-batch x ZeRO x sequence parallelism)
// of a model on a cluster by predicted step time, drops what does not fit or divide, and prints
// the command to run the best. The cluster is a YAML file (configs/clusters/) or measured on the
// spot (--measure, under mpirun on the ranks that will train).
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <unistd.h>
#include <string>
#include <vector>

#include "core/app.h"
#include "core/config.h"
#include "core/threads.h"
#include "parallel/process_grid.h"
#include "plan/cluster.h"
#include "plan/cost_model.h"
#include "plan/enumerate.h"
#include "plan/measure.h"

using namespace tessera;

namespace {

// A FLOP rate in the unit that suits it (a CPU's GFLOP/s, a GPU's TFLOP/s).
std::string flops_text(double flops) {
  char buf[32];
  if (flops >= 1e12) {
    std::snprintf(buf, sizeof buf, "%.1f TFLOP/s", flops / 1e12);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f GFLOP/s", flops / 1e9);
  }
  return buf;
}

// A link's alpha-beta figures, or "none" for one rank (measured: nothing to measure).
std::string link_text(const plan::Link& link) {
  if (link.bandwidth_Bps >= 1e29) return "none";
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f us + %.2f GB/s", link.latency_s * 1e6,
                link.bandwidth_Bps / 1e9);
  return buf;
}

std::string layout_name(const plan::Layout& l) {
  char buf[96];
  std::snprintf(buf, sizeof buf, "dp %d x tp %d, micro %ld, zero %d, sp %s", l.dp, l.tp,
                static_cast<long>(l.micro), l.zero, l.sequence_parallel ? "on" : "off");
  return buf;
}

nlohmann::json to_json(const plan::Prediction& p, double mfu) {
  return {{"dp", p.layout.dp},
          {"tp", p.layout.tp},
          {"micro", p.layout.micro},
          {"zero", p.layout.zero},
          {"sequence_parallel", p.layout.sequence_parallel},
          {"fits", p.fits},
          {"why_not", p.why_not},
          {"step_s", p.step_s()},
          {"mfu", mfu},
          {"gemm_s", p.gemm_s},
          {"elementwise_s", p.elementwise_s},
          {"tp_comm_s", p.tp_comm_s},
          {"dp_comm_s", p.dp_comm_s},
          {"optimizer_s", p.optimizer_s},
          {"memory_gb", p.memory() / 1e9},
          {"weights_gb", p.weights / 1e9},
          {"grads_gb", p.grads / 1e9},
          {"optimizer_gb", p.optimizer / 1e9},
          {"activations_gb", p.activations / 1e9}};
}

}  // namespace

int main(int argc, char** argv) {
  return core::run_app("tessera-plan", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{
        "Plan a training layout. Examples: tessera-plan configs/gpt2-350m.yaml --cluster "
        "configs/clusters/h100-dgx.yaml --gpus 64;  mpirun -n 4 tessera-plan configs/tiny.yaml "
        "--measure"};
    std::string config_path = "configs/tiny.yaml", cluster_path;
    std::vector<std::string> overrides;
    bool measure = false, json = false;
    int gpus = 0, top = 10, threads = 0;
    double memory_gb = 0;
    app.add_option("config", config_path, "model config (model, train.batch_size, train.seq_len)")
        ->capture_default_str();
    app.add_option("--set", overrides, "override a key: --set train.batch_size=512 (repeatable)");
    app.add_option("--cluster", cluster_path, "cluster file (configs/clusters/*.yaml)");
    app.add_flag("--measure", measure,
                 "measure this machine instead: GEMMs, bandwidth and all-reduce over the ranks "
                 "of this mpirun");
    app.add_option("--gpus", gpus, "what if: this many devices of the cluster file's kind");
    app.add_option("--top", top, "layouts to print")->capture_default_str();
    app.add_option("--threads", threads, "threads per rank with --measure (0: cores / ranks)");
    app.add_option("--memory-gb", memory_gb,
                   "memory per rank with --measure (default: the node's memory / ranks)");
    app.add_flag("--json", json, "one JSON line per layout instead of the table");
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    if (measure == !cluster_path.empty()) {
      return core::Status::error(
          "give exactly one of --cluster FILE (e.g. "
          "configs/clusters/h100-dgx.yaml) and --measure");
    }
    if (measure && gpus > 0) {
      return core::Status::error(
          "--gpus is for a cluster file; with --measure the ranks of this mpirun "
          "are the devices (mpirun -n N)");
    }
    if (gpus < 0 || top < 1) {
      return core::Status::error("--gpus must be >= 1 and --top >= 1");
    }
    auto config = core::load_config(config_path, overrides);
    if (!config) return config.status();
    plan::Workload w{config->model, config->train.batch_size, config->train.seq_len,
                     config->parallel.bucket_mb};

    parallel::ProcessGrid grid(1);
    const bool printer = grid.world_rank() == 0;
    plan::Cluster cluster;
    int world = 0;
    if (measure) {
      world = grid.world_size();
      core::set_threads(threads, grid.local_size());
      double mem = memory_gb * 1e9;
      if (mem <= 0) {
        mem = static_cast<double>(sysconf(_SC_PHYS_PAGES)) * sysconf(_SC_PAGE_SIZE) /
              grid.local_size();
      }
      std::vector<plan::Gemm> gemms;
      // The shapes of every layout the grid allows (memory is judged after measuring).
      plan::Cluster unlimited;
      unlimited.device_memory_bytes = 1e30;
      unlimited.gemm_flops = unlimited.memory_Bps = 1;
      for (const plan::Layout& l : plan::enumerate_layouts(w, world)) {
        if (!plan::predict(w, unlimited, l).fits) continue;
        for (const plan::Gemm& g : plan::step_gemms(w, l)) gemms.push_back(g);
      }
      cluster = plan::measure_cluster(gemms, grid.world_comm(), mem);
    } else {
      auto loaded = plan::load_cluster(cluster_path);
      if (!loaded) return loaded.status();
      cluster = *loaded;
      world = gpus > 0 ? gpus : cluster.devices();
      if (gpus > 0) {
        cluster.nodes = (gpus + cluster.devices_per_node - 1) / cluster.devices_per_node;
        if (gpus % cluster.devices_per_node != 0 && gpus > cluster.devices_per_node) {
          return core::Status::error("--gpus " + std::to_string(gpus) +
                                     " is not whole nodes of " +
                                     std::to_string(cluster.devices_per_node) + " devices");
        }
        if (gpus < cluster.devices_per_node) cluster.devices_per_node = gpus;
      }
    }
    if (!printer) return 0;

    const std::vector<plan::Prediction> ranked =
        plan::rank_layouts(w, cluster, plan::enumerate_layouts(w, world));
    if (json) {
      for (const plan::Prediction& p : ranked) {
        const double mfu = p.fits ? plan::mfu(w, cluster, world, p.step_s()) : 0.0;
        std::printf("%s\n", to_json(p, mfu).dump().c_str());
      }
      return 0;
    }
    std::printf("tessera-plan: %s on %d %s (%s)\n", config_path.c_str(), world,
                world == 1 ? "device" : "devices", cluster.source.c_str());
    std::printf(
        "  GEMM %s (best shape), streaming %.1f GB/s, link %s (intra), %s (inter), %.1f GB"
        " per device, %s, dp reduce %s\n",
        flops_text(cluster.gemm_flops).c_str(), cluster.memory_Bps / 1e9,
        link_text(cluster.intra).c_str(), link_text(cluster.inter).c_str(),
        cluster.device_memory_bytes / 1e9, cluster.precision.c_str(),
        cluster.comm_overlaps_compute ? "overlaps backward" : "on the compute cores");
    std::printf("  workload: global batch %ld x %ld tokens\n\n",
                static_cast<long>(w.global_batch), static_cast<long>(w.seq_len));
    std::printf("  %-4s %-44s %10s %9s %9s %9s %9s %9s %9s\n", "rank", "layout", "step ms",
                "gemm", "elemwise", "tp comm", "dp comm", "optim", "mem GB");
    int shown = 0, refused = 0;
    for (const plan::Prediction& p : ranked) {
      if (!p.fits) {
        ++refused;
        continue;
      }
      if (shown >= top) continue;
      ++shown;
      std::printf("  %-4d %-44s %10.1f %9.1f %9.1f %9.1f %9.1f %9.1f %9.2f\n", shown,
                  layout_name(p.layout).c_str(), p.step_s() * 1e3, p.gemm_s * 1e3,
                  p.elementwise_s * 1e3, p.tp_comm_s * 1e3, p.dp_comm_s * 1e3,
                  p.optimizer_s * 1e3, p.memory() / 1e9);
    }
    if (refused > 0) {
      std::printf("\n  %d layouts cannot run here:", refused);
      int listed = 0;
      for (const plan::Prediction& p : ranked) {
        if (p.fits || listed >= 5) continue;
        std::printf("%s %s: %s", listed ? ";" : "", layout_name(p.layout).c_str(),
                    p.why_not.c_str());
        ++listed;
      }
      std::printf("%s\n", refused > listed ? "; ..." : "");
    }
    if (shown == 0) {
      return core::Status::error("no layout of " + std::to_string(world) +
                                 " devices fits and divides; add devices (--gpus), lower "
                                 "train.batch_size divisibility constraints or the model size");
    }
    const plan::Prediction& best = ranked.front();
    const double tokens = static_cast<double>(w.global_batch * w.seq_len);
    std::printf(
        "\n  best: %s, %.1f ms a step, %.0f tokens/s, MFU %.1f%% of %s\n"
        "  run:  %s\n",
        layout_name(best.layout).c_str(), best.step_s() * 1e3, tokens / best.step_s(),
        100 * plan::mfu(w, cluster, world, best.step_s()),
        flops_text(cluster.peak_flops > 0 ? cluster.peak_flops : cluster.gemm_flops).c_str(),
        plan::train_command(config_path, best.layout).c_str());
    return 0;
  });
}
