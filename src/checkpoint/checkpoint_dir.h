// A checkpoint directory: `dir/step_<8 digits>.h5` files and `dir/latest`, a text file naming the
// newest complete one. `latest` moves only after a checkpoint's own rename (write_checkpoint),
// always by write-temp + fsync + rename, so it never names a partial file; older files beyond
// the newest `keep` are deleted after it moves. Plain file-system calls: no MPI here.
#pragma once

#include <cstdint>
#include <string>

#include "core/status.h"

namespace tessera::checkpoint {

// "dir/step_00000042.h5" (at least 8 digits; more when the step needs them).
std::string checkpoint_path(const std::string& dir, int64_t step);

// Points `dir/latest` at `path` (stored relative to dir when path lies in dir, else absolute),
// atomically, then deletes every `step_<n>.h5` in dir except the newest `keep` (the published
// one is always kept), and leftover `step_<n>.h5.tmp` files (crashed writes) of steps below the
// published one. Files of other names are left alone. Call it on one rank (world rank 0) after
// write_checkpoint returned OK on every rank. Errors: path missing, keep < 1, latest not
// writable. A file that cannot be deleted is a warning, not an error (latest has moved).
core::Status publish_latest(const std::string& dir, const std::string& path, int keep);

// spec "latest": the file `dir/latest` names (an error naming dir when `latest` is absent or
// names a file that no longer exists); any other spec is a checkpoint path, which must exist.
// Any rank may call it; it only reads.
core::Result<std::string> resolve_checkpoint(const std::string& dir, const std::string& spec);

// Durability helpers (also used by write_checkpoint): fsync of a file's data, and of a directory
// (so a rename in it survives a crash; file systems that cannot sync a directory are accepted).
core::Status sync_file(const std::string& path);
core::Status sync_directory(const std::string& dir);

}  // namespace tessera::checkpoint
