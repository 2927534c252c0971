// Logging with the rank prefix `[rank r (dp d, tp t)]`. The identity is set once after the
// process grid is built (before that: world rank only); rank 0 prints progress, all ranks errors.
#pragma once

#include <string>

namespace tessera::core {

void set_log_identity(int world_rank, int dp_rank, int tp_rank);
int log_world_rank();
// "[rank 3 (dp 1, tp 1)]", or "[rank 3]" before the grid exists.
std::string rank_prefix();

// Rank 0 only, to stdout, flushed.
void log_info(const std::string& message);
// Every rank, to stderr, with the rank prefix.
void log_error(const std::string& message);
void log_warn(const std::string& message);

}  // namespace tessera::core
