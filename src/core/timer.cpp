// The process-wide steady clock origin for timelines.
#include "core/timer.h"

namespace tessera::core {
namespace {
const auto kOrigin = std::chrono::steady_clock::now();
}
double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - kOrigin)
      .count();
}
}  // namespace tessera::core
