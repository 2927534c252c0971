// RouteChannel: non-blocking point-to-point messages between the router and the replicas; see
// route_channel.h.
#include "serve/route_channel.h"

#include <climits>

#include "core/error.h"

namespace tessera::serve {
namespace {
constexpr int kTag = 14;
}

RouteChannel::RouteChannel(MPI_Comm world, int tp_size) {
  int world_rank = 0;
  TESSERA_MPI_CHECK(MPI_Comm_rank(world, &world_rank), "reading the world rank for routing");
  const bool leader = world_rank % tp_size == 0;
  TESSERA_MPI_CHECK(MPI_Comm_split(world, leader ? 0 : MPI_UNDEFINED, world_rank / tp_size, &comm_),
                    "splitting off the dp replicas' leaders for routing");
  if (comm_ == MPI_COMM_NULL) return;
  TESSERA_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN),
                    "setting the routing communicator's error handler");
  TESSERA_MPI_CHECK(MPI_Comm_rank(comm_, &rank_), "reading the replica index");
  TESSERA_MPI_CHECK(MPI_Comm_size(comm_, &size_), "reading the replica count");
}

RouteChannel::~RouteChannel() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ == MPI_COMM_NULL || finalized) return;
  try {
    flush();
  } catch (...) {  // a destructor must not throw; the app has already failed in this case
  }
  MPI_Comm_free(&comm_);
}

void RouteChannel::send(int to, std::vector<uint8_t> bytes) {
  TESSERA_ASSERT(member() && to >= 0 && to < size_ && to != rank_,
                 "sending a routing message to another replica's leader");
  TESSERA_ASSERT(bytes.size() <= static_cast<size_t>(INT_MAX),
                 "a routing message fits one MPI send");
  reap();
  sending_.push_back(Outgoing{std::move(bytes), MPI_REQUEST_NULL});
  Outgoing& o = sending_.back();
  TESSERA_MPI_CHECK(MPI_Isend(o.bytes.data(), static_cast<int>(o.bytes.size()), MPI_BYTE, to,
                              kTag, comm_, &o.request),
                    "sending a routing message to another replica's leader");
}

bool RouteChannel::poll(int* from, std::vector<uint8_t>* bytes) {
  TESSERA_ASSERT(member(), "polling for routing messages on a replica leader");
  reap();
  int found = 0;
  MPI_Message message = MPI_MESSAGE_NULL;
  MPI_Status status;
  TESSERA_MPI_CHECK(MPI_Improbe(MPI_ANY_SOURCE, kTag, comm_, &found, &message, &status),
                    "polling for routing messages");
  if (!found) return false;
  int count = 0;
  TESSERA_MPI_CHECK(MPI_Get_count(&status, MPI_BYTE, &count), "sizing a routing message");
  bytes->resize(static_cast<size_t>(count));
  TESSERA_MPI_CHECK(MPI_Mrecv(bytes->data(), count, MPI_BYTE, &message, MPI_STATUS_IGNORE),
                    "receiving a routing message");
  *from = status.MPI_SOURCE;
  return true;
}

void RouteChannel::reap() {
  while (!sending_.empty()) {
    int done = 0;
    TESSERA_MPI_CHECK(MPI_Test(&sending_.front().request, &done, MPI_STATUS_IGNORE),
                      "completing a routing message");
    if (!done) return;
    sending_.pop_front();
  }
}

void RouteChannel::flush() {
  for (Outgoing& o : sending_) {
    TESSERA_MPI_CHECK(MPI_Wait(&o.request, MPI_STATUS_IGNORE), "completing a routing message");
  }
  sending_.clear();
}

}  // namespace tessera::serve
