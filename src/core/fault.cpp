// TESSERA_INJECT_FAULT parsing; see fault.h.
#include "core/fault.h"

#include <cstdlib>
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

}  // namespace tessera::core
