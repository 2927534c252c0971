// TpChannel: each serving iteration, tp rank 0 of a replica broadcasts its IterationChanges to
// the other tp ranks, which apply them to their own Engine before the same step().
// Protocol, per iteration, collective over tp_comm (root: tp rank 0):
//   1. header: int64 payload length (bytes of encode_changes), broadcast;
//   2. payload: that many bytes, broadcast (never empty: it holds at least the magic).
// The root sends only when it has an iteration to run (changes, or sequences decoding); while the
// server is idle the other ranks wait in step 1. That wait polls a non-blocking broadcast and
// sleeps between polls (50 us up to 2 ms) rather than spinning a core in a blocking MPI_Bcast.
#pragma once

#include <cstdint>

#include "core/status.h"
#include "serve/protocol.h"

namespace tessera::parallel {
class Communicator;
}

namespace tessera::serve {

class TpChannel {
 public:
  // tp_comm: the replica's host-memory tp communicator (ProcessGrid::tp_comm()), borrowed.
  explicit TpChannel(parallel::Communicator& tp_comm);
  TpChannel(const TpChannel&) = delete;
  TpChannel& operator=(const TpChannel&) = delete;

  bool is_root() const;
  // Collective over tp_comm. Called by tp rank 0 while the others call receive().
  void send(const IterationChanges& changes);
  // Collective over tp_comm. Called by every tp rank but 0. idle: nothing is decoding here, so the
  // next message may be far off (wait politely); else it follows at once (plain blocking wait).
  core::Result<IterationChanges> receive(bool idle);

 private:
  void broadcast_header(int64_t* bytes, bool polite);
  parallel::Communicator& comm_;
};

}  // namespace tessera::serve
