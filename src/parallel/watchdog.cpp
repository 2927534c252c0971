// The stalled-rank watchdog; see watchdog.h. Like NCCL's and PyTorch's process-group watchdogs it
// is a thread that compares the age of the operation in flight with a timeout and ends the job;
// unlike them it needs no communicator of its own: Open MPI's abort reaches every rank.
#include "parallel/watchdog.h"

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "core/log.h"

namespace tessera::parallel {
namespace {

void copy_name(char (&dst)[24], const char* src) {
  std::strncpy(dst, src, sizeof dst - 1);
  dst[sizeof dst - 1] = '\0';
}

}  // namespace

Heartbeat::Mark Heartbeat::enter(const char* what, const char* comm) {
  Mark next;
  next.in_collective = true;
  next.what = what;
  copy_name(next.comm, comm);
  next.since = Clock::now();
  std::lock_guard<std::mutex> lock(mu_);
  Mark previous = mark_;
  mark_ = next;
  return previous;
}

void Heartbeat::leave(const Mark& previous) {
  std::lock_guard<std::mutex> lock(mu_);
  mark_ = previous;
}

const char* Heartbeat::set_phase(const char* phase) {
  std::lock_guard<std::mutex> lock(mu_);
  const char* previous = phase_;
  phase_ = phase;
  return previous;
}

void Heartbeat::set_step(int64_t step, int64_t total_steps) {
  std::lock_guard<std::mutex> lock(mu_);
  step_ = step;
  total_steps_ = total_steps;
}

Heartbeat::Snapshot Heartbeat::snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  Snapshot s;
  s.in_collective = mark_.in_collective;
  s.what = mark_.what;
  std::memcpy(s.comm, mark_.comm, sizeof s.comm);
  s.since = mark_.since;
  s.phase = phase_;
  s.step = step_;
  s.total_steps = total_steps_;
  return s;
}

Heartbeat& heartbeat() {
  static Heartbeat instance;
  return instance;
}

CollectiveScope::CollectiveScope(const char* what, const std::string& comm)
    : CollectiveScope(what, comm.c_str()) {}

CollectiveScope::CollectiveScope(const char* what, const char* comm)
    : previous_(heartbeat().enter(what, comm)) {}

CollectiveScope::~CollectiveScope() { heartbeat().leave(previous_); }

std::optional<std::string> stall_message(const Heartbeat::Snapshot& s,
                                         Heartbeat::Clock::time_point now, double timeout_s) {
  if (!s.in_collective) return std::nullopt;
  const double waited = std::chrono::duration<double>(now - s.since).count();
  if (waited <= timeout_s) return std::nullopt;
  std::string where;
  if (s.phase != nullptr) where += std::string(" during ") + s.phase;
  if (s.step > 0) {
    where += (s.phase != nullptr ? " of step " : " in step ") + std::to_string(s.step) + "/" +
             std::to_string(s.total_steps);
  } else {
    where += " before the first step";
  }
  char head[96], tail[64];
  std::snprintf(head, sizeof head, "stuck %.1f s in ", waited);
  std::snprintf(tail, sizeof tail, "%g", timeout_s);
  return std::string(head) + s.what + " over " + s.comm + where + ": a peer rank in '" + s.comm +
         "' is stopped (SIGSTOP), stuck outside MPI or gone, so this rank would wait forever; "
         "ending the job. Fix: look at the rank(s) that did not report a stall (their node, "
         "their last output), or raise parallel.collective_timeout_s (now " +
         tail + ") if this collective can take that long";
}

double Watchdog::poll_interval(double timeout_s) { return std::clamp(timeout_s / 10, 0.01, 1.0); }

Watchdog::Watchdog(Heartbeat& heartbeat, double timeout_s, OnStall on_stall)
    : heartbeat_(heartbeat), timeout_s_(timeout_s), on_stall_(std::move(on_stall)) {
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Watchdog::run() {
  const auto poll = std::chrono::duration<double>(poll_interval(timeout_s_));
  std::unique_lock<std::mutex> lock(mu_);
  while (!wake_.wait_for(lock, poll, [this] { return stop_; })) {
    const auto message = stall_message(heartbeat_.snapshot(), Heartbeat::Clock::now(), timeout_s_);
    if (!message) continue;
    lock.unlock();
    on_stall_(*message);
    return;  // fires once
  }
}

void abort_job_on_stall(const std::string& message) {
  core::log_error("watchdog: " + message);
  // The safety net for an abort that does not come back: SIGALRM's default action ends this
  // process, and mpirun then ends the job.
  alarm(10);
  MPI_Abort(MPI_COMM_WORLD, 1);
  for (;;) pause();
}

}  // namespace tessera::parallel
