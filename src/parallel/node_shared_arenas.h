// NodeSharedArenas: arenas that every rank of a node-local communicator can read and write, so
// the data-parallel exchange of ZeRO-1 on one machine is plain loads and stores instead of MPI
// copies (parallel.node_shared; docs/DESIGN.md "Data parallel").
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "parallel/communicator.h"

namespace tessera::parallel {

// `count` f32 arenas of `numel` elements for each rank of `comm`, in one shared mapping: rank q's
// arena k is visible to every rank of comm. The memory is an anonymous memory file (memfd) made
// by comm's rank 0; the others open it through /proc/<pid>/fd, so it is not limited by the size
// of /dev/shm and is released, without any collective, when the last mapping goes (the owner's
// tensors keep it alive). Zeroed, each arena 64-byte (in fact page) aligned.
//
// Synchronisation is the caller's: the ranks order their reads and writes with collectives on
// comm (a barrier or any collective that every rank enters after its writes and before the
// others' reads); MPI's collectives are full memory barriers on one node.
class NodeSharedArenas : public std::enable_shared_from_this<NodeSharedArenas> {
 public:
  // Collective over comm. Null (and the reason in *why) when comm's ranks are not all on one
  // node (MPI_COMM_TYPE_SHARED) or the memory cannot be shared here; every rank gets the same
  // answer. Never throws for those reasons; an MPI failure throws as usual.
  static std::shared_ptr<NodeSharedArenas> create(MPI_Comm comm, int64_t numel, int count,
                                                  std::string* why);
  // The same over a Communicator: null (with *why) unless it is an MpiCommunicator.
  static std::shared_ptr<NodeSharedArenas> create(Communicator& comm, int64_t numel, int count,
                                                  std::string* why);
  ~NodeSharedArenas();
  NodeSharedArenas(const NodeSharedArenas&) = delete;
  NodeSharedArenas& operator=(const NodeSharedArenas&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int64_t numel() const { return numel_; }
  // This rank's arena k as an f32 tensor of numel elements; it keeps the mapping alive.
  core::Tensor arena(int k);
  // Rank q's arena k (q may be this rank).
  float* peer(int q, int k) const;
  // Which of this rank's arenas starts at `data`; -1 for none.
  int index_of(const void* data) const;

 private:
  NodeSharedArenas() = default;
  char* base_ = nullptr;
  size_t mapped_bytes_ = 0;
  size_t arena_bytes_ = 0;  // one arena, rounded up to whole pages
  int64_t numel_ = 0;
  int count_ = 0;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace tessera::parallel
