// What the scheduler and router tests share: scheduler options for small_generation_model and a
// record of what each request received through its callback.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "serve/scheduler.h"
#include "test_models.h"

namespace tessera::serve::test {

// At most `max_running` sequences and `max_queue` waiting, on small_generation_model's context
// and vocabulary, with no end-of-text token (requests run to max_tokens).
inline SchedulerOptions scheduler_options(int64_t max_running, int64_t max_queue) {
  SchedulerOptions o;
  o.max_running = max_running;
  o.max_queue = max_queue;
  o.context = testing::kSmallContext;
  o.vocab_size = testing::kSmallVocab;
  o.eot_token = -1;
  return o;
}

// What one request received through its callback.
struct Received {
  std::vector<int32_t> tokens;
  std::vector<RequestEvent> events;
  Finish finish = Finish::kNone;
  Usage usage;
  int finishes = 0;
};

// A callback that records each request's events in got[request id].
inline EventCallback record(std::map<uint64_t, Received>& got) {
  return [&got](const RequestEvent& e) {
    Received& g = got[e.request_id];
    g.events.push_back(e);
    if (e.token >= 0) g.tokens.push_back(e.token);
    if (e.finish != Finish::kNone) {
      g.finish = e.finish;
      g.usage = e.usage;
      ++g.finishes;
    }
  };
}

}  // namespace tessera::serve::test
