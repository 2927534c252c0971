// Scheduler: bounded queue, admission, cancellation, reports and metrics; see scheduler.h.
#include "serve/scheduler.h"

#include <chrono>
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
  return std::nullopt;
}

Scheduler::Scheduler(const SchedulerOptions& options, Clock clock)
    : options_(options), clock_(clock ? std::move(clock) : [] {
        return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
            .count();
      }) {
  TESSERA_ASSERT(options_.max_running >= 1 && options_.max_queue >= 0,
                 "building a scheduler with at least one slot and a non-negative queue bound");
}

SubmitResult Scheduler::submit(RequestSpec spec, EventCallback on_event) {
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
    if (static_cast<int64_t>(waiting_.size()) >= options_.max_queue) {
      ++metrics_.rejected_queue_full;
      r.rejection = Rejection::kQueueFull;
      r.message = "the request queue is full (" + std::to_string(waiting_.size()) +
                  " waiting, --max-queue " + std::to_string(options_.max_queue) + "; " +
                  std::to_string(running_.size()) + " running); retry later";
      return r;
    }
    r.id = next_id_++;
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
  running_.erase(it);
  metrics_.running = static_cast<int64_t>(running_.size());
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
      Waiting w = std::move(waiting_.front());
      waiting_.pop_front();
      Admission a;
      a.request_id = w.id;
      a.prompt = std::move(w.spec.prompt);
      a.options.sampling = w.spec.sampling;
      a.options.max_tokens = w.spec.max_tokens;
      a.options.stop_at_eot = w.spec.stop_at_eot;
      a.options.logprobs = w.spec.logprobs;
      a.options.eot_token = options_.eot_token;
      a.options.use_kv_cache = true;
      Running r;
      r.on_event = std::move(w.on_event);
      r.arrival = w.arrival;
      r.usage.prompt_tokens = static_cast<int64_t>(a.prompt.size());
      metrics_.prompt_tokens += static_cast<uint64_t>(a.prompt.size());
      running_.emplace(w.id, std::move(r));
      changes.admit.push_back(std::move(a));
    }
    metrics_.waiting = static_cast<int64_t>(waiting_.size());
    metrics_.running = static_cast<int64_t>(running_.size());
  }
  for (auto& [callback, event] : deliveries) {
    if (callback) callback(event);
  }
  return changes;
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
  on_events(engine.step());
  return true;
}

}  // namespace tessera::serve
