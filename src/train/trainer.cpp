// tessera-train's loop; see trainer.h. One Trainer runs one call of train(), and its phases read
// in the order they happen: set up, resume or init, log the run, the steps, finish.
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

#include "backends/backend.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/convert.h"
#include "checkpoint/hf_gpt2.h"
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
#include "parallel/node_shared_arenas.h"
#include "parallel/process_grid.h"
#include "parallel/timeline.h"
#include "parallel/watchdog.h"
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

// A directory key's path can be made: its nearest existing ancestor is a directory. Every rank
// checks before the first file is written (only the writer makes train.out_dir), so all fail alike.
core::Status check_dir_key(const std::string& key, const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  for (fs::path p(dir); !p.empty(); p = p.parent_path()) {
    if (fs::exists(p, ec)) {
      if (fs::is_directory(p, ec)) return core::Status::ok();
      return core::Status::error(key + " '" + dir + "': '" + p.string() +
                                 "' is a file, not a directory; set " + key +
                                 " to a directory path, or move that file away");
    }
    if (p == p.parent_path()) break;
  }
  return core::Status::ok();
}

// Collective over grid.world_comm() (world rank 0 reads the stored config, all get it, so all
// return the same verdict). The config stored in checkpoint `path` against this run's: the
// model's keys (model.n_head alone changes no tensor's shape, so such a file would load and be
// read wrongly) and, when resuming, what the data order and its saved cursor mean
// (train.batch_size, train.seq_len, data.train).
core::Status check_stored_config(const std::string& path, const core::Config& config,
                                 parallel::ProcessGrid& grid, bool resume) {
  auto yaml = checkpoint::read_checkpoint_config(path, grid);
  if (!yaml) return yaml.status();
  auto stored = core::parse_config(*yaml, "the config stored in '" + path + "'", {});
  if (!stored) return stored.status();
  std::string diff, fix;
  auto compare = [&](const std::string& key, const std::string& there, const std::string& here,
                     const char* ours) {
    if (there == here) return;
    diff += (diff.empty() ? "" : ", ") + key + " " + there + " in the checkpoint, " + here + ours;
    fix += (fix.empty() ? "" : ", ") + key + ": " + there;
  };
  const core::ModelConfig &m = stored->model, &c = config.model;
  const char* in_model = " in this model";
  compare("model.arch", m.arch, c.arch, in_model);
  compare("model.vocab_size", std::to_string(m.vocab_size), std::to_string(c.vocab_size), in_model);
  compare("model.max_seq_len", std::to_string(m.max_seq_len), std::to_string(c.max_seq_len),
          in_model);
  compare("model.n_layer", std::to_string(m.n_layer), std::to_string(c.n_layer), in_model);
  compare("model.n_head", std::to_string(m.n_head), std::to_string(c.n_head), in_model);
  compare("model.n_embd", std::to_string(m.n_embd), std::to_string(c.n_embd), in_model);
  if (!diff.empty()) {
    return core::Status::error("checkpoint '" + path + "' was written with another model config (" +
                               diff + "); set " + fix + " to load it");
  }
  if (!resume) return core::Status::ok();
  const char* in_run = " in this run";
  compare("train.batch_size", std::to_string(stored->train.batch_size),
          std::to_string(config.train.batch_size), in_run);
  compare("train.seq_len", std::to_string(stored->train.seq_len),
          std::to_string(config.train.seq_len), in_run);
  compare("data.train", "'" + stored->data.train + "'", "'" + config.data.train + "'", in_run);
  if (!diff.empty()) {
    return core::Status::error(
        "checkpoint '" + path + "' was written with another data order (" + diff +
        "); its saved data position means nothing in another: set " + fix +
        " to resume it, or start a new run from its weights with --set train.init_from=" + path);
  }
  return core::Status::ok();
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

// How a value fails to be finite, ordered so that the max over ranks is the worst: a NaN on one
// rank outranks an inf on another. Small whole numbers (as doubles, the type all-reduced): a
// kMax all-reduce of them is exact.
constexpr double kFinite = 0, kPosInf = 1, kNegInf = 2, kNan = 3;

double nonfinite_class(double x) {
  if (std::isnan(x)) return kNan;
  if (std::isinf(x)) return x > 0 ? kPosInf : kNegInf;
  return kFinite;
}

// `value` as the message shows it: the class where all ranks agreed it is not finite.
std::string describe_value(double value, double cls) {
  if (cls == kNan) return "nan";
  if (cls == kPosInf) return "inf";
  if (cls == kNegInf) return "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", value);
  return buf;
}

std::string ordinal(int n) {
  const char* suffix = n % 100 / 10 == 1 ? "th"
                       : n % 10 == 1     ? "st"
                       : n % 10 == 2     ? "nd"
                       : n % 10 == 3     ? "rd"
                                         : "th";
  return std::to_string(n) + suffix;
}

// What the optimizer phase of one step reports.
struct Update {
  double lr = 0;
  double grad_norm = 0;  // before clipping
  bool skipped = false;  // non-finite loss or norm, within train.skip_nonfinite: no update applied
};

// One run of train(), phase by phase. A member is made by the phase that owns it and lives to
// the end of the run; members are declared in the order they are made, so each is destroyed
// before what it borrows (the reducer before the model's gradients, the model before the
// backend). Collectiveness is that of train(): every rank of the world runs every phase.
class Trainer {
 public:
  Trainer(const core::Config& config, parallel::ProcessGrid& grid);
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // train()'s whole contract (trainer.h); call once.
  core::Result<TrainSummary> run();

 private:
  // ---- Set-up: checks every rank makes alone, before the first collective. ----
  core::Status set_up_backend();
  core::Status set_up_batch();
  core::Status set_up_data();
  void set_up_model();  // model, AdamW, gradient reducer: no communication
  // ---- Weights: a checkpoint to resume, weights to fine-tune from, or fresh ones. ----
  core::Status resume_or_init();
  void arm_checkpoints();
  // ---- The run's header in the log (collective: the job's peak is summed over ranks). ----
  void log_run();
  // ---- One step. ----
  void load_batch();
  double forward_backward(int step);  // this rank's loss sum over its sequences
  double reduce(double loss_sum);     // the global mean loss; gradients averaged over dp
  // Clips and applies AdamW, unless the loss or the grad norm is not finite on some rank: then
  // no update is applied, and the step is skipped (within train.skip_nonfinite) or an error.
  core::Result<Update> clip_and_step(int step, double loss);
  nlohmann::json step_record(int step, double loss, const Update& update, double step_seconds);
  void validate_if_due(int step, nlohmann::json& rec);
  void report(int step, const nlohmann::json& rec);
  bool checkpoint_or_stop(int step);  // true: stop now (a signal arrived)
  // ---- Finish. ----
  void finish();

  double evaluate();
  // The first parameter with a non-finite value in `arena` (the parameter arena's layout, or with
  // `compact` a sharded optimizer's compact moments); collective over the world.
  std::string first_nonfinite(const core::Tensor& arena,
                              const std::vector<optim::ShardSegment>* compact = nullptr);
  core::Status check_state_finite(int steps_done, bool with_moments);
  std::string resume_hint() const;
  void save_checkpoint(int steps_done);
  checkpoint::TrainState train_state(int64_t steps_done) const;
  bool last_step(int step) const { return step + 1 == tc_.steps; }

  const core::Config& config_;
  const core::TrainConfig& tc_;
  const core::CheckpointConfig& cc_;
  parallel::ProcessGrid& grid_;
  const int dp_size_, dp_rank_;
  const int64_t T_, global_batch_, B_local_;
  const bool writer_;  // world rank 0 writes metrics.jsonl

  // Set-up.
  std::unique_ptr<parallel::Watchdog> watchdog_;  // null: parallel.collective_timeout_s 0, 1 rank
  std::unique_ptr<backends::Backend> backend_;
  int64_t micro_ = 0;  // sequences per forward/backward
  int threads_ = 0;
  double unigram_entropy_ = 0;
  std::optional<data::DataLoader> train_data_, val_data_;  // val_data_: empty without validation
  std::unique_ptr<parallel::Timeline> timeline_;
  std::unique_ptr<models::Gpt> model_;
  std::unique_ptr<optim::AdamW> adamw_;
  std::unique_ptr<parallel::GradientReducer> reducer_;  // null when dp_size == 1
  bool node_shared_ = false;  // the dp group's arenas are node-shared (parallel.node_shared)
  std::function<void(int)> on_ready_;
  models::Gpt::SparseRowsHook sparse_rows_;  // set when the reducer exchanges wte's rows
  // Resume or init.
  int first_step_ = 0;
  // Log the run.
  double peak_gflops_ = 0;
  double flops_per_token_ = 0;
  core::LaunchEnv launch_;
  std::ofstream metrics_;
  // Steps.
  std::vector<int32_t> inputs_, targets_;  // (B_local, T) step buffers, allocated once
  core::Timer run_timer_;                  // restarted when the first step starts
  double tokens_per_s_ = 0;
  int nonfinite_steps_ = 0;      // steps skipped for a non-finite loss or grad norm
  std::string last_checkpoint_;  // the newest checkpoint this run resumed from or wrote
  TrainSummary summary_;
};

Trainer::Trainer(const core::Config& config, parallel::ProcessGrid& grid)
    : config_(config),
      tc_(config.train),
      cc_(config.checkpoint),
      grid_(grid),
      dp_size_(grid.dp_size()),
      dp_rank_(grid.dp_rank()),
      T_(config.train.seq_len),
      global_batch_(config.train.batch_size),
      B_local_(config.train.batch_size / grid.dp_size()),
      writer_(grid.world_rank() == 0) {}

core::Result<TrainSummary> Trainer::run() {
  // The grid check tessera-train makes before it builds the grid, made again for any caller of
  // train(): the same answer on every rank, before the first collective. Without it a batch that
  // dp does not divide would train on dp x (batch_size / dp) sequences a step.
  core::Config on_this_grid = config_;
  on_this_grid.parallel.tp = grid_.tp_size();
  TESSERA_RETURN_IF_ERROR(parallel::check_grid(on_this_grid, grid_.world_size()));
  // From the first collective on, a peer that stops or stalls ends the job (watchdog.h). The
  // peer table (a collective, the run's first) lets the message name a stopped peer.
  if (config_.parallel.collective_timeout_s > 0 && grid_.world_size() > 1) {
    watchdog_ = std::make_unique<parallel::Watchdog>(
        parallel::heartbeat(), config_.parallel.collective_timeout_s, parallel::abort_job_on_stall,
        [peers = parallel::gather_peers(grid_.tp_size()), self = grid_.world_rank()] {
          return parallel::describe_local_peers(peers, self, parallel::this_host());
        });
  }
  TESSERA_RETURN_IF_ERROR(set_up_backend());
  TESSERA_RETURN_IF_ERROR(set_up_batch());
  TESSERA_RETURN_IF_ERROR(set_up_data());
  TESSERA_RETURN_IF_ERROR(check_dir_key("train.out_dir", tc_.out_dir));
  if (!cc_.dir.empty()) TESSERA_RETURN_IF_ERROR(check_dir_key("checkpoint.dir", cc_.dir));
  set_up_model();
  TESSERA_RETURN_IF_ERROR(resume_or_init());
  arm_checkpoints();
  log_run();

  summary_.unigram_entropy = unigram_entropy_;
  summary_.first_step = first_step_;
  inputs_.resize(B_local_ * T_);
  targets_.resize(B_local_ * T_);
  run_timer_.reset();
  for (int step = first_step_; step < tc_.steps; ++step) {
    parallel::heartbeat().set_step(step + 1, tc_.steps);
    core::Timer step_timer;
    load_batch();
    const double loss = reduce(forward_backward(step));
    auto update = clip_and_step(step, loss);
    if (!update) return update.status();  // non-finite, the same verdict on every rank
    if (!update->skipped) {
      // The record's time_s leaves out this step's validation; its val_loss joins the record
      // before report() writes it.
      nlohmann::json rec = step_record(step, loss, *update, step_timer.seconds());
      validate_if_due(step, rec);
      report(step, rec);
    } else {
      // A skipped step has no metrics record (no loss to give) and no progress line; a
      // validation due now still runs, on the previous step's weights.
      nlohmann::json rec;
      validate_if_due(step, rec);
      if (rec.contains("val_loss")) {
        core::log_info("step " + std::to_string(step + 1) + "/" + std::to_string(tc_.steps) +
                       " skipped | val " + std::to_string(summary_.final_val_loss));
      }
    }
    if (checkpoint_or_stop(step)) break;
  }
  finish();
  return summary_;
}

// ---- Set-up ------------------------------------------------------------------------------------

core::Status Trainer::set_up_backend() {
  // make_backend's errors (an unknown device; no CUDA backend built; no usable GPU) are returned
  // as they are. No collective comes before this, and on the CPU every rank fails alike.
  auto backend = backends::make_backend(tc_.device, grid_.local_rank(), grid_.local_size());
  if (tc_.device == "cpu") {
    if (!backend) return backend.status();
    backend_ = std::move(*backend);
    backend_->set_bf16_matmuls(tc_.dtype == "bf16");
    return core::Status::ok();
  }
  // A device may fail on some ranks only (one GPU busy or broken): every rank learns how many
  // failed before any other collective, so all end with an error instead of some hanging.
  double failed = backend ? 0.0 : 1.0;
  grid_.world_comm().all_reduce(&failed, 1, parallel::ReduceOp::kSum);
  if (!backend) return backend.status();
  if (failed > 0) {
    return core::Status::error("train.device '" + tc_.device +
                               "': " + std::to_string(static_cast<int>(failed)) +
                               " rank(s) could not start their device (their messages say why); "
                               "fix those nodes or use train.device=cpu");
  }
  backend_ = std::move(*backend);
  backend_->set_bf16_matmuls(tc_.dtype == "bf16");
  if (config_.parallel.compress_bf16 && dp_size_ > 1) {
    return core::Status::error(
        "parallel.compress_bf16: bf16 gradient compression is host-only (the CPU backend); set "
        "parallel.compress_bf16: false on train.device " +
        tc_.device);
  }
  return core::Status::ok();
}

core::Status Trainer::set_up_batch() {
  micro_ = tc_.micro_batch_size > 0 ? tc_.micro_batch_size : B_local_;
  if (B_local_ % micro_ != 0) {
    return core::Status::error("train.batch_size " + std::to_string(global_batch_) +
                               " per dp rank (" + std::to_string(B_local_) +
                               ") is not a multiple of train.micro_batch_size " +
                               std::to_string(micro_) + "; change one of them");
  }
  threads_ = core::set_threads(tc_.threads, grid_.local_size());
  return core::Status::ok();
}

core::Status Trainer::set_up_data() {
  std::string train_paths = config_.data.train;
  if (core::fault_requested("data")) train_paths += ".injected-missing";
  if (core::fault_requested("shard")) train_paths += ".injected-corrupt";
  // Shard errors name the file; the prefix names the key it came from.
  auto entropy = scan_tokens(train_paths, config_.model.vocab_size);
  if (!entropy) return entropy.status().with_context("data.train: ");
  unigram_entropy_ = *entropy;
  auto train_data = data::DataLoader::open(train_paths, T_, tc_.seed);
  if (!train_data) return train_data.status().with_context("data.train: ");
  TESSERA_RETURN_IF_ERROR(train_data->validate_batch(global_batch_));
  train_data_.emplace(std::move(*train_data));
  if (config_.data.val.empty() || tc_.val_every <= 0) return core::Status::ok();
  auto val_data = data::DataLoader::open(config_.data.val, T_, tc_.seed);
  if (!val_data) return val_data.status().with_context("data.val: ");
  if (val_data->num_sequences() < global_batch_) {
    return core::Status::error("data.val '" + config_.data.val + "' has " +
                               std::to_string(val_data->num_sequences()) + " sequences of " +
                               std::to_string(T_ + 1) + " tokens, fewer than one batch (" +
                               std::to_string(global_batch_) +
                               "); give more validation text "
                               "or set train.val_every: 0");
  }
  val_data_.emplace(std::move(*val_data));
  return core::Status::ok();
}

void Trainer::set_up_model() {
  if (!tc_.timeline.empty()) timeline_ = std::make_unique<parallel::Timeline>(grid_.world_rank());
  // The model's tp reductions and the reducer's dp all-reduces run on the device's
  // communicators (NCCL on a GPU, made here: collective over the world; MPI on the CPU). Host
  // values (loss sums, the grad norm's squares) keep going over the MPI ones.
  grid_.attach_device(*backend_);
  // The dp group on one node (parallel.node_shared): the gradient arena (and with ZeRO-1 the
  // weight arena) is memory the group shares, so the dp exchange needs no MPI copies. auto: with
  // ZeRO-1; on: with the replicated optimizer too (docs/CONFIG.md says why not by default).
  std::shared_ptr<parallel::NodeSharedArenas> shared;
  models::Gpt::Arenas arenas;
  const std::string& node_shared = config_.parallel.node_shared;
  const bool zero = config_.optim.zero == 1;
  // (An explicit parallel.sparse_embedding=on keeps the MPI exchange its rows need.)
  if (dp_size_ > 1 && backend_->device() == core::Device::kCpu &&
      (node_shared == "on" || (node_shared == "auto" && zero)) &&
      config_.parallel.sparse_embedding != "on") {
    const int64_t numel =
        params::ParamSet(models::Gpt::param_specs(config_.model), grid_.tp_rank(), grid_.tp_size())
            .total_local_numel();
    std::string why;
    shared = parallel::NodeSharedArenas::create(grid_.dp_comm(), numel, zero ? 2 : 1, &why);
    if (shared) {
      node_shared_ = true;
      if (zero) arenas.weights = shared->arena(0);
      arenas.grads = shared->arena(zero ? 1 : 0);
    } else if (node_shared == "on") {
      throw Error("parallel.node_shared=on cannot share the dp group's arenas: " + why +
                  "; set parallel.node_shared=auto (MPI exchange where it cannot) or off");
    } else if (grid_.world_rank() == 0) {
      core::log_info("dp gradients exchange over MPI (parallel.node_shared auto: " + why + ")");
    }
  }
  model_ = std::make_unique<models::Gpt>(
      config_.model, micro_, T_, &grid_.device_tp_comm(), backend_.get(),
      config_.parallel.sequence_parallel, arenas, models::Gpt::Purpose::kTrain,
      tc_.dtype == "bf16" ? core::DType::kBF16 : core::DType::kF32);
  model_->set_timeline(timeline_.get());
  if (dp_size_ > 1) {
    parallel::ReducerOptions ro;
    ro.bucket_mb = config_.parallel.bucket_mb;
    ro.overlap = config_.parallel.overlap;
    ro.compress_bf16 = config_.parallel.compress_bf16;
    ro.shard = config_.optim.zero == 1;
    // forward_backward scales the loss by 1 / dp as well: the reducer's sum is the average.
    ro.average = false;
    // The tied wte's gradient split (gradient_reducer.h): its LM-head part all-reduced during
    // backward, the lookup's rows all-gathered at the end, where that is the smaller exchange.
    const params::ParamSet& ps = model_->param_set();
    const int wte = ps.index_of("wte");
    const std::string& mode = config_.parallel.sparse_embedding;
    ro.node_shared = shared;
    // Node-shared: the dense sum costs no message, so no sparse rows either.
    const bool sparse =
        !shared && model_->grads().device() == core::Device::kCpu &&
        (mode == "on" || (mode == "auto" && parallel::sparse_rows_pay(dp_size_, micro_ * T_,
                                                                      ps.local_shape(wte)[0])));
    if (sparse) {
      ro.sparse_param = wte;
      ro.sparse_capacity = micro_ * T_;
      ro.sparse_width = ps.local_shape(wte)[1];
    }
    reducer_ = std::make_unique<parallel::GradientReducer>(
        ps, model_->grads(), grid_.device_dp_comm(), ro, timeline_.get(), backend_.get());
    on_ready_ = [this](int i) { reducer_->mark_ready(i); };
    model_->set_backward_poll([this] { reducer_->poll(); });
    if (sparse) {
      sparse_rows_ = [this](int, const int32_t* ids, const float* values, int64_t n) {
        reducer_->add_sparse_rows(ids, values, n);
      };
    }
  }
  // ZeRO-1 (optim.zero 1): this rank's moments cover only the gradient pieces the sharded
  // reducer leaves it. Over one dp rank there is nothing to shard: the plain optimizer.
  if (reducer_ && config_.optim.zero == 1) {
    adamw_ = std::make_unique<optim::AdamW>(model_->param_set(), reducer_->owned_ranges());
  } else {
    adamw_ = std::make_unique<optim::AdamW>(model_->param_set(), backend_.get());
  }
}

// ---- Resume or init ----------------------------------------------------------------------------

core::Status Trainer::resume_or_init() {
  const auto transfers = checkpoint::transfers_from_config(config_);
  std::string resume = cc_.resume;
  if (resume == "auto") {
    // Every rank looks; `latest` only ever moves after a complete write, so all see the same.
    std::error_code ec;
    if (std::filesystem::exists(std::filesystem::path(cc_.dir) / "latest", ec)) {
      resume = "latest";
    } else {
      resume.clear();
      core::log_info("checkpoint.resume auto: no checkpoint in " + cc_.dir +
                     " yet; starting at step 0");
    }
  }
  if (!resume.empty()) {
    // Resume: weights, AdamW moments, step (so the LR schedule), data order and position.
    auto path = checkpoint::resolve_checkpoint(cc_.dir, resume);
    if (!path) return path.status();
    TESSERA_RETURN_IF_ERROR(check_stored_config(*path, config_, grid_, /*resume=*/true));
    // Checkpoints hold the global moments whatever optim.zero wrote them: a sharded optimizer
    // takes its pieces of each parameter's moments as they are read (checkpoint.h).
    auto state = checkpoint::read_checkpoint(*path, *model_, adamw_.get(), grid_, transfers);
    if (!state) return state.status();
    if (state->seed != tc_.seed) {
      return core::Status::error(
          "checkpoint '" + *path + "' was trained with train.seed " + std::to_string(state->seed) +
          ", the config says " + std::to_string(tc_.seed) +
          "; set train.seed: " + std::to_string(state->seed) + " to continue its data order");
    }
    if (state->step >= tc_.steps) {
      return core::Status::error("checkpoint '" + *path + "' is at step " +
                                 std::to_string(state->step) + ", train.steps is " +
                                 std::to_string(tc_.steps) + ": nothing to do; raise train.steps");
    }
    first_step_ = static_cast<int>(state->step);
    last_checkpoint_ = *path;
    train_data_->set_cursor({state->data_epoch, state->data_position});
    core::log_info("resumed from " + *path + " at step " + std::to_string(first_step_));
  } else if (!tc_.init_from.empty()) {
    // Fine-tuning: the weights alone (any grid wrote them; read_checkpoint names the file and
    // the fix on a missing file or a shape mismatch). The run is otherwise new: step 0, AdamW
    // moments at zero, the data cursor at its start. An llm.c file, the usual import, is named
    // as such (every rank reads its first bytes alike) rather than failing as bad HDF5; a
    // Hugging Face GPT-2 (directory or .safetensors) loads directly.
    auto kind = checkpoint::detect_file_kind(tc_.init_from);
    if (kind && *kind == checkpoint::FileKind::kSafetensors) {
      TESSERA_RETURN_IF_ERROR(checkpoint::load_hf_gpt2(tc_.init_from, *model_, grid_)
                                  .with_context("train.init_from: "));
      core::log_info("initialised weights from " + tc_.init_from + " (Hugging Face GPT-2)");
      return core::Status::ok();
    }
    if (kind && *kind == checkpoint::FileKind::kLlmc) {
      return core::Status::error("train.init_from: '" + tc_.init_from +
                                 "' is an llm.c model file; convert it first (tessera-ckpt "
                                 "convert " +
                                 tc_.init_from +
                                 " model.h5) and set train.init_from to the .h5 file");
    }
    TESSERA_RETURN_IF_ERROR(check_stored_config(tc_.init_from, config_, grid_, /*resume=*/false)
                                .with_context("train.init_from: "));
    auto state = checkpoint::read_checkpoint(tc_.init_from, *model_, nullptr, grid_, transfers);
    if (!state) return state.status().with_context("train.init_from: ");
    core::log_info("initialised weights from " + tc_.init_from);
  } else {
    model_->init_weights(tc_.seed);
  }
  return core::Status::ok();
}

void Trainer::arm_checkpoints() {
  if (cc_.dir.empty()) return;
  std::error_code ec;
  std::filesystem::create_directories(cc_.dir, ec);
  if (ec) {
    throw Error("cannot create checkpoint.dir '" + cc_.dir + "': " + ec.message() +
                "; set checkpoint.dir to a directory you can write");
  }
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGUSR1, on_stop_signal);
}

// ---- Log the run -------------------------------------------------------------------------------

void Trainer::log_run() {
  parallel::WatchPhase phase("start-up");
  const core::ModelConfig& mc = config_.model;
  // The job's peak: every rank measures its own share of the machine at the same moment (so
  // ranks sharing cores each see their part) and the shares are summed.
  grid_.world_comm().barrier();
  peak_gflops_ = measure_sgemm_gflops(1024, 5);
  grid_.world_comm().all_reduce(&peak_gflops_, 1, parallel::ReduceOp::kSum);
  flops_per_token_ = models::Gpt::flops_per_token(mc, T_);

  core::log_info("model: GPT-2, " + std::to_string(model_->param_set().global_param_count(true)) +
                 " parameters (V=" + std::to_string(mc.vocab_size) + ", Vp=" +
                 std::to_string(mc.padded_vocab_size()) + ", L=" + std::to_string(mc.n_layer) +
                 ", NH=" + std::to_string(mc.n_head) + ", C=" + std::to_string(mc.n_embd) + ")");
  char line[256];
  std::snprintf(line, sizeof line,
                "grid: %d ranks = dp %d x tp %d (tp groups of neighbouring ranks)",
                grid_.world_size(), dp_size_, grid_.tp_size());
  core::log_info(line);
  // Under Slurm the job and its nodes go into the log and into this run's first metrics record.
  launch_ = core::read_slurm_env();
  launch_.local_rank = grid_.local_rank();
  launch_.local_size = grid_.local_size();
  if (launch_.under_slurm()) core::log_info("launch: " + launch_.describe());
  std::snprintf(
      line, sizeof line,
      "train: %ld steps x %ld sequences x %ld tokens, micro-batch %ld, %d threads per rank, "
      "sgemm peak %.1f GFLOP/s (all ranks)",
      static_cast<long>(tc_.steps), static_cast<long>(global_batch_), static_cast<long>(T_),
      static_cast<long>(micro_), threads_, peak_gflops_);
  core::log_info(line);
  if (tc_.dtype == "bf16") {
    core::log_info(
        "precision: bf16 activations and GEMM operands with fp32 accumulation; fp32 master "
        "weights, AdamW moments, gradients, logits and softmax statistics (train.dtype bf16)");
  }
  const char* exchange = dp_size_ == 1  ? ""
                         : node_shared_ ? ", exchanged through node-shared memory"
                                        : ", exchanged over MPI";
  std::snprintf(line, sizeof line, "optimizer: AdamW, %.1f MiB of moments per rank (%s%s)",
                static_cast<double>(adamw_->state_bytes()) / (1 << 20),
                adamw_->sharded() ? "optim.zero 1: sharded over dp" : "optim.zero 0: replicated",
                exchange);
  core::log_info(line);
  core::log_info("data: " + std::to_string(train_data_->num_tokens()) + " training tokens, " +
                 "unigram entropy " + std::to_string(unigram_entropy_) + " nats/token");

  if (writer_) {
    std::error_code ec;
    std::filesystem::create_directories(tc_.out_dir, ec);
    if (ec) {
      throw Error("cannot create train.out_dir '" + tc_.out_dir + "': " + ec.message() +
                  "; set train.out_dir to a directory you can write");
    }
    // A resumed run continues the file; a fresh one (fine-tuning included) starts it anew.
    metrics_.open(tc_.out_dir + "/metrics.jsonl",
                  first_step_ > 0 ? std::ios::app : std::ios::trunc);
    if (!metrics_) {
      throw Error("cannot write '" + tc_.out_dir + "/metrics.jsonl'; check train.out_dir");
    }
  }
}

// ---- One step ----------------------------------------------------------------------------------

void Trainer::load_batch() {
  train_data_->next_batch(global_batch_, dp_rank_ * B_local_, B_local_, inputs_.data(),
                          targets_.data());
}

double Trainer::forward_backward(int step) {
  model_->zero_grad();
  // Each rank's gradient is that of its own mean loss divided by dp; the reducer sums them over
  // dp (ReducerOptions::average false), which gives the gradient of the global mean with no
  // averaging pass: the same bits as averaging afterwards when dp is a power of two.
  const float loss_scale =
      1.0f / static_cast<float>(B_local_ * T_ * (reducer_ ? static_cast<int64_t>(dp_size_) : 1));
  double loss_sum = 0;
  for (int64_t m = 0; m < B_local_; m += micro_) {
    const bool last_micro = m + micro_ == B_local_;
    {
      parallel::Timeline::Scope scope(timeline_.get(), "forward", "forward");
      parallel::WatchPhase phase("forward");
      loss_sum += model_->forward(inputs_.data() + m * T_, targets_.data() + m * T_, micro_, T_);
    }
    if (step == 2 && core::fault_requested("step")) {
      throw Error("running backward of step 3: injected fault (TESSERA_INJECT_FAULT=step@" +
                  std::to_string(grid_.world_rank()) + ")");
    }
    // Test hook (TESSERA_INJECT_FAULT=stop@r): rank r stops itself (SIGSTOP) in its third step,
    // as a rank frozen by a debugger, a hung driver or a paused VM: the others' watchdogs fire.
    if (step == 2 && core::fault_requested("stop")) {
      core::stop_self("in step 3 (TESSERA_INJECT_FAULT=stop@" + std::to_string(grid_.world_rank()) +
                      ")");
    }
    // The reducer's buckets start during the last micro-batch's backward.
    parallel::WatchPhase phase("backward");
    model_->backward(loss_scale, reducer_ && last_micro ? on_ready_ : nullptr,
                     reducer_ && last_micro ? sparse_rows_ : nullptr);
  }
  return loss_sum;
}

double Trainer::reduce(double loss_sum) {
  parallel::WatchPhase phase("the gradient all-reduce");
  if (reducer_) reducer_->finish();  // gradients are now averaged over dp
  if (dp_size_ > 1) grid_.dp_comm().all_reduce(&loss_sum, 1, parallel::ReduceOp::kSum);
  const double loss = loss_sum / static_cast<double>(global_batch_ * T_);
  summary_.losses.push_back(loss);  // a skipped step's is not finite
  if (std::isfinite(loss)) summary_.final_train_loss = loss;
  return loss;
}

core::Result<Update> Trainer::clip_and_step(int step, double loss) {
  Update u;
  u.lr = optim::learning_rate(config_.optim, step, tc_.steps);
  parallel::Timeline::Scope scope(timeline_.get(), "optimizer", "optimizer");
  parallel::WatchPhase phase("the optimizer (grad-norm clip, non-finite check)");
  u.grad_norm = adamw_->sharded() ? optim::clip_grad_norm_sharded(
                                        model_->param_set(), model_->grads(), adamw_->segments(),
                                        config_.optim.grad_clip, &grid_.tp_comm(), grid_.dp_comm())
                                  : optim::clip_grad_norm(model_->param_set(), model_->grads(),
                                                          config_.optim.grad_clip, &grid_.tp_comm(),
                                                          backend_.get());
  // Test hook (TESSERA_INJECT_FAULT=nonfinite@r): at steps 3 and 4 rank r alone sees a NaN norm,
  // as a reduction that kept a NaN on one rank only would leave it; all must still agree.
  if ((step == 2 || step == 3) && core::fault_requested("nonfinite")) u.grad_norm = std::nan("");
  // Whether to apply the update. The loss is all-reduced over dp and the norm's squares over tp,
  // and dp ranks hold dp-averaged gradients, so the values agree across ranks in exact
  // arithmetic; but MPI does not promise bit-identical all-reduce results on every rank, and the
  // model's tp max-reductions may keep or drop a NaN depending on operand order. So the verdict
  // comes from a world max of each rank's class (0 finite .. 3 nan): the same on every rank, so
  // every rank takes the same branch below (the error path has collectives).
  double cls[2] = {nonfinite_class(loss), nonfinite_class(u.grad_norm)};
  grid_.world_comm().all_reduce(cls, 2, parallel::ReduceOp::kMax);
  if (cls[0] == kFinite && cls[1] == kFinite) {
    adamw_->step(model_->weights(), model_->grads(), u.lr, step + 1, config_.optim);
    // ZeRO-1: each rank updated its own pieces of the weights; now every rank gets all of them.
    if (adamw_->sharded()) reducer_->all_gather_owned(model_->weights());
    return u;
  }
  // Clipping by an inf norm scaled finite gradients to 0 and left non-finite ones non-finite, so
  // the first non-finite gradient is still found.
  const std::string first = first_nonfinite(model_->grads());
  const std::string what = "step " + std::to_string(step + 1) + "/" + std::to_string(tc_.steps) +
                           ": loss " + describe_value(loss, cls[0]) + ", grad norm " +
                           describe_value(u.grad_norm, cls[1]) +
                           (first.empty() ? " (every gradient is finite)"
                                          : " (first non-finite gradient: " + first + ")");
  ++nonfinite_steps_;
  if (nonfinite_steps_ <= tc_.skip_nonfinite) {
    core::log_warn(what + "; step skipped, no update applied (" + std::to_string(nonfinite_steps_) +
                   " of train.skip_nonfinite=" + std::to_string(tc_.skip_nonfinite) + ")");
    u.skipped = true;
    return u;
  }
  char lr[32];
  std::snprintf(lr, sizeof lr, "%g", config_.optim.lr);
  const std::string count = tc_.skip_nonfinite > 0
                                ? ", the " + ordinal(nonfinite_steps_) +
                                      " non-finite step, more than train.skip_nonfinite=" +
                                      std::to_string(tc_.skip_nonfinite) + " allows"
                                : "";
  return core::Status::error(what + count +
                             ": training stopped before applying this update; no checkpoint of "
                             "this step was written; lower optim.lr (now " +
                             lr + ") or check the training data" + resume_hint());
}

nlohmann::json Trainer::step_record(int step, double loss, const Update& update,
                                    double step_seconds) {
  tokens_per_s_ = static_cast<double>(global_batch_ * T_) / step_seconds;
  const double mfu = flops_per_token_ * tokens_per_s_ / (peak_gflops_ * 1e9);
  nlohmann::json rec = {{"step", step + 1},
                        {"loss", loss},
                        {"lr", update.lr},
                        {"grad_norm", update.grad_norm},
                        {"tokens_per_s", tokens_per_s_},
                        {"mfu", mfu},
                        {"time_s", run_timer_.seconds()}};
  if (step == first_step_ && launch_.under_slurm()) {
    rec["slurm_job_id"] = launch_.job_id;
    rec["slurm_nodelist"] = launch_.node_list;
  }
  return rec;
}

void Trainer::validate_if_due(int step, nlohmann::json& rec) {
  if (!val_data_ || ((step + 1) % tc_.val_every != 0 && !last_step(step))) return;
  summary_.final_val_loss = evaluate();
  rec["val_loss"] = summary_.final_val_loss;
}

double Trainer::evaluate() {
  // A validation batch is a global batch split over dp like a training batch (tp ranks share
  // the work of each), and the sums are reduced over dp: the figure is the same on every grid.
  parallel::Timeline::Scope scope(timeline_.get(), "validation", "validation");
  parallel::WatchPhase phase("validation");
  val_data_->set_cursor({});
  double sum_count[2] = {0, 0};
  for (int b = 0; b < tc_.val_batches; ++b) {
    if (val_data_->cursor().epoch > 0) break;  // validation set exhausted: use what we have
    val_data_->next_batch(global_batch_, dp_rank_ * B_local_, B_local_, inputs_.data(),
                          targets_.data());
    for (int64_t m = 0; m < B_local_; m += micro_) {
      int64_t n = 0;
      sum_count[0] +=
          model_->forward(inputs_.data() + m * T_, targets_.data() + m * T_, micro_, T_, &n);
      sum_count[1] += static_cast<double>(n);
    }
  }
  if (dp_size_ > 1) grid_.dp_comm().all_reduce(sum_count, 2, parallel::ReduceOp::kSum);
  return sum_count[0] / sum_count[1];
}

void Trainer::report(int step, const nlohmann::json& rec) {
  if (writer_) {
    metrics_ << rec.dump() << "\n";
    metrics_.flush();
  }
  const bool validated = rec.contains("val_loss");
  if ((step + 1) % tc_.log_every != 0 && !last_step(step) && !validated) return;
  const double eta = run_timer_.seconds() / (step + 1 - first_step_) * (tc_.steps - step - 1);
  char line[256];
  std::snprintf(line, sizeof line,
                "step %5d/%d | loss %.4f | lr %.2e | norm %.3f | %.1fk tok/s | MFU %.1f%% | "
                "ETA %s",
                step + 1, tc_.steps, rec.at("loss").get<double>(), rec.at("lr").get<double>(),
                rec.at("grad_norm").get<double>(), tokens_per_s_ / 1e3,
                100 * rec.at("mfu").get<double>(), format_eta(eta).c_str());
  std::string s = line;
  if (validated) s += " | val " + std::to_string(summary_.final_val_loss);
  core::log_info(s);
}

bool Trainer::checkpoint_or_stop(int step) {
  // The last step's checkpoint is finish()'s.
  if (cc_.dir.empty() || last_step(step)) return false;
  // Every rank must agree to stop: a signal may reach only some of them.
  parallel::WatchPhase phase("the stop-signal check");
  double stop = g_stop_signal.load() != 0 ? 1.0 : 0.0;
  grid_.world_comm().all_reduce(&stop, 1, parallel::ReduceOp::kMax);
  if (stop > 0) {
    save_checkpoint(step + 1);
    core::log_info("stopping after step " + std::to_string(step + 1) +
                   " on a signal (checkpoint written); resume with --resume");
    summary_.stopped_by_signal = true;
    return true;
  }
  if (cc_.every > 0 && (step + 1) % cc_.every == 0) save_checkpoint(step + 1);
  return false;
}

// ---- Finish ------------------------------------------------------------------------------------

void Trainer::finish() {
  parallel::WatchPhase phase("the final checkpoint and weights write");
  summary_.tokens_per_s = tokens_per_s_;
  if (!cc_.dir.empty() && !summary_.stopped_by_signal) save_checkpoint(tc_.steps);
  {
    // The final weights: a weights-only checkpoint (no AdamW state), written like any other
    // (collective, each rank its hyperslabs), for generation and conversion on any grid.
    summary_.weights_path = tc_.out_dir + "/model.h5";
    const int64_t steps_done = summary_.first_step + static_cast<int64_t>(summary_.losses.size());
    core::Status st = check_state_finite(static_cast<int>(steps_done), /*with_moments=*/false);
    if (st.is_ok()) {
      st = checkpoint::write_checkpoint(summary_.weights_path, *model_, nullptr,
                                        train_state(steps_done), config_, grid_,
                                        checkpoint::transfers_from_config(config_));
    }
    if (!st.is_ok()) throw Error(st.message());
  }
  core::log_info("wrote " + summary_.weights_path + " (final weights)");
  if (timeline_) {
    const std::string path = grid_.world_size() == 1
                                 ? tc_.timeline
                                 : tc_.timeline + ".rank" + std::to_string(grid_.world_rank());
    core::Status st = timeline_->write(path);
    if (!st.is_ok()) throw Error(st.message());
    core::log_info("wrote timeline " + path + " (open in ui.perfetto.dev)");
  }
  if (summary_.final_val_loss >= 0) {
    // Below the unigram entropy the model has learned more than token frequencies; above it, a
    // short run has not yet (said as such, not as a negative "below").
    char line[256];
    const double gap = 1 - summary_.final_val_loss / summary_.unigram_entropy;
    std::snprintf(
        line, sizeof line,
        "final: val loss %.4f nats/token vs unigram entropy %.4f of the training tokens "
        "(%.1f%% %s)",
        summary_.final_val_loss, summary_.unigram_entropy, 100 * std::abs(gap),
        gap >= 0 ? "below" : "above: not yet better than token frequencies; train longer");
    core::log_info(line);
  }
}

// ---- Checkpoints -------------------------------------------------------------------------------

// Collective over the world. The name of the first parameter (ParamSpec order) whose part of
// `arena` (gradients, weights or a moment: a twin of the parameter arena) holds a non-finite
// value on any rank; "" when none does. sum_squares adds float squares in double, which cannot
// overflow, so it is finite exactly when every element is.
std::string Trainer::first_nonfinite(const core::Tensor& arena,
                                     const std::vector<optim::ShardSegment>* compact) {
  const params::ParamSet& params = model_->param_set();
  std::vector<double> bad(params.size());
  if (compact != nullptr) {
    for (const optim::ShardSegment& s : *compact) {
      const double sq = backend_->sum_squares(arena.f32() + s.moment_offset, s.count);
      if (!std::isfinite(sq)) bad[s.param] = 1.0;
    }
  } else {
    for (int i = 0; i < params.size(); ++i) {
      const double sq = backend_->sum_squares(params.view(arena, i).f32(), params.local_numel(i));
      bad[i] = std::isfinite(sq) ? 0.0 : 1.0;
    }
  }
  grid_.world_comm().all_reduce(bad.data(), params.size(), parallel::ReduceOp::kMax);
  for (int i = 0; i < params.size(); ++i) {
    if (bad[i] > 0) return params.specs()[i].name;
  }
  return "";
}

// Collective over the world. An error (the same on every rank) naming the first non-finite
// dataset when the weights, or with `with_moments` the AdamW moments, hold a NaN or inf on any
// rank: the loss and norm checks keep bad updates out, but a finite update can still overflow
// (a huge optim.lr), and no checkpoint or weights file may hold such values.
core::Status Trainer::check_state_finite(int steps_done, bool with_moments) {
  const params::ParamSet& params = model_->param_set();
  std::vector<std::pair<std::string, const core::Tensor*>> arenas = {
      {"/model/", &model_->weights()}};
  if (with_moments) {
    arenas.push_back({"/optim/m/", &adamw_->m()});
    arenas.push_back({"/optim/v/", &adamw_->v()});
  }
  // One pass and one all-reduce in the usual case; per-parameter sums only to name the culprit.
  // ZeRO-1's moments are compact (the rank's pieces only: all of the arena, padding zeros).
  std::vector<double> sq(arenas.size());
  for (size_t k = 0; k < arenas.size(); ++k) {
    const int64_t n =
        k > 0 && adamw_->sharded() ? arenas[k].second->numel() : params.total_local_numel();
    sq[k] = std::isfinite(backend_->sum_squares(arenas[k].second->f32(), n)) ? 0.0 : 1.0;
  }
  grid_.world_comm().all_reduce(sq.data(), static_cast<int64_t>(sq.size()),
                                parallel::ReduceOp::kMax);
  for (size_t k = 0; k < arenas.size(); ++k) {
    if (sq[k] == 0) continue;
    const std::string name =
        arenas[k].first + first_nonfinite(*arenas[k].second, k > 0 && adamw_->sharded()
                                                                 ? &adamw_->segments()
                                                                 : nullptr);
    char lr[32];
    std::snprintf(lr, sizeof lr, "%g", config_.optim.lr);
    return core::Status::error(
        "after step " + std::to_string(steps_done) + " dataset " + name +
        " holds non-finite values (an update overflowed): training stopped without writing a "
        "checkpoint or weights file of this step; lower optim.lr (now " +
        lr + ") or check the training data" + resume_hint());
  }
  return core::Status::ok();
}

// Where to go back to: the newest checkpoint this run resumed from or wrote (checked finite when
// written), or "" when there is none.
std::string Trainer::resume_hint() const {
  if (last_checkpoint_.empty()) return "";
  return "; the last good checkpoint (finite weights) is " + last_checkpoint_ +
         ": resume from it with --set checkpoint.resume=" + last_checkpoint_ +
         " (or from an earlier one if the loss was already climbing)";
}

checkpoint::TrainState Trainer::train_state(int64_t steps_done) const {
  const data::LoaderCursor cursor = train_data_->cursor();
  return checkpoint::TrainState{steps_done, steps_done * global_batch_ * T_, tc_.seed, cursor.epoch,
                                cursor.position};
}

void Trainer::save_checkpoint(int steps_done) {
  const std::string path = checkpoint::checkpoint_path(cc_.dir, steps_done);
  parallel::Timeline::Scope scope(timeline_.get(), "checkpoint", "checkpoint");
  parallel::WatchPhase phase("a checkpoint write");
  // ZeRO-1: the file holds the global moments (any optim.zero and grid reads it); the write
  // gathers them from their owners one parameter at a time (checkpoint.h).
  core::Status st = check_state_finite(steps_done, /*with_moments=*/true);
  if (st.is_ok()) {
    st = checkpoint::write_checkpoint(path, *model_, adamw_.get(), train_state(steps_done), config_,
                                      grid_, checkpoint::transfers_from_config(config_));
  }
  if (st.is_ok() && writer_) st = checkpoint::publish_latest(cc_.dir, path, cc_.keep);
  if (!st.is_ok()) throw Error(st.message());
  last_checkpoint_ = path;
  core::log_info("checkpoint " + path);
}

}  // namespace

core::Result<TrainSummary> train(const core::Config& config, parallel::ProcessGrid& grid) {
  Trainer trainer(config, grid);
  return trainer.run();
}

}  // namespace tessera::train
