// Engine: one tp rank's side of serving. It applies an iteration's changes (protocol.h) to the
// rank's Generator and steps it, naming sequences by request id instead of cache slot. Every tp
// rank of a replica holds one and feeds it the same changes in the same order, so the Generators
// stay identical and their step() collectives match. No MPI here beyond the Generator's own.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "generate/generator.h"
#include "serve/protocol.h"

namespace tessera::serve {

// What one request did in one step: a token emitted (token >= 0), and/or finished.
struct SequenceEvent {
  uint64_t request_id = 0;
  int32_t token = -1;
  generate::FinishReason finished = generate::FinishReason::kNone;
  bool has_logprobs = false;  // the request asked for logprobs and token >= 0
  generate::TokenLogprobs logprobs;
  int64_t cached_tokens = 0;  // prompt tokens its slot already held (prefix reuse)
};

// An admission the Generator refused (the same on every tp rank: same state, same call).
struct AdmissionFailure {
  uint64_t request_id = 0;
  std::string message;
};

class Engine {
 public:
  // `generator` is borrowed for the engine's lifetime and must be idle.
  explicit Engine(generate::Generator& generator);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Removes the cancelled requests (unknown ids are ignored: the request already finished),
  // then adds the admissions in order. Returns the admissions the Generator refused.
  std::vector<AdmissionFailure> apply(const IterationChanges& changes);
  // One decode iteration (Generator::step); finished requests leave. Collective over tp when the
  // model is tp-sharded: every tp rank calls it after the same apply().
  std::vector<SequenceEvent> step();
  int64_t running() const { return static_cast<int64_t>(slot_of_.size()); }
  // Prompt tokens the Generator found cached in freed slots (Generator::add, prefix reuse).
  int64_t prefix_tokens_reused() const { return generator_.prefix_tokens_reused(); }

 private:
  generate::Generator& generator_;
  std::unordered_map<uint64_t, int> slot_of_;  // running request -> Generator id (cache slot)
  std::unordered_map<int, uint64_t> request_of_;
};

}  // namespace tessera::serve
