// Router: world rank 0's view of the dp replicas, free of MPI and HTTP. The HTTP front end hands
// it each request; it numbers the request, sends it to the least-loaded replica, and passes the
// replica's events back to the request's callback. Replica 0 is local (its Scheduler runs on
// world rank 0's main thread); replica d > 0 is remote: what it must be told (submits, cancels,
// stops, drain) waits in an outbox until the main thread takes it (take_outgoing) and sends it, and what
// it reports comes back through on_report (route_protocol.h; the MPI side is route_channel.h).
//
// Routing: among the replicas whose queue is not full (fewer than max_queue waiting), the one
// with the fewest requests running + waiting; ties go to the lowest replica. None: 429. A remote
// replica's load is counted here exactly (requests routed to it whose finish has not come back);
// its waiting count is that minus the running count of its last report, which never undercounts,
// so a replica is never sent more than max_queue waiting requests.
//
// Drain: drain() stops admission here and tells every replica; each remote replica finishes its
// requests, reports bye, and is then sent "fin" (its last message). remotes_stopped() turns true
// once every remote replica has said bye.
//
// Thread-safety: submit, cancel, drain, draining, count_invalid, metrics and render_metrics from
// any thread; take_outgoing, on_report and remotes_stopped from world rank 0's main thread.
// Callbacks run outside the router's lock: the local replica's on the main thread (the
// Scheduler's), the remote replicas' on the main thread too (on_report).
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "serve/metrics.h"
#include "serve/route_protocol.h"
#include "serve/scheduler.h"

namespace tessera::serve {

class Router {
 public:
  // local: replica 0's scheduler (borrowed). dp_size >= 1 replicas, the others remote with the
  // same options (max_queue is applied here for them).
  Router(Scheduler& local, int dp_size);
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;

  int dp_size() const { return dp_size_; }
  const SchedulerOptions& options() const { return local_.options(); }

  // ---- Thread-safe -----------------------------------------------------------------------------
  // As Scheduler::submit, over the replicas; the result names the replica.
  SubmitResult submit(RequestSpec spec, EventCallback on_event);
  void cancel(uint64_t id);
  // As Scheduler::stop (a stop string ended the request), on the request's replica (a remote
  // one is sent the stop: it counts the request as stopped, not cancelled).
  void stop(uint64_t id);
  void drain();
  bool draining() const;
  void count_invalid();
  // The totals over the replicas (with the requests refused here) and each replica's own.
  Metrics metrics() const;
  std::vector<Metrics> replica_metrics() const;
  std::string render_metrics() const;

  // ---- World rank 0's main thread --------------------------------------------------------------
  // The messages due to remote replicas (replica index, message), emptying the outboxes.
  std::vector<std::pair<int, RouterMessage>> take_outgoing();
  // A remote replica's report: its events go to their callbacks, in order.
  void on_report(int replica, const ReplicaReport& report);
  // True when every remote replica has said bye (at once for dp = 1).
  bool remotes_stopped() const;

 private:
  struct Route {
    int replica = 0;
    EventCallback on_event;
  };
  void deliver(const RequestEvent& event);

  Scheduler& local_;
  const int dp_size_;
  mutable std::mutex mu_;
  // Under mu_; vectors are indexed by replica (entry 0, the local one, unused where noted).
  uint64_t next_id_ = 1;
  bool draining_ = false;
  std::unordered_map<uint64_t, Route> routes_;  // requests not yet finished
  std::vector<int64_t> outstanding_;            // routed and not finished (remote replicas)
  std::vector<uint64_t> routed_;                // routed in all
  std::vector<Metrics> remote_metrics_;         // the last report's (remote replicas)
  std::vector<RouterMessage> outbox_;           // (remote replicas)
  std::vector<bool> bye_, fin_due_;             // (remote replicas)
  Metrics refused_;                             // requests refused here (rejected_* only)
};

// The remote replica's side (its tp rank 0, beside its own Scheduler): applies the Router's
// messages and gathers what to report. Loop thread only.
class ReplicaAgent {
 public:
  explicit ReplicaAgent(Scheduler& scheduler) : scheduler_(scheduler) {}
  ReplicaAgent(const ReplicaAgent&) = delete;
  ReplicaAgent& operator=(const ReplicaAgent&) = delete;

  // Queues the message's admissions (a refusal becomes an error event), then cancels its
  // cancellations; its shutdown drains the scheduler. After bye, returns true for "fin".
  bool on_message(const RouterMessage& message);
  // The events since the last report and the metrics now; nullopt when neither changed.
  std::optional<ReplicaReport> take_report();
  // The last report: what is left, with bye.
  ReplicaReport bye_report();

 private:
  Scheduler& scheduler_;
  std::mutex mu_;  // pending_ (callbacks run on the loop thread; the lock is cheap insurance)
  std::vector<RequestEvent> pending_;
  Metrics last_sent_;
  bool sent_any_ = false, bye_ = false;
};

}  // namespace tessera::serve
