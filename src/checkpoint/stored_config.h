// The config stored in a weights file, for the apps that build a model to read it (generation,
// serving): one place for "which files can I load, and with what model".
#pragma once

#include <string>

#include "core/config.h"
#include "core/status.h"

namespace tessera::checkpoint {

// Collective over MPI_COMM_WORLD (any grid reads it; world rank 0 reads, all get it). The
// resolved config stored in `path` (a final model.h5, a step_<n>.h5, a converted or bf16 file),
// parsed as a config. Errors name the file and the fix: an llm.c model file or a Hugging Face
// safetensors model (names the tessera-ckpt convert command), a missing or unreadable file, an
// unsupported format version.
core::Result<core::Config> read_stored_config(const std::string& path);

}  // namespace tessera::checkpoint
