// Router (world rank 0) and ReplicaAgent (a remote replica's leader); see router.h.
#include "serve/router.h"

#include <algorithm>

#include "core/error.h"

namespace tessera::serve {

Router::Router(Scheduler& local, int dp_size)
    : local_(local),
      dp_size_(dp_size),
      outstanding_(dp_size, 0),
      routed_(dp_size, 0),
      remote_metrics_(dp_size),
      outbox_(dp_size),
      bye_(dp_size, false),
      fin_due_(dp_size, false) {
  TESSERA_ASSERT(dp_size >= 1, "routing over at least one replica");
}

SubmitResult Router::submit(RequestSpec spec, EventCallback on_event) {
  SubmitResult r;
  const SchedulerOptions& o = local_.options();
  if (auto error = validate_request(spec, o)) {
    r.rejection = Rejection::kInvalid;
    r.param = error->param;
    r.message = error->message;
    std::lock_guard<std::mutex> lock(mu_);
    ++refused_.rejected_invalid;
    return r;
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) {
    ++refused_.rejected_unavailable;
    r.rejection = Rejection::kUnavailable;
    r.message = "the server is shutting down and admits no new requests";
    return r;
  }
  int best = -1;
  int64_t best_load = 0;
  Scheduler::Load local_load;
  for (int d = 0; d < dp_size_; ++d) {
    // `queued`: waiting requests beyond the replica's free slots, what max_queue bounds.
    int64_t load = 0, queued = 0;
    if (d == 0) {
      local_load = local_.load();
      load = local_load.running + local_load.waiting;
      queued = local_load.queued;
    } else {
      if (bye_[d]) continue;
      load = outstanding_[d];
      const int64_t running = remote_metrics_[d].running;
      const int64_t free_slots = std::max<int64_t>(0, o.max_running - running);
      queued = std::max<int64_t>(0, outstanding_[d] - running - free_slots);
    }
    if (queued >= o.max_queue) continue;
    if (best < 0 || load < best_load) {
      best = d;
      best_load = load;
    }
  }
  if (best < 0) {
    ++refused_.rejected_queue_full;
    r.rejection = Rejection::kQueueFull;
    r.message = dp_size_ == 1
                    ? "the request queue is full (" + std::to_string(local_load.waiting) +
                          " waiting, --max-queue " + std::to_string(o.max_queue) + "; " +
                          std::to_string(local_load.running) + " running); retry later"
                    : "the request queues of all " + std::to_string(dp_size_) +
                          " replicas are full (--max-queue " + std::to_string(o.max_queue) +
                          " each); retry later";
    return r;
  }
  const uint64_t id = next_id_++;
  if (best == 0) {
    SubmitResult local =
        local_.submit(std::move(spec), [this](const RequestEvent& e) { deliver(e); }, id);
    if (!local.ok()) return local;  // counted by the scheduler
  } else {
    outbox_[best].submit.push_back(to_admission(id, std::move(spec), o));
    ++outstanding_[best];
  }
  routes_[id] = Route{best, std::move(on_event)};
  ++routed_[best];
  r.id = id;
  r.replica = best;
  return r;
}

void Router::cancel(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = routes_.find(id);
  if (it == routes_.end()) return;  // finished already
  if (it->second.replica == 0) {
    local_.cancel(id);
  } else {
    outbox_[it->second.replica].cancel.push_back(id);
  }
}

void Router::stop(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = routes_.find(id);
  if (it == routes_.end()) return;
  if (it->second.replica == 0) {
    local_.stop(id);
  } else {
    outbox_[it->second.replica].stop.push_back(id);
  }
}

void Router::drain() {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return;
  draining_ = true;
  local_.drain();
  for (int d = 1; d < dp_size_; ++d) outbox_[d].drain = true;
}

bool Router::draining() const {
  std::lock_guard<std::mutex> lock(mu_);
  return draining_;
}

void Router::count_invalid() {
  std::lock_guard<std::mutex> lock(mu_);
  ++refused_.rejected_invalid;
}

std::vector<Metrics> Router::replica_metrics() const {
  std::vector<Metrics> out;
  out.push_back(local_.metrics());
  std::lock_guard<std::mutex> lock(mu_);
  for (int d = 1; d < dp_size_; ++d) out.push_back(remote_metrics_[d]);
  return out;
}

Metrics Router::metrics() const {
  Metrics total;
  for (const Metrics& m : replica_metrics()) total.merge(m);
  std::lock_guard<std::mutex> lock(mu_);
  total.merge(refused_);
  return total;
}

std::string Router::render_metrics() const {
  const std::vector<Metrics> replicas = replica_metrics();
  Metrics total;
  for (const Metrics& m : replicas) total.merge(m);
  std::vector<uint64_t> routed;
  {
    std::lock_guard<std::mutex> lock(mu_);
    total.merge(refused_);
    routed = routed_;
  }
  return render_prometheus(total, replicas, routed);
}

void Router::deliver(const RequestEvent& event) {
  EventCallback callback;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = routes_.find(event.request_id);
    if (it == routes_.end()) return;
    if (event.finish == Finish::kNone) {
      callback = it->second.on_event;
    } else {
      callback = std::move(it->second.on_event);
      if (it->second.replica != 0) --outstanding_[it->second.replica];
      routes_.erase(it);
    }
  }
  if (callback) callback(event);
}

std::vector<std::pair<int, RouterMessage>> Router::take_outgoing() {
  std::vector<std::pair<int, RouterMessage>> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (int d = 1; d < dp_size_; ++d) {
    if (fin_due_[d]) {  // its bye came: one last message, and nothing after it
      RouterMessage fin;
      fin.drain = true;
      out.emplace_back(d, std::move(fin));
      fin_due_[d] = false;
      outbox_[d] = RouterMessage();
      continue;
    }
    if (bye_[d] || outbox_[d].empty()) continue;
    out.emplace_back(d, std::move(outbox_[d]));
    outbox_[d] = RouterMessage();
  }
  return out;
}

void Router::on_report(int replica, const ReplicaReport& report) {
  TESSERA_ASSERT(replica >= 1 && replica < dp_size_, "a report from a remote replica");
  {
    // The metrics first: a client that has its last event may read /metrics at once, and the
    // report's metrics already count that event.
    std::lock_guard<std::mutex> lock(mu_);
    remote_metrics_[replica] = report.metrics;
    if (report.bye && !bye_[replica]) {
      bye_[replica] = true;
      fin_due_[replica] = true;
    }
  }
  for (const RequestEvent& e : report.events) deliver(e);
}

bool Router::remotes_stopped() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (int d = 1; d < dp_size_; ++d) {
    if (!bye_[d] || fin_due_[d]) return false;
  }
  return true;
}

// ---- ReplicaAgent -------------------------------------------------------------------------------

bool ReplicaAgent::on_message(const RouterMessage& message) {
  if (bye_) return message.drain;
  for (const Admission& a : message.submit) {
    SubmitResult r = scheduler_.submit(
        to_spec(a),
        [this](const RequestEvent& e) {
          std::lock_guard<std::mutex> lock(mu_);
          pending_.push_back(e);
        },
        a.request_id);
    if (!r.ok()) {  // the router checks first, so this is a bug; still, never leave it hanging
      RequestEvent e;
      e.request_id = a.request_id;
      e.finish = Finish::kError;
      e.usage.prompt_tokens = static_cast<int64_t>(a.prompt.size());
      e.error = "replica refused a routed request: " + r.message;
      std::lock_guard<std::mutex> lock(mu_);
      pending_.push_back(std::move(e));
    }
  }
  for (uint64_t id : message.cancel) scheduler_.cancel(id);
  for (uint64_t id : message.stop) scheduler_.stop(id);
  if (message.drain) scheduler_.drain();
  return false;
}

std::optional<ReplicaReport> ReplicaAgent::take_report() {
  ReplicaReport report;
  report.metrics = scheduler_.metrics();
  {
    std::lock_guard<std::mutex> lock(mu_);
    report.events.swap(pending_);
  }
  const Metrics& m = report.metrics;
  const bool changed = !sent_any_ || m.running != last_sent_.running ||
                       m.waiting != last_sent_.waiting ||
                       m.kv_used_tokens != last_sent_.kv_used_tokens;
  if (report.events.empty() && !changed) return std::nullopt;
  last_sent_ = m;
  sent_any_ = true;
  return report;
}

ReplicaReport ReplicaAgent::bye_report() {
  ReplicaReport report;
  report.metrics = scheduler_.metrics();
  {
    std::lock_guard<std::mutex> lock(mu_);
    report.events.swap(pending_);
  }
  report.bye = true;
  bye_ = true;
  return report;
}

}  // namespace tessera::serve
