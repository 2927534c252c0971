// The serving loop of one replica, run on each rank's main thread (the only thread that calls
// MPI or the model). The replica's tp rank 0 leads: each iteration it plans with the Scheduler,
// broadcasts the changes over tp (TpChannel), applies them to its Engine and steps. The other tp
// ranks follow: receive, apply, step, so every rank makes the same Generator calls in the same
// order. The leader broadcasts only iterations it runs; while nothing is queued or decoding it
// waits on the scheduler (and the followers on the channel). Shutdown: once draining and idle
// (and may_shut_down agrees), the leader sends shutdown = true and every rank returns.
// With dp > 1 replicas, each leader also pumps the routing link once per iteration and while
// idle (LeaderOptions::pump): world rank 0 sends the Router's messages and takes the replicas'
// reports; another replica's leader takes the Router's requests and sends its reports.
#pragma once

#include <atomic>
#include <functional>

#include "core/status.h"

namespace tessera::serve {

class Engine;
class Scheduler;
class TpChannel;

struct LeaderOptions {
  // Set (from a signal handler) to start draining; polled each iteration and while idle.
  const std::atomic<int>* stop_signal = nullptr;
  // Called once when draining starts (the front end turns /health to 503).
  std::function<void()> on_drain;
  // Sleep after each step: a test hook that makes requests last long enough to observe queueing,
  // cancellation and draining (tessera-serve --debug-step-delay-ms). 0 in production.
  int step_delay_ms = 0;
  // dp > 1: called at the top of every iteration and, while idle, between naps of 50 us growing
  // to 2 ms (so messages that no condition variable announces are seen soon, without spinning).
  // Returns whether anything moved (a message sent or received), or an error, which ends the loop.
  std::function<core::Result<bool>()> pump;
  // Whether the leader may shut down once drained and idle (world rank 0: every other replica
  // has said bye). Unset: yes.
  std::function<bool()> may_shut_down;
};

// Leader (tp rank 0 of a replica). channel: nullptr when tp = 1. Returns after the shutdown
// iteration, once drained (Scheduler::drain(), or a stop signal) and idle.
core::Status run_leader(Scheduler& scheduler, Engine& engine, TpChannel* channel,
                        const LeaderOptions& options);
// Follower (tp rank > 0): applies what the leader sends until shutdown.
core::Status run_follower(Engine& engine, TpChannel& channel);

}  // namespace tessera::serve
