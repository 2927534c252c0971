// Fuzzes the checkpoint reader (checkpoint/checkpoint.h, checkpoint/stored_config.h) with
// checkpoints edited through HDF5's API, and loads each as tessera-generate does: the stored
// config, a model built from it, read_checkpoint into it (weights only, then with AdamW state).
// One MPI rank (a singleton). The input is an edit program over one of two valid checkpoints
// of a tiny model (tests/fuzz/data/checkpoint/: with AdamW state at step 5, weights only): up
// to six edits, each setting or deleting a root attribute (format_version, step, seed, grid,
// ...), replacing the stored config (raw text, or one key changed as --set would), deleting a
// dataset or its checksum, storing a wrong checksum, writing a value (NaN, Inf, any bits) with
// or without a matching checksum, or replacing a dataset by one of another shape or type.
// Properties: never a crash, an exception or a leak out of our code; every refusal a message.
// Why edits and not raw bytes: HDF5 1.10 is not hardened against corrupt metadata (raw byte
// mutation found a heap overflow inside H5Aexists within 51 inputs; docs/RELIABILITY.md), so
// the mutations keep the file's structure valid and aim at what our reader decides.
// A stored config of over 2^20 parameters is skipped (the harness's memory bound).
#include <fuzzer/FuzzedDataProvider.h>
#include <hdf5.h>
#include <mpi.h>
#include <sanitizer/lsan_interface.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checksum.h"
#include "checkpoint/h5_util.h"
#include "checkpoint/stored_config.h"
#include "core/config.h"
#include "fuzz_util.h"
#include "models/gpt.h"
#include "optim/optimizer.h"
#include "parallel/process_grid.h"

namespace {

namespace ckpt = tessera::checkpoint;
using ckpt::H5Id;
using tessera::core::Config;

std::unique_ptr<tessera::parallel::ProcessGrid> g_grid;
const std::string kBaseDir = std::string(TESSERA_SOURCE_DIR) + "/tests/fuzz/data/checkpoint";
const char* const kBases[] = {"step5_adamw.h5", "weights_only.h5"};

// GPT-2's parameter count (wte, wpe, 12 C^2 + 13 C per layer, ln_f), in floating point so no
// size overflows; it decides whether the model is built, so it must not build the ParamSpec
// table itself (a stored config claiming 10^9 layers ran the harness out of memory there).
double parameter_count(const tessera::core::ModelConfig& m) {
  const double C = m.n_embd, L = m.n_layer;
  return (static_cast<double>(m.padded_vocab_size()) + m.max_seq_len) * C +
         L * (12 * C * C + 13 * C) + 2 * C;
}

// The two base checkpoints (V 10 padded to 16, maxT 4, L 1, NH 2, C 4), as committed.
void write_bases(const std::string& dir) {
  Config c;
  c.model.vocab_size = 10;
  c.model.pad_vocab_to = 16;
  c.model.max_seq_len = 4;
  c.model.n_layer = 1;
  c.model.n_head = 2;
  c.model.n_embd = 4;
  c.train.seq_len = 4;
  c.train.batch_size = 2;
  tessera::models::Gpt model(c.model, 1, 1, &g_grid->tp_comm());
  model.init_weights(7);
  tessera::optim::AdamW adamw(model.param_set());
  ckpt::TrainState state;
  state.step = 5;
  state.tokens_seen = 40;
  state.seed = 7;
  for (const bool with_adamw : {true, false}) {
    const std::string path = dir + "/" + kBases[with_adamw ? 0 : 1];
    tessera::core::Status st =
        ckpt::write_checkpoint(path, model, with_adamw ? &adamw : nullptr, state, c, *g_grid);
    if (!st) tessera::fuzz::fail("writing " + path + ": " + st.message());
    state.step = 0;
  }
}

// Every dataset's path in `file`.
std::vector<std::string> dataset_paths(hid_t file) {
  std::vector<std::string> paths;
  H5Ovisit(
      file, H5_INDEX_NAME, H5_ITER_NATIVE,
      [](hid_t, const char* name, const H5O_info_t* info, void* out) -> herr_t {
        if (info->type == H5O_TYPE_DATASET) {
          static_cast<std::vector<std::string>*>(out)->push_back(std::string("/") + name);
        }
        return 0;
      },
      &paths);
  return paths;
}

void delete_attr(hid_t loc, const char* name) {
  if (H5Aexists(loc, name) > 0) H5Adelete(loc, name);
}

// One edit of the open file, chosen and parameterised by `in`.
void edit(FuzzedDataProvider& in, hid_t file, const std::vector<std::string>& datasets) {
  static const char* const kI32[] = {"format_version", "grid_dp", "grid_tp"};
  static const char* const kI64[] = {"step", "tokens_seen", "data_epoch", "data_position"};
  static const char* const kRoot[] = {"format_version", "step",       "tokens_seen",
                                      "seed",           "data_epoch", "data_position",
                                      "config_yaml",    "grid_dp",    "grid_tp"};
  const std::string& dataset = datasets[in.ConsumeIntegralInRange<size_t>(0, datasets.size() - 1)];
  switch (in.ConsumeIntegralInRange(0, 9)) {
    case 0: {
      const char* name = kI32[in.ConsumeIntegralInRange(0, 2)];
      delete_attr(file, name);
      ckpt::write_i32(file, name, in.ConsumeIntegral<int32_t>());
      break;
    }
    case 1: {
      const char* name = kI64[in.ConsumeIntegralInRange(0, 3)];
      delete_attr(file, name);
      ckpt::write_i64(file, name, in.ConsumeIntegral<int64_t>());
      break;
    }
    case 2:
      delete_attr(file, "seed");
      ckpt::write_u64(file, "seed", in.ConsumeIntegral<uint64_t>());
      break;
    case 3:  // any text as the stored config
      delete_attr(file, "config_yaml");
      ckpt::write_string(file, "config_yaml", in.ConsumeRandomLengthString(2048));
      break;
    case 4: {  // the stored config with one key changed, as --set would
      std::string yaml;
      {
        ckpt::QuietH5Errors quiet;
        if (!ckpt::read_string(file, "config_yaml", &yaml)) break;
      }
      const auto keys = tessera::core::config_keys();
      const std::string key = keys[in.ConsumeIntegralInRange<size_t>(0, keys.size() - 1)].key;
      auto config = tessera::core::parse_config(yaml, "base", {});
      if (!config) break;
      auto changed = tessera::core::parse_config(config->to_yaml(), "base",
                                                 {key + "=" + in.ConsumeRandomLengthString(24)});
      if (!changed) break;
      delete_attr(file, "config_yaml");
      ckpt::write_string(file, "config_yaml", changed->to_yaml());
      break;
    }
    case 5:
      delete_attr(file, kRoot[in.ConsumeIntegralInRange(0, 8)]);
      break;
    case 6: {  // a dataset's checksum: deleted or wrong
      H5Id d(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), H5Dclose);
      delete_attr(d.get(), "checksum");
      if (in.ConsumeBool()) ckpt::write_u64(d.get(), "checksum", in.ConsumeIntegral<uint64_t>());
      break;
    }
    case 7: {  // one value (any bits: NaN, Inf, denormal), the checksum made to match or not
      H5Id d(H5Dopen2(file, dataset.c_str(), H5P_DEFAULT), H5Dclose);
      H5Id space(H5Dget_space(d.get()), H5Sclose);
      const hssize_t n = H5Sget_simple_extent_npoints(space.get());
      if (n <= 0) break;
      std::vector<float> values(static_cast<size_t>(n));
      if (H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0) {
        break;
      }
      const uint32_t bits = in.ConsumeIntegral<uint32_t>();
      std::memcpy(&values[in.ConsumeIntegralInRange<size_t>(0, values.size() - 1)], &bits, 4);
      H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
      if (in.ConsumeBool()) {
        delete_attr(d.get(), "checksum");
        ckpt::write_u64(d.get(), "checksum", ckpt::tensor_checksum(values.data(), n));
      }
      break;
    }
    case 8:
      H5Ldelete(file, dataset.c_str(), H5P_DEFAULT);
      break;
    case 9: {  // replaced by one of another shape and element type, zeros, checksum matching
      H5Ldelete(file, dataset.c_str(), H5P_DEFAULT);
      const int rank = in.ConsumeIntegralInRange(0, 3);
      hsize_t dims[3] = {0, 0, 0};
      hsize_t n = 1;
      for (int i = 0; i < rank; ++i) n *= dims[i] = in.ConsumeIntegralInRange<hsize_t>(0, 40);
      const hid_t types[] = {H5T_IEEE_F32LE, H5T_IEEE_F64LE, H5T_STD_I32LE, H5T_IEEE_F32BE};
      H5Id space(rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, nullptr),
                 H5Sclose);
      H5Id d(H5Dcreate2(file, dataset.c_str(), types[in.ConsumeIntegralInRange(0, 3)], space.get(),
                        H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
             H5Dclose);
      if (!d.valid()) break;
      const std::vector<float> zeros(static_cast<size_t>(n));
      H5Dwrite(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, zeros.data());
      ckpt::write_u64(d.get(), "checksum",
                      ckpt::tensor_checksum(zeros.data(), static_cast<int64_t>(n)));
      break;
    }
  }
}

void check_refusal(const tessera::core::Status& st) {
  TESSERA_FUZZ_CHECK(!st.message().empty(), "a refusal without a message");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int* argc, char*** argv) {
  // What Open MPI allocates while it starts is its own and lives until exit (tests/sanitizers/
  // lsan.supp says the same for the tests, which can afford the full stacks that match it; the
  // fuzzers unwind fast, see scripts/fuzz.sh), so LeakSanitizer is told to ignore it.
  __lsan_disable();
  MPI_Init(argc, argv);
  __lsan_enable();
  g_grid = std::make_unique<tessera::parallel::ProcessGrid>(MPI_COMM_WORLD, 1);
  if (const std::string dir = tessera::fuzz::seed_dir(); !dir.empty()) {
    write_bases(dir);
    g_grid.reset();
    MPI_Finalize();
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = tessera::fuzz::scratch_path("ckpt.h5");
  FuzzedDataProvider in(data, size);
  std::filesystem::copy_file(kBaseDir + "/" + kBases[in.ConsumeBool() ? 1 : 0], path,
                             std::filesystem::copy_options::overwrite_existing);
  {
    ckpt::QuietH5Errors quiet;  // an edit may fail (a dataset already deleted): that is fine
    H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
    if (!file.valid()) tessera::fuzz::fail("cannot open the copy of a base checkpoint");
    const std::vector<std::string> datasets = dataset_paths(file.get());
    const int edits = in.ConsumeIntegralInRange(1, 6);
    for (int i = 0; i < edits && in.remaining_bytes() > 0; ++i) {
      try {
        edit(in, file.get(), datasets);
      } catch (const std::exception&) {
        // the harness's own write helpers throw on an HDF5 refusal; the edit is then skipped
      }
    }
  }
  tessera::core::Result<Config> config = ckpt::read_stored_config(path);
  if (!config) {
    check_refusal(config.status());
    return 0;
  }
  if (parameter_count(config->model) > double{1 << 20}) return 0;
  tessera::models::Gpt model(config->model, 1, 1, &g_grid->tp_comm());
  auto weights = ckpt::read_checkpoint(path, model, nullptr, *g_grid);
  if (!weights) check_refusal(weights.status());
  tessera::optim::AdamW adamw(model.param_set());
  auto all = ckpt::read_checkpoint(path, model, &adamw, *g_grid);
  if (!all) check_refusal(all.status());
  return 0;
}
