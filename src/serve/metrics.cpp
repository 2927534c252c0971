// Serving metrics and their Prometheus text; see metrics.h.
#include "serve/metrics.h"

#include <cstdio>
#include <cstdlib>

namespace tessera::serve {

void Histogram::observe(double seconds) {
  for (size_t i = 0; i < kBounds.size(); ++i) {
    if (seconds <= kBounds[i]) {
      ++buckets_[i];
      break;
    }
  }
  ++count_;
  sum_ += seconds;
}

void Histogram::merge(const Histogram& other) {
  for (size_t i = 0; i < buckets_.size(); ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
}

void Metrics::merge(const Metrics& o) {
  running += o.running;
  waiting += o.waiting;
  prompt_tokens += o.prompt_tokens;
  generation_tokens += o.generation_tokens;
  prefix_cache_hit_tokens += o.prefix_cache_hit_tokens;
  finished_stop += o.finished_stop;
  finished_length += o.finished_length;
  finished_cancelled += o.finished_cancelled;
  finished_error += o.finished_error;
  rejected_queue_full += o.rejected_queue_full;
  rejected_unavailable += o.rejected_unavailable;
  rejected_invalid += o.rejected_invalid;
  time_to_first_token.merge(o.time_to_first_token);
  e2e_latency.merge(o.e2e_latency);
  kv_used_tokens += o.kv_used_tokens;
  kv_capacity_tokens += o.kv_capacity_tokens;
  kv_allocated_bytes += o.kv_allocated_bytes;
  if (kv_bytes_per_token == 0) kv_bytes_per_token = o.kv_bytes_per_token;
}

uint64_t Histogram::cumulative(size_t i) const {
  uint64_t n = 0;
  for (size_t k = 0; k <= i && k < buckets_.size(); ++k) n += buckets_[k];
  return n;
}

namespace {

// Shortest form that reads back to the same double ("0.005", "12", "3.2500000000000001e-05").
std::string number(double v) {
  char buf[64];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += "# HELP ";
  out += name;
  out += ' ';
  out += help;
  out += "\n# TYPE ";
  out += name;
  out += ' ';
  out += type;
  out += '\n';
}

void sample(std::string& out, const std::string& name, const std::string& labels, double value) {
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  out += ' ' + number(value) + '\n';
}

void histogram(std::string& out, const char* name, const char* help, const Histogram& h) {
  header(out, name, "histogram", help);
  const std::string base = name;
  for (size_t i = 0; i < Histogram::kBounds.size(); ++i) {
    sample(out, base + "_bucket", "le=\"" + number(Histogram::kBounds[i]) + "\"",
           static_cast<double>(h.cumulative(i)));
  }
  sample(out, base + "_bucket", "le=\"+Inf\"", static_cast<double>(h.count()));
  sample(out, base + "_sum", "", h.sum());
  sample(out, base + "_count", "", static_cast<double>(h.count()));
}

double usage_ratio(const Metrics& m) {
  return m.kv_capacity_tokens > 0
             ? static_cast<double>(m.kv_used_tokens) / static_cast<double>(m.kv_capacity_tokens)
             : 0.0;
}

}  // namespace

std::string render_prometheus(const Metrics& m, const std::vector<Metrics>& replicas,
                              const std::vector<uint64_t>& routed) {
  std::string out;
  header(out, "tessera_requests_running", "gauge", "Requests in the decode batch.");
  sample(out, "tessera_requests_running", "", static_cast<double>(m.running));
  header(out, "tessera_requests_waiting", "gauge", "Requests queued for a decode slot.");
  sample(out, "tessera_requests_waiting", "", static_cast<double>(m.waiting));
  header(out, "tessera_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.");
  sample(out, "tessera_prompt_tokens_total", "", static_cast<double>(m.prompt_tokens));
  header(out, "tessera_generation_tokens_total", "counter", "Tokens generated.");
  sample(out, "tessera_generation_tokens_total", "", static_cast<double>(m.generation_tokens));
  header(out, "tessera_prefix_cache_hit_tokens_total", "counter",
         "Prompt tokens whose keys and values a freed slot already held, so they were not "
         "prefilled again (prefix reuse).");
  sample(out, "tessera_prefix_cache_hit_tokens_total", "",
         static_cast<double>(m.prefix_cache_hit_tokens));
  header(out, "tessera_requests_finished_total", "counter",
         "Requests finished, by reason (stop: end-of-text; length: max_tokens or the context).");
  sample(out, "tessera_requests_finished_total", "reason=\"stop\"",
         static_cast<double>(m.finished_stop));
  sample(out, "tessera_requests_finished_total", "reason=\"length\"",
         static_cast<double>(m.finished_length));
  sample(out, "tessera_requests_finished_total", "reason=\"cancelled\"",
         static_cast<double>(m.finished_cancelled));
  sample(out, "tessera_requests_finished_total", "reason=\"error\"",
         static_cast<double>(m.finished_error));
  header(out, "tessera_requests_rejected_total", "counter",
         "Requests turned away before queueing, by reason.");
  sample(out, "tessera_requests_rejected_total", "reason=\"queue_full\"",
         static_cast<double>(m.rejected_queue_full));
  sample(out, "tessera_requests_rejected_total", "reason=\"unavailable\"",
         static_cast<double>(m.rejected_unavailable));
  sample(out, "tessera_requests_rejected_total", "reason=\"invalid\"",
         static_cast<double>(m.rejected_invalid));
  histogram(out, "tessera_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first token.", m.time_to_first_token);
  histogram(out, "tessera_e2e_request_latency_seconds",
            "Seconds from a request's arrival to its last token.", m.e2e_latency);
  header(out, "tessera_kv_cache_used_bytes", "gauge",
         "KV-cache bytes reserved by running requests (prompt + max_tokens each, in whole "
         "blocks), per rank, summed over replicas.");
  sample(out, "tessera_kv_cache_used_bytes", "",
         static_cast<double>(m.kv_used_tokens * m.kv_bytes_per_token));
  header(out, "tessera_kv_cache_budget_bytes", "gauge",
         "KV-cache bytes admission may reserve (kv_cache_mb, or every slot's full context), per "
         "rank, summed over replicas.");
  sample(out, "tessera_kv_cache_budget_bytes", "",
         static_cast<double>(m.kv_capacity_tokens * m.kv_bytes_per_token));
  header(out, "tessera_kv_cache_allocated_bytes", "gauge",
         "KV-cache bytes allocated (the paged pool: kv_cache_mb, or max_sequences full contexts "
         "without it), per rank, summed over replicas.");
  sample(out, "tessera_kv_cache_allocated_bytes", "", static_cast<double>(m.kv_allocated_bytes));
  header(out, "tessera_kv_cache_usage_ratio", "gauge",
         "Fraction of the KV-cache budget reserved by running requests.");
  sample(out, "tessera_kv_cache_usage_ratio", "", usage_ratio(m));
  if (replicas.empty()) return out;
  const auto per_replica = [&](const char* name, const char* type, const char* help,
                               const auto& value) {
    header(out, name, type, help);
    for (size_t d = 0; d < replicas.size(); ++d) {
      sample(out, name, "replica=\"" + std::to_string(d) + "\"", value(d));
    }
  };
  per_replica("tessera_replica_requests_running", "gauge",
              "Requests in a dp replica's decode batch.",
              [&](size_t d) { return static_cast<double>(replicas[d].running); });
  per_replica("tessera_replica_requests_waiting", "gauge",
              "Requests queued in a dp replica for a decode slot.",
              [&](size_t d) { return static_cast<double>(replicas[d].waiting); });
  per_replica("tessera_replica_requests_routed_total", "counter",
              "Requests the router sent to a dp replica.",
              [&](size_t d) { return d < routed.size() ? static_cast<double>(routed[d]) : 0.0; });
  per_replica("tessera_replica_kv_cache_usage_ratio", "gauge",
              "Fraction of a dp replica's KV-cache budget reserved by running requests.",
              [&](size_t d) { return usage_ratio(replicas[d]); });
  return out;
}

}  // namespace tessera::serve
