// Rank-prefixed logging; the identity is process-wide (it names the process, not the grid).
#include "core/log.h"

#include <cstdio>

namespace tessera::core {
namespace {
int g_world_rank = 0;
int g_dp_rank = -1;
int g_tp_rank = -1;
}  // namespace

void set_log_identity(int world_rank, int dp_rank, int tp_rank) {
  g_world_rank = world_rank;
  g_dp_rank = dp_rank;
  g_tp_rank = tp_rank;
}

int log_world_rank() { return g_world_rank; }

std::string rank_prefix() {
  std::string s = "[rank " + std::to_string(g_world_rank);
  if (g_dp_rank >= 0) {
    s += " (dp " + std::to_string(g_dp_rank) + ", tp " + std::to_string(g_tp_rank) + ")";
  }
  return s + "]";
}

void log_info(const std::string& message) {
  if (g_world_rank != 0) return;
  std::fprintf(stdout, "%s\n", message.c_str());
  std::fflush(stdout);
}

void log_error(const std::string& message) {
  std::fprintf(stderr, "%s %s\n", rank_prefix().c_str(), message.c_str());
  std::fflush(stderr);
}

void log_warn(const std::string& message) {
  if (g_world_rank != 0) return;
  std::fprintf(stderr, "warning: %s\n", message.c_str());
  std::fflush(stderr);
}

}  // namespace tessera::core
