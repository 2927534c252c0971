// Wall-clock timing for progress lines and benchmarks (never used to pass or fail a test).
#pragma once

#include <chrono>

namespace tessera::core {

class Timer {
 public:
  Timer() : start_(std::chrono::steady_clock::now()) {}
  void reset() { start_ = std::chrono::steady_clock::now(); }
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// Microseconds since process start on one steady clock (timeline timestamps).
double now_us();

}  // namespace tessera::core
