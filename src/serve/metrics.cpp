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

}  // namespace

std::string render_prometheus(const Metrics& m) {
  std::string out;
  header(out, "tessera_requests_running", "gauge", "Requests in the decode batch.");
  sample(out, "tessera_requests_running", "", static_cast<double>(m.running));
  header(out, "tessera_requests_waiting", "gauge", "Requests queued for a decode slot.");
  sample(out, "tessera_requests_waiting", "", static_cast<double>(m.waiting));
  header(out, "tessera_prompt_tokens_total", "counter", "Prompt tokens of admitted requests.");
  sample(out, "tessera_prompt_tokens_total", "", static_cast<double>(m.prompt_tokens));
  header(out, "tessera_generation_tokens_total", "counter", "Tokens generated.");
  sample(out, "tessera_generation_tokens_total", "", static_cast<double>(m.generation_tokens));
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
  return out;
}

}  // namespace tessera::serve
