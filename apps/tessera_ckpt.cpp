// tessera-ckpt: look inside a checkpoint (inspect: attributes, stored config, dataset table) and
// check it loads (verify: builds the model from the stored config and reads every dataset with
// read_checkpoint, which checks each checksum). inspect is serial HDF5 on world rank 0.
#include <hdf5.h>
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/app.h"
#include "models/gpt.h"
#include "optim/optimizer.h"
#include "parallel/process_grid.h"

using namespace tessera;

namespace {

// An HDF5 id closed by `close_` on scope exit (invalid ids are never closed).
class H5Handle {
 public:
  H5Handle(hid_t id, herr_t (*close)(hid_t)) : id_(id), close_(close) {}
  ~H5Handle() {
    if (id_ >= 0) close_(id_);
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_;
  herr_t (*close_)(hid_t);
};

// One dataset's row of the inspect table.
struct DatasetInfo {
  std::string name;
  std::vector<hsize_t> shape;
  std::string dtype;
  hsize_t elements = 1;
  hsize_t bytes = 0;
  std::optional<uint64_t> checksum;
};

std::string dtype_name(hid_t type) {
  if (H5Tequal(type, H5T_IEEE_F32LE) > 0) return "float32";
  if (H5Tequal(type, H5T_IEEE_F64LE) > 0) return "float64";
  if (H5Tequal(type, H5T_STD_I32LE) > 0) return "int32";
  if (H5Tequal(type, H5T_STD_I64LE) > 0) return "int64";
  if (H5Tequal(type, H5T_STD_U64LE) > 0) return "uint64";
  if (H5Tget_class(type) == H5T_STRING) return "string";
  return "other";
}

std::string shape_text(const std::vector<hsize_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(static_cast<unsigned long long>(shape[i]));
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

// A root (or dataset) attribute read as `mem_type` into `out`; false when absent or unreadable.
bool read_scalar_attr(hid_t obj, const char* name, hid_t mem_type, void* out) {
  if (H5Aexists(obj, name) <= 0) return false;
  H5Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  return attr.valid() && H5Aread(attr.get(), mem_type, out) >= 0;
}

// A string attribute, variable- or fixed-length; nullopt when absent or not a string.
std::optional<std::string> read_string_attr(hid_t obj, const char* name) {
  if (H5Aexists(obj, name) <= 0) return std::nullopt;
  H5Handle attr(H5Aopen(obj, name, H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) return std::nullopt;
  H5Handle type(H5Aget_type(attr.get()), H5Tclose);
  if (!type.valid() || H5Tget_class(type.get()) != H5T_STRING) return std::nullopt;
  if (H5Tis_variable_str(type.get()) > 0) {
    H5Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(mem.get(), H5T_VARIABLE);
    H5Tset_cset(mem.get(), H5Tget_cset(type.get()));  // HDF5 converts no ASCII <-> UTF-8
    char* text = nullptr;
    if (H5Aread(attr.get(), mem.get(), &text) < 0 || text == nullptr) return std::nullopt;
    std::string s(text);
    H5free_memory(text);
    return s;
  }
  std::string s(H5Tget_size(type.get()), '\0');
  if (H5Aread(attr.get(), type.get(), s.data()) < 0) return std::nullopt;
  s.resize(s.find('\0') == std::string::npos ? s.size() : s.find('\0'));
  return s;
}

herr_t collect_dataset(hid_t obj, const char* name, const H5O_info_t* info, void* data) {
  if (info->type != H5O_TYPE_DATASET) return 0;
  auto* out = static_cast<std::vector<DatasetInfo>*>(data);
  DatasetInfo d;
  d.name = std::string("/") + name;
  H5Handle set(H5Dopen2(obj, name, H5P_DEFAULT), H5Dclose);
  if (!set.valid()) return -1;
  H5Handle space(H5Dget_space(set.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) return -1;
  d.shape.resize(rank);
  H5Sget_simple_extent_dims(space.get(), d.shape.data(), nullptr);
  for (hsize_t n : d.shape) d.elements *= n;
  H5Handle type(H5Dget_type(set.get()), H5Tclose);
  d.dtype = dtype_name(type.get());
  d.bytes = H5Dget_storage_size(set.get());
  uint64_t sum = 0;
  if (read_scalar_attr(set.get(), "checksum", H5T_NATIVE_UINT64, &sum)) d.checksum = sum;
  out->push_back(std::move(d));
  return 0;
}

// Prints the checkpoint's attributes, stored config and dataset table. Serial HDF5, one rank.
core::Status inspect(const std::string& path) {
  const std::string where = "checkpoint '" + path + "' ";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return core::Status::error(where +
                               "not found; pass the path of a step_<n>.h5 file "
                               "(the one <checkpoint.dir>/latest names)");
  }
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // failures below are answers, not stack dumps
  H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) {
    return core::Status::error(where +
                               "cannot be opened as an HDF5 file (truncated, corrupt, "
                               "or not a checkpoint); use an earlier checkpoint");
  }
  const hid_t f = file.get();
  int32_t version = 0;
  if (!read_scalar_attr(f, "format_version", H5T_NATIVE_INT32, &version)) {
    return core::Status::error(where +
                               "is HDF5 but has no format_version attribute: not a "
                               "Tessera checkpoint; pass a file tessera-train wrote");
  }
  checkpoint::TrainState s;
  int32_t grid_dp = 0, grid_tp = 0;
  const bool complete = read_scalar_attr(f, "step", H5T_NATIVE_INT64, &s.step) &&
                        read_scalar_attr(f, "tokens_seen", H5T_NATIVE_INT64, &s.tokens_seen) &&
                        read_scalar_attr(f, "seed", H5T_NATIVE_UINT64, &s.seed) &&
                        read_scalar_attr(f, "data_epoch", H5T_NATIVE_INT64, &s.data_epoch) &&
                        read_scalar_attr(f, "data_position", H5T_NATIVE_INT64, &s.data_position);
  const std::optional<std::string> config = read_string_attr(f, "config_yaml");
  if (!complete || !config) {
    return core::Status::error(where +
                               "lacks training-state attributes or config_yaml: not a "
                               "complete Tessera checkpoint; use an earlier checkpoint");
  }
  read_scalar_attr(f, "grid_dp", H5T_NATIVE_INT32, &grid_dp);
  read_scalar_attr(f, "grid_tp", H5T_NATIVE_INT32, &grid_tp);
  const std::optional<std::string> algorithm = read_string_attr(f, "checksum_algorithm");

  std::vector<DatasetInfo> sets;
  if (H5Ovisit2(f, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &sets, H5O_INFO_BASIC) < 0) {
    return core::Status::error(where +
                               "has a dataset whose header cannot be read: the file is "
                               "corrupt; use an earlier checkpoint");
  }

  std::printf("checkpoint      %s\n", path.c_str());
  std::printf(
      "format version  %d%s\n", version,
      version == checkpoint::kFormatVersion
          ? ""
          : (" (this build reads " + std::to_string(checkpoint::kFormatVersion) + ")").c_str());
  std::printf("step            %" PRId64 "\n", s.step);
  std::printf("tokens seen     %" PRId64 "\n", s.tokens_seen);
  std::printf("seed            %" PRIu64 "\n", s.seed);
  std::printf("data cursor     epoch %" PRId64 ", position %" PRId64 "\n", s.data_epoch,
              s.data_position);
  std::printf("written by grid dp %d x tp %d\n", grid_dp, grid_tp);
  if (algorithm) std::printf("checksum        %s\n", algorithm->c_str());
  std::printf("config:\n");
  size_t start = 0;
  while (start < config->size()) {
    size_t end = config->find('\n', start);
    if (end == std::string::npos) end = config->size();
    const std::string line = config->substr(start, end - start);
    std::printf(line.empty() ? "\n" : "  %s\n", line.c_str());
    start = end + 1;
  }
  size_t name_width = 7;
  for (const DatasetInfo& d : sets) name_width = std::max(name_width, d.name.size());
  const int w = static_cast<int>(name_width);
  std::printf("datasets:\n  %-*s  %-14s  %-7s  %12s  %s\n", w, "name", "shape", "dtype", "bytes",
              "checksum");
  hsize_t total_elements = 0, total_bytes = 0;
  for (const DatasetInfo& d : sets) {
    const std::string sum = d.checksum ? ([&] {
      char buf[24];
      std::snprintf(buf, sizeof buf, "0x%016" PRIx64, *d.checksum);
      return std::string(buf);
    })()
                                       : std::string("-");
    std::printf("  %-*s  %-14s  %-7s  %12llu  %s\n", w, d.name.c_str(), shape_text(d.shape).c_str(),
                d.dtype.c_str(), static_cast<unsigned long long>(d.bytes), sum.c_str());
    total_elements += d.elements;
    total_bytes += d.bytes;
  }
  std::printf("total: %zu datasets, %llu elements, %llu bytes of data (file %llu bytes)\n",
              sets.size(), static_cast<unsigned long long>(total_elements),
              static_cast<unsigned long long>(total_bytes),
              static_cast<unsigned long long>(std::filesystem::file_size(path, ec)));
  return core::Status::ok();
}

// Whether the file holds AdamW state (/optim exists); false when it cannot be opened (the read
// that follows reports why).
bool has_optimizer_state(const std::string& path) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  H5Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  return file.valid() && H5Lexists(file.get(), "/optim", H5P_DEFAULT) > 0;
}

// Collective over MPI_COMM_WORLD (tp = 1: every rank is a dp replica and reads the whole file).
core::Result<int> verify(const std::string& path) {
  parallel::ProcessGrid grid(MPI_COMM_WORLD, 1);
  auto text = checkpoint::read_checkpoint_config(path, grid);
  if (!text) return text.status();
  auto config = core::parse_config(*text, path + " (stored config)", {});
  if (!config) return config.status();
  // World rank 0 looks for /optim; every rank follows its answer (read_checkpoint is collective).
  int32_t optim = grid.world_rank() == 0 && has_optimizer_state(path) ? 1 : 0;
  grid.world_comm().broadcast_bytes(&optim, sizeof optim, 0);
  models::Gpt model(config->model, 1, config->model.max_seq_len, &grid.tp_comm());
  std::unique_ptr<optim::AdamW> adamw;
  if (optim) adamw = std::make_unique<optim::AdamW>(model.param_set());
  auto state = checkpoint::read_checkpoint(path, model, adamw.get(), grid);
  if (!state) return state.status();
  if (grid.world_rank() == 0) {
    const size_t n = models::Gpt::param_specs(config->model).size() * (optim ? 3 : 1);
    std::printf("checkpoint %s: sound (%zu datasets, checksums verified)\n", path.c_str(), n);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return core::run_app("tessera-ckpt", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{
        "Inspect or verify a Tessera checkpoint. Example: tessera-ckpt verify "
        "out/ckpt/step_00000200.h5"};
    app.require_subcommand(1);
    std::string inspect_path, verify_path;
    CLI::App* inspect_cmd = app.add_subcommand(
        "inspect", "print the training state, grid, stored config and dataset table (one rank)");
    inspect_cmd->add_option("file", inspect_path, "a checkpoint (.h5)")->required();
    CLI::App* verify_cmd = app.add_subcommand(
        "verify", "load every dataset into the stored config's model and check every checksum");
    verify_cmd->add_option("file", verify_path, "a checkpoint (.h5)")->required();
    std::optional<int> help_exit;
    TESSERA_RETURN_IF_ERROR(core::parse_command_line(app, ac, av, &help_exit));
    if (help_exit) return *help_exit;
    if (inspect_cmd->parsed()) {
      int world_rank = 0;
      MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
      if (world_rank != 0) return 0;  // serial: rank 0 reads and prints
      TESSERA_RETURN_IF_ERROR(inspect(inspect_path));
      return 0;
    }
    return verify(verify_path);
  });
}
