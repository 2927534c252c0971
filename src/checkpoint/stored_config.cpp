// read_stored_config: detect the file's kind, then read and parse its config_yaml.
#include "checkpoint/stored_config.h"

#include <mpi.h>

#include "checkpoint/checkpoint.h"
#include "checkpoint/convert.h"
#include "parallel/process_grid.h"

namespace tessera::checkpoint {

core::Result<core::Config> read_stored_config(const std::string& path) {
  auto kind = detect_file_kind(path);
  if (kind && (*kind == FileKind::kLlmc || *kind == FileKind::kSafetensors)) {
    return core::Status::error(
        "'" + path + "' is " +
        (*kind == FileKind::kLlmc ? "an llm.c model file" : "a Hugging Face safetensors model") +
        "; convert it first: tessera-ckpt convert " + path + " model.h5");
  }
  parallel::ProcessGrid probe(MPI_COMM_WORLD, 1);  // any grid reads the stored config
  auto text = read_checkpoint_config(path, probe);
  if (!text) return text.status();
  return core::parse_config(*text, path + " (stored config)", {});
}

}  // namespace tessera::checkpoint
