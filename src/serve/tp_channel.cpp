// TpChannel: the per-iteration broadcast of serving changes over tp; see tp_channel.h.
#include "serve/tp_channel.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "core/error.h"
#include "parallel/communicator.h"

namespace tessera::serve {

TpChannel::TpChannel(parallel::Communicator& tp_comm) : comm_(tp_comm) {}

bool TpChannel::is_root() const { return comm_.rank() == 0; }

void TpChannel::broadcast_header(int64_t* bytes, bool polite) {
  auto* mpi = dynamic_cast<parallel::MpiCommunicator*>(&comm_);
  if (!mpi) {  // another transport: its own (blocking) broadcast
    comm_.broadcast_bytes(bytes, sizeof *bytes, 0);
    return;
  }
  // Root and others both use the non-blocking form: a blocking and a non-blocking broadcast
  // never match each other (MPI 3.1, section 5.12).
  MPI_Request request = MPI_REQUEST_NULL;
  TESSERA_MPI_CHECK(MPI_Ibcast(bytes, 1, MPI_INT64_T, 0, mpi->comm(), &request),
                    "broadcasting a serving iteration's header over tp");
  if (!polite) {
    TESSERA_MPI_CHECK(MPI_Wait(&request, MPI_STATUS_IGNORE),
                      "waiting for a serving iteration's header over tp");
    return;
  }
  auto nap = std::chrono::microseconds(50);
  for (;;) {
    int done = 0;
    TESSERA_MPI_CHECK(MPI_Test(&request, &done, MPI_STATUS_IGNORE),
                      "waiting for a serving iteration's header over tp");
    if (done) return;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(2000));
  }
}

void TpChannel::send(const IterationChanges& changes) {
  TESSERA_ASSERT(is_root(), "sending serving changes from tp rank 0");
  std::vector<uint8_t> payload = encode_changes(changes);
  int64_t bytes = static_cast<int64_t>(payload.size());
  broadcast_header(&bytes, /*polite=*/false);
  comm_.broadcast_bytes(payload.data(), bytes, 0);
}

core::Result<IterationChanges> TpChannel::receive(bool idle) {
  TESSERA_ASSERT(!is_root(), "receiving serving changes on a tp rank other than 0");
  int64_t bytes = 0;
  broadcast_header(&bytes, idle);
  if (bytes <= 0 || bytes > (int64_t{1} << 34)) {
    return core::Status::error("serving iteration header announces " + std::to_string(bytes) +
                               " bytes; every tp rank must run the same tessera-serve binary");
  }
  std::vector<uint8_t> payload(static_cast<size_t>(bytes));
  comm_.broadcast_bytes(payload.data(), bytes, 0);
  return decode_changes(payload.data(), payload.size());
}

}  // namespace tessera::serve
