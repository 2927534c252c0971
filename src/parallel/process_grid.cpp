// ProcessGrid: splits MPI_COMM_WORLD into tp groups of neighbouring ranks and dp groups of equal
// tp rank; check_grid rejects shapes the grid cannot hold before any collective.
#include "parallel/process_grid.h"

#include <mpi.h>

#include <string>

#include "backends/backend.h"
#include "core/error.h"
#include "core/log.h"
#include "parallel/nccl_communicator.h"

namespace tessera::parallel {

core::Status check_grid(const core::Config& config, int world_size) {
  const int tp = config.parallel.tp;
  const std::string tp_text = std::to_string(tp);
  if (tp < 1) {
    return core::Status::error("grid: parallel.tp " + tp_text +
                               " must be at least 1; use 1 for no tensor parallelism");
  }
  if (world_size < 1 || world_size % tp != 0) {
    return core::Status::error(
        "grid: world size " + std::to_string(world_size) + " is not divisible by parallel.tp " +
        tp_text + "; run on a multiple of " + tp_text + " ranks or change parallel.tp");
  }
  const core::ModelConfig& model = config.model;
  if (model.n_head % tp != 0) {
    return core::Status::error("grid: model.n_head " + std::to_string(model.n_head) +
                               " is not divisible by parallel.tp " + tp_text +
                               "; each tp rank holds n_head / tp heads: change parallel.tp to a "
                               "divisor of model.n_head, or change model.n_head");
  }
  if (model.n_embd % tp != 0) {
    return core::Status::error("grid: model.n_embd " + std::to_string(model.n_embd) +
                               " is not divisible by parallel.tp " + tp_text +
                               "; change parallel.tp to a divisor of model.n_embd, or change "
                               "model.n_embd");
  }
  const int Vp = model.padded_vocab_size();
  if (Vp % tp != 0) {
    return core::Status::error(
        "grid: model.vocab_size " + std::to_string(model.vocab_size) +
        " padded to model.pad_vocab_to " + std::to_string(model.pad_vocab_to) +
        " (= " + std::to_string(Vp) + ") is not divisible by parallel.tp " + tp_text +
        "; change model.pad_vocab_to to a multiple of " + tp_text + ", or change parallel.tp");
  }
  if (config.parallel.sequence_parallel && config.train.seq_len % tp != 0) {
    return core::Status::error(
        "grid: train.seq_len " + std::to_string(config.train.seq_len) +
        " is not divisible by parallel.tp " + tp_text +
        " with parallel.sequence_parallel true (each tp rank holds seq_len / tp rows of every "
        "sequence); change train.seq_len to a multiple of " +
        tp_text + ", or set parallel.sequence_parallel=false");
  }
  const int dp = world_size / tp;
  const int batch = config.train.batch_size;
  const int micro = config.train.micro_batch_size;
  const std::string dp_text = "dp " + std::to_string(dp) + " (world size " +
                              std::to_string(world_size) + " / parallel.tp " + tp_text + ")";
  if (micro == 0) {
    if (batch % dp != 0) {
      return core::Status::error(
          "grid: train.batch_size " + std::to_string(batch) + " is not divisible by " + dp_text +
          " with train.micro_batch_size 0 (= batch_size / dp); change train.batch_size to a "
          "multiple of " +
          std::to_string(dp) + ", or run on another number of ranks");
    }
  } else if (batch % (dp * micro) != 0) {
    return core::Status::error("grid: train.batch_size " + std::to_string(batch) +
                               " is not divisible by " + dp_text + " x train.micro_batch_size " +
                               std::to_string(micro) + " (= " + std::to_string(dp * micro) +
                               "); change train.batch_size to a multiple of " +
                               std::to_string(dp * micro) + ", or change train.micro_batch_size");
  }
  return core::Status::ok();
}

core::Status check_inference_grid(const core::Config& config, int tp, int world_size) {
  if (tp < 1 || world_size % tp != 0) {
    return core::Status::error("--tp " + std::to_string(tp) + " does not divide the " +
                               std::to_string(world_size) + " ranks; pick a divisor");
  }
  core::Config grid_config = config;
  grid_config.parallel.tp = tp;
  grid_config.parallel.sequence_parallel = false;  // a training option: decode never shards
  grid_config.train.batch_size = world_size / tp;
  grid_config.train.micro_batch_size = 1;
  return check_grid(grid_config, world_size);
}

ProcessGrid::ProcessGrid(int tp_size) : ProcessGrid(MPI_COMM_WORLD, tp_size) {
  core::set_log_identity(world_rank_, dp_rank(), tp_rank());
}

ProcessGrid::ProcessGrid(MPI_Comm world, int tp_size) : tp_size_(tp_size) {
  TESSERA_MPI_CHECK(MPI_Comm_rank(world, &world_rank_), "reading the world rank");
  TESSERA_MPI_CHECK(MPI_Comm_size(world, &world_size_), "reading the world size");
  // Invariant: check_grid ran first, so this only fires on a caller's bug.
  TESSERA_ASSERT(tp_size_ >= 1 && world_size_ % tp_size_ == 0,
                 "building the process grid (world size must be a multiple of parallel.tp)");

  world_comm_ = std::make_unique<MpiCommunicator>(world, "world");
  // tp group: the tp_size neighbouring ranks sharing dp_rank; dp group: ranks sharing tp_rank.
  // key = world_rank keeps each group's ranks in world order, so tp_comm rank == tp_rank and
  // dp_comm rank == dp_rank.
  MPI_Comm tp_split = MPI_COMM_NULL, dp_split = MPI_COMM_NULL, node_split = MPI_COMM_NULL;
  TESSERA_MPI_CHECK(MPI_Comm_split(world, dp_rank(), world_rank_, &tp_split),
                    "splitting the world into tp groups");
  TESSERA_MPI_CHECK(MPI_Comm_split(world, tp_rank(), world_rank_, &dp_split),
                    "splitting the world into dp groups");
  tp_comm_ = std::make_unique<MpiCommunicator>(tp_split, "tp");
  dp_comm_ = std::make_unique<MpiCommunicator>(dp_split, "dp");
  TESSERA_MPI_CHECK(MPI_Comm_free(&tp_split), "freeing the tp split");
  TESSERA_MPI_CHECK(MPI_Comm_free(&dp_split), "freeing the dp split");
  TESSERA_ASSERT(tp_comm_->rank() == tp_rank() && tp_comm_->size() == tp_size_,
                 "checking the tp communicator against the rank map");
  TESSERA_ASSERT(dp_comm_->rank() == dp_rank() && dp_comm_->size() == dp_size(),
                 "checking the dp communicator against the rank map");

  TESSERA_MPI_CHECK(
      MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, world_rank_, MPI_INFO_NULL, &node_split),
      "finding the ranks on this node");
  TESSERA_MPI_CHECK(MPI_Comm_rank(node_split, &local_rank_), "reading the node-local rank");
  TESSERA_MPI_CHECK(MPI_Comm_size(node_split, &local_size_), "reading the node-local size");
  TESSERA_MPI_CHECK(MPI_Comm_free(&node_split), "freeing the node split");
}

void ProcessGrid::attach_device(backends::Backend& backend) {
  if (backend.device() == core::Device::kCpu) return;
  // A group of one needs no NCCL: every collective over it is a no-op that touches no memory
  // (MpiCommunicator returns at once), so the MPI one serves device buffers too.
  if (tp_size_ > 1) {
    device_tp_comm_ = make_nccl_communicator(tp_comm_->comm(), "tp", backend.stream());
  }
  if (dp_size() > 1) {
    device_dp_comm_ = make_nccl_communicator(dp_comm_->comm(), "dp", backend.stream());
  }
}

}  // namespace tessera::parallel
