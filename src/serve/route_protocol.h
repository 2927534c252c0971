// What world rank 0's Router and the dp replicas' leaders (tp rank 0 of each replica) say to each
// other, point to point, when tessera-serve runs more than one replica (router.h, route_channel.h).
//   Router -> replica: a RouterMessage: requests to queue (their ids are the Router's), to
//     cancel, to end as stopped, and drain (the first one), then, after the replica's bye, "fin"
//     (a drain again; nothing follows).
//   Replica -> Router: a ReplicaReport: the request events since the last report, the replica's
//     metrics after them, and bye (drained and stopped; the last report).
// Flat bytes in host byte order, as protocol.h (every rank runs the same binary).
#pragma once

#include <cstdint>
#include <vector>

#include "core/status.h"
#include "serve/metrics.h"
#include "serve/scheduler.h"

namespace tessera::serve {

struct RouterMessage {
  std::vector<Admission> submit;  // requests to queue, in order (Admission.request_id: the Router's)
  std::vector<uint64_t> cancel;   // then these are cancelled (Scheduler::cancel)
  std::vector<uint64_t> stop;     // and these end as stopped (Scheduler::stop)
  bool drain = false;             // then drain; after the replica's bye: fin

  bool empty() const { return submit.empty() && cancel.empty() && stop.empty() && !drain; }
};

// Serialises `message`: magic "TSQ1", stop count and ids, then encode_changes of (cancel, submit
// as admissions, drain as shutdown), so a request travels in the tp broadcast's format.
std::vector<uint8_t> encode_router_message(const RouterMessage& message);
core::Result<RouterMessage> decode_router_message(const uint8_t* data, size_t size);

struct ReplicaReport {
  std::vector<RequestEvent> events;  // in the order the replica's scheduler made them
  Metrics metrics;                   // the replica's scheduler metrics after these events
  bool bye = false;                  // drained and stopped: nothing follows
};

// Serialises `report`: magic "TSR1", bye byte, Metrics bytes, event count, then per event
// (id, token, finish, prompt_tokens, completion_tokens, error length, error bytes, has_logprobs,
// and the TokenLogprobs bytes when it has them).
std::vector<uint8_t> encode_report(const ReplicaReport& report);
// The inverse; an error names what is wrong (bad magic, truncated buffer, trailing bytes).
core::Result<ReplicaReport> decode_report(const uint8_t* data, size_t size);

}  // namespace tessera::serve
