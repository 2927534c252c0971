// Parallel HDF5 checkpoints: collective hyperslab writes from one dp replica, collective
// hyperslab reads on every rank, layout-independent checksums; see checkpoint.h and
// docs/CHECKPOINT-FORMAT.md.
#include "checkpoint/checkpoint.h"

#include <hdf5.h>
#include <mpi.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "backends/backend.h"
#include "checkpoint/checksum.h"
#include "checkpoint/checksum_worker.h"
#include "checkpoint/h5_util.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/tensor.h"
#include "models/gpt.h"
#include "optim/optimizer.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"
#include "parallel/watchdog.h"

namespace tessera::checkpoint {
namespace {

namespace fs = std::filesystem;

MPI_Comm mpi_comm(parallel::Communicator& comm) {
  auto* mpi = dynamic_cast<parallel::MpiCommunicator*>(&comm);
  TESSERA_ASSERT(mpi != nullptr, "checkpoint I/O needs MPI communicators (MPI-IO)");
  return mpi->comm();
}

// Collective over comm: every rank returns the status of the lowest rank that failed (OK when
// none did), so all ranks take the same branch after it.
core::Status agree(const core::Status& local, MPI_Comm comm) {
  parallel::CollectiveScope watch("a checkpoint's status agreement", "world");
  int rank = 0, size = 1;
  TESSERA_MPI_CHECK(MPI_Comm_rank(comm, &rank), "agreeing on a checkpoint status");
  TESSERA_MPI_CHECK(MPI_Comm_size(comm, &size), "agreeing on a checkpoint status");
  const int mine = local.is_ok() ? size : rank;
  int first = size;
  TESSERA_MPI_CHECK(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm),
                    "agreeing on a checkpoint status");
  if (first == size) return core::Status::ok();
  std::string message = rank == first ? local.message() : std::string();
  uint64_t length = message.size();
  TESSERA_MPI_CHECK(MPI_Bcast(&length, 1, MPI_UINT64_T, first, comm),
                    "broadcasting a checkpoint error");
  message.resize(length);
  TESSERA_MPI_CHECK(MPI_Bcast(message.data(), static_cast<int>(length), MPI_CHAR, first, comm),
                    "broadcasting a checkpoint error");
  return core::Status::error(message);
}

// Collective over comm: an error on every rank when the ranks were given different paths (a
// collective open of different files would hang or corrupt), naming world rank 0's path.
core::Status agree_on_path(const std::string& path, MPI_Comm comm, const char* what) {
  parallel::CollectiveScope watch("a checkpoint's path comparison", "world");
  uint64_t h = 1469598103934665603ull;  // FNV-1a 64 of the path
  for (unsigned char c : path) h = (h ^ c) * 1099511628211ull;
  uint64_t lo = h, hi = h;
  TESSERA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, comm),
                    "comparing checkpoint paths across ranks");
  TESSERA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, comm),
                    "comparing checkpoint paths across ranks");
  if (lo == hi) return core::Status::ok();
  std::string first = path;
  uint64_t length = first.size();
  TESSERA_MPI_CHECK(MPI_Bcast(&length, 1, MPI_UINT64_T, 0, comm), "broadcasting a path");
  first.resize(length);
  TESSERA_MPI_CHECK(MPI_Bcast(first.data(), static_cast<int>(length), MPI_CHAR, 0, comm),
                    "broadcasting a path");
  return core::Status::error(
      std::string(what) + ": the ranks were given different paths (rank 0: '" + first +
      "', this rank: '" + path + "'); every rank must use the same train.out_dir / checkpoint.dir");
}

// One dataset of the file: its path and the arena (weights or a moment twin) whose view `index`
// holds this rank's shard of it; or, for a sharded (ZeRO-1) optimizer, no arena and `moment` 0
// (m) or 1 (v): the shard is spread over the dp ranks' pieces and moves through a staging
// buffer, one parameter at a time (gather_owned / AdamW::copy_owned_in).
struct Dataset {
  std::string name;
  const core::Tensor* arena;
  int index;
  int moment = -1;
};

// The arenas the datasets move through, in host memory: on the CPU backend the model's and the
// optimizer's own; on a device backend host copies, filled from the device before a write
// (`fill`) and copied back to it after a read (to_device).
struct HostArenas {
  const core::Tensor* weights = nullptr;
  const core::Tensor* m = nullptr;  // null without optimizer state
  const core::Tensor* v = nullptr;
  bool sharded_moments = false;  // a ZeRO-1 optimizer: m and v null, moments staged per dataset
  core::Tensor staged_weights, staged_m, staged_v;  // device backends only

  HostArenas(const models::Gpt& model, const optim::AdamW* adamw, bool fill)
      : backend_(model.backend()), model_weights_(&model.weights()) {
    weights = &model.weights();
    if (adamw != nullptr && adamw->sharded()) {
      TESSERA_ASSERT(backend_.device() == core::Device::kCpu,
                     "moving a sharded optimizer's moments (optim.zero 1 runs on host arenas)");
      sharded_moments = true;
    } else if (adamw != nullptr) {
      m = &adamw->m();
      v = &adamw->v();
      model_m_ = &adamw->m();
      model_v_ = &adamw->v();
    }
    if (backend_.device() == core::Device::kCpu) return;
    staged_ = true;
    auto stage = [&](const core::Tensor* device, core::Tensor& host) -> const core::Tensor* {
      if (device == nullptr) return nullptr;
      host = core::Tensor::zeros(device->shape());
      if (fill) backend_.copy_to_host(host.raw(), device->raw(), device->bytes());
      return &host;
    };
    weights = stage(weights, staged_weights);
    m = stage(m, staged_m);
    v = stage(v, staged_v);
  }
  // After a read: the host copies become the device arenas' contents.
  void to_device() {
    if (!staged_) return;
    backend_.copy_to_device(model_weights_->raw(), staged_weights.raw(), staged_weights.bytes());
    if (model_m_ != nullptr) {
      backend_.copy_to_device(model_m_->raw(), staged_m.raw(), staged_m.bytes());
      backend_.copy_to_device(model_v_->raw(), staged_v.raw(), staged_v.bytes());
    }
  }

 private:
  backends::Backend& backend_;
  const core::Tensor* model_weights_;
  const core::Tensor* model_m_ = nullptr;
  const core::Tensor* model_v_ = nullptr;
  bool staged_ = false;
};

std::vector<Dataset> datasets(const params::ParamSet& ps, const HostArenas& arenas) {
  std::vector<Dataset> out;
  for (int i = 0; i < ps.size(); ++i) {
    out.push_back({"/model/" + ps.specs()[i].name, arenas.weights, i});
  }
  if (arenas.m != nullptr || arenas.sharded_moments) {
    const int moment = arenas.sharded_moments ? 0 : -1;
    for (int i = 0; i < ps.size(); ++i) {
      out.push_back({"/optim/m/" + ps.specs()[i].name, arenas.m, i, moment});
    }
    for (int i = 0; i < ps.size(); ++i) {
      out.push_back({"/optim/v/" + ps.specs()[i].name, arenas.v, i, moment < 0 ? -1 : 1});
    }
  }
  return out;
}

// MPI calls take int counts: n floats go in pieces of at most 2^30.
constexpr int64_t kMpiPiece = int64_t{1} << 30;

// ZeRO-1, for a write. Collective over dp: dp rank 0's `staging` becomes the whole of this tp
// rank's shard of moment d (the other ranks' is unspecified). Each rank puts its pieces into
// zeros and the bits are OR-ed over dp onto rank 0: every element has exactly one owner, so the
// result is the owners' bits exactly, and no rank ever holds more than one parameter's moment
// beyond its own pieces.
const float* gather_owned(const optim::AdamW& adamw, const Dataset& d, int64_t n, MPI_Comm dp,
                          std::vector<float>* staging) {
  staging->assign(static_cast<size_t>(n), 0.0f);
  adamw.copy_owned_out(d.index, d.moment, staging->data());
  int dp_rank = 0;
  TESSERA_MPI_CHECK(MPI_Comm_rank(dp, &dp_rank), "reading the dp rank");
  parallel::CollectiveScope watch("gathering a sharded moment for a checkpoint write", "dp");
  for (int64_t at = 0; at < n; at += kMpiPiece) {
    const int count = static_cast<int>(std::min(kMpiPiece, n - at));
    uint32_t* bits = reinterpret_cast<uint32_t*>(staging->data() + at);
    TESSERA_MPI_CHECK(
        MPI_Reduce(dp_rank == 0 ? MPI_IN_PLACE : bits, bits, count, MPI_UINT32_T, MPI_BOR, 0, dp),
        "gathering a sharded AdamW moment over dp for a checkpoint write");
  }
  return staging->data();
}

// Selects tp_rank's shard of `spec` in `space` (the dataset's global dataspace): all of it when
// replicated, else for each of the split_parts blocks of the split dim the rank's slice of that
// block, joined with H5S_SELECT_OR. HDF5 pairs memory elements with the selection in row-major
// order of the file dataspace, which is the shard's local layout (part after part; row-parallel
// weights: each row's column slice in turn).
void select_shard(hid_t space, const params::ParamSpec& spec, int tp_rank, int tp_size) {
  if (spec.replicated() || tp_size == 1) {
    TESSERA_H5_CHECK(H5Sselect_all(space), "selecting a whole replicated dataset");
    return;
  }
  const int sd = spec.split_dim;
  std::vector<hsize_t> start(spec.global_shape.size(), 0);
  std::vector<hsize_t> count(spec.global_shape.begin(), spec.global_shape.end());
  const hsize_t block_local = spec.global_shape[sd] / (spec.split_parts * tp_size);
  const hsize_t block_global = block_local * tp_size;
  for (int part = 0; part < spec.split_parts; ++part) {
    start[sd] = part * block_global + tp_rank * block_local;
    count[sd] = block_local;
    TESSERA_H5_CHECK(H5Sselect_hyperslab(space, part == 0 ? H5S_SELECT_SET : H5S_SELECT_OR,
                                         start.data(), nullptr, count.data(), nullptr),
                     "selecting a tp shard's hyperslab");
  }
}

std::vector<hsize_t> dims_of(const core::Shape& shape) {
  return std::vector<hsize_t>(shape.begin(), shape.end());
}

std::string hex64(uint64_t v) {
  char text[24];
  std::snprintf(text, sizeof(text), "0x%016llx", static_cast<unsigned long long>(v));
  return text;
}

// The model config keys whose values differ between the stored config text and `m`, e.g.
// "model.n_embd 256 in the checkpoint, 128 in this model"; empty when none do or the text does
// not parse.
std::string model_config_diff(const std::string& stored_yaml, const core::ModelConfig& m) {
  core::Result<core::Config> stored = core::parse_config(stored_yaml, "checkpoint config", {});
  if (!stored) return "";
  const core::ModelConfig& s = stored->model;
  std::string diff;
  auto add = [&](const char* key, const std::string& theirs, const std::string& ours) {
    if (theirs == ours) return;
    if (!diff.empty()) diff += ", ";
    diff += std::string(key) + " " + theirs + " in the checkpoint, " + ours + " in this model";
  };
  add("model.arch", s.arch, m.arch);
  add("model.vocab_size", std::to_string(s.vocab_size), std::to_string(m.vocab_size));
  add("model.pad_vocab_to", std::to_string(s.pad_vocab_to), std::to_string(m.pad_vocab_to));
  add("model.max_seq_len", std::to_string(s.max_seq_len), std::to_string(m.max_seq_len));
  add("model.n_layer", std::to_string(s.n_layer), std::to_string(m.n_layer));
  add("model.n_head", std::to_string(s.n_head), std::to_string(m.n_head));
  add("model.n_embd", std::to_string(s.n_embd), std::to_string(m.n_embd));
  return diff;
}

// The clause that ends a shape/name mismatch message.
std::string another_config(const std::string& stored_yaml, const core::ModelConfig& m) {
  const std::string diff = model_config_diff(stored_yaml, m);
  if (diff.empty()) {
    return "the file does not match its own stored config (model keys agree): it is corrupt or "
           "was not written by write_checkpoint; use an earlier checkpoint";
  }
  return "the checkpoint was written with another model config (" + diff +
         "); build the model from the checkpoint's config (read_checkpoint_config)";
}

// Metadata every rank reads alike: attributes, dataset presence, shapes, types and stored
// checksums. Call under QuietH5Errors.
core::Status check_metadata(hid_t file, const std::string& where, const models::Gpt& model,
                            const optim::AdamW* adamw, const std::vector<Dataset>& sets,
                            TrainState* state, std::vector<uint64_t>* stored_sums) {
  int version = -1;
  if (!read_attr(file, "format_version", H5T_NATIVE_INT, &version)) {
    return core::Status::error(where +
                               "has no format_version attribute: it is not a Tessera "
                               "checkpoint; give a file written by write_checkpoint");
  }
  if (version != kFormatVersion) {
    return core::Status::error(where + "format version " + std::to_string(version) +
                               " is not supported (this build reads " +
                               std::to_string(kFormatVersion) +
                               "); read it with the Tessera version that wrote it");
  }
  std::string yaml;
  const bool have_state =
      read_attr(file, "step", H5T_NATIVE_INT64, &state->step) &&
      read_attr(file, "tokens_seen", H5T_NATIVE_INT64, &state->tokens_seen) &&
      read_attr(file, "seed", H5T_NATIVE_UINT64, &state->seed) &&
      read_attr(file, "data_epoch", H5T_NATIVE_INT64, &state->data_epoch) &&
      read_attr(file, "data_position", H5T_NATIVE_INT64, &state->data_position) &&
      read_string(file, "config_yaml", &yaml);
  if (!have_state) {
    return core::Status::error(where +
                               "lacks a training-state attribute (step, tokens_seen, "
                               "seed, data_epoch, data_position, config_yaml): the file is "
                               "corrupt; use an earlier checkpoint");
  }
  const core::ModelConfig& m = model.config();
  if (H5Lexists(file, "/model", H5P_DEFAULT) <= 0) {
    return core::Status::error(where + "has no /model group: it is not a Tessera checkpoint");
  }
  if (adamw != nullptr && (H5Lexists(file, "/optim", H5P_DEFAULT) <= 0 ||
                           H5Lexists(file, "/optim/m", H5P_DEFAULT) <= 0 ||
                           H5Lexists(file, "/optim/v", H5P_DEFAULT) <= 0)) {
    return core::Status::error(
        where +
        "has no optimizer state (/optim/m, /optim/v): it was "
        "written without one (weights only); start a run from its weights with "
        "train.init_from, or resume from a checkpoint written during "
        "training");
  }
  {
    H5Id group(H5Gopen2(file, "/model", H5P_DEFAULT), H5Gclose);
    H5G_info_t info;
    if (!group.valid() || H5Gget_info(group.get(), &info) < 0) {
      return core::Status::error(where +
                                 "cannot read its /model group: the file is corrupt; "
                                 "use an earlier checkpoint");
    }
    const int expected = model.param_set().size();
    if (info.nlinks != static_cast<hsize_t>(expected)) {
      return core::Status::error(where + "/model holds " + std::to_string(info.nlinks) +
                                 " datasets, the model has " + std::to_string(expected) +
                                 " parameters: " + another_config(yaml, m));
    }
  }
  stored_sums->assign(sets.size(), 0);
  for (size_t k = 0; k < sets.size(); ++k) {
    const Dataset& d = sets[k];
    const params::ParamSpec& spec = model.param_set().specs()[d.index];
    if (H5Lexists(file, d.name.c_str(), H5P_DEFAULT) <= 0) {
      return core::Status::error(where + "dataset " + d.name +
                                 " is missing: " + another_config(yaml, m));
    }
    H5Id dset(H5Dopen2(file, d.name.c_str(), H5P_DEFAULT), H5Dclose);
    H5Id type(dset.valid() ? H5Dget_type(dset.get()) : -1, H5Tclose);
    H5Id space(dset.valid() ? H5Dget_space(dset.get()) : -1, H5Sclose);
    if (!dset.valid() || !type.valid() || !space.valid()) {
      return core::Status::error(where + "cannot open dataset " + d.name +
                                 ": the file is corrupt; use an earlier checkpoint");
    }
    // bfloat16 serving files (tessera-ckpt convert --to bf16) hold no optimizer state; HDF5
    // widens their values to float32 exactly on read.
    if (!is_float32(type.get()) && !is_bf16(type.get())) {
      return core::Status::error(where + "dataset " + d.name +
                                 " is neither float32 nor bfloat16: the file was not written "
                                 "by Tessera (write_checkpoint or tessera-ckpt convert)");
    }
    const int ndims = H5Sget_simple_extent_ndims(space.get());
    core::Shape shape;
    if (ndims > 0 && ndims <= 8) {
      hsize_t dims[8];
      H5Sget_simple_extent_dims(space.get(), dims, nullptr);
      for (int i = 0; i < ndims; ++i) shape.push_back(static_cast<int64_t>(dims[i]));
    }
    if (shape != spec.global_shape) {
      return core::Status::error(where + d.name + " has shape " + core::shape_string(shape) +
                                 ", the model expects " + core::shape_string(spec.global_shape) +
                                 ": " + another_config(yaml, m));
    }
    if (!read_attr(dset.get(), "checksum", H5T_NATIVE_UINT64, &(*stored_sums)[k])) {
      return core::Status::error(where + "dataset " + d.name +
                                 " has no checksum attribute: the "
                                 "file is corrupt; use an earlier checkpoint");
    }
  }
  return core::Status::ok();
}

// TESSERA_CKPT_CRASH_AFTER=n: the number of datasets after which write_checkpoint throws; -1
// when unset.
int64_t crash_after_from_env() {
  const char* text = std::getenv("TESSERA_CKPT_CRASH_AFTER");
  if (text == nullptr || *text == '\0') return -1;
  char* end = nullptr;
  const long long n = std::strtoll(text, &end, 10);
  return (end != nullptr && *end == '\0' && n >= 0) ? n : -1;
}

[[noreturn]] void injected_crash(const std::string& path, int64_t written) {
  throw Error("write_checkpoint '" + path + "': injected crash after " + std::to_string(written) +
              " datasets (TESSERA_CKPT_CRASH_AFTER), before the rename");
}

H5Id mpio_fapl(MPI_Comm world) {
  H5Id fapl = TESSERA_H5_OPEN(H5Pcreate(H5P_FILE_ACCESS), H5Pclose, "creating a file-access list");
  TESSERA_H5_CHECK(H5Pset_fapl_mpio(fapl.get(), world, MPI_INFO_NULL),
                   "selecting the MPI-IO driver for a checkpoint");
  return fapl;
}

// The transfer list of `transfers` (see Transfers in checkpoint.h; figures of both in
// docs/PERF.md).
H5Id transfer_list(Transfers transfers) {
  H5Id dxpl = TESSERA_H5_OPEN(H5Pcreate(H5P_DATASET_XFER), H5Pclose, "creating a transfer list");
  const bool collective = transfers == Transfers::kCollective;
  TESSERA_H5_CHECK(
      H5Pset_dxpl_mpio(dxpl.get(), collective ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT),
      collective ? "selecting collective checkpoint transfers"
                 : "selecting independent checkpoint transfers");
  return dxpl;
}

// The dp replica that reads each dataset: datasets in order of size, largest first, each to
// the replica with the fewest bytes so far (lowest index on ties). The same on every rank.
std::vector<int> share_datasets(const params::ParamSet& ps, const std::vector<Dataset>& sets,
                                int dp_size) {
  std::vector<size_t> order(sets.size());
  for (size_t k = 0; k < order.size(); ++k) order[k] = k;
  auto numel = [&](size_t k) { return ps.local_numel(sets[k].index); };
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return numel(a) > numel(b); });
  std::vector<int64_t> load(static_cast<size_t>(dp_size), 0);
  std::vector<int> reader(sets.size(), 0);
  for (size_t k : order) {
    const auto least = std::min_element(load.begin(), load.end()) - load.begin();
    reader[k] = static_cast<int>(least);
    load[static_cast<size_t>(least)] += numel(k);
  }
  return reader;
}

// Posts MPI_Ibcast of n floats from `root` over comm, in pieces that fit MPI's int count, and
// appends their requests.
void post_broadcast(float* data, int64_t n, int root, MPI_Comm comm, const std::string& doing,
                    std::vector<MPI_Request>* requests) {
  constexpr int64_t kPiece = int64_t{1} << 30;
  for (int64_t at = 0; at < n; at += kPiece) {
    const int count = static_cast<int>(std::min(kPiece, n - at));
    requests->push_back(MPI_REQUEST_NULL);
    TESSERA_MPI_CHECK(MPI_Ibcast(data + at, count, MPI_FLOAT, root, comm, &requests->back()),
                      doing.c_str());
  }
}

// ---- Write failures (a full disk) ---------------------------------------------------------
// HDF5 1.10 cannot leave a parallel file whose metadata it failed to write: the ranks whose part
// of the collective metadata flush worked wait inside HDF5 for the one whose part failed, and a
// failed H5Fclose leaves a half-freed file that crashes MPI_Finalize. Raw data writes fail safely
// (they are a rank's own). So write_checkpoint keeps every metadata write possible: it starts
// only with room for the metadata, and after a failed data write it gives the file's space back
// (truncates it) before the collective close writes the metadata; then it deletes the file.

// Bytes a writer may use on the file system holding `dir` (statvfs f_bavail); -1 when unknown.
int64_t free_bytes(const std::string& dir) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) return -1;
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
}

// An upper bound on the space HDF5 needs to write the metadata of a file of `n_datasets` (object
// headers, groups, heaps, attributes) once its data are gone: they lie in small blocks among the
// data, and a file system gives each written block a page of its own (4 KiB on most).
int64_t metadata_reserve(size_t n_datasets, size_t config_bytes) {
  return (int64_t{64} << 10) + (int64_t{4} << 10) * static_cast<int64_t>(n_datasets) +
         static_cast<int64_t>(config_bytes);
}

// "1.7 MB", "320 kB".
std::string human_bytes(int64_t bytes) {
  char text[32];
  if (bytes >= 100000) {
    std::snprintf(text, sizeof(text), "%.1f MB", static_cast<double>(bytes) / 1e6);
  } else {
    std::snprintf(text, sizeof(text), "%.0f kB", static_cast<double>(bytes) / 1e3);
  }
  return text;
}

// The innermost entry of HDF5's error stack, e.g. "H5FD__mpio_write(): file write failed";
// empty when the stack is empty.
std::string h5_error_text() {
  std::string text;
  auto innermost = [](unsigned, const H5E_error2_t* e, void* out) -> herr_t {
    auto* s = static_cast<std::string*>(out);
    if (s->empty()) {
      *s = std::string(e->func_name != nullptr ? e->func_name : "?") +
           "(): " + (e->desc != nullptr ? e->desc : "");
    }
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &text);
  return text;
}

// The clause that tells where a checkpoint or the final weights can go instead.
constexpr const char* kElsewhere =
    "set checkpoint.dir (checkpoints) or train.out_dir (the final model.h5) to a directory on a "
    "file system with room";

// The status of a failed raw-data write of `what` into `tmp` on this rank. `err` is errno just
// after the failing call, which MPI-IO does not always leave (Open MPI's OMPIO reports ENOSPC
// but may return with errno 0), so a file system with under 1 MiB free counts as full whatever
// errno says.
core::Status write_failure(const std::string& where, const std::string& what,
                           const std::string& tmp, const std::string& dir, int world_rank, int err,
                           int64_t file_bytes) {
  const int64_t left = free_bytes(dir);
  if (err != ENOSPC && err != EDQUOT && left >= 0 && left < (int64_t{1} << 20)) err = ENOSPC;
  std::string why = err != 0 ? std::strerror(err) : "HDF5: " + h5_error_text();
  if (!why.empty()) why[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(why[0])));
  std::string message = where + "writing " + what + " to '" + tmp + "' failed on world rank " +
                        std::to_string(world_rank) + ": " + why;
  if (err == ENOSPC || err == EDQUOT) {
    message += std::string(" (the disk is full") + (err == EDQUOT ? " for your quota" : "") +
               ": the file system holding '" + dir + "' cannot take this " +
               human_bytes(file_bytes) + " file); free space there, or " + kElsewhere;
  } else {
    message += std::string("; check the file system holding '") + dir + "', or " + kElsewhere;
  }
  return core::Status::error(message + "; the partial file was deleted");
}

// World rank 0's check that the file system holding `dir` has room for the file's metadata
// (see above); OK when statvfs cannot tell.
core::Status check_room_for_metadata(const std::string& where, const std::string& dir,
                                     int64_t reserve, int64_t file_bytes) {
  const int64_t available = free_bytes(dir);
  if (available < 0 || available >= reserve) return core::Status::ok();
  return core::Status::error(
      where + "no space left on device (the disk is full: the file system holding '" + dir +
      "' has " + human_bytes(available) + " free, less than the " + human_bytes(reserve) +
      " this " + human_bytes(file_bytes) +
      " file's metadata alone may need); free space there, or " + kElsewhere);
}

void check_grid_matches(const models::Gpt& model, parallel::ProcessGrid& grid) {
  // Invariant: the model's shards are those of this grid's tp group.
  TESSERA_ASSERT(model.tp_size() == grid.tp_size() && model.tp_rank() == grid.tp_rank(),
                 "checkpoint I/O with a model built for another grid");
}

}  // namespace

Transfers transfers_from_config(const core::Config& config) {
  return config.checkpoint.transfers == "collective" ? Transfers::kCollective
                                                     : Transfers::kIndependent;
}

core::Status write_checkpoint(const std::string& path, const models::Gpt& model,
                              const optim::AdamW* adamw, const TrainState& state,
                              const core::Config& config, parallel::ProcessGrid& grid,
                              Transfers transfers) {
  check_grid_matches(model, grid);
  MPI_Comm world = mpi_comm(grid.world_comm());
  const std::string where = "checkpoint '" + path + "': ";
  const std::string tmp = path + ".tmp";
  const fs::path parent = fs::path(path).parent_path();
  const std::string dir = parent.empty() ? std::string(".") : parent.string();
  const int world_rank = grid.world_rank();
  TESSERA_RETURN_IF_ERROR(agree_on_path(path, world, "writing a checkpoint"));

  const params::ParamSet& ps = model.param_set();
  const std::string config_yaml = config.to_yaml();
  // The file's size, for messages, and the room its metadata needs (see metadata_reserve).
  const int copies = adamw != nullptr ? 3 : 1;  // the weights, and AdamW's m and v
  const size_t n_datasets = static_cast<size_t>(ps.size()) * copies;
  int64_t file_bytes = static_cast<int64_t>(config_yaml.size()) + (int64_t{4} << 10);
  for (int i = 0; i < ps.size(); ++i) {
    int64_t numel = 1;
    for (const auto d : ps.specs()[i].global_shape) numel *= static_cast<int64_t>(d);
    file_bytes += copies * (numel * static_cast<int64_t>(sizeof(float)) + 1024);
  }
  const int64_t reserve = metadata_reserve(n_datasets, config_yaml.size());

  core::Status dir_ok;
  if (world_rank == 0) {
    std::error_code ec;
    if (!parent.empty() && !fs::is_directory(parent, ec)) {
      dir_ok = core::Status::error(where + "directory '" + parent.string() +
                                   "' does not exist; create it, or set checkpoint.dir to an "
                                   "existing directory");
    } else {
      dir_ok = check_room_for_metadata(where, dir, reserve, file_bytes);
    }
  }
  TESSERA_RETURN_IF_ERROR(agree(dir_ok, world));

  const HostArenas arenas(model, adamw, /*fill=*/true);
  const std::vector<Dataset> sets = datasets(ps, arenas);
  const int tp_rank = grid.tp_rank(), tp_size = grid.tp_size();
  // Ranks that write a dataset: dp replica 0; of it only tp rank 0 for a replicated parameter.
  // Their checksum parts, summed over the world, are the datasets' checksums: hashed on a worker
  // thread while the data are written, and stored as attributes after the last dataset.
  std::vector<char> writes(sets.size(), 0);
  std::vector<uint64_t> sums(sets.size(), 0);
  ChecksumWorker hasher;
  for (size_t k = 0; k < sets.size(); ++k) {
    const params::ParamSpec& spec = ps.specs()[sets[k].index];
    writes[k] = grid.dp_rank() == 0 && (!spec.replicated() || tp_rank == 0);
    if (writes[k] && sets[k].moment < 0) {
      hasher.submit(spec, ps.view(*sets[k].arena, sets[k].index).f32(),
                    ps.local_numel(sets[k].index), tp_rank, tp_size, &sums[k]);
    }
  }

  const int64_t crash_after = crash_after_from_env();
  MPI_Comm dp = mpi_comm(grid.dp_comm());
  std::vector<float> staging;  // ZeRO-1: one parameter's moment at a time
  // This rank's data writes until the loop ends; then every rank's, agreed over the world.
  core::Status written;
  {
    // Armed for the stalled-rank watchdog at the end of the block: the handles' collective
    // close runs before it disarms (it is destroyed last).
    std::optional<parallel::CollectiveScope> watch_close;
    // Declared first, so that after a failed write the handles below close without HDF5
    // printing its error stack.
    std::optional<QuietH5Errors> quiet_close;
    H5Id fapl = mpio_fapl(world);
    std::optional<parallel::CollectiveScope> watch_create(
        std::in_place, "the collective create of a checkpoint file (HDF5)", "world");
    H5Id file = TESSERA_H5_OPEN(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()),
                                H5Fclose, "creating checkpoint file " + tmp);
    watch_create.reset();
    const hid_t f = file.get();
    write_i32(f, "format_version", kFormatVersion);
    write_i64(f, "step", state.step);
    write_i64(f, "tokens_seen", state.tokens_seen);
    write_u64(f, "seed", state.seed);
    write_i64(f, "data_epoch", state.data_epoch);
    write_i64(f, "data_position", state.data_position);
    write_string(f, "config_yaml", config_yaml);
    write_i32(f, "grid_dp", grid.dp_size());
    write_i32(f, "grid_tp", grid.tp_size());
    write_string(f, "checksum_algorithm", kChecksumAlgorithm);

    std::vector<const char*> groups = {"/model"};
    if (adamw != nullptr) groups.insert(groups.end(), {"/optim", "/optim/m", "/optim/v"});
    for (const char* g : groups) {
      TESSERA_H5_OPEN(H5Gcreate2(f, g, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
                      std::string("creating checkpoint group ") + g);
    }

    H5Id dcpl = TESSERA_H5_OPEN(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "creating a dataset list");
    // Every element is written, so no fill values (they would be one more pass over the file).
    TESSERA_H5_CHECK(H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER), "turning fill values off");
    H5Id dxpl = transfer_list(transfers);
    const bool collective = transfers == Transfers::kCollective;
    std::vector<H5Id> dsets;
    for (size_t k = 0; k < sets.size(); ++k) {
      if (static_cast<int64_t>(k) == crash_after) injected_crash(path, static_cast<int64_t>(k));
      core::kill_point("dataset-" + std::to_string(k));
      const Dataset& d = sets[k];
      const params::ParamSpec& spec = ps.specs()[d.index];
      const std::string doing = "writing checkpoint dataset " + d.name;
      const std::vector<hsize_t> dims = dims_of(spec.global_shape);
      H5Id file_space = TESSERA_H5_OPEN(
          H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose, doing);
      H5Id dset = TESSERA_H5_OPEN(H5Dcreate2(f, d.name.c_str(), H5T_IEEE_F32LE, file_space.get(),
                                             H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
                                  H5Dclose, doing);
      const hid_t dset_id = dset.get();
      dsets.push_back(std::move(dset));
      const hsize_t n = static_cast<hsize_t>(ps.local_numel(d.index));
      const float* data = nullptr;
      if (d.moment >= 0) {
        // Every dp rank takes part, writer or not, failed or not (a collective over dp).
        data = gather_owned(*adamw, d, static_cast<int64_t>(n), dp, &staging);
        if (writes[k])
          sums[k] = shard_checksum(spec, data, static_cast<int64_t>(n), tp_rank, tp_size);
      } else {
        data = ps.view(*d.arena, d.index).f32();
      }
      // A rank whose write failed moves no more data, but keeps making every collective call
      // the others make (creates; collective transfers with an empty selection), so that all
      // reach the agreement below.
      const bool moves = writes[k] && written.is_ok();
      if (!moves && !collective) continue;  // independent: only the writers take part
      H5Id mem_space = TESSERA_H5_OPEN(H5Screate_simple(1, &n, nullptr), H5Sclose, doing);
      if (moves) {
        select_shard(file_space.get(), spec, tp_rank, tp_size);
        // Invariant: the selection holds exactly the shard's elements.
        TESSERA_ASSERT(H5Sget_select_npoints(file_space.get()) == static_cast<hssize_t>(n),
                       "selecting a shard's hyperslab (element count must equal the shard's)");
      } else {
        TESSERA_H5_CHECK(H5Sselect_none(file_space.get()), doing.c_str());
        TESSERA_H5_CHECK(H5Sselect_none(mem_space.get()), doing.c_str());
      }
      // A failed raw-data write (a full disk) is this rank's alone: recorded, not thrown, so
      // that no rank leaves the protocol while the others wait in a collective call.
      QuietH5Errors quiet;
      std::optional<parallel::CollectiveScope> watch_write;
      if (collective) watch_write.emplace("a collective checkpoint dataset write (HDF5)", "world");
      errno = 0;
      const herr_t rc =
          H5Dwrite(dset_id, H5T_NATIVE_FLOAT, mem_space.get(), file_space.get(), dxpl.get(), data);
      const int err = errno;
      if (rc < 0 && written.is_ok()) {
        written = write_failure(where, "dataset " + d.name, tmp, dir, world_rank, err, file_bytes);
      }
    }
    if (crash_after >= static_cast<int64_t>(sets.size())) {
      injected_crash(path, static_cast<int64_t>(sets.size()));
    }
    hasher.wait();
    // The metadata is written by the flush below: only when it fits (see metadata_reserve).
    if (written.is_ok() && world_rank == 0) {
      const core::Status room = check_room_for_metadata(where, dir, reserve, file_bytes);
      if (!room.is_ok()) {
        written = core::Status::error(room.message() + "; the partial file was deleted");
      }
    }
    // Every rank has made the same calls; now all learn whether any rank's write failed.
    written = agree(written, world);
    if (written.is_ok()) {
      {
        parallel::CollectiveScope watch("the checkpoint checksum all_reduce", "world");
        TESSERA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, sums.data(), static_cast<int>(sums.size()),
                                        MPI_UINT64_T, MPI_SUM, world),
                          "summing checkpoint checksums");
      }
      for (size_t k = 0; k < sets.size(); ++k) write_u64(dsets[k].get(), "checksum", sums[k]);
      // Global scope: MPI_File_sync on every rank, so every rank's data has reached the file.
      parallel::CollectiveScope watch("the collective flush of a checkpoint file (HDF5)", "world");
      TESSERA_H5_CHECK(H5Fflush(f, H5F_SCOPE_GLOBAL), "flushing a checkpoint");
    } else {
      // Give the data's space back first, so that the collective close can write the metadata.
      quiet_close.emplace();
      if (world_rank == 0) {
        // Should this fail, the close may still find room; there is nothing better to try.
        [[maybe_unused]] const int truncated = ::truncate(tmp.c_str(), 0);
      }
      parallel::CollectiveScope watch("a failed checkpoint's barrier", "world");
      TESSERA_MPI_CHECK(MPI_Barrier(world), "giving back a failed checkpoint's space");
    }
    watch_close.emplace("the collective close of a checkpoint file (HDF5)", "world");
  }  // closes every handle (collective), then the file

  // Every rank has closed the file before rank 0 renames (or deletes) it.
  {
    parallel::CollectiveScope watch("the checkpoint close barrier", "world");
    TESSERA_MPI_CHECK(MPI_Barrier(world), "waiting for every rank to close a checkpoint");
  }
  if (!written.is_ok()) {
    if (world_rank == 0) {
      std::error_code ec;
      fs::remove(tmp, ec);
    }
    return written;
  }
  core::kill_point("before-rename");
  core::Status renamed;
  if (world_rank == 0) {
    renamed = sync_file(tmp);
    if (renamed.is_ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
      renamed = core::Status::error("cannot rename '" + tmp + "' to '" + path +
                                    "': " + std::strerror(errno));
    }
    if (renamed.is_ok()) renamed = sync_directory(parent.string());
    renamed = renamed.with_context(where);
    if (renamed.is_ok()) core::kill_point("after-rename");
  }
  return agree(renamed, world);
}

core::Result<TrainState> read_checkpoint(const std::string& path, models::Gpt& model,
                                         optim::AdamW* adamw, parallel::ProcessGrid& grid,
                                         Transfers transfers) {
  check_grid_matches(model, grid);
  MPI_Comm world = mpi_comm(grid.world_comm());
  const std::string where = "checkpoint '" + path + "': ";
  TESSERA_RETURN_IF_ERROR(agree_on_path(path, world, "reading a checkpoint"));

  core::Status found;
  if (grid.world_rank() == 0) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      found = core::Status::error(where +
                                  "not found; check the path, or resume from 'latest' "
                                  "in checkpoint.dir");
    }
  }
  TESSERA_RETURN_IF_ERROR(agree(found, world));

  H5Id fapl = mpio_fapl(world);
  H5Id file;
  {
    QuietH5Errors quiet;
    file = H5Id(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
  }
  TESSERA_RETURN_IF_ERROR(agree(
      file.valid() ? core::Status::ok()
                   : core::Status::error(where + "cannot be opened as an HDF5 file (truncated, "
                                                 "corrupt, or not a checkpoint); use an earlier "
                                                 "checkpoint"),
      world));

  const params::ParamSet& ps = model.param_set();
  HostArenas arenas(model, adamw, /*fill=*/false);
  const std::vector<Dataset> sets = datasets(ps, arenas);
  TrainState state;
  std::vector<uint64_t> stored;
  core::Status meta;
  {
    QuietH5Errors quiet;
    meta = check_metadata(file.get(), where, model, adamw, sets, &state, &stored);
  }
  TESSERA_RETURN_IF_ERROR(agree(meta, world));

  // The dp replicas share the reading: dataset k is read (and verified) by replica reader[k]
  // alone, every rank of it taking its own shard (replicated datasets whole), and broadcast over
  // dp while the next datasets are read. So the file is read once whatever dp is. With
  // independent transfers a rank takes part only in the reads it needs; with collective ones
  // the other replicas join each read with empty selections. Each shard is hashed on a worker
  // thread while the next one is read.
  const int tp_rank = grid.tp_rank(), tp_size = grid.tp_size();
  const int dp_rank = grid.dp_rank(), dp_size = grid.dp_size();
  const std::vector<int> reader = share_datasets(ps, sets, dp_size);
  MPI_Comm dp = mpi_comm(grid.dp_comm());
  std::vector<uint64_t> computed(sets.size(), 0);
  H5Id dxpl = transfer_list(transfers);
  const bool collective = transfers == Transfers::kCollective;
  {
    ChecksumWorker hasher;
    // Every rank posts the broadcasts in dataset order, a reader its own after reading it, so
    // no rank waits on another's read before its own.
    std::vector<MPI_Request> broadcasts;
    std::vector<float> staging;  // ZeRO-1: one parameter's moment at a time
    for (size_t k = 0; k < sets.size(); ++k) {
      const Dataset& d = sets[k];
      const params::ParamSpec& spec = ps.specs()[d.index];
      const hsize_t n = static_cast<hsize_t>(ps.local_numel(d.index));
      if (d.moment >= 0) staging.resize(n);
      float* shard = d.moment >= 0 ? staging.data() : ps.view(*d.arena, d.index).f32();
      const bool mine = reader[k] == dp_rank;
      if (mine || collective) {
        const std::string doing = "reading checkpoint dataset " + d.name;
        H5Id dset =
            TESSERA_H5_OPEN(H5Dopen2(file.get(), d.name.c_str(), H5P_DEFAULT), H5Dclose, doing);
        H5Id file_space = TESSERA_H5_OPEN(H5Dget_space(dset.get()), H5Sclose, doing);
        H5Id mem_space = TESSERA_H5_OPEN(H5Screate_simple(1, &n, nullptr), H5Sclose, doing);
        if (mine) {
          select_shard(file_space.get(), spec, tp_rank, tp_size);
        } else {
          TESSERA_H5_CHECK(H5Sselect_none(file_space.get()), doing.c_str());
          TESSERA_H5_CHECK(H5Sselect_none(mem_space.get()), doing.c_str());
        }
        TESSERA_H5_CHECK(H5Dread(dset.get(), H5T_NATIVE_FLOAT, mem_space.get(), file_space.get(),
                                 dxpl.get(), shard),
                         doing.c_str());
        if (mine && d.moment >= 0) {
          computed[k] = shard_checksum(spec, shard, static_cast<int64_t>(n), tp_rank, tp_size);
        } else if (mine) {
          hasher.submit(spec, shard, static_cast<int64_t>(n), tp_rank, tp_size, &computed[k]);
        }
      }
      if (d.moment >= 0) {
        // ZeRO-1: the reader's copy to every dp rank now (the staging is reused for the next
        // parameter), and each keeps its own pieces.
        parallel::CollectiveScope watch("broadcasting a sharded moment of a checkpoint", "dp");
        for (int64_t at = 0; dp_size > 1 && at < static_cast<int64_t>(n); at += kMpiPiece) {
          const int count = static_cast<int>(std::min(kMpiPiece, static_cast<int64_t>(n) - at));
          TESSERA_MPI_CHECK(MPI_Bcast(shard + at, count, MPI_FLOAT, reader[k], dp),
                            ("broadcasting checkpoint dataset " + d.name + " over dp").c_str());
        }
        adamw->copy_owned_in(d.index, d.moment, shard);
        continue;
      }
      if (dp_size > 1) {
        const std::string doing = "broadcasting checkpoint dataset " + d.name + " over dp";
        post_broadcast(shard, static_cast<int64_t>(n), reader[k], dp, doing, &broadcasts);
        int done = 0;  // lets the posted broadcasts progress
        TESSERA_MPI_CHECK(MPI_Testall(static_cast<int>(broadcasts.size()), broadcasts.data(), &done,
                                      MPI_STATUSES_IGNORE),
                          doing.c_str());
      }
    }
    TESSERA_MPI_CHECK(
        MPI_Waitall(static_cast<int>(broadcasts.size()), broadcasts.data(), MPI_STATUSES_IGNORE),
        "broadcasting a checkpoint over dp");
    hasher.wait();
  }
  // A sharded dataset's checksum is the sum of its reader's tp ranks' parts (the other
  // replicas add zeros); a replicated one each of its readers verifies whole.
  std::vector<uint64_t> sharded(sets.size(), 0);
  for (size_t k = 0; k < sets.size(); ++k) {
    if (!ps.specs()[sets[k].index].replicated()) sharded[k] = computed[k];
  }
  TESSERA_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, sharded.data(), static_cast<int>(sharded.size()),
                                  MPI_UINT64_T, MPI_SUM, world),
                    "summing checkpoint checksums");
  core::Status verified;
  for (size_t k = 0; k < sets.size(); ++k) {
    const bool replicated = ps.specs()[sets[k].index].replicated();
    if (replicated && reader[k] != dp_rank) continue;
    const uint64_t sum = replicated ? computed[k] : sharded[k];
    if (sum != stored[k]) {
      verified = core::Status::error(where + "dataset " + sets[k].name + " checksum mismatch " +
                                     "(stored " + hex64(stored[k]) + ", computed " + hex64(sum) +
                                     "): the file is corrupt; use an earlier checkpoint");
      break;
    }
  }
  TESSERA_RETURN_IF_ERROR(agree(verified, world));
  arenas.to_device();
  return state;
}

core::Result<std::string> read_checkpoint_config(const std::string& path,
                                                 parallel::ProcessGrid& grid) {
  MPI_Comm world = mpi_comm(grid.world_comm());
  const std::string where = "checkpoint '" + path + "': ";
  core::Status status;
  std::string yaml;
  if (grid.world_rank() == 0) {
    std::error_code ec;
    if (!fs::is_regular_file(path, ec)) {
      status = core::Status::error(where +
                                   "not found; check the path, or resume from 'latest' "
                                   "in checkpoint.dir");
    } else {
      // MPI-IO on this rank alone: the same driver as the collective reads (no POSIX file
      // locks, which some parallel file systems refuse).
      H5Id fapl = mpio_fapl(MPI_COMM_SELF);
      QuietH5Errors quiet;
      H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.get()), H5Fclose);
      int version = -1;
      if (!file.valid()) {
        status = core::Status::error(where +
                                     "cannot be opened as an HDF5 file (truncated, "
                                     "corrupt, or not a checkpoint); use an earlier checkpoint");
      } else if (!read_attr(file.get(), "format_version", H5T_NATIVE_INT, &version)) {
        status = core::Status::error(where +
                                     "has no format_version attribute: it is not a "
                                     "Tessera checkpoint; give a file written by "
                                     "write_checkpoint");
      } else if (version != kFormatVersion) {
        status = core::Status::error(where + "format version " + std::to_string(version) +
                                     " is not supported (this build reads " +
                                     std::to_string(kFormatVersion) +
                                     "); read it with the Tessera version that wrote it");
      } else if (!read_string(file.get(), "config_yaml", &yaml)) {
        status = core::Status::error(where +
                                     "has no config_yaml attribute: the file is corrupt; "
                                     "use an earlier checkpoint");
      }
    }
  }
  TESSERA_RETURN_IF_ERROR(agree(status, world));
  uint64_t length = yaml.size();
  TESSERA_MPI_CHECK(MPI_Bcast(&length, 1, MPI_UINT64_T, 0, world), "broadcasting a config");
  yaml.resize(length);
  TESSERA_MPI_CHECK(MPI_Bcast(yaml.data(), static_cast<int>(length), MPI_CHAR, 0, world),
                    "broadcasting a config");
  return yaml;
}

}  // namespace tessera::checkpoint
