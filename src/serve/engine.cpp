// Engine: changes applied to a Generator, events named by request id; see engine.h.
#include "serve/engine.h"

#include "core/error.h"

namespace tessera::serve {

Engine::Engine(generate::Generator& generator) : generator_(generator) {
  TESSERA_ASSERT(generator_.idle(), "an engine starts on an idle generator");
}

std::vector<AdmissionFailure> Engine::apply(const IterationChanges& changes) {
  for (uint64_t id : changes.cancel) {
    auto it = slot_of_.find(id);
    if (it == slot_of_.end()) continue;
    generator_.remove(it->second);
    request_of_.erase(it->second);
    slot_of_.erase(it);
  }
  std::vector<AdmissionFailure> failures;
  for (const Admission& a : changes.admit) {
    if (slot_of_.count(a.request_id)) {
      failures.push_back({a.request_id, "request " + std::to_string(a.request_id) +
                                            " is already running; ids must be unique"});
      continue;
    }
    auto slot = generator_.add(a.prompt, a.options);
    if (!slot) {
      failures.push_back({a.request_id, slot.status().message()});
      continue;
    }
    slot_of_[a.request_id] = *slot;
    request_of_[*slot] = a.request_id;
  }
  return failures;
}

std::vector<SequenceEvent> Engine::step() {
  std::vector<SequenceEvent> events;
  for (const generate::StepEvent& e : generator_.step()) {
    auto it = request_of_.find(e.id);
    // Invariant: every sequence in the generator was added through apply().
    TESSERA_ASSERT(it != request_of_.end(), "a generator event names a slot with no request");
    events.push_back(
        {it->second, e.token, e.finished, e.has_logprobs, e.logprobs, e.cached_tokens});
    if (e.finished != generate::FinishReason::kNone) {
      slot_of_.erase(it->second);
      request_of_.erase(it);
    }
  }
  return events;
}

}  // namespace tessera::serve
