// tessera-train's loop; see trainer.h.
#include "train/trainer.h"

#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/launch_env.h"
#include "core/log.h"
#include "core/tensor.h"
#include "core/threads.h"
#include "core/timer.h"
#include "data/data_loader.h"
#include "data/token_shard.h"
#include "models/gpt.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "parallel/gradient_reducer.h"
#include "parallel/process_grid.h"
#include "parallel/timeline.h"
#include "train/peak.h"

namespace tessera::train {
namespace {

std::vector<std::string> split_paths(const std::string& paths) {
  std::vector<std::string> out;
  std::stringstream ss(paths);
  std::string p;
  while (std::getline(ss, p, ',')) {
    if (!p.empty()) out.push_back(p);
  }
  return out;
}

// Checks every token is a real vocabulary id and returns the unigram entropy (nats/token).
core::Result<double> scan_tokens(const std::string& paths, int vocab_size) {
  std::vector<double> counts(vocab_size, 0.0);
  double total = 0;
  for (const std::string& path : split_paths(paths)) {
    auto shard = data::TokenShard::open(path);
    if (!shard) return shard.status();
    for (int64_t i = 0; i < shard->size(); ++i) {
      const int32_t t = shard->token(i);
      if (t < 0 || t >= vocab_size) {
        return core::Status::error("data file '" + path + "' holds token id " + std::to_string(t) +
                                   " at position " + std::to_string(i) +
                                   ", outside model.vocab_size " + std::to_string(vocab_size) +
                                   "; tokenize with the tokenizer the model was configured for "
                                   "or raise model.vocab_size");
      }
      counts[t] += 1;
    }
    total += static_cast<double>(shard->size());
  }
  double h = 0;
  for (double c : counts) {
    if (c > 0) h -= c / total * std::log(c / total);
  }
  return h;
}

// Set by SIGTERM / SIGUSR1 (Slurm sends one before a time limit): checkpoint, then stop.
std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int signal) { g_stop_signal.store(signal); }

std::string format_eta(double seconds) {
  char buf[32];
  const int s = static_cast<int>(seconds + 0.5);
  if (s >= 3600) {
    std::snprintf(buf, sizeof buf, "%dh%02dm", s / 3600, s / 60 % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%dm%02ds", s / 60, s % 60);
  }
  return buf;
}

}  // namespace

core::Result<TrainSummary> train(const core::Config& config, parallel::ProcessGrid& grid) {
  const core::ModelConfig& mc = config.model;
  const core::TrainConfig& tc = config.train;
  const int64_t T = tc.seq_len;
  const int64_t global_batch = tc.batch_size;
  const int dp_size = grid.dp_size(), dp_rank = grid.dp_rank();
  if (tc.device != "cpu") {
    // Said plainly rather than silently training on the CPU: the CUDA kernels exist
    // (src/backends/cuda) but the model does not run on them yet.
    return core::Status::error("train.device '" + tc.device +
                               "': the CUDA training path is not wired into the trainer yet "
                               "(docs/CUDA.md); use train.device=cpu");
  }
  const int64_t B_local = global_batch / dp_size;
  const int64_t micro = tc.micro_batch_size > 0 ? tc.micro_batch_size : B_local;
  if (B_local % micro != 0) {
    return core::Status::error("train.batch_size " + std::to_string(global_batch) +
                               " per dp rank (" + std::to_string(B_local) +
                               ") is not a multiple of train.micro_batch_size " +
                               std::to_string(micro) + "; change one of them");
  }
  const int threads = core::set_threads(tc.threads, grid.local_size());

  std::string train_paths = config.data.train;
  if (core::fault_requested("data")) train_paths += ".injected-missing";
  if (core::fault_requested("shard")) train_paths += ".injected-corrupt";
  auto entropy = scan_tokens(train_paths, mc.vocab_size);
  if (!entropy) return entropy.status();
  auto train_data = data::DataLoader::open(train_paths, T, tc.seed);
  if (!train_data) return train_data.status();
  TESSERA_RETURN_IF_ERROR(train_data->validate_batch(global_batch));
  const bool have_val = !config.data.val.empty() && tc.val_every > 0;
  std::optional<data::DataLoader> val_data;
  if (have_val) {
    auto v = data::DataLoader::open(config.data.val, T, tc.seed);
    if (!v) return v.status();
    if (v->num_sequences() < global_batch) {
      return core::Status::error("data.val '" + config.data.val + "' has " +
                                 std::to_string(v->num_sequences()) + " sequences of " +
                                 std::to_string(T + 1) + " tokens, fewer than one batch (" +
                                 std::to_string(global_batch) +
                                 "); give more validation text "
                                 "or set train.val_every: 0");
    }
    val_data.emplace(std::move(*v));
  }

  std::unique_ptr<parallel::Timeline> timeline;
  if (!tc.timeline.empty()) timeline = std::make_unique<parallel::Timeline>(grid.world_rank());
  models::Gpt model(mc, micro, T, &grid.tp_comm());
  model.init_weights(tc.seed);
  model.set_timeline(timeline.get());
  optim::AdamW adamw(model.param_set());
  std::unique_ptr<parallel::GradientReducer> reducer;
  if (dp_size > 1) {
    parallel::ReducerOptions ro;
    ro.bucket_mb = config.parallel.bucket_mb;
    ro.overlap = config.parallel.overlap;
    ro.compress_bf16 = config.parallel.compress_bf16;
    reducer = std::make_unique<parallel::GradientReducer>(model.param_set(), model.grads(),
                                                          grid.dp_comm(), ro, timeline.get());
  }
  const std::function<void(int)> on_ready = [&](int i) { reducer->mark_ready(i); };

  // Resume: weights, AdamW moments, step (so the LR schedule), data order and position.
  const core::CheckpointConfig& cc = config.checkpoint;
  int first_step = 0;
  std::string resume = cc.resume;
  if (resume == "auto") {
    // Every rank looks; `latest` only ever moves after a complete write, so all see the same.
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::path(cc.dir) / "latest", ec)) {
      resume = "latest";
    } else {
      resume.clear();
      core::log_info("checkpoint.resume auto: no checkpoint in " + cc.dir +
                     " yet; starting at step 0");
    }
  }
  if (!resume.empty()) {
    auto path = checkpoint::resolve_checkpoint(cc.dir, resume);
    if (!path) return path.status();
    auto state = checkpoint::read_checkpoint(*path, model, &adamw, grid,
                                             checkpoint::transfers_from_config(config));
    if (!state) return state.status();
    if (state->seed != tc.seed) {
      return core::Status::error(
          "checkpoint '" + *path + "' was trained with train.seed " + std::to_string(state->seed) +
          ", the config says " + std::to_string(tc.seed) +
          "; set train.seed: " + std::to_string(state->seed) + " to continue its data order");
    }
    if (state->step >= tc.steps) {
      return core::Status::error("checkpoint '" + *path + "' is at step " +
                                 std::to_string(state->step) + ", train.steps is " +
                                 std::to_string(tc.steps) + ": nothing to do; raise train.steps");
    }
    first_step = static_cast<int>(state->step);
    train_data->set_cursor({state->data_epoch, state->data_position});
    core::log_info("resumed from " + *path + " at step " + std::to_string(first_step));
  }
  auto save_checkpoint = [&](int steps_done) {
    const std::string path = checkpoint::checkpoint_path(cc.dir, steps_done);
    const data::LoaderCursor cursor = train_data->cursor();
    const checkpoint::TrainState state{steps_done, int64_t{steps_done} * global_batch * T, tc.seed,
                                       cursor.epoch, cursor.position};
    parallel::Timeline::Scope scope(timeline.get(), "checkpoint", "checkpoint");
    core::Status st = checkpoint::write_checkpoint(path, model, &adamw, state, config, grid,
                                                   checkpoint::transfers_from_config(config));
    if (st.is_ok() && grid.world_rank() == 0)
      st = checkpoint::publish_latest(cc.dir, path, cc.keep);
    if (!st.is_ok()) throw Error(st.message());
    core::log_info("checkpoint " + path);
  };
  if (!cc.dir.empty()) {
    std::filesystem::create_directories(cc.dir);
    std::signal(SIGTERM, on_stop_signal);
    std::signal(SIGUSR1, on_stop_signal);
  }
  // The job's peak: every rank measures its own share of the machine at the same moment (so
  // ranks sharing cores each see their part) and the shares are summed.
  grid.world_comm().barrier();
  double peak_gflops = measure_sgemm_gflops(1024, 5);
  grid.world_comm().all_reduce(&peak_gflops, 1, parallel::ReduceOp::kSum);
  const double flops_per_token = models::Gpt::flops_per_token(mc, T);

  core::log_info("model: GPT-2, " + std::to_string(model.param_set().global_param_count(true)) +
                 " parameters (V=" + std::to_string(mc.vocab_size) + ", Vp=" +
                 std::to_string(mc.padded_vocab_size()) + ", L=" + std::to_string(mc.n_layer) +
                 ", NH=" + std::to_string(mc.n_head) + ", C=" + std::to_string(mc.n_embd) + ")");
  char line[256];
  std::snprintf(line, sizeof line,
                "grid: %d ranks = dp %d x tp %d (tp groups of neighbouring ranks)",
                grid.world_size(), dp_size, grid.tp_size());
  core::log_info(line);
  // Under Slurm the job and its nodes go into the log and into this run's first metrics record.
  core::LaunchEnv launch = core::read_slurm_env();
  launch.local_rank = grid.local_rank();
  launch.local_size = grid.local_size();
  if (launch.under_slurm()) core::log_info("launch: " + launch.describe());
  std::snprintf(
      line, sizeof line,
      "train: %ld steps x %ld sequences x %ld tokens, micro-batch %ld, %d threads per rank, "
      "sgemm peak %.1f GFLOP/s (all ranks)",
      static_cast<long>(tc.steps), static_cast<long>(global_batch), static_cast<long>(T),
      static_cast<long>(micro), threads, peak_gflops);
  core::log_info(line);
  core::log_info("data: " + std::to_string(train_data->num_tokens()) + " training tokens, " +
                 "unigram entropy " + std::to_string(*entropy) + " nats/token");

  const bool writer = grid.world_rank() == 0;
  std::ofstream metrics;
  if (writer) {
    std::filesystem::create_directories(tc.out_dir);
    // A resumed run continues the file; a fresh one starts it anew.
    metrics.open(tc.out_dir + "/metrics.jsonl", first_step > 0 ? std::ios::app : std::ios::trunc);
    if (!metrics) {
      throw Error("cannot write '" + tc.out_dir + "/metrics.jsonl'; check train.out_dir");
    }
  }

  // Step buffers, allocated once.
  std::vector<int32_t> inputs(B_local * T), targets(B_local * T);
  auto evaluate = [&]() {
    // A validation batch is a global batch split over dp like a training batch (tp ranks share
    // the work of each), and the sums are reduced over dp: the figure is the same on every grid.
    parallel::Timeline::Scope scope(timeline.get(), "validation", "validation");
    val_data->set_cursor({});
    double sum_count[2] = {0, 0};
    for (int b = 0; b < tc.val_batches; ++b) {
      if (val_data->cursor().epoch > 0) break;  // validation set exhausted: use what we have
      val_data->next_batch(global_batch, dp_rank * B_local, B_local, inputs.data(), targets.data());
      for (int64_t m = 0; m < B_local; m += micro) {
        int64_t n = 0;
        sum_count[0] += model.forward(inputs.data() + m * T, targets.data() + m * T, micro, T, &n);
        sum_count[1] += static_cast<double>(n);
      }
    }
    if (dp_size > 1) grid.dp_comm().all_reduce(sum_count, 2, parallel::ReduceOp::kSum);
    return sum_count[0] / sum_count[1];
  };

  TrainSummary summary;
  summary.unigram_entropy = *entropy;
  summary.first_step = first_step;
  core::Timer run_timer;
  double tokens_per_s = 0;
  for (int step = first_step; step < tc.steps; ++step) {
    core::Timer step_timer;
    model.zero_grad();
    train_data->next_batch(global_batch, dp_rank * B_local, B_local, inputs.data(), targets.data());
    // Each rank's gradient is that of its own mean loss; the reducer averages them over dp,
    // which gives the gradient of the global mean.
    const float loss_scale = 1.0f / static_cast<float>(B_local * T);
    double loss_sum = 0;
    for (int64_t m = 0; m < B_local; m += micro) {
      const bool last_micro = m + micro == B_local;
      {
        parallel::Timeline::Scope scope(timeline.get(), "forward", "forward");
        loss_sum += model.forward(inputs.data() + m * T, targets.data() + m * T, micro, T);
      }
      if (step == 2 && core::fault_requested("step")) {
        throw Error("running backward of step 3: injected fault (TESSERA_INJECT_FAULT=step@" +
                    std::to_string(grid.world_rank()) + ")");
      }
      model.backward(loss_scale, reducer && last_micro ? on_ready : nullptr);
    }
    if (reducer) reducer->finish();  // gradients are now averaged over dp
    if (dp_size > 1) grid.dp_comm().all_reduce(&loss_sum, 1, parallel::ReduceOp::kSum);
    const double loss = loss_sum / static_cast<double>(global_batch * T);
    summary.losses.push_back(loss);
    double norm = 0;
    const double lr = optim::learning_rate(config.optim, step, tc.steps);
    {
      parallel::Timeline::Scope scope(timeline.get(), "optimizer", "optimizer");
      norm = optim::clip_grad_norm(model.param_set(), model.grads(), config.optim.grad_clip,
                                   &grid.tp_comm());
      adamw.step(model.weights(), model.grads(), lr, step + 1, config.optim);
    }
    const double dt = step_timer.seconds();
    tokens_per_s = static_cast<double>(global_batch * T) / dt;
    const double mfu = flops_per_token * tokens_per_s / (peak_gflops * 1e9);
    summary.final_train_loss = loss;

    nlohmann::json rec = {{"step", step + 1},
                          {"loss", loss},
                          {"lr", lr},
                          {"grad_norm", norm},
                          {"tokens_per_s", tokens_per_s},
                          {"mfu", mfu},
                          {"time_s", run_timer.seconds()}};
    if (step == first_step && launch.under_slurm()) {
      rec["slurm_job_id"] = launch.job_id;
      rec["slurm_nodelist"] = launch.node_list;
    }
    const bool last = step + 1 == tc.steps;
    if (have_val && ((step + 1) % tc.val_every == 0 || last)) {
      summary.final_val_loss = evaluate();
      rec["val_loss"] = summary.final_val_loss;
    }
    if (writer) {
      metrics << rec.dump() << "\n";
      metrics.flush();
    }
    if ((step + 1) % tc.log_every == 0 || last || rec.contains("val_loss")) {
      const double eta = run_timer.seconds() / (step + 1 - first_step) * (tc.steps - step - 1);
      std::snprintf(line, sizeof line,
                    "step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1fk tok/s | MFU %.1f%% | "
                    "ETA %s",
                    step + 1, tc.steps, loss, lr, norm, tokens_per_s / 1e3, 100 * mfu,
                    format_eta(eta).c_str());
      std::string s = line;
      if (rec.contains("val_loss")) s += " | val " + std::to_string(summary.final_val_loss);
      core::log_info(s);
    }
    if (!cc.dir.empty() && step + 1 < tc.steps) {
      // Every rank must agree to stop: a signal may reach only some of them.
      double stop = g_stop_signal.load() != 0 ? 1.0 : 0.0;
      grid.world_comm().all_reduce(&stop, 1, parallel::ReduceOp::kMax);
      if (stop > 0) {
        save_checkpoint(step + 1);
        core::log_info("stopping after step " + std::to_string(step + 1) +
                       " on a signal (checkpoint written); resume with --resume");
        summary.stopped_by_signal = true;
        break;
      }
      if (cc.every > 0 && (step + 1) % cc.every == 0) save_checkpoint(step + 1);
    }
  }
  summary.tokens_per_s = tokens_per_s;
  if (!cc.dir.empty() && !summary.stopped_by_signal) save_checkpoint(tc.steps);
  {
    // The final weights: a weights-only checkpoint (no AdamW state), written like any other
    // (collective, each rank its hyperslabs), for generation and conversion on any grid.
    summary.weights_path = tc.out_dir + "/model.h5";
    const data::LoaderCursor cursor = train_data->cursor();
    const int64_t steps_done = summary.first_step + static_cast<int64_t>(summary.losses.size());
    const checkpoint::TrainState state{steps_done, steps_done * global_batch * T, tc.seed,
                                       cursor.epoch, cursor.position};
    core::Status st =
        checkpoint::write_checkpoint(summary.weights_path, model, nullptr, state, config, grid,
                                     checkpoint::transfers_from_config(config));
    if (!st.is_ok()) throw Error(st.message());
  }
  core::log_info("wrote " + summary.weights_path + " (final weights)");
  if (timeline) {
    const std::string path = grid.world_size() == 1
                                 ? tc.timeline
                                 : tc.timeline + ".rank" + std::to_string(grid.world_rank());
    core::Status st = timeline->write(path);
    if (!st.is_ok()) throw Error(st.message());
    core::log_info("wrote timeline " + path + " (open in ui.perfetto.dev)");
  }
  if (summary.final_val_loss >= 0) {
    std::snprintf(line, sizeof line,
                  "final: val loss %.4f nats/token vs unigram entropy %.4f of the training tokens "
                  "(%.1f%% below)",
                  summary.final_val_loss, summary.unigram_entropy,
                  100 * (1 - summary.final_val_loss / summary.unigram_entropy));
    core::log_info(line);
  }
  return summary;
}

}  // namespace tessera::train
