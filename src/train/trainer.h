// The training loop of tessera-train: data, model, AdamW with schedule and clipping, progress
// lines, validation, JSONL metrics and the final weights. One rank until the grid issue.
#pragma once

#include <string>

#include "core/config.h"
#include "core/status.h"

namespace tessera::train {

struct TrainSummary {
  double final_train_loss = 0;
  double final_val_loss = -1;      // -1: no validation data
  double unigram_entropy = 0;      // nats/token of the training tokens: a frequency-only model's loss
  double tokens_per_s = 0;
  std::string weights_path;
};

// Runs config.train.steps steps. Bad input (data files, sizes) is returned as a Status.
core::Result<TrainSummary> train(const core::Config& config);

}  // namespace tessera::train
