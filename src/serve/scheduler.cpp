// Scheduler: bounded queue, admission, cancellation, reports and metrics; see scheduler.h.
#include "serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>

#include "core/error.h"

namespace tessera::serve {
const char* finish_name(Finish finish) {
  switch (finish) {
    case Finish::kNone:
      return "none";
    case Finish::kStop:
      return "stop";
    case Finish::kLength:
      return "length";
    case Finish::kContextFull:
      return "context_full";
    case Finish::kCancelled:
      return "cancelled";
    case Finish::kError:
      return "error";
  }
  return "unknown";
}

Admission to_admission(uint64_t id, RequestSpec spec, const SchedulerOptions& options) {
  Admission a;
  a.request_id = id;
  a.prompt = std::move(spec.prompt);
  a.options.sampling = spec.sampling;
  a.options.max_tokens = spec.max_tokens;
  a.options.stop_at_eot = spec.stop_at_eot;
  a.options.logprobs = spec.logprobs;
  a.options.eot_token = options.eot_token;
  a.options.use_kv_cache = true;
  return a;
}

RequestSpec to_spec(const Admission& a) {
  RequestSpec spec;
  spec.prompt = a.prompt;
  spec.sampling = a.options.sampling;
  spec.max_tokens = a.options.max_tokens;
  spec.stop_at_eot = a.options.stop_at_eot;
  spec.logprobs = a.options.logprobs;
  return spec;
}

int64_t kv_footprint(const RequestSpec& spec, const SchedulerOptions& options) {
  const int64_t want = static_cast<int64_t>(spec.prompt.size()) + std::max(spec.max_tokens, 0);
  const int64_t positions = options.context > 0 ? std::min(want, options.context) : want;
  const int64_t block = std::max<int64_t>(options.kv_block_size, 1);
  return (positions + block - 1) / block * block;
}

int64_t kv_budget_tokens(double mb, int64_t bytes_per_token) {
  if (mb <= 0 || bytes_per_token <= 0) return 0;
  return static_cast<int64_t>(mb * 1048576.0 / static_cast<double>(bytes_per_token));
}

std::optional<RequestError> validate_request(const RequestSpec& spec,
                                             const SchedulerOptions& options) {
  const int64_t n = static_cast<int64_t>(spec.prompt.size());
  if (n == 0) return RequestError{"prompt", "the prompt is empty; give at least one token"};
  if (n >= options.context) {
    return RequestError{"prompt", "the prompt is " + std::to_string(n) +
                                      " tokens; the model's context is " +
                                      std::to_string(options.context) +
                                      " tokens and at least one must remain for the completion"};
  }
  for (size_t i = 0; i < spec.prompt.size(); ++i) {
    const int32_t t = spec.prompt[i];
    if (t < 0 || t >= options.vocab_size) {
      return RequestError{"prompt", "prompt token " + std::to_string(i) + " is id " +
                                        std::to_string(t) + ", outside the vocabulary [0, " +
                                        std::to_string(options.vocab_size) + ")"};
    }
  }
  // The option rules live in one place (generate::validate); its messages start with the
  // option's name, which is the request field's.
  generate::GenerateOptions o;
  o.sampling = spec.sampling;
  o.max_tokens = spec.max_tokens;
  if (core::Status st = generate::validate(o); !st) {
    std::string param;
    for (const char* field : {"temperature", "top_k", "top_p", "max_tokens"}) {
      if (st.message().rfind(std::string(field) + " ", 0) == 0) param = field;
    }
    return RequestError{param, st.message()};
  }
  const int64_t footprint = kv_footprint(spec, options);
  if (options.kv_budget_tokens > 0 && footprint > options.kv_budget_tokens) {
    char mb[32];
    std::snprintf(mb, sizeof mb, "%g", options.kv_cache_mb);
    const int64_t room = options.kv_budget_tokens - n;
    return RequestError{
        "max_tokens", "the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" +
                          std::to_string(spec.max_tokens) + ") needs " + std::to_string(footprint) +
                          " positions of KV cache" +
                          (options.kv_block_size > 1
                               ? " (whole blocks of " + std::to_string(options.kv_block_size) + ")"
                               : std::string()) +
                          ", over the whole KV-cache budget of " +
                          std::to_string(options.kv_budget_tokens) + " positions (kv_cache_mb " +
                          mb + " at " + std::to_string(options.kv_bytes_per_token) +
                          " bytes a position); " +
                          (room >= 1 ? "ask for at most " + std::to_string(room) + " tokens"
                                     : std::string("shorten the prompt")) +
                          ", or start the server with a larger kv_cache_mb"};
  }
  return std::nullopt;
}

Scheduler::Scheduler(const SchedulerOptions& options, Clock clock)
    : options_(options), clock_(clock ? std::move(clock) : [] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
            .count();
      }) {
  TESSERA_ASSERT(options_.max_running >= 1 && options_.max_queue >= 0,
                 "building a scheduler with at least one slot and a non-negative queue bound");
  metrics_.kv_bytes_per_token = options_.kv_bytes_per_token;
  // The Generator's pool: the budget, else every slot its whole context (in whole blocks).
  const int64_t block = std::max<int64_t>(options_.kv_block_size, 1);
  const int64_t slot_positions = (options_.context + block - 1) / block * block;
  metrics_.kv_allocated_bytes =
      (options_.kv_budget_tokens > 0 ? options_.kv_budget_tokens
                                     : options_.max_running * slot_positions) *
      options_.kv_bytes_per_token;
  metrics_.kv_capacity_tokens =
      options_.kv_budget_tokens > 0
          ? std::min(options_.kv_budget_tokens, options_.max_running * options_.context)
          : options_.max_running * options_.context;
}

SubmitResult Scheduler::submit(RequestSpec spec, EventCallback on_event, uint64_t id) {
  SubmitResult r;
  if (auto error = validate_request(spec, options_)) {
    r.rejection = Rejection::kInvalid;
    r.param = error->param;
    r.message = error->message;
    std::lock_guard<std::mutex> lock(mu_);
    ++metrics_.rejected_invalid;
    return r;
  }
  const double now = clock_();
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (draining_) {
      ++metrics_.rejected_unavailable;
      r.rejection = Rejection::kUnavailable;
      r.message = "the server is shutting down and admits no new requests";
      return r;
    }
    // A request that the next iteration admits into a free slot does not queue.
    if (queued_locked() >= options_.max_queue) {
      ++metrics_.rejected_queue_full;
      r.rejection = Rejection::kQueueFull;
      r.message = "the request queue is full (" + std::to_string(waiting_.size()) +
                  " waiting, --max-queue " + std::to_string(options_.max_queue) + "; " +
                  std::to_string(running_.size()) + " running); retry later";
      return r;
    }
    r.id = id != 0 ? id : next_id_++;
    waiting_.push_back({r.id, std::move(spec), std::move(on_event), now});
    metrics_.waiting = static_cast<int64_t>(waiting_.size());
  }
  work_cv_.notify_all();
  return r;
}

void Scheduler::cancel(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    cancels_.insert(id);
  }
  work_cv_.notify_all();
}

void Scheduler::stop(uint64_t id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stops_.insert(id);
  }
  work_cv_.notify_all();
}

void Scheduler::drain() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    draining_ = true;
  }
  work_cv_.notify_all();
}

bool Scheduler::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

void Scheduler::count_invalid() {
  std::lock_guard<std::mutex> lock(mu_);
  ++metrics_.rejected_invalid;
}

bool Scheduler::has_work_locked() const {
  return !waiting_.empty() || !running_.empty() || !cancels_.empty() || !stops_.empty();
}

bool Scheduler::wait_for_work(double seconds) {
  std::unique_lock<std::mutex> lock(mu_);
  return work_cv_.wait_for(lock, std::chrono::duration<double>(seconds),
                           [this] { return has_work_locked() || draining_; });
}

bool Scheduler::idle() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !has_work_locked();
}

Metrics Scheduler::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_;
}

Scheduler::Load Scheduler::load() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {static_cast<int64_t>(running_.size()), static_cast<int64_t>(waiting_.size()),
          queued_locked()};
}

int64_t Scheduler::queued_locked() const {
  const int64_t free_slots =
      std::max<int64_t>(0, options_.max_running - static_cast<int64_t>(running_.size()));
  return std::max<int64_t>(0, static_cast<int64_t>(waiting_.size()) - free_slots);
}

int64_t Scheduler::running() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(running_.size());
}

void Scheduler::finish_locked(uint64_t id, Finish finish, const std::string& error, int32_t token,
                              std::vector<Delivery>& out) {
  auto it = running_.find(id);
  if (it == running_.end()) return;
  Running& r = it->second;
  const double now = clock_();
  if (!r.reported) metrics_.time_to_first_token.observe(now - r.arrival);
  switch (finish) {
    case Finish::kStop:
      ++metrics_.finished_stop;
      break;
    case Finish::kLength:
    case Finish::kContextFull:
      ++metrics_.finished_length;
      break;
    case Finish::kCancelled:
      ++metrics_.finished_cancelled;
      break;
    default:
      ++metrics_.finished_error;
      break;
  }
  if (finish != Finish::kCancelled && finish != Finish::kError) {
    metrics_.e2e_latency.observe(now - r.arrival);
  }
  RequestEvent e;
  e.request_id = id;
  e.token = token;
  e.finish = finish;
  e.usage = r.usage;
  e.error = error;
  out.emplace_back(std::move(r.on_event), std::move(e));
  kv_used_tokens_ -= r.kv_tokens;
  running_.erase(it);
  metrics_.running = static_cast<int64_t>(running_.size());
  metrics_.kv_used_tokens = kv_used_tokens_;
}

IterationChanges Scheduler::plan() {
  IterationChanges changes;
  std::vector<Delivery> deliveries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (uint64_t id : cancels_) {
      bool queued = false;
      for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
        if (it->id != id) continue;
        RequestEvent e;
        e.request_id = id;
        e.finish = Finish::kCancelled;
        e.usage.prompt_tokens = static_cast<int64_t>(it->spec.prompt.size());
        deliveries.emplace_back(std::move(it->on_event), std::move(e));
        ++metrics_.finished_cancelled;
        waiting_.erase(it);
        queued = true;
        break;
      }
      if (!queued && running_.count(id)) {
        changes.cancel.push_back(id);
        finish_locked(id, Finish::kCancelled, "", -1, deliveries);
      }
    }
    cancels_.clear();
    for (uint64_t id : stops_) {
      if (!running_.count(id)) continue;
      changes.cancel.push_back(id);
      finish_locked(id, Finish::kStop, "", -1, deliveries);
    }
    stops_.clear();
    while (static_cast<int64_t>(running_.size()) < options_.max_running && !waiting_.empty()) {
      // Invariant: kv_used_tokens_ <= kv_budget_tokens whenever there is a budget.
      const int64_t footprint = kv_footprint(waiting_.front().spec, options_);
      if (options_.kv_budget_tokens > 0 &&
          kv_used_tokens_ + footprint > options_.kv_budget_tokens) {
        break;  // first come, first served: the head waits for running requests to finish
      }
      Waiting w = std::move(waiting_.front());
      waiting_.pop_front();
      Admission a = to_admission(w.id, std::move(w.spec), options_);
      Running r;
      r.on_event = std::move(w.on_event);
      r.arrival = w.arrival;
      r.usage.prompt_tokens = static_cast<int64_t>(a.prompt.size());
      r.kv_tokens = footprint;
      kv_used_tokens_ += footprint;
      metrics_.prompt_tokens += static_cast<uint64_t>(a.prompt.size());
      running_.emplace(w.id, std::move(r));
      changes.admit.push_back(std::move(a));
    }
    metrics_.waiting = static_cast<int64_t>(waiting_.size());
    metrics_.running = static_cast<int64_t>(running_.size());
    metrics_.kv_used_tokens = kv_used_tokens_;
  }
  for (auto& [callback, event] : deliveries) {
    if (callback) callback(event);
  }
  return changes;
}

void Scheduler::on_prefix_reuse(int64_t total_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  metrics_.prefix_cache_hit_tokens = static_cast<uint64_t>(total_tokens);
}

void Scheduler::on_admission_failures(const std::vector<AdmissionFailure>& failures) {
  std::vector<Delivery> deliveries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const AdmissionFailure& f : failures) {
      finish_locked(f.request_id, Finish::kError, f.message, -1, deliveries);
    }
  }
  for (auto& [callback, event] : deliveries) {
    if (callback) callback(event);
  }
}

void Scheduler::on_events(const std::vector<SequenceEvent>& events) {
  std::vector<Delivery> deliveries;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const double now = clock_();
    for (const SequenceEvent& s : events) {
      auto it = running_.find(s.request_id);
      if (it == running_.end()) continue;  // cancelled this iteration: its report is sent
      Running& r = it->second;
      r.usage.cached_tokens = s.cached_tokens;
      if (s.token >= 0) {
        ++r.usage.completion_tokens;
        ++metrics_.generation_tokens;
      }
      if (s.finished == generate::FinishReason::kNone) {
        if (!r.reported) metrics_.time_to_first_token.observe(now - r.arrival);
        r.reported = true;
        RequestEvent e;
        e.request_id = s.request_id;
        e.token = s.token;
        e.has_logprobs = s.has_logprobs;
        e.logprobs = s.logprobs;
        e.usage.cached_tokens = r.usage.cached_tokens;
        deliveries.emplace_back(r.on_event, std::move(e));
        continue;
      }
      const Finish finish = s.finished == generate::FinishReason::kEndOfText ? Finish::kStop
                            : s.finished == generate::FinishReason::kLength  ? Finish::kLength
                                                                             : Finish::kContextFull;
      finish_locked(s.request_id, finish, "", s.token, deliveries);
      // finish_locked queued this request's final report last: it carries the token's logprobs.
      deliveries.back().second.has_logprobs = s.has_logprobs;
      deliveries.back().second.logprobs = s.logprobs;
    }
  }
  for (auto& [callback, event] : deliveries) {
    if (callback) callback(event);
  }
}

bool Scheduler::run_iteration(Engine& engine) {
  IterationChanges changes = plan();
  if (changes.empty() && running() == 0) return false;
  on_admission_failures(engine.apply(changes));
  on_prefix_reuse(engine.prefix_tokens_reused());
  on_events(engine.step());
  return true;
}

}  // namespace tessera::serve
