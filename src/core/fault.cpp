// TESSERA_INJECT_FAULT parsing; see fault.h.
#include "core/fault.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "core/log.h"

namespace tessera::core {

bool fault_requested(const char* site) {
  static const char* spec = std::getenv("TESSERA_INJECT_FAULT");
  if (spec == nullptr) return false;
  const std::string s = spec;
  const size_t at = s.find('@');
  if (at == std::string::npos || s.substr(0, at) != site) return false;
  return std::atoi(s.c_str() + at + 1) == log_world_rank();
}

void kill_point(const std::string& point) {
  const char* spec = std::getenv("TESSERA_CKPT_KILL");
  if (spec == nullptr || *spec == '\0') return;
  const std::string s = spec;
  const size_t colon = s.find(':');
  if (colon == std::string::npos || s.substr(0, colon) != point) return;
  const int n = std::atoi(s.c_str() + colon + 1);
  const size_t rank_colon = s.find(':', colon + 1);
  if (rank_colon != std::string::npos &&
      std::atoi(s.c_str() + rank_colon + 1) != log_world_rank()) {
    return;
  }
  static std::map<std::string, int> reached;  // per point; the apps are single-threaded here
  if (++reached[point] != n) return;
  std::fprintf(stderr, "[rank %d] injected SIGKILL at %s (TESSERA_CKPT_KILL=%s)\n",
               log_world_rank(), point.c_str(), spec);
  std::fflush(stderr);
  std::raise(SIGKILL);
}

}  // namespace tessera::core
