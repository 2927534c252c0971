// INTERIM weights file (until the sharded HDF5 checkpoints of the checkpoint issue): the
// resolved config as YAML text and every parameter at its global shape, float32, little-endian.
//   u32 magic 0x57535254 ("TSRW"), u32 version 1, u64 yaml_bytes, yaml text, u32 param_count,
//   per parameter: u32 name_bytes, name, u32 ndim, i64 dims[ndim], f32 data (row-major).
// Written under a temporary name and renamed, so a crash never leaves a half file at `path`.
#pragma once

#include <string>

#include "core/config.h"
#include "core/status.h"
#include "models/gpt.h"

namespace tessera::checkpoint {

// With tp > 1 a collective over the model's tp_comm: shards are gathered to tp rank 0, which
// writes the whole tensors. Call it on one dp replica.
core::Status save_interim_weights(const std::string& path, const models::Gpt& model,
                                  const core::Config& config);
// Reads the config stored in the file (to size the model before loading).
core::Result<core::Config> read_interim_config(const std::string& path);
// Loads this rank's shard of every parameter of `model` from `path` (any tp); names and global
// shapes must match.
core::Status load_interim_weights(const std::string& path, models::Gpt& model);

}  // namespace tessera::checkpoint
