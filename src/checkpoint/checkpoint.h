// Checkpoints: one HDF5 file per step, written and read by every rank with parallel HDF5 over
// MPI-IO (docs/CHECKPOINT-FORMAT.md). Every parameter and AdamW moment is a dataset of its
// global shape; each rank transfers only its own hyperslab, so any grid loads what any grid
// wrote and no rank ever holds the whole model.
#pragma once

#include <cstdint>
#include <string>

#include "checkpoint/checkpoint_dir.h"
#include "core/config.h"
#include "core/status.h"

namespace tessera::models {
class Gpt;
}
namespace tessera::optim {
class AdamW;
}
namespace tessera::parallel {
class ProcessGrid;
}

namespace tessera::checkpoint {

// The format version this build writes and the only one it reads.
constexpr int kFormatVersion = 1;

// How ranks move their hyperslabs through MPI-IO (config key checkpoint.transfers). Metadata
// calls (create, open, attributes) are collective either way, and the file is the same.
enum class Transfers {
  kIndependent,  // each rank alone when it is ready; ranks with nothing to move stay out
  kCollective,   // MPI-IO collective (two-phase) calls; every rank joins, some with no data
};
// "independent" or "collective" (checked by Config::validate) to a mode.
Transfers transfers_from_config(const core::Config& config);

// Where training stands, saved as root attributes. `seed` is the whole RNG state: every draw is
// a counter-based Philox function of (seed, stream, step, index). The data cursor is the same on
// every dp rank (all walk one global order), so one value is stored.
struct TrainState {
  int64_t step = 0;
  int64_t tokens_seen = 0;
  uint64_t seed = 0;
  int64_t data_epoch = 0;
  int64_t data_position = 0;
  bool operator==(const TrainState&) const = default;
};

// Collective over grid.world_comm(). Writes `path` as `path + ".tmp"`: /model/<name> for every
// parameter, /optim/m/<name> and /optim/v/<name> when adamw != nullptr, the root attributes
// (format_version, step, tokens_seen, seed, data_epoch, data_position, config_yaml, grid_dp,
// grid_tp) and a "checksum" attribute (uint64) on each dataset; then flushes (MPI_File_sync on
// every rank), closes, fsyncs and renames it to `path` (world rank 0) and fsyncs the directory.
// Only dp replica 0 writes data (tp rank 0 alone for replicated parameters); with collective
// transfers every other rank joins each call with an empty selection. Checksums are hashed on a
// worker thread while the data are written, and stored after the last dataset. Preconditions: model
// (and adamw) are this rank's shards for `grid`. Errors (same on every rank): the directory is
// missing or not writable; its file system has too little room left for the file's metadata
// (checked before and after the data); a data write failed on any rank (a full disk: "no space
// left on device", naming the file, the dataset and the fix); sync or rename failed. After a
// failed write every rank closes the file and the `.tmp` file is deleted; `path` is never
// touched. An existing `path` is replaced (on success). Fault injection for tests: with
// TESSERA_CKPT_CRASH_AFTER=n in the environment (of every rank) it throws tessera::Error once n
// datasets are written (or before the rename when the file holds fewer), leaving only the `.tmp`
// file. A sharded (ZeRO-1) adamw: the file holds the global moments all the same; each moment
// dataset is gathered from its dp owners onto dp replica 0 just before it is written, one
// parameter at a time (a transient of the largest parameter's shard, never of all moments).
core::Status write_checkpoint(const std::string& path, const models::Gpt& model,
                              const optim::AdamW* adamw, const TrainState& state,
                              const core::Config& config, parallel::ProcessGrid& grid,
                              Transfers transfers = Transfers::kIndependent);

// Collective over grid.world_comm(). Loads this rank's hyperslab of every /model dataset into
// model.weights() (and of /optim/m, /optim/v into adamw's moments when adamw != nullptr), and
// returns the stored TrainState. The dp replicas share the reading: each dataset is read and
// verified by one replica (balanced by bytes) and broadcast over dp while the next ones are
// read, so the file is read once whatever dp is. Checks, with the same verdict on every rank (an
// error anywhere is reduced over the world, so all ranks fail alike and none hangs): the file
// exists and opens, its format version is kFormatVersion, every dataset exists with the global
// shape the model expects and float32 type and /model holds no others (a mismatch names the
// dataset, both shapes and the model config keys that differ), optimizer state is present when
// asked for, and every dataset's checksum (its reading replica sums its tp ranks' parts; a mismatch
// names the dataset). On error the model's and adamw's contents are unspecified. A sharded
// (ZeRO-1) adamw takes its pieces of each moment dataset as it arrives (one parameter's shard
// at a time), whatever optim.zero and grid wrote the file.
core::Result<TrainState> read_checkpoint(const std::string& path, models::Gpt& model,
                                         optim::AdamW* adamw, parallel::ProcessGrid& grid,
                                         Transfers transfers = Transfers::kIndependent);

// Collective over grid.world_comm(). The stored config_yaml (to build the model before
// read_checkpoint), read by world rank 0 and broadcast; checks existence and format version.
core::Result<std::string> read_checkpoint_config(const std::string& path,
                                                 parallel::ProcessGrid& grid);

}  // namespace tessera::checkpoint
