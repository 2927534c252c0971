// ProcessGrid: the dp x tp layout of MPI_COMM_WORLD. Tensor-parallel groups are neighbouring
// ranks (so a tp group sits on one node); data-parallel groups join equal tp ranks.
//   world_rank = dp_rank * tp_size + tp_rank
// Rank map for 8 ranks, tp = 2 (dp = 4):
//   tp groups: [0 1] [2 3] [4 5] [6 7]        dp groups: [0 2 4 6] [1 3 5 7]
//   rank:      0  1  2  3  4  5  6  7
//   (dp, tp): 00 01 10 11 20 21 30 31
// The grid is passed explicitly to whatever needs it; there is no global instance.
#pragma once

#include <memory>

#include "core/config.h"
#include "core/status.h"
#include "parallel/communicator.h"

namespace tessera::backends {
class Backend;
}

namespace tessera::parallel {

// Checks that need no communication and that every rank makes alike, before any collective:
// world_size % tp, n_head % tp, n_embd % tp, padded vocabulary % tp, batch_size % (dp x micro).
// Each message names the number to change.
core::Status check_grid(const core::Config& config, int world_size);

// The grid checks of an inference app (generation, serving) given `--tp tp` on world_size ranks:
// tp divides the ranks (else "--tp N does not divide ..."), then check_grid on the model with a
// batch every dp size divides. Every rank can make it before the first collective.
core::Status check_inference_grid(const core::Config& config, int tp, int world_size);

class ProcessGrid {
 public:
  // Collective over MPI_COMM_WORLD. Precondition: check_grid passed for tp_size.
  // Also sets the log identity (rank prefix) of this process.
  explicit ProcessGrid(int tp_size);
  // The same over `world` instead of MPI_COMM_WORLD (tests: MPI_COMM_SELF gives a 1 x 1 grid
  // inside a larger job). Does not set the log identity.
  ProcessGrid(MPI_Comm world, int tp_size);
  ProcessGrid(const ProcessGrid&) = delete;
  ProcessGrid& operator=(const ProcessGrid&) = delete;

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  int dp_rank() const { return world_rank_ / tp_size_; }
  int dp_size() const { return world_size_ / tp_size_; }
  int tp_rank() const { return world_rank_ % tp_size_; }
  int tp_size() const { return tp_size_; }
  // Ranks on this node and this rank's index among them (MPI shared-memory split; agrees with
  // OMPI_COMM_WORLD_LOCAL_RANK / SLURM_LOCALID).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }

  // Host-memory (MPI) communicators over the world, the tp group and the dp group.
  Communicator& world_comm() { return *world_comm_; }
  Communicator& tp_comm() { return *tp_comm_; }
  Communicator& dp_comm() { return *dp_comm_; }

  // For a run whose model lives on `backend`'s device: on a device backend, makes NCCL
  // communicators over the tp and dp groups of more than one rank, ordered after the backend's
  // stream (collective over the world); on the CPU backend nothing. Call once, before building
  // the model.
  void attach_device(backends::Backend& backend);
  // The communicators for buffers on the attached device: NCCL after attach_device on a device
  // backend, else the MPI ones above.
  Communicator& device_tp_comm() { return device_tp_comm_ ? *device_tp_comm_ : *tp_comm_; }
  Communicator& device_dp_comm() { return device_dp_comm_ ? *device_dp_comm_ : *dp_comm_; }

 private:
  int world_rank_ = 0, world_size_ = 1, tp_size_ = 1, local_rank_ = 0, local_size_ = 1;
  std::unique_ptr<MpiCommunicator> world_comm_, tp_comm_, dp_comm_;
  std::unique_ptr<Communicator> device_tp_comm_, device_dp_comm_;
};

}  // namespace tessera::parallel
