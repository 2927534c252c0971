// RouteChannel: the point-to-point link between world rank 0 (the Router) and the leaders of the
// dp replicas (tp rank 0 of each), on its own communicator (the replica leaders, ranked by
// replica: rank d is replica d's leader), so no other traffic can match its messages.
// Messages are byte buffers (route_protocol.h), one tag, so each direction keeps its order (MPI's
// non-overtaking rule). Sends are non-blocking: the channel owns each buffer until MPI is done
// with it, and reaps finished sends as it goes. Receives poll (MPI_Improbe), never block: a
// caller that finds nothing naps and polls again, so an idle rank does not spin a core.
// Main thread only (MPI is initialised single-threaded).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <deque>
#include <vector>

namespace tessera::serve {

class RouteChannel {
 public:
  // Collective over `world` (every rank calls it): splits off the replica leaders, the world
  // ranks with world_rank % tp_size == 0. On the other ranks the channel is empty (!member()).
  RouteChannel(MPI_Comm world, int tp_size);
  // Waits for the sends still in flight (flush), then frees the communicator.
  ~RouteChannel();
  RouteChannel(const RouteChannel&) = delete;
  RouteChannel& operator=(const RouteChannel&) = delete;

  bool member() const { return comm_ != MPI_COMM_NULL; }
  int replica() const { return rank_; }  // this leader's replica
  int replicas() const { return size_; }

  // Starts sending `bytes` to replica `to`'s leader (0: world rank 0); returns at once.
  void send(int to, std::vector<uint8_t> bytes);
  // One message that has arrived, from anyone: true and its sender and bytes; false when none.
  bool poll(int* from, std::vector<uint8_t>* bytes);
  // Waits until every send has completed (its receiver has it, or MPI buffered it).
  void flush();

 private:
  void reap();
  struct Outgoing {
    std::vector<uint8_t> bytes;
    MPI_Request request = MPI_REQUEST_NULL;
  };
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = -1, size_ = 0;
  std::deque<Outgoing> sending_;
};

}  // namespace tessera::serve
