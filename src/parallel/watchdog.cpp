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
                                         Heartbeat::Clock::time_point now, double timeout_s,
                                         const std::string& diagnosis) {
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
         "' is stopped (SIGSTOP), stuck outside MPI or gone, so this rank would wait forever; " +
         (diagnosis.empty() ? "" : diagnosis + "; ") +
         "ending the job. Fix: look at the rank(s) that did not report a stall (their node, "
         "their last output), or raise parallel.collective_timeout_s (now " +
         tail + ") if this collective can take that long";
}

double Watchdog::poll_interval(double timeout_s) { return std::clamp(timeout_s / 10, 0.01, 1.0); }

Watchdog::Watchdog(Heartbeat& heartbeat, double timeout_s, OnStall on_stall, Diagnose diagnose)
    : heartbeat_(heartbeat),
      timeout_s_(timeout_s),
      on_stall_(std::move(on_stall)),
      diagnose_(std::move(diagnose)) {
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
    const Heartbeat::Snapshot snapshot = heartbeat_.snapshot();
    if (!stall_message(snapshot, Heartbeat::Clock::now(), timeout_s_)) continue;
    lock.unlock();
    // Only now, once: the diagnosis reads /proc. The time in the message is taken after it.
    const std::string diagnosis = diagnose_ ? diagnose_() : "";
    on_stall_(*stall_message(snapshot, Heartbeat::Clock::now(), timeout_s_, diagnosis));
    return;  // fires once
  }
}

std::string this_host() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0) return "?";
  return name;
}

std::vector<PeerInfo> gather_peers(int tp_size) {
  CollectiveScope watch("the watchdog's peer table all_gather", "world");
  // One fixed-size row per rank: pid, then the host name (truncated, NUL-terminated).
  constexpr int kRow = 4 + 252;
  int world_rank = 0, world_size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  std::vector<char> mine(kRow, '\0'), all(static_cast<size_t>(kRow) * world_size);
  const int pid = static_cast<int>(getpid());
  std::memcpy(mine.data(), &pid, 4);
  std::strncpy(mine.data() + 4, this_host().c_str(), kRow - 5);
  MPI_Allgather(mine.data(), kRow, MPI_CHAR, all.data(), kRow, MPI_CHAR, MPI_COMM_WORLD);
  std::vector<PeerInfo> peers(world_size);
  for (int r = 0; r < world_size; ++r) {
    const char* row = all.data() + static_cast<size_t>(r) * kRow;
    peers[r].world_rank = r;
    peers[r].dp_rank = r / tp_size;
    peers[r].tp_rank = r % tp_size;
    std::memcpy(&peers[r].pid, row, 4);
    peers[r].host = std::string(row + 4, strnlen(row + 4, kRow - 4));
  }
  return peers;
}

std::string describe_local_peers(const std::vector<PeerInfo>& peers, int self,
                                 const std::string& host) {
  std::string out;
  for (const PeerInfo& p : peers) {
    if (p.world_rank == self || p.host != host || p.pid <= 0) continue;
    // /proc/<pid>/stat: "pid (comm) S ...": the state follows the last ')' (comm may hold any
    // character). T: stopped by a signal; t: stopped by a tracer; Z, X or no file: exited.
    char state = 'X';
    if (std::FILE* f = std::fopen(("/proc/" + std::to_string(p.pid) + "/stat").c_str(), "r")) {
      char buf[512] = {};
      const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
      std::fclose(f);
      const char* close = static_cast<const char*>(memrchr(buf, ')', n));
      if (close != nullptr && close + 2 < buf + n) state = close[2];
    }
    const char* what = state == 'T' || state == 't'   ? "is stopped (SIGSTOP or a debugger)"
                       : state == 'Z' || state == 'X' ? "has exited"
                                                      : nullptr;
    if (what == nullptr) continue;
    if (!out.empty()) out += "; ";
    out += "on this node rank " + std::to_string(p.world_rank) + " (dp " +
           std::to_string(p.dp_rank) + ", tp " + std::to_string(p.tp_rank) + "; pid " +
           std::to_string(p.pid) + ") " + what;
  }
  return out;
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
