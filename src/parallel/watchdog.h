// Stalled-rank watchdog. A rank whose peer is stopped (SIGSTOP), stuck outside MPI or gone
// without MPI noticing waits in its next collective forever; the watchdog ends the whole job
// instead. The main thread marks each blocking collective it enters (CollectiveScope, in the
// Communicator and the checkpoint code) and what the training loop is doing (WatchPhase, the
// step); a watchdog thread polls the mark and, once one collective has lasted longer than
// parallel.collective_timeout_s, prints where this rank waits and aborts the job. A stopped rank
// cannot run its own watchdog: its peers' watchdogs fire.
// Rule: marks cost two uncontended mutex operations and a clock read, and allocate nothing
// (they sit in the step loop); with no watchdog running they are kept all the same.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace tessera::parallel {

// What a process's main thread is blocked in, written by the main thread, read by the watchdog
// thread. heartbeat() is the process's one instance (a process has one main thread: the mark is
// process-wide like a signal flag, so the ProcessGrid need not carry it); tests make their own.
// Thread-safe: the main thread writes, any thread reads.
class Heartbeat {
 public:
  using Clock = std::chrono::steady_clock;
  // A copy of the mark at one moment.
  struct Snapshot {
    bool in_collective = false;
    const char* what = "";        // the blocking call, e.g. "all_reduce" (static storage)
    char comm[24] = {};           // the communicator's name, e.g. "tp" (copied)
    Clock::time_point since{};    // when the call was entered
    const char* phase = nullptr;  // what the loop was doing (static storage), or nullptr
    int64_t step = 0;             // 1-based step in progress; 0: before the first step
    int64_t total_steps = 0;
  };

  // The collective mark. enter() returns the previous mark; leave() restores it (scopes nest).
  struct Mark {
    bool in_collective = false;
    const char* what = "";
    char comm[24] = {};
    Clock::time_point since{};
  };
  Mark enter(const char* what, const char* comm);
  void leave(const Mark& previous);

  // What the loop is doing: a string literal (or nullptr), kept until replaced.
  const char* set_phase(const char* phase);
  void set_step(int64_t step, int64_t total_steps);

  Snapshot snapshot() const;

 private:
  mutable std::mutex mu_;
  Mark mark_;
  const char* phase_ = nullptr;
  int64_t step_ = 0, total_steps_ = 0;
};

// The process's heartbeat, read by the watchdog the trainer starts.
Heartbeat& heartbeat();

// Marks [construction, destruction) as one blocking collective on `comm` (its name is copied;
// `what` must be a string literal). Nests: the outer mark comes back on destruction. Not
// thread-safe: the main thread's alone.
class CollectiveScope {
 public:
  CollectiveScope(const char* what, const std::string& comm);
  CollectiveScope(const char* what, const char* comm);
  ~CollectiveScope();
  CollectiveScope(const CollectiveScope&) = delete;
  CollectiveScope& operator=(const CollectiveScope&) = delete;

 private:
  Heartbeat::Mark previous_;
};

// Names what the loop does for [construction, destruction): `phase` a string literal such as
// "backward" or "checkpoint write". Nests like CollectiveScope.
class WatchPhase {
 public:
  explicit WatchPhase(const char* phase) : previous_(heartbeat().set_phase(phase)) {}
  ~WatchPhase() { heartbeat().set_phase(previous_); }
  WatchPhase(const WatchPhase&) = delete;
  WatchPhase& operator=(const WatchPhase&) = delete;

 private:
  const char* previous_;
};

// The watchdog's verdict on one snapshot: when the mark has been inside one collective for more
// than timeout_s at `now`, the message (what follows "watchdog: "; the logger adds the rank):
// how long, which call over which communicator, the phase and step, why, what `diagnosis` says
// (when not empty: which peer on this node is stopped or gone, from describe_local_peers), and
// the fix. Else nothing. Pure: unit-tested.
std::optional<std::string> stall_message(const Heartbeat::Snapshot& snapshot,
                                         Heartbeat::Clock::time_point now, double timeout_s,
                                         const std::string& diagnosis = "");

// A thread that polls a Heartbeat every poll_interval(timeout_s) and calls on_stall(message) the
// first time stall_message says the rank is stalled (with diagnose()'s text, called then, when
// given); it never fires twice. The default on_stall
// (abort_job_on_stall) does not return. Destruction stops and joins the thread (within one poll).
// Construct and destroy from the main thread.
class Watchdog {
 public:
  using OnStall = std::function<void(const std::string& message)>;
  using Diagnose = std::function<std::string()>;
  // Precondition: timeout_s > 0 (0, "off", means: do not make a Watchdog).
  Watchdog(Heartbeat& heartbeat, double timeout_s, OnStall on_stall, Diagnose diagnose = nullptr);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // Seconds between polls: a tenth of the timeout, between 10 ms and 1 s. A stall is thus
  // reported between timeout_s and timeout_s + poll_interval after the collective began.
  static double poll_interval(double timeout_s);

 private:
  void run();

  Heartbeat& heartbeat_;
  const double timeout_s_;
  OnStall on_stall_;
  Diagnose diagnose_;
  std::mutex mu_;
  std::condition_variable wake_;
  bool stop_ = false;
  std::thread thread_;
};

// Who the peers are, for naming a stopped or vanished one on the watchdog's node: every rank's
// pid, host and grid coordinates, gathered once when the watchdog starts.
struct PeerInfo {
  int world_rank = 0, dp_rank = 0, tp_rank = 0;
  int pid = 0;
  std::string host;
};
// Collective over MPI_COMM_WORLD (one MPI_Allgather; every rank calls it before its first other
// collective of the run): rank i's row at index i. world_rank = dp_rank * tp_size + tp_rank.
std::vector<PeerInfo> gather_peers(int tp_size);
// What /proc says of the peers on `host` other than `self`: "on this node rank 2 (dp 1, tp 0;
// pid 1234) is stopped (SIGSTOP or a debugger)" for a stopped one, "... has exited" for one gone,
// joined by "; "; "" when none is (the culprit then runs here, stuck, or sits on another node).
// Reads /proc/<pid>/stat only: no MPI, no allocation beyond the text. Unit-tested with children.
std::string describe_local_peers(const std::vector<PeerInfo>& peers, int self,
                                 const std::string& host);
// This machine's host name (as gather_peers records it).
std::string this_host();

// The watchdog's action in the apps: prints `[rank r (dp d, tp t)] watchdog: <message>` on
// stderr, then MPI_Abort(MPI_COMM_WORLD, 1) from the watchdog thread (Open MPI's abort goes
// through its runtime, not through the communicator the main thread is blocked in, so it works
// at MPI_THREAD_SINGLE: tests/apps/watchdog_test.sh). Should the abort not end the process
// within 10 s, SIGALRM's default action does, and mpirun ends the others. Never returns.
[[noreturn]] void abort_job_on_stall(const std::string& message);

}  // namespace tessera::parallel
