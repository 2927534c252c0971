// The training loop of tessera-train: data, model, AdamW with schedule and clipping, progress
// lines, validation, JSONL metrics and the final weights, on a dp x tp process grid: each dp rank
// takes its slice of every global batch, the GradientReducer averages gradients over dp while
// backward runs, the model's shards talk over tp.
#pragma once

#include <string>
#include <vector>

#include "core/config.h"
#include "core/status.h"

namespace tessera::parallel {
class ProcessGrid;
}

namespace tessera::train {

struct TrainSummary {
  double final_train_loss = 0;
  double final_val_loss = -1;  // -1: no validation data
  double unigram_entropy = 0;  // nats/token of the training tokens: a frequency-only model's loss
  double tokens_per_s = 0;
  std::string weights_path;
  std::vector<double> losses;      // the global mean training loss of every step run here
                                   // (not finite for a step skipped by train.skip_nonfinite)
  int64_t first_step = 0;          // steps done before this run (a resumed run starts there)
  bool stopped_by_signal = false;  // SIGTERM/SIGUSR1: checkpoint written, stopped early
};

// Runs config.train.steps steps on the backend train.device names (cpu; or cuda: fp32, one GPU
// per rank from its local rank, NCCL for tp and dp, never yet run on a GPU: docs/CUDA.md); a
// collective over the grid's world. The weights come from
// config.checkpoint.resume when it finds a checkpoint (with AdamW state, step and data position),
// else from train.init_from (weights only: step 0, fresh AdamW, data from the start), else fresh.
// Checkpoints go to config.checkpoint.dir every checkpoint.every steps, at the end, and when
// SIGTERM or SIGUSR1 arrives, after which it stops cleanly. A step whose loss or grad norm is NaN
// or inf on any rank applies no update: it is skipped (a warning; no metrics record) while
// train.skip_nonfinite allows, else the run ends with an error naming the step, the values and
// the last good checkpoint, before anything of that step is written. Weights and AdamW moments
// are checked finite before every checkpoint and the final weights (an error if not).
// Preconditions: parallel::check_grid(config, world size) passed and `grid` was built with
// config.parallel.tp. Bad input (device, data files, sizes, checkpoint and init_from files) is
// returned as a Status, the same on every rank, as is a non-finite step; a failure only some
// ranks see is thrown so the app aborts every rank.
core::Result<TrainSummary> train(const core::Config& config, parallel::ProcessGrid& grid);

}  // namespace tessera::train
