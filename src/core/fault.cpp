// TESSERA_INJECT_FAULT parsing; see fault.h.
#include "core/fault.h"

#include <unistd.h>

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

namespace {

// True when `spec` ("<point>:<n>[:<world rank>]") names `point`, this rank (or any), and `n` is
// the count `reached` says this is.
bool point_matches(const char* spec, const std::string& point, int reached) {
  if (spec == nullptr || *spec == '\0') return false;
  const std::string s = spec;
  const size_t colon = s.find(':');
  if (colon == std::string::npos || s.substr(0, colon) != point) return false;
  const int n = std::atoi(s.c_str() + colon + 1);
  const size_t rank_colon = s.find(':', colon + 1);
  if (rank_colon != std::string::npos &&
      std::atoi(s.c_str() + rank_colon + 1) != log_world_rank()) {
    return false;
  }
  return reached == n;
}

}  // namespace

void kill_point(const std::string& point) {
  const char* kill_spec = std::getenv("TESSERA_CKPT_KILL");
  const char* stop_spec = std::getenv("TESSERA_CKPT_STOP");
  if ((kill_spec == nullptr || *kill_spec == '\0') &&
      (stop_spec == nullptr || *stop_spec == '\0')) {
    return;
  }
  static std::map<std::string, int> reached;  // per point; the apps are single-threaded here
  const int count = ++reached[point];
  const bool kill = point_matches(kill_spec, point, count);
  if (!kill && !point_matches(stop_spec, point, count)) return;
  if (!kill) {
    stop_self("at " + point + " (TESSERA_CKPT_STOP=" + stop_spec + ")");
    return;
  }
  std::fprintf(stderr, "[rank %d] injected SIGKILL at %s (TESSERA_CKPT_KILL=%s)\n",
               log_world_rank(), point.c_str(), kill_spec);
  std::fflush(stderr);
  std::raise(SIGKILL);
}

void stop_self(const std::string& why) {
  std::fprintf(stderr, "[rank %d] injected SIGSTOP %s; pid %d\n", log_world_rank(), why.c_str(),
               static_cast<int>(getpid()));
  std::fflush(stderr);
  std::raise(SIGSTOP);
}

}  // namespace tessera::core
