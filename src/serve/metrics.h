// Serving metrics: counters, gauges and latency histograms, rendered in Prometheus's text
// exposition format (version 0.0.4) for GET /metrics. Plain values: the Scheduler updates them
// under its lock and hands out copies.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace tessera::serve {

// A cumulative histogram over fixed bucket bounds (seconds), as Prometheus keeps one: bucket i
// counts observations <= kBounds[i]; count and sum cover all of them (+Inf bucket = count).
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1,  0.25, 0.5,
                                                     1.0,   2.5,  5.0,   10.0, 30.0, 60.0, 120.0};
  void observe(double seconds);
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  // Observations <= kBounds[i] (cumulative).
  uint64_t cumulative(size_t i) const;

 private:
  std::array<uint64_t, kBounds.size()> buckets_{};  // per bucket, not cumulative
  uint64_t count_ = 0;
  double sum_ = 0;
};

struct Metrics {
  int64_t running = 0;             // requests in the decode batch
  int64_t waiting = 0;             // requests queued for a slot
  uint64_t prompt_tokens = 0;      // prompt tokens of admitted requests
  uint64_t generation_tokens = 0;  // tokens emitted
  // Finished requests by reason.
  uint64_t finished_stop = 0, finished_length = 0, finished_cancelled = 0, finished_error = 0;
  // Requests turned away before queueing, by reason.
  uint64_t rejected_queue_full = 0, rejected_unavailable = 0, rejected_invalid = 0;
  Histogram time_to_first_token;  // arrival -> first token (or first finish without a token)
  Histogram e2e_latency;          // arrival -> finish, for requests that finished
};

// `metrics` as Prometheus text: # HELP / # TYPE lines, then samples, every name tessera_*.
std::string render_prometheus(const Metrics& metrics);

}  // namespace tessera::serve
