// Warmup + cosine learning-rate schedule (Loshchilov & Hutter, "SGDR", 2017, without restarts).
#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "core/config.h"
#include "core/error.h"

namespace tessera::optim {

double learning_rate(const core::OptimConfig& optim, int step, int total_steps) {
  if (optim.schedule == "constant") return optim.lr;
  TESSERA_ASSERT(optim.schedule == "cosine",
                 "optim.schedule must be cosine or constant (Config::validate should have said)");
  if (step < optim.warmup_steps) {
    return optim.lr * static_cast<double>(step + 1) / static_cast<double>(optim.warmup_steps);
  }
  const int decay_steps = total_steps - optim.warmup_steps;
  if (decay_steps <= 0) return optim.min_lr;  // warmup covers the whole run: past it, the floor
  const double ratio = std::clamp(
      static_cast<double>(step - optim.warmup_steps) / static_cast<double>(decay_steps), 0.0, 1.0);
  const double coeff = 0.5 * (1.0 + std::cos(std::numbers::pi * ratio));
  return optim.min_lr + coeff * (optim.lr - optim.min_lr);
}

}  // namespace tessera::optim
