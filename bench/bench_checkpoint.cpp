// Checkpoint bandwidth: times write_checkpoint and read_checkpoint of a model with its AdamW
// state on a dp x tp grid (median of --reps, GB/s of the bytes in the file; the write includes
// its fsync), optionally with `dd` of the same bytes to the same directory after every
// repetition. --mode mpiio times raw MPI-IO of the same bytes instead (the ceiling without
// HDF5 and checksums). Usage:
//   mpirun -n 2 bench_checkpoint --dir /disk/dir --tp 2 --reps 5 --dd [--drop-caches]
#include <mpi.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "bench_util.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checksum.h"
#include "core/app.h"
#include "core/config.h"
#include "core/error.h"
#include "core/philox.h"
#include "core/threads.h"
#include "core/timer.h"
#include "models/gpt.h"
#include "optim/optimizer.h"
#include "parallel/process_grid.h"

using namespace tessera;

namespace {

namespace fs = std::filesystem;
using tessera::bench::median;

// ---- page cache, waiting, timing ----

// Writes back dirty pages and, when `drop` is set, empties the page cache (Linux, root), so the
// next read comes from the disk. World rank 0 only (the cache is the machine's).
core::Status settle_page_cache(bool drop) {
  ::sync();
  if (!drop) return core::Status::ok();
  std::ofstream knob("/proc/sys/vm/drop_caches");
  knob << "3\n";
  knob.flush();
  if (!knob) {
    return core::Status::error(
        "bench_checkpoint: cannot write 3 to /proc/sys/vm/drop_caches (not root, or a container "
        "that forbids it); run without --drop-caches and read the figures as page-cache reads");
  }
  return core::Status::ok();
}

// A barrier that sleeps instead of spinning, so ranks waiting for rank 0's dd or sync leave the
// cores to it (Open MPI's blocking calls busy-poll).
void quiet_barrier() {
  MPI_Request request;
  MPI_Ibarrier(MPI_COMM_WORLD, &request);
  int done = 0;
  while (MPI_Test(&request, &done, MPI_STATUS_IGNORE) == MPI_SUCCESS && !done) ::usleep(1000);
}

// Rank 0 runs `work` (a Status); every rank returns its verdict. Other ranks sleep meanwhile.
core::Status on_rank0(parallel::ProcessGrid& grid, const std::function<core::Status()>& work) {
  core::Status status;
  if (grid.world_rank() == 0) status = work();
  quiet_barrier();
  int ok = status.is_ok();
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (ok) return core::Status::ok();
  return grid.world_rank() == 0 ? status
                                : core::Status::error("bench_checkpoint: rank 0 failed (above)");
}

// Seconds since the timer started, on the slowest rank.
double slowest(const core::Timer& timer) {
  double s = timer.seconds();
  MPI_Allreduce(MPI_IN_PLACE, &s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return s;
}

// Runs a shell command on rank 0 and returns its wall time (process start to exit).
core::Status timed_shell(const std::string& command, double* seconds) {
  core::Timer timer;
  const int rc = std::system(command.c_str());
  *seconds = timer.seconds();
  if (rc != 0) {
    return core::Status::error("bench_checkpoint: '" + command + "' exited with " +
                               std::to_string(rc));
  }
  return core::Status::ok();
}

struct Dataset {
  std::string name;
  const core::Tensor* arena;
  int index;
};

std::vector<Dataset> datasets(const models::Gpt& model, const optim::AdamW& adamw) {
  const params::ParamSet& ps = model.param_set();
  std::vector<Dataset> out;
  for (int i = 0; i < ps.size(); ++i)
    out.push_back({"/model/" + ps.specs()[i].name, &model.weights(), i});
  for (int i = 0; i < ps.size(); ++i)
    out.push_back({"/optim/m/" + ps.specs()[i].name, &adamw.m(), i});
  for (int i = 0; i < ps.size(); ++i)
    out.push_back({"/optim/v/" + ps.specs()[i].name, &adamw.v(), i});
  return out;
}

// Whether this rank writes dataset d: dp replica 0, and tp rank 0 alone for a replicated one.
bool writes(const params::ParamSpec& spec, parallel::ProcessGrid& grid) {
  return grid.dp_rank() == 0 && (!spec.replicated() || grid.tp_rank() == 0);
}

// ---- raw MPI-IO of the same bytes (the ceiling without HDF5) ----

// The ranks of dp replica 0 write exactly as many bytes as they put into a checkpoint, one
// contiguous block per arena (weights, m, v), with MPI_File_write_at_all; then MPI_File_sync,
// close and an fsync on rank 0. Reads mirror it: every replica reads its replica-0 twin's blocks.
struct RawIo {
  int64_t floats = 0;      // per arena: this rank's (its replica-0 twin's) written count
  MPI_Offset offset = 0;   // byte offset of this rank's block within one arena's section
  MPI_Offset section = 0;  // bytes of one arena's section (all writers)
};

RawIo raw_layout(const params::ParamSet& ps, parallel::ProcessGrid& grid) {
  RawIo io;
  for (int i = 0; i < ps.size(); ++i) {
    if (!ps.specs()[i].replicated() || grid.tp_rank() == 0) io.floats += ps.local_numel(i);
  }
  std::vector<int64_t> counts(grid.world_size());
  MPI_Allgather(&io.floats, 1, MPI_INT64_T, counts.data(), 1, MPI_INT64_T, MPI_COMM_WORLD);
  int64_t before = 0, total = 0;
  for (int t = 0; t < grid.tp_size(); ++t) {  // world ranks 0..tp-1 are replica 0
    if (t < grid.tp_rank()) before += counts[t];
    total += counts[t];
  }
  io.offset = before * 4;
  io.section = total * 4;
  return io;
}

core::Status raw_write(const std::string& path, const RawIo& io,
                       const std::vector<const float*>& arenas, parallel::ProcessGrid& grid) {
  MPI_File fh;
  TESSERA_MPI_CHECK(MPI_File_open(MPI_COMM_WORLD, path.c_str(), MPI_MODE_CREATE | MPI_MODE_WRONLY,
                                  MPI_INFO_NULL, &fh),
                    "opening the raw MPI-IO file");
  const int count = grid.dp_rank() == 0 ? static_cast<int>(io.floats) : 0;
  for (size_t a = 0; a < arenas.size(); ++a) {
    TESSERA_MPI_CHECK(MPI_File_write_at_all(fh, a * io.section + io.offset, arenas[a], count,
                                            MPI_FLOAT, MPI_STATUS_IGNORE),
                      "raw MPI-IO write");
  }
  TESSERA_MPI_CHECK(MPI_File_sync(fh), "raw MPI-IO sync");
  TESSERA_MPI_CHECK(MPI_File_close(&fh), "raw MPI-IO close");
  MPI_Barrier(MPI_COMM_WORLD);
  core::Status synced;
  if (grid.world_rank() == 0) synced = checkpoint::sync_file(path);
  int ok = synced.is_ok();
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return ok ? core::Status::ok() : core::Status::error("bench_checkpoint: fsync failed");
}

core::Status raw_read(const std::string& path, const RawIo& io, const std::vector<float*>& arenas) {
  MPI_File fh;
  TESSERA_MPI_CHECK(
      MPI_File_open(MPI_COMM_WORLD, path.c_str(), MPI_MODE_RDONLY, MPI_INFO_NULL, &fh),
      "opening the raw MPI-IO file");
  for (size_t a = 0; a < arenas.size(); ++a) {
    TESSERA_MPI_CHECK(
        MPI_File_read_at_all(fh, a * io.section + io.offset, arenas[a], static_cast<int>(io.floats),
                             MPI_FLOAT, MPI_STATUS_IGNORE),
        "raw MPI-IO read");
  }
  TESSERA_MPI_CHECK(MPI_File_close(&fh), "raw MPI-IO close");
  return core::Status::ok();
}

}  // namespace

int main(int argc, char** argv) {
  return core::run_app("bench_checkpoint", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{"Tessera checkpoint write/read bandwidth on a dp x tp process grid"};
    std::string config_path = "configs/gpt2-124m.yaml", dir, mode = "tessera";
    std::string transfers_name = "independent";
    int tp = 1, reps = 5, threads = 1;
    bool drop_caches = false, keep = false, with_dd = false;
    app.add_option("--config", config_path, "model config (its model: section is used)");
    app.add_option("--dir", dir, "directory on the disk to measure (the files go there)")
        ->required();
    app.add_option("--tp", tp, "tensor-parallel size; dp = world size / tp");
    app.add_option("--reps", reps, "timed writes, then timed reads");
    app.add_option("--threads", threads, "threads per rank (checksums; 0: cores / ranks)");
    app.add_option("--mode", mode,
                   "tessera: write_checkpoint/read_checkpoint; mpiio: raw MPI-IO of the same "
                   "bytes (the ceiling without HDF5)")
        ->check(CLI::IsMember({"tessera", "mpiio"}));
    app.add_option("--transfers", transfers_name, "tessera: independent or collective transfers")
        ->check(CLI::IsMember({"independent", "collective"}));
    app.add_flag("--dd", with_dd,
                 "after every timed write (read), rank 0 times dd writing (reading) as many bytes "
                 "to <dir>/dd.bin, after the same cache settling");
    app.add_flag("--drop-caches", drop_caches,
                 "sync and drop the page cache before every write and read (root)");
    app.add_flag("--keep", keep, "leave the last checkpoint file in --dir");
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    if (reps < 1) {
      return core::Status::error("bench_checkpoint: --reps " + std::to_string(reps) +
                                 " must be >= 1");
    }
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
      return core::Status::error("bench_checkpoint: --dir '" + dir +
                                 "' is not a directory; create it on the disk to measure");
    }
    int world_size = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    const int64_t dp_guess = tp >= 1 && world_size % tp == 0 ? world_size / tp : 1;
    const int64_t T = 16;  // activations are not measured: the smallest useful step
    auto config = core::load_config(
        config_path, {"train.seq_len=" + std::to_string(T), "parallel.tp=" + std::to_string(tp),
                      "train.batch_size=" + std::to_string(dp_guess), "train.micro_batch_size=0"});
    if (!config) return config.status();
    TESSERA_RETURN_IF_ERROR(parallel::check_grid(*config, world_size));

    parallel::ProcessGrid grid(tp);
    const int nthreads = core::set_threads(threads, grid.local_size());
    models::Gpt model(config->model, 1, T, &grid.tp_comm());
    model.init_weights(1);
    optim::AdamW adamw(model.param_set());
    // One step on random tokens, so the moments hold real numbers rather than zeros.
    {
      std::vector<int32_t> tokens(T), targets(T);
      const auto V = static_cast<uint64_t>(config->model.vocab_size);
      for (int64_t i = 0; i < T; ++i) {
        tokens[i] = static_cast<int32_t>(core::philox_draw(7, 0, i)[0] % V);
        targets[i] = static_cast<int32_t>(core::philox_draw(7, 1, i)[0] % V);
      }
      model.zero_grad();
      model.forward(tokens.data(), targets.data(), 1, T);
      model.backward(1.0f / T);
      adamw.step(model.weights(), model.grads(), 1e-4, 1, config->optim);
    }

    // The checksum pass of a write (the slowest rank's), timed apart: the library hashes on a
    // worker thread while it writes and reads, and this says how much there is to hide.
    double checksum_s = 0;
    {
      const params::ParamSet& ps = model.param_set();
      const std::vector<Dataset> sets = datasets(model, adamw);
      core::Timer timer;
      for (const Dataset& d : sets) {
        const params::ParamSpec& spec = ps.specs()[d.index];
        if (!writes(spec, grid)) continue;
        checkpoint::shard_checksum(spec, ps.view(*d.arena, d.index).f32(), ps.local_numel(d.index),
                                   grid.tp_rank(), grid.tp_size());
      }
      checksum_s = slowest(timer);
    }

    const std::string path = (fs::path(dir) / "bench_checkpoint.h5").string();
    const std::string dd_path = (fs::path(dir) / "dd.bin").string();
    const auto remove = [](const std::string& p) {
      std::error_code rm_ec;
      fs::remove(p, rm_ec);
    };
    const auto settle = [&] { return settle_page_cache(drop_caches); };
    int64_t file_bytes = 0;
    // Rank 0: the size of the file just written (dd writes as many bytes).
    const auto learn_size = [&] {
      if (grid.world_rank() == 0) file_bytes = static_cast<int64_t>(fs::file_size(path));
      MPI_Bcast(&file_bytes, 1, MPI_INT64_T, 0, MPI_COMM_WORLD);
    };

    const RawIo raw = raw_layout(model.param_set(), grid);
    const std::vector<const float*> raw_out = {model.weights().f32(), adamw.m().f32(),
                                               adamw.v().f32()};
    const std::vector<float*> raw_in = {model.weights().f32(), adamw.m().f32(), adamw.v().f32()};
    const checkpoint::TrainState state{123, 4567, 1, 0, 89};
    const checkpoint::Transfers transfers = transfers_name == "collective"
                                                ? checkpoint::Transfers::kCollective
                                                : checkpoint::Transfers::kIndependent;
    const auto write_once = [&]() -> core::Status {
      if (mode == "tessera") {
        return checkpoint::write_checkpoint(path, model, &adamw, state, *config, grid, transfers);
      }
      return raw_write(path, raw, raw_out, grid);
    };
    const auto read_once = [&]() -> core::Status {
      if (mode == "tessera") {
        auto loaded = checkpoint::read_checkpoint(path, model, &adamw, grid, transfers);
        if (!loaded) return loaded.status();
        return *loaded == state ? core::Status::ok()
                                : core::Status::error("bench_checkpoint: read another state");
      }
      return raw_read(path, raw, raw_in);
    };

    const auto fresh_file = [&] {
      remove(path);
      return settle();
    };
    std::vector<double> write_s, read_s, dd_write_s, dd_read_s;
    for (int r = 0; r < reps; ++r) {
      TESSERA_RETURN_IF_ERROR(on_rank0(grid, fresh_file));
      MPI_Barrier(MPI_COMM_WORLD);
      core::Timer timer;
      TESSERA_RETURN_IF_ERROR(write_once());
      write_s.push_back(slowest(timer));
      if (r == 0) learn_size();
      if (!with_dd) continue;
      double s = 0;
      const auto dd_write = [&]() -> core::Status {
        remove(dd_path);
        TESSERA_RETURN_IF_ERROR(settle());
        return timed_shell("dd if=/dev/zero of='" + dd_path +
                               "' bs=4M count=" + std::to_string(file_bytes) +
                               " iflag=count_bytes conv=fsync status=none",
                           &s);
      };
      TESSERA_RETURN_IF_ERROR(on_rank0(grid, dd_write));
      dd_write_s.push_back(s);
    }
    for (int r = 0; r < reps; ++r) {
      TESSERA_RETURN_IF_ERROR(on_rank0(grid, settle));
      MPI_Barrier(MPI_COMM_WORLD);
      core::Timer timer;
      TESSERA_RETURN_IF_ERROR(read_once());
      read_s.push_back(slowest(timer));
      if (!with_dd) continue;
      double s = 0;
      const auto dd_read = [&]() -> core::Status {
        TESSERA_RETURN_IF_ERROR(settle());
        return timed_shell("dd if='" + dd_path + "' of=/dev/null bs=4M status=none", &s);
      };
      TESSERA_RETURN_IF_ERROR(on_rank0(grid, dd_read));
      dd_read_s.push_back(s);
    }
    if (grid.world_rank() == 0) {
      remove(dd_path);
      if (!keep) remove(path);
    }

    const double gb = static_cast<double>(file_bytes) / 1e9;
    const char* io_component = std::getenv("OMPI_MCA_io");
    nlohmann::json out = {{"mode", mode},
                          {"transfers", mode == "tessera" ? transfers_name : "collective"},
                          {"config", config_path},
                          {"dir", dir},
                          {"world", grid.world_size()},
                          {"dp", grid.dp_size()},
                          {"tp", grid.tp_size()},
                          {"threads", nthreads},
                          {"reps", reps},
                          {"drop_caches", drop_caches},
                          {"mpi_io", io_component != nullptr ? io_component : "default"},
                          {"file_bytes", file_bytes},
                          {"write_s", write_s},
                          {"read_s", read_s},
                          {"write_gbps", gb / median(write_s)},
                          {"read_gbps", gb / median(read_s)},
                          {"checksum_s", checksum_s}};
    if (with_dd) {
      out["dd_write_s"] = dd_write_s;
      out["dd_read_s"] = dd_read_s;
      out["dd_write_gbps"] = gb / median(dd_write_s);
      out["dd_read_gbps"] = gb / median(dd_read_s);
      out["write_vs_dd"] = median(dd_write_s) / median(write_s);
      out["read_vs_dd"] = median(dd_read_s) / median(read_s);
      // Each repetition's Tessera run against the dd run right after it: the disk's speed drifts
      // by 2-3x over seconds on a shared VM, and a pair shares more of it than two medians do.
      std::vector<double> write_pairs, read_pairs;
      for (size_t r = 0; r < write_s.size(); ++r) write_pairs.push_back(dd_write_s[r] / write_s[r]);
      for (size_t r = 0; r < read_s.size(); ++r) read_pairs.push_back(dd_read_s[r] / read_s[r]);
      out["write_vs_dd_paired"] = median(write_pairs);
      out["read_vs_dd_paired"] = median(read_pairs);
    }
    if (grid.world_rank() == 0) {
      std::printf("%s\n", out.dump().c_str());
      std::fflush(stdout);
    }
    return 0;
  });
}
