// The stalled-rank watchdog without MPI: the verdict on a heartbeat snapshot (timing, phase and
// step in the message), the marks' nesting, and the thread: it fires once, after the timeout,
// with the message and the diagnosis; marks left in time never fire it; it stops promptly when
// destroyed. The diagnosis from /proc, with child processes as peers: stopped, exited, running.
#include "parallel/watchdog.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tessera::parallel {
namespace {

using Clock = Heartbeat::Clock;
using std::chrono::milliseconds;

Heartbeat::Snapshot in_collective(const char* what, const char* comm, Clock::time_point since,
                                  const char* phase, int64_t step, int64_t total) {
  Heartbeat::Snapshot s;
  s.in_collective = true;
  s.what = what;
  std::snprintf(s.comm, sizeof s.comm, "%s", comm);
  s.since = since;
  s.phase = phase;
  s.step = step;
  s.total_steps = total;
  return s;
}

TEST(Watchdog, NoVerdictOutsideACollectiveOrWithinTheTimeout) {
  const Clock::time_point t0 = Clock::now();
  Heartbeat::Snapshot idle;
  idle.since = t0;  // not in a collective: never a stall, however old
  EXPECT_FALSE(stall_message(idle, t0 + std::chrono::hours(1), 3.0));
  const auto s = in_collective("all_reduce", "tp", t0, "backward", 7, 20);
  EXPECT_FALSE(stall_message(s, t0 + milliseconds(2999), 3.0));
  EXPECT_FALSE(stall_message(s, t0 + milliseconds(3000), 3.0));  // "longer than" the timeout
  EXPECT_TRUE(stall_message(s, t0 + milliseconds(3001), 3.0));
}

TEST(Watchdog, MessageNamesTheCallTheCommunicatorThePhaseTheStepAndTheFix) {
  const Clock::time_point t0 = Clock::now();
  const auto m = stall_message(in_collective("all_reduce", "tp", t0, "backward", 7, 20),
                               t0 + milliseconds(5040), 3.0);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->rfind("stuck 5.0 s in all_reduce over tp during backward of step 7/20: ", 0), 0u)
      << *m;
  EXPECT_NE(m->find("a peer rank in 'tp' is stopped (SIGSTOP), stuck outside MPI or gone"),
            std::string::npos)
      << *m;
  EXPECT_NE(m->find("raise parallel.collective_timeout_s (now 3)"), std::string::npos) << *m;
}

TEST(Watchdog, MessageBeforeTheFirstStepAndWithoutAPhase) {
  const Clock::time_point t0 = Clock::now();
  auto m = stall_message(in_collective("barrier", "world", t0, "start-up", 0, 20),
                         t0 + milliseconds(1500), 1.0);
  ASSERT_TRUE(m);
  EXPECT_EQ(
      m->rfind("stuck 1.5 s in barrier over world during start-up before the first step: ", 0), 0u)
      << *m;
  m = stall_message(in_collective("barrier", "dp", t0, nullptr, 4, 9), t0 + milliseconds(2500),
                    0.5);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->rfind("stuck 2.5 s in barrier over dp in step 4/9: ", 0), 0u) << *m;
  EXPECT_NE(m->find("(now 0.5)"), std::string::npos) << *m;
}

TEST(Watchdog, ScopesMarkTheProcessHeartbeatAndNest) {
  Heartbeat& hb = heartbeat();
  EXPECT_FALSE(hb.snapshot().in_collective);
  {
    WatchPhase phase("a checkpoint write");
    hb.set_step(4, 10);
    CollectiveScope outer("the checkpoint close barrier", std::string("world"));
    const Clock::time_point outer_since = hb.snapshot().since;
    {
      CollectiveScope inner("all_reduce", "a-communicator-name-longer-than-the-slot");
      const auto s = hb.snapshot();
      EXPECT_TRUE(s.in_collective);
      EXPECT_STREQ(s.what, "all_reduce");
      EXPECT_STREQ(s.comm, "a-communicator-name-lon");  // truncated to the slot, terminated
      EXPECT_STREQ(s.phase, "a checkpoint write");
      EXPECT_EQ(s.step, 4);
      EXPECT_EQ(s.total_steps, 10);
    }
    const auto s = hb.snapshot();  // the outer mark is back, with its own start time
    EXPECT_TRUE(s.in_collective);
    EXPECT_STREQ(s.what, "the checkpoint close barrier");
    EXPECT_STREQ(s.comm, "world");
    EXPECT_EQ(s.since, outer_since);
  }
  const auto s = hb.snapshot();
  EXPECT_FALSE(s.in_collective);
  EXPECT_EQ(s.phase, nullptr);
  hb.set_step(0, 0);
}

TEST(Watchdog, PollIntervalIsATenthOfTheTimeoutWithinBounds) {
  EXPECT_DOUBLE_EQ(Watchdog::poll_interval(3.0), 0.3);
  EXPECT_DOUBLE_EQ(Watchdog::poll_interval(300.0), 1.0);
  EXPECT_DOUBLE_EQ(Watchdog::poll_interval(0.01), 0.01);
}

// Collects the watchdog's calls.
struct Fired {
  std::mutex mu;
  int count = 0;
  std::string message;
  Clock::time_point at{};
  void operator()(const std::string& m) {
    std::lock_guard<std::mutex> lock(mu);
    ++count;
    message = m;
    at = Clock::now();
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu);
    return count;
  }
};

TEST(Watchdog, ThreadFiresOnceAfterTheTimeoutWithTheMessage) {
  Heartbeat hb;
  Fired fired;
  const double timeout_s = 0.2;
  std::atomic<int> diagnosed{0};
  Watchdog watchdog(
      hb, timeout_s, [&](const std::string& m) { fired(m); },
      [&] {
        ++diagnosed;
        return std::string("on this node rank 9 (dp 4, tp 1; pid 1) is stopped");
      });
  hb.set_step(3, 50);
  hb.set_phase("the gradient all-reduce");
  hb.enter("the wait for a non-blocking all_reduce", "dp");
  const Clock::time_point entered = Clock::now();
  const Clock::time_point deadline = entered + std::chrono::seconds(5);
  while (fired.calls() == 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(5));
  std::this_thread::sleep_for(milliseconds(300));  // several more polls: still one call
  ASSERT_EQ(fired.calls(), 1);
  const double after = std::chrono::duration<double>(fired.at - entered).count();
  EXPECT_GE(after, timeout_s);
  EXPECT_LE(after, timeout_s + Watchdog::poll_interval(timeout_s) + 0.5);  // slack: a busy machine
  EXPECT_EQ(fired.message.rfind("stuck 0.", 0), 0u) << fired.message;
  EXPECT_NE(fired.message.find(" s in the wait for a non-blocking all_reduce over dp during the "
                               "gradient all-reduce of step 3/50: "),
            std::string::npos)
      << fired.message;
  EXPECT_EQ(diagnosed.load(), 1);  // asked once, when firing
  EXPECT_NE(fired.message.find("so this rank would wait forever; on this node rank 9 (dp 4, tp 1; "
                               "pid 1) is stopped; ending the job. Fix: "),
            std::string::npos)
      << fired.message;
}

TEST(Watchdog, CollectivesShorterThanTheTimeoutNeverFireIt) {
  Heartbeat hb;
  Fired fired;
  {
    Watchdog watchdog(hb, 0.15, [&](const std::string& m) { fired(m); });
    // 0.5 s in all, in collectives of 10 ms separated by compute: never one of 0.15 s.
    const Clock::time_point end = Clock::now() + milliseconds(500);
    while (Clock::now() < end) {
      const Heartbeat::Mark previous = hb.enter("all_reduce", "tp");
      std::this_thread::sleep_for(milliseconds(10));
      hb.leave(previous);
      std::this_thread::sleep_for(milliseconds(2));
    }
    // Long compute outside any collective is no stall either.
    std::this_thread::sleep_for(milliseconds(400));
  }
  EXPECT_EQ(fired.calls(), 0) << fired.message;
}

TEST(Watchdog, DestructionStopsTheThreadWithinOnePoll) {
  Heartbeat hb;
  Fired fired;
  const Clock::time_point start = Clock::now();
  {
    Watchdog watchdog(hb, 600.0, [&](const std::string& m) { fired(m); });  // polls every 1 s
    hb.enter("barrier", "world");
  }
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_LT(took, 1.0);  // woken by the destructor, not by the next poll
  EXPECT_EQ(fired.calls(), 0);
}

// A child process that waits to be signalled.
pid_t spawn_sleeper() {
  const pid_t pid = fork();
  if (pid == 0) {
    for (;;) pause();
  }
  return pid;
}

TEST(Watchdog, DescribeLocalPeersNamesAStoppedAndAnExitedPeerFromProc) {
  const std::string host = this_host();
  const pid_t stopped = spawn_sleeper(), running = spawn_sleeper(), exited = spawn_sleeper();
  ASSERT_GT(stopped, 0);
  ASSERT_GT(running, 0);
  ASSERT_GT(exited, 0);
  int status = 0;
  kill(stopped, SIGSTOP);
  ASSERT_EQ(waitpid(stopped, &status, WUNTRACED), stopped);  // it is stopped now
  ASSERT_TRUE(WIFSTOPPED(status));
  kill(exited, SIGKILL);
  ASSERT_EQ(waitpid(exited, &status, 0), exited);  // reaped: its /proc entry is gone
  // World ranks 0-5 of a dp 3 x tp 2 grid; this process is rank 0, rank 5 sits on another node.
  std::vector<PeerInfo> peers = {{0, 0, 0, static_cast<int>(getpid()), host},
                                 {1, 0, 1, static_cast<int>(running), host},
                                 {2, 1, 0, static_cast<int>(stopped), host},
                                 {3, 1, 1, static_cast<int>(exited), host},
                                 {4, 2, 0, static_cast<int>(running), host},
                                 {5, 2, 1, static_cast<int>(stopped), "another-node"}};
  const std::string d = describe_local_peers(peers, 0, host);
  EXPECT_EQ(d, "on this node rank 2 (dp 1, tp 0; pid " + std::to_string(stopped) +
                   ") is stopped (SIGSTOP or a debugger); on this node rank 3 (dp 1, tp 1; pid " +
                   std::to_string(exited) + ") has exited");
  // Nothing to say when every local peer runs.
  EXPECT_EQ(describe_local_peers({peers[0], peers[1], peers[4], peers[5]}, 0, host), "");
  kill(stopped, SIGKILL);
  kill(running, SIGKILL);
  waitpid(stopped, &status, 0);
  waitpid(running, &status, 0);
}

}  // namespace
}  // namespace tessera::parallel
