// Serving metrics: counters, gauges and latency histograms, rendered in Prometheus's text
// exposition format (version 0.0.4) for GET /metrics. Plain values: the Scheduler updates them
// under its lock and hands out copies; a dp replica sends its copy to world rank 0 as bytes
// (trivially copyable, every rank runs the same binary), where the Router sums them.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace tessera::serve {

// A cumulative histogram over fixed bucket bounds (seconds), as Prometheus keeps one: bucket i
// counts observations <= kBounds[i]; count and sum cover all of them (+Inf bucket = count).
class Histogram {
 public:
  static constexpr std::array<double, 14> kBounds = {0.005, 0.01, 0.025, 0.05, 0.1,  0.25, 0.5,
                                                     1.0,   2.5,  5.0,   10.0, 30.0, 60.0, 120.0};
  void observe(double seconds);
  // Adds `other`'s observations (the histogram of both sets).
  void merge(const Histogram& other);
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
  int64_t running = 0;                   // requests in the decode batch
  int64_t waiting = 0;                   // requests queued for a slot
  uint64_t prompt_tokens = 0;            // prompt tokens of admitted requests
  uint64_t generation_tokens = 0;        // tokens emitted
  uint64_t prefix_cache_hit_tokens = 0;  // prompt tokens a freed slot already held (not prefilled)
  // Finished requests by reason.
  uint64_t finished_stop = 0, finished_length = 0, finished_cancelled = 0, finished_error = 0;
  // Requests turned away before queueing, by reason.
  uint64_t rejected_queue_full = 0, rejected_unavailable = 0, rejected_invalid = 0;
  Histogram time_to_first_token;  // arrival -> first token (or first finish without a token)
  Histogram e2e_latency;          // arrival -> finish, for requests that finished
  // KV cache, per rank of the replica: positions reserved by running requests; the positions
  // admission may reserve (the kv_cache_mb budget, or max_sequences x context without one);
  // bytes a position; bytes allocated (the paged pool: the budget, or max_sequences contexts).
  int64_t kv_used_tokens = 0, kv_capacity_tokens = 0, kv_bytes_per_token = 0;
  int64_t kv_allocated_bytes = 0;

  // Adds `other` into this: counters, gauges and histograms sum (the totals over replicas).
  void merge(const Metrics& other);
};

// `total` as Prometheus text: # HELP / # TYPE lines, then samples, every name tessera_*. With
// `replicas` (one Metrics per dp replica, in replica order), also per-replica series labelled
// replica="<d>": tessera_replica_requests_{running,waiting}, tessera_replica_requests_routed_total
// (routed[d]) and tessera_replica_kv_cache_usage_ratio.
std::string render_prometheus(const Metrics& total, const std::vector<Metrics>& replicas = {},
                              const std::vector<uint64_t>& routed = {});

}  // namespace tessera::serve
