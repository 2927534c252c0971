// tessera-ckpt: look inside a checkpoint (inspect: attributes, stored config, dataset table), check
// it loads (verify: read_checkpoint into the stored config's model, every checksum, every value
// finite), convert it (llm.c .bin, Hugging Face safetensors, bf16, without optimizer state;
// serial) and print its logits for a token sequence.
#include <hdf5.h>
#include <mpi.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/convert.h"
#include "checkpoint/h5_util.h"
#include "core/app.h"
#include "models/gpt.h"
#include "optim/optimizer.h"
#include "parallel/process_grid.h"

using namespace tessera;

namespace {

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
  if (checkpoint::is_float32(type)) return "float32";
  if (checkpoint::is_bf16(type)) return "bfloat16";
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

herr_t collect_dataset(hid_t obj, const char* name, const H5O_info_t* info, void* data) {
  if (info->type != H5O_TYPE_DATASET) return 0;
  auto* out = static_cast<std::vector<DatasetInfo>*>(data);
  DatasetInfo d;
  d.name = std::string("/") + name;
  checkpoint::H5Id set(H5Dopen2(obj, name, H5P_DEFAULT), H5Dclose);
  if (!set.valid()) return -1;
  checkpoint::H5Id space(H5Dget_space(set.get()), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) return -1;
  d.shape.resize(rank);
  H5Sget_simple_extent_dims(space.get(), d.shape.data(), nullptr);
  for (hsize_t n : d.shape) d.elements *= n;
  checkpoint::H5Id type(H5Dget_type(set.get()), H5Tclose);
  d.dtype = dtype_name(type.get());
  d.bytes = H5Dget_storage_size(set.get());
  uint64_t sum = 0;
  if (checkpoint::read_attr(set.get(), "checksum", H5T_NATIVE_UINT64, &sum)) d.checksum = sum;
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
  checkpoint::H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file.valid()) {
    return core::Status::error(where +
                               "cannot be opened as an HDF5 file (truncated, corrupt, "
                               "or not a checkpoint); use an earlier checkpoint");
  }
  const hid_t f = file.get();
  int32_t version = 0;
  if (!checkpoint::read_attr(f, "format_version", H5T_NATIVE_INT32, &version)) {
    return core::Status::error(where +
                               "is HDF5 but has no format_version attribute: not a "
                               "Tessera checkpoint; pass a file tessera-train wrote");
  }
  checkpoint::TrainState s;
  int32_t grid_dp = 0, grid_tp = 0;
  const bool complete =
      checkpoint::read_attr(f, "step", H5T_NATIVE_INT64, &s.step) &&
      checkpoint::read_attr(f, "tokens_seen", H5T_NATIVE_INT64, &s.tokens_seen) &&
      checkpoint::read_attr(f, "seed", H5T_NATIVE_UINT64, &s.seed) &&
      checkpoint::read_attr(f, "data_epoch", H5T_NATIVE_INT64, &s.data_epoch) &&
      checkpoint::read_attr(f, "data_position", H5T_NATIVE_INT64, &s.data_position);
  std::optional<std::string> config;
  if (std::string text; checkpoint::read_string(f, "config_yaml", &text)) config = text;
  if (!complete || !config) {
    return core::Status::error(where +
                               "lacks training-state attributes or config_yaml: not a "
                               "complete Tessera checkpoint; use an earlier checkpoint");
  }
  checkpoint::read_attr(f, "grid_dp", H5T_NATIVE_INT32, &grid_dp);
  checkpoint::read_attr(f, "grid_tp", H5T_NATIVE_INT32, &grid_tp);
  std::optional<std::string> algorithm;
  if (std::string text; checkpoint::read_string(f, "checksum_algorithm", &text)) algorithm = text;
  std::optional<std::string> converted_from;
  if (std::string text; checkpoint::read_string(f, "converted_from", &text)) converted_from = text;

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
  if (converted_from) std::printf("converted from  %s\n", converted_from->c_str());
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
  checkpoint::H5Id file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  return file.valid() && H5Lexists(file.get(), "/optim", H5P_DEFAULT) > 0;
}

// An error naming the first dataset (file order: /model, then /optim/m, /optim/v) that holds a
// NaN or inf, with how many of its values and where the first is; ok when all are finite. A
// checksum only proves the bytes are those written: a run that diverged writes NaN faithfully.
// Local: `model` (and `adamw`) hold whole tensors (tp = 1).
core::Status check_finite(const std::string& path, const models::Gpt& model,
                          const optim::AdamW* adamw) {
  const params::ParamSet& params = model.param_set();
  std::vector<std::pair<std::string, const core::Tensor*>> arenas = {{"/model/", &model.weights()}};
  if (adamw != nullptr) {
    arenas.push_back({"/optim/m/", &adamw->m()});
    arenas.push_back({"/optim/v/", &adamw->v()});
  }
  std::string first;
  int bad_sets = 0;
  for (const auto& [prefix, arena] : arenas) {
    for (int i = 0; i < params.size(); ++i) {
      const float* x = params.view(*arena, i).f32();
      const int64_t n = params.local_numel(i);
      int64_t bad = 0, at = -1;
      for (int64_t j = 0; j < n; ++j) {
        if (std::isfinite(x[j])) continue;
        if (bad++ == 0) at = j;
      }
      if (bad == 0) continue;
      if (++bad_sets == 1) {
        first = "dataset " + prefix + params.specs()[i].name + " holds " + std::to_string(bad) +
                " non-finite value(s) of " + std::to_string(n) + " (first: " +
                (std::isnan(x[at]) ? "nan"
                 : x[at] > 0       ? "inf"
                                   : "-inf") +
                " at flat index " + std::to_string(at) + ")";
      }
    }
  }
  if (bad_sets == 0) return core::Status::ok();
  return core::Status::error(
      "checkpoint '" + path + "': " + first +
      (bad_sets > 1 ? "; " + std::to_string(bad_sets) + " datasets hold non-finite values" : "") +
      ": the checksums match, so it was written with these values (by a run that had diverged); "
      "use an earlier checkpoint");
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
  // Every rank holds the same whole tensors (read_checkpoint broadcast them over dp), so every
  // rank reaches the same verdict alone.
  TESSERA_RETURN_IF_ERROR(check_finite(path, model, adamw.get()));
  if (grid.world_rank() == 0) {
    const size_t n = models::Gpt::param_specs(config->model).size() * (optim ? 3 : 1);
    std::printf("checkpoint %s: sound (%zu datasets, checksums verified)\n", path.c_str(), n);
  }
  return 0;
}

// Token ids from "1,2,3"; errors name the bad item.
core::Result<std::vector<int32_t>> parse_tokens(const std::string& text) {
  std::vector<int32_t> tokens;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    char* stop = nullptr;
    const long value = std::strtol(item.c_str(), &stop, 10);
    if (item.empty() || *stop != '\0' || value < 0 || value > INT32_MAX) {
      return core::Status::error("--tokens '" + text + "': item '" + item +
                                 "' is not a token id; give comma-separated ids, e.g. 464,3290");
    }
    tokens.push_back(static_cast<int32_t>(value));
    start = end + 1;
  }
  return tokens;
}

// Collective over MPI_COMM_WORLD (tp = 1, every rank computes; world rank 0 writes): the logits
// of the checkpoint's model for `tokens_text`, float32 little-endian, (T, vocab_size) row-major,
// row t the prediction after token t (padding columns dropped).
core::Result<int> logits(const std::string& path, const std::string& tokens_text,
                         const std::string& out_path) {
  auto tokens = parse_tokens(tokens_text);
  if (!tokens) return tokens.status();
  parallel::ProcessGrid grid(MPI_COMM_WORLD, 1);
  auto text = checkpoint::read_checkpoint_config(path, grid);
  if (!text) return text.status();
  auto config = core::parse_config(*text, path + " (stored config)", {});
  if (!config) return config.status();
  const core::ModelConfig& m = config->model;
  const auto T = static_cast<int64_t>(tokens->size());
  if (T > m.max_seq_len) {
    return core::Status::error("--tokens: " + std::to_string(T) + " tokens exceed the model's " +
                               "max_seq_len " + std::to_string(m.max_seq_len) + "; give fewer");
  }
  for (int32_t t : *tokens) {
    if (t >= m.vocab_size) {
      return core::Status::error("--tokens: id " + std::to_string(t) +
                                 " is outside the vocabulary (vocab_size " +
                                 std::to_string(m.vocab_size) + ")");
    }
  }
  models::Gpt model(m, 1, T, &grid.tp_comm());
  auto state = checkpoint::read_checkpoint(path, model, nullptr, grid);
  if (!state) return state.status();
  model.forward(tokens->data(), nullptr, 1, T);
  if (grid.world_rank() != 0) return 0;
  std::FILE* out = std::fopen(out_path.c_str(), "wb");
  if (out == nullptr) {
    return core::Status::error("--out '" + out_path +
                               "' cannot be created: " + std::strerror(errno));
  }
  const int64_t V = m.vocab_size, Vp = model.padded_vocab_local();
  bool ok = true;
  for (int64_t t = 0; t < T; ++t) {
    ok =
        ok && std::fwrite(model.logits() + t * Vp, sizeof(float), V, out) == static_cast<size_t>(V);
  }
  ok = std::fclose(out) == 0 && ok;
  if (!ok) return core::Status::error("--out '" + out_path + "': write failed; check free space");
  std::printf("wrote logits (%" PRId64 " x %" PRId64 ", float32) of %s at step %" PRId64 " to %s\n",
              T, V, path.c_str(), state->step, out_path.c_str());
  return 0;
}

// Serial: world rank 0 converts; the other ranks wait for its verdict.
core::Result<int> convert(const std::string& in, const std::string& out, const std::string& to,
                          const std::string& dtype, bool drop_optimizer, bool force) {
  checkpoint::ConvertOptions options;
  options.drop_optimizer = drop_optimizer;
  options.overwrite = force;
  if (!dtype.empty() && to != "safetensors") {
    return core::Status::error("--dtype '" + dtype +
                               "' applies to --to safetensors only (a bfloat16 Tessera checkpoint "
                               "is --to bf16)");
  }
  if (!dtype.empty() && dtype != "f32" && dtype != "bf16") {
    return core::Status::error("--dtype '" + dtype +
                               "' is not a safetensors dtype; use f32 or bf16");
  }
  options.bf16 = dtype == "bf16";
  if (to == "hdf5") {
    options.to = checkpoint::ConvertTarget::kHdf5;
  } else if (to == "bf16") {
    options.to = checkpoint::ConvertTarget::kBf16;
  } else if (to == "llmc") {
    options.to = checkpoint::ConvertTarget::kLlmc;
  } else if (to == "safetensors") {
    options.to = checkpoint::ConvertTarget::kSafetensors;
  } else {
    return core::Status::error("--to '" + to +
                               "' is not a target; use hdf5, bf16, llmc or safetensors");
  }
  int world_rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  if (world_rank != 0) return 0;
  auto report = checkpoint::convert_checkpoint(in, out, options);
  if (!report) return report.status();
  std::printf("converted %s -> %s (%s): %" PRId64 " tensors, %" PRId64 " numbers, %" PRId64
              " bytes; optimizer state %s; peak buffer %" PRId64 " numbers (one tensor)\n",
              in.c_str(), out.c_str(), to.c_str(), report->datasets, report->elements,
              report->output_bytes,
              report->wrote_optimizer ? "kept"
              : report->had_optimizer ? "dropped"
                                      : "none in the input",
              report->largest_tensor);
  for (const std::string& note : report->notes) std::printf("  %s\n", note.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return core::run_app("tessera-ckpt", argc, argv, [](int ac, char** av) -> core::Result<int> {
    CLI::App app{
        "Inspect, verify or convert a Tessera checkpoint. Example: tessera-ckpt verify "
        "out/ckpt/step_00000200.h5"};
    app.require_subcommand(1);
    std::string inspect_path, verify_path;
    CLI::App* inspect_cmd = app.add_subcommand(
        "inspect", "print the training state, grid, stored config and dataset table (one rank)");
    inspect_cmd->add_option("file", inspect_path, "a checkpoint (.h5)")->required();
    CLI::App* verify_cmd = app.add_subcommand(
        "verify",
        "load every dataset into the stored config's model, check every checksum and that every "
        "value is finite");
    verify_cmd->add_option("file", verify_path, "a checkpoint (.h5)")->required();
    std::string convert_in, convert_out, convert_to;
    bool drop_optimizer = false, force = false;
    CLI::App* convert_cmd = app.add_subcommand(
        "convert",
        "convert a checkpoint: to an llm.c GPT-2 model file (--to llmc), to a Hugging Face GPT-2 "
        "directory (--to safetensors: model.safetensors, config.json, tokenizer), to bfloat16 "
        "for serving (--to bf16, weights only), or to float32 HDF5 (--to hdf5, e.g. from an "
        "llm.c file or a Hugging Face directory, or with --drop-optimizer); streams one tensor "
        "at a time");
    convert_cmd
        ->add_option("input", convert_in,
                     "a Tessera checkpoint (.h5), an llm.c model (.bin), or a Hugging Face GPT-2 "
                     "directory or .safetensors file (config.json beside it)")
        ->required();
    convert_cmd->add_option("output", convert_out, "the file (or Hugging Face directory) to write")
        ->required();
    convert_cmd->add_option("--to", convert_to,
                            "hdf5 | bf16 | llmc | safetensors (default: from the output's "
                            "name: .bin -> llmc, .safetensors or a trailing / -> safetensors, "
                            "else hdf5)");
    std::string convert_dtype;
    convert_cmd->add_option("--dtype", convert_dtype,
                            "safetensors tensor type: f32 (default) or bf16");
    convert_cmd->add_flag("--drop-optimizer", drop_optimizer,
                          "leave AdamW state out (hdf5; bf16 and llmc never carry it)");
    convert_cmd->add_flag("--force", force, "replace an existing output file");
    std::string logits_path, logits_tokens, logits_out;
    CLI::App* logits_cmd = app.add_subcommand(
        "logits",
        "write the model's logits for a token sequence (float32, T x vocab_size) to check other "
        "frameworks against");
    logits_cmd->add_option("file", logits_path, "a checkpoint (.h5)")->required();
    logits_cmd->add_option("--tokens", logits_tokens, "comma-separated token ids")->required();
    logits_cmd->add_option("--out", logits_out, "output file (raw float32)")->required();
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
    if (convert_cmd->parsed()) {
      if (convert_to.empty()) {
        const auto ext = std::filesystem::path(convert_out).extension();
        const bool dir = !convert_out.empty() && convert_out.back() == '/';
        convert_to = ext == ".bin" ? "llmc" : ext == ".safetensors" || dir ? "safetensors" : "hdf5";
      }
      return convert(convert_in, convert_out, convert_to, convert_dtype, drop_optimizer, force);
    }
    if (logits_cmd->parsed()) return logits(logits_path, logits_tokens, logits_out);
    return verify(verify_path);
  });
}
