// The leader and follower serving loops; see serve_loop.h.
#include "serve/serve_loop.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "serve/engine.h"
#include "serve/scheduler.h"
#include "serve/tp_channel.h"

namespace tessera::serve {

core::Status run_leader(Scheduler& scheduler, Engine& engine, TpChannel* channel,
                        const LeaderOptions& options) {
  bool draining = false;
  constexpr auto kFirstNap = std::chrono::microseconds(50);
  constexpr auto kLongestNap = std::chrono::microseconds(2000);
  auto nap = kFirstNap;
  for (;;) {
    if (options.pump) {
      auto moved = options.pump();
      if (!moved) return moved.status();
      if (*moved) nap = kFirstNap;
    }
    if (!draining && options.stop_signal && options.stop_signal->load() != 0) scheduler.drain();
    if (!draining && scheduler.draining()) {
      draining = true;
      if (options.on_drain) options.on_drain();
    }
    IterationChanges changes = scheduler.plan();
    if (draining && changes.admit.empty() && scheduler.idle() &&
        (!options.may_shut_down || options.may_shut_down())) {
      changes.shutdown = true;
    }
    if (changes.empty() && engine.running() == 0) {
      if (!options.pump) {
        // Nothing to run: wait for a request (or the signal, polled every 50 ms).
        scheduler.wait_for_work(0.05);
      } else if (draining) {
        // Drained here, other replicas still busy: wait_for_work would return at once.
        std::this_thread::sleep_for(nap);
        nap = std::min(nap * 2, kLongestNap);
      } else {
        scheduler.wait_for_work(std::chrono::duration<double>(nap).count());
        nap = std::min(nap * 2, kLongestNap);
      }
      continue;
    }
    nap = kFirstNap;
    if (channel) channel->send(changes);
    scheduler.on_admission_failures(engine.apply(changes));
    scheduler.on_prefix_reuse(engine.prefix_tokens_reused());
    if (changes.shutdown) return core::Status::ok();
    scheduler.on_events(engine.step());
    if (options.step_delay_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(options.step_delay_ms));
    }
  }
}

core::Status run_follower(Engine& engine, TpChannel& channel) {
  for (;;) {
    auto changes = channel.receive(/*idle=*/engine.running() == 0);
    if (!changes) return changes.status();
    // Admission failures are the leader's to report; here they only keep the state in step.
    (void)engine.apply(*changes);
    if (changes->shutdown) return core::Status::ok();
    (void)engine.step();
  }
}

}  // namespace tessera::serve
