// Learning-rate schedules: linear warmup then cosine decay to a floor (as in GPT-3 and llm.c's
// train_gpt2), or constant.
#pragma once

namespace tessera::core {
struct OptimConfig;
}  // namespace tessera::core

namespace tessera::optim {

// The learning rate for 0-based `step` of a run of `total_steps` steps.
// "cosine":   step < warmup_steps: lr · (step + 1) / warmup_steps (never 0 on the first step);
//             then min_lr + 0.5 · (1 + cos(pi · r)) · (lr - min_lr) with
//             r = (step - warmup_steps) / (total_steps - warmup_steps), clamped to [0, 1], so it
//             starts at lr and reaches min_lr at step = total_steps.
// "constant": lr at every step (no warmup).
// Precondition: optim.schedule is one of those (Config::validate checks it); other names throw
// tessera::Error.
double learning_rate(const core::OptimConfig& optim, int step, int total_steps);

}  // namespace tessera::optim
