// Streaming checkpoint conversion: a Source hands out one tensor at a time by dataset name, a Sink
// writes it; the driver walks the sink's order. See convert.h and docs/CHECKPOINT-FORMAT.md.
#include "checkpoint/convert.h"

#include <hdf5.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_dir.h"
#include "checkpoint/checksum.h"
#include "checkpoint/h5_util.h"
#include "checkpoint/hf_gpt2.h"
#include "checkpoint/safetensors.h"
#include "core/bf16.h"
#include "core/config.h"
#include "core/error.h"
#include "models/gpt.h"
#include "params/param_spec.h"

namespace tessera::checkpoint {
namespace {

namespace fs = std::filesystem;

constexpr std::array<unsigned char, 8> kHdf5Signature = {0x89, 'H',  'D',  'F',
                                                         '\r', '\n', 0x1a, '\n'};

// A FILE* closed on scope exit.
struct FileCloser {
  void operator()(std::FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

// What every source knows before its tensors are read.
struct Meta {
  core::Config config;
  TrainState state;
  int grid_dp = 1, grid_tp = 1;
  bool has_optimizer = false;
  std::string description;  // for the converted_from attribute
};

// The tensors in llm.c's order: wte, wpe, then each per-layer kind over all layers (ln1w, ln1b,
// qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb), then ln_f.
std::vector<std::string> llmc_order(int n_layer) {
  static const char* kPerLayer[] = {"ln_1.weight",   "ln_1.bias",        "attn.qkv.weight",
                                    "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                                    "ln_2.weight",   "ln_2.bias",        "mlp.fc.weight",
                                    "mlp.fc.bias",   "mlp.proj.weight",  "mlp.proj.bias"};
  std::vector<std::string> names = {"wte", "wpe"};
  for (const char* kind : kPerLayer) {
    for (int l = 0; l < n_layer; ++l) names.push_back("h." + std::to_string(l) + "." + kind);
  }
  names.push_back("ln_f.weight");
  names.push_back("ln_f.bias");
  return names;
}

const params::ParamSpec& spec_named(const std::vector<params::ParamSpec>& specs,
                                    const std::string& name) {
  for (const params::ParamSpec& s : specs) {
    if (s.name == name) return s;
  }
  TESSERA_ASSERT(false, ("looking up parameter " + name + " in the ParamSpec table").c_str());
  return specs.front();  // unreachable
}

// ---- sources ----

class Source {
 public:
  virtual ~Source() = default;
  const Meta& meta() const { return meta_; }
  // Reads dataset `path` ("/model/<name>", "/optim/m/<name>"...) of global shape spec into out.
  virtual core::Status read(const std::string& path, const params::ParamSpec& spec,
                            std::vector<float>* out) = 0;

 protected:
  Meta meta_;
};

class Hdf5Source : public Source {
 public:
  static core::Result<std::unique_ptr<Hdf5Source>> open(const std::string& path) {
    auto source = std::unique_ptr<Hdf5Source>(new Hdf5Source(path));
    TESSERA_RETURN_IF_ERROR(source->open_and_read_meta());
    return source;
  }

  core::Status read(const std::string& path, const params::ParamSpec& spec,
                    std::vector<float>* out) override {
    QuietH5Errors quiet;
    if (H5Lexists(file_.get(), path.c_str(), H5P_DEFAULT) <= 0) {
      return core::Status::error(where_ + "dataset " + path +
                                 " is missing: the file is corrupt or incomplete; use an earlier "
                                 "checkpoint");
    }
    H5Id dset(H5Dopen2(file_.get(), path.c_str(), H5P_DEFAULT), H5Dclose);
    H5Id type(dset.valid() ? H5Dget_type(dset.get()) : -1, H5Tclose);
    H5Id space(dset.valid() ? H5Dget_space(dset.get()) : -1, H5Sclose);
    if (!dset.valid() || !type.valid() || !space.valid()) {
      return core::Status::error(where_ + "cannot open dataset " + path +
                                 ": the file is corrupt; use an earlier checkpoint");
    }
    if (!is_float32(type.get()) && !is_bf16(type.get())) {
      return core::Status::error(where_ + "dataset " + path +
                                 " is neither float32 nor bfloat16: not a Tessera checkpoint");
    }
    core::Shape shape;
    const int ndims = H5Sget_simple_extent_ndims(space.get());
    if (ndims > 0 && ndims <= 8) {
      hsize_t dims[8];
      H5Sget_simple_extent_dims(space.get(), dims, nullptr);
      for (int i = 0; i < ndims; ++i) shape.push_back(static_cast<int64_t>(dims[i]));
    }
    if (shape != spec.global_shape) {
      return core::Status::error(where_ + path + " has shape " + core::shape_string(shape) +
                                 ", its stored config gives " +
                                 core::shape_string(spec.global_shape) +
                                 ": the file is corrupt; use an earlier checkpoint");
    }
    uint64_t stored = 0;
    if (!read_attr(dset.get(), "checksum", H5T_NATIVE_UINT64, &stored)) {
      return core::Status::error(where_ + "dataset " + path +
                                 " has no checksum attribute: the file is corrupt; use an "
                                 "earlier checkpoint");
    }
    out->resize(static_cast<size_t>(core::shape_numel(spec.global_shape)));
    if (H5Dread(dset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, out->data()) < 0) {
      return core::Status::error(where_ + "cannot read dataset " + path +
                                 " (truncated or corrupt file); use an earlier checkpoint");
    }
    const uint64_t computed = tensor_checksum(out->data(), static_cast<int64_t>(out->size()));
    if (computed != stored) {
      char text[96];
      std::snprintf(text, sizeof text, " checksum mismatch (stored 0x%016llx, computed 0x%016llx)",
                    static_cast<unsigned long long>(stored),
                    static_cast<unsigned long long>(computed));
      return core::Status::error(where_ + "dataset " + path + text +
                                 ": the file is corrupt; use an earlier checkpoint");
    }
    return core::Status::ok();
  }

 private:
  explicit Hdf5Source(const std::string& path)
      : path_(path), where_("checkpoint '" + path + "': ") {}

  core::Status open_and_read_meta() {
    QuietH5Errors quiet;
    file_ = H5Id(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!file_.valid()) {
      return core::Status::error(where_ +
                                 "cannot be opened as an HDF5 file (truncated or corrupt); use "
                                 "an earlier checkpoint");
    }
    const hid_t f = file_.get();
    int version = -1;
    if (!read_attr(f, "format_version", H5T_NATIVE_INT, &version)) {
      return core::Status::error(where_ +
                                 "has no format_version attribute: it is not a Tessera "
                                 "checkpoint");
    }
    if (version != kFormatVersion) {
      return core::Status::error(where_ + "format version " + std::to_string(version) +
                                 " is not supported (this build reads " +
                                 std::to_string(kFormatVersion) +
                                 "); convert it with the Tessera version that wrote it");
    }
    std::string yaml;
    TrainState& s = meta_.state;
    const bool have_state = read_attr(f, "step", H5T_NATIVE_INT64, &s.step) &&
                            read_attr(f, "tokens_seen", H5T_NATIVE_INT64, &s.tokens_seen) &&
                            read_attr(f, "seed", H5T_NATIVE_UINT64, &s.seed) &&
                            read_attr(f, "data_epoch", H5T_NATIVE_INT64, &s.data_epoch) &&
                            read_attr(f, "data_position", H5T_NATIVE_INT64, &s.data_position) &&
                            read_string(f, "config_yaml", &yaml);
    if (!have_state) {
      return core::Status::error(where_ +
                                 "lacks a training-state attribute (step, tokens_seen, seed, "
                                 "data_epoch, data_position, config_yaml): the file is corrupt; "
                                 "use an earlier checkpoint");
    }
    read_attr(f, "grid_dp", H5T_NATIVE_INT, &meta_.grid_dp);
    read_attr(f, "grid_tp", H5T_NATIVE_INT, &meta_.grid_tp);
    core::Result<core::Config> config = core::parse_config(yaml, path_ + " (stored config)", {});
    if (!config) return config.status();
    meta_.config = *config;
    meta_.has_optimizer = H5Lexists(f, "/optim", H5P_DEFAULT) > 0;
    meta_.description = "Tessera checkpoint " + fs::path(path_).filename().string() + " (step " +
                        std::to_string(s.step) + ")";
    return core::Status::ok();
  }

  std::string path_, where_;
  H5Id file_;
};

class LlmcSource : public Source {
 public:
  static core::Result<std::unique_ptr<LlmcSource>> open(const std::string& path) {
    auto source = std::unique_ptr<LlmcSource>(new LlmcSource(path));
    TESSERA_RETURN_IF_ERROR(source->open_and_read_header());
    return source;
  }

  core::Status read(const std::string& path, const params::ParamSpec& spec,
                    std::vector<float>* out) override {
    const std::string prefix = "/model/";
    auto it =
        path.rfind(prefix, 0) == 0 ? offsets_.find(path.substr(prefix.size())) : offsets_.end();
    if (it == offsets_.end()) {
      return core::Status::error(where_ + "has no tensor " + path +
                                 " (an llm.c model file holds model weights only)");
    }
    const int64_t n = core::shape_numel(spec.global_shape);
    const size_t element = bf16_ ? 2 : 4;
    out->resize(static_cast<size_t>(n));
    const long long byte_offset =
        static_cast<long long>(kLlmcHeaderWords) * 4 + static_cast<long long>(it->second) * element;
    if (std::fseek(file_.get(), static_cast<long>(byte_offset), SEEK_SET) != 0) {
      return core::Status::error(where_ + "cannot seek to tensor " + it->first + ": " +
                                 std::strerror(errno));
    }
    size_t got = 0;
    if (bf16_) {
      std::vector<uint16_t> raw(static_cast<size_t>(n));
      got = std::fread(raw.data(), 2, raw.size(), file_.get());
      for (size_t i = 0; i < raw.size(); ++i) (*out)[i] = core::from_bf16(raw[i]);
    } else {
      got = std::fread(out->data(), 4, out->size(), file_.get());
    }
    if (got != static_cast<size_t>(n)) {
      return core::Status::error(where_ + "is truncated in tensor " + it->first +
                                 "; download or export the file again");
    }
    return core::Status::ok();
  }

 private:
  explicit LlmcSource(const std::string& path)
      : path_(path), where_("llm.c model file '" + path + "': ") {}

  core::Status open_and_read_header() {
    file_.reset(std::fopen(path_.c_str(), "rb"));
    if (!file_) {
      return core::Status::error(where_ + "cannot be opened (" + std::strerror(errno) +
                                 "); check the path");
    }
    int32_t h[kLlmcHeaderWords] = {};
    if (std::fread(h, 4, kLlmcHeaderWords, file_.get()) != kLlmcHeaderWords) {
      return core::Status::error(where_ + "is shorter than its 1024-byte header: truncated");
    }
    if (h[0] != kLlmcMagic) {
      return core::Status::error(where_ + "has magic " + std::to_string(h[0]) + ", expected " +
                                 std::to_string(kLlmcMagic) + ": not an llm.c GPT-2 model file");
    }
    if (h[1] != kLlmcVersionF32 && h[1] != kLlmcVersionBf16) {
      return core::Status::error(where_ + "has version " + std::to_string(h[1]) +
                                 "; this build reads versions 3 (float32) and 5 (bfloat16, "
                                 "padded vocabulary); re-export it with a current llm.c");
    }
    bf16_ = h[1] == kLlmcVersionBf16;
    const int maxT = h[2], V = h[3], L = h[4], NH = h[5], C = h[6], Vp = h[7];
    if (maxT <= 0 || V <= 0 || L <= 0 || NH <= 0 || C <= 0 || Vp < V) {
      return core::Status::error(where_ + "has impossible sizes (maxT " + std::to_string(maxT) +
                                 ", V " + std::to_string(V) + ", L " + std::to_string(L) + ", NH " +
                                 std::to_string(NH) + ", C " + std::to_string(C) + ", Vp " +
                                 std::to_string(Vp) + "): the header is corrupt");
    }
    // The sizes must fit the file before anything is sized by them: wte (Vp x C), wpe (maxT x C)
    // and each layer's weight matrices (12 C^2: qkv, proj, fc, fc proj) all lie in it. A corrupt
    // header is refused here, never left to build a table of its L layers or to overflow
    // (found by tests/fuzz/llmc_fuzz.cpp: L 65536 and C 262144 in a 1.5 KB file hung the reader).
    std::error_code ec;
    const auto size = static_cast<int64_t>(fs::file_size(path_, ec));
    const int64_t n = ec ? 0 : (size - kLlmcHeaderWords * 4LL) / (bf16_ ? 2 : 4);  // elements
    const int64_t c = C;
    if (Vp > n / c || maxT > n / c || c > n / c || c * c > n / 12 || L > n / (12 * c * c) ||
        Vp > std::numeric_limits<int>::max() - 256) {
      return core::Status::error(
          where_ + "holds " + std::to_string(ec ? 0 : size) + " bytes, too few for its header's " +
          "sizes (maxT " + std::to_string(maxT) + ", V " + std::to_string(V) + ", L " +
          std::to_string(L) + ", NH " + std::to_string(NH) + ", C " + std::to_string(C) +
          ", Vp " + std::to_string(Vp) + "): truncated, or the header is corrupt; download or "
          "export the file again");
    }
    core::ModelConfig& m = meta_.config.model;
    m.vocab_size = V;
    m.max_seq_len = maxT;
    m.n_layer = L;
    m.n_head = NH;
    m.n_embd = C;
    // The smallest-looking padding multiple that gives llm.c's Vp (llm.c pads to 128).
    m.pad_vocab_to = Vp;
    for (int pad : {128, 64, 256, 32, 16, 8, 1}) {
      m.pad_vocab_to = pad;
      if (m.padded_vocab_size() == Vp) break;
      m.pad_vocab_to = Vp;
    }
    meta_.config.train.seq_len = std::min(meta_.config.train.seq_len, maxT);
    TESSERA_RETURN_IF_ERROR(meta_.config.validate().with_context(where_ + "its model sizes: "));
    // Tensor offsets (in elements after the header) in llm.c's order.
    std::map<std::string, int64_t> numel;
    for (const params::ParamSpec& spec : models::Gpt::param_specs(m)) {
      numel[spec.name] = core::shape_numel(spec.global_shape);
    }
    int64_t offset = 0;
    for (const std::string& name : llmc_order(L)) {
      offsets_[name] = offset;
      offset += numel.at(name);
    }
    const int64_t expected = kLlmcHeaderWords * 4LL + offset * (bf16_ ? 2 : 4);
    if (ec || size != expected) {
      return core::Status::error(where_ + "holds " + std::to_string(size) +
                                 " bytes; its header describes " + std::to_string(expected) +
                                 " (truncated, or not written for this header); download or "
                                 "export the file again");
    }
    meta_.state.seed = meta_.config.train.seed;
    meta_.description = "llm.c model file " + fs::path(path_).filename().string() +
                        (bf16_ ? " (version 5, bfloat16)" : " (version 3, float32)");
    return core::Status::ok();
  }

  std::string path_, where_;
  File file_;
  bool bf16_ = false;
  std::map<std::string, int64_t> offsets_;
};

// A Hugging Face GPT-2 (hf_gpt2.h): model weights only, handed out in Tessera's layout.
class SafetensorsSource : public Source {
 public:
  static core::Result<std::unique_ptr<SafetensorsSource>> open(const std::string& path) {
    auto reader = HfGpt2Reader::open(path);
    if (!reader) return reader.status();
    auto source = std::unique_ptr<SafetensorsSource>(new SafetensorsSource());
    source->reader_ = std::move(*reader);
    Meta& meta = source->meta_;
    meta.config = source->reader_->config();
    meta.state.seed = meta.config.train.seed;
    meta.description = "Hugging Face GPT-2 " + source->reader_->paths().weights +
                       (source->reader_->from_tessera() ? " (a Tessera export)" : "");
    return source;
  }

  core::Status read(const std::string& path, const params::ParamSpec& spec,
                    std::vector<float>* out) override {
    if (path.rfind("/model/", 0) != 0) {
      return core::Status::error("Hugging Face model '" + reader_->paths().weights +
                                 "' has no tensor " + path + " (it holds model weights only)");
    }
    return reader_->read(spec, out);
  }

  const HfPaths& paths() const { return reader_->paths(); }

 private:
  SafetensorsSource() = default;
  std::unique_ptr<HfGpt2Reader> reader_;
};

// ---- sinks ----

class Sink {
 public:
  virtual ~Sink() = default;
  virtual void write(const std::string& path, const params::ParamSpec& spec,
                     std::vector<float>& data) = 0;
  // Closes the temporary file; the driver then syncs and renames it.
  virtual void close() = 0;
};

class Hdf5Sink : public Sink {
 public:
  Hdf5Sink(const std::string& tmp, const Meta& meta, bool bf16, bool optimizer) : bf16_(bf16) {
    const std::string doing = "creating converted checkpoint " + tmp;
    file_ = TESSERA_H5_OPEN(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT),
                            H5Fclose, doing);
    const hid_t f = file_.get();
    write_i32(f, "format_version", kFormatVersion);
    write_i64(f, "step", meta.state.step);
    write_i64(f, "tokens_seen", meta.state.tokens_seen);
    write_u64(f, "seed", meta.state.seed);
    write_i64(f, "data_epoch", meta.state.data_epoch);
    write_i64(f, "data_position", meta.state.data_position);
    write_string(f, "config_yaml", meta.config.to_yaml());
    write_i32(f, "grid_dp", meta.grid_dp);
    write_i32(f, "grid_tp", meta.grid_tp);
    write_string(f, "checksum_algorithm", kChecksumAlgorithm);
    write_string(f, "converted_from", meta.description);
    std::vector<const char*> groups = {"/model"};
    if (optimizer) groups.insert(groups.end(), {"/optim", "/optim/m", "/optim/v"});
    for (const char* g : groups) {
      TESSERA_H5_OPEN(H5Gcreate2(f, g, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose, doing);
    }
    file_type_ = bf16_ ? bf16_type() : H5Id(H5Tcopy(H5T_IEEE_F32LE), H5Tclose);
  }

  void write(const std::string& path, const params::ParamSpec& spec,
             std::vector<float>& data) override {
    const std::string doing = "writing converted dataset " + path;
    std::vector<uint16_t> half;
    if (bf16_) {
      half.resize(data.size());
      for (size_t i = 0; i < data.size(); ++i) {
        half[i] = core::to_bf16(data[i]);
        data[i] = core::from_bf16(half[i]);  // the checksum covers the stored (rounded) values
      }
    }
    const std::vector<hsize_t> dims(spec.global_shape.begin(), spec.global_shape.end());
    H5Id space = TESSERA_H5_OPEN(
        H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose, doing);
    H5Id dset = TESSERA_H5_OPEN(H5Dcreate2(file_.get(), path.c_str(), file_type_.get(), space.get(),
                                           H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                                H5Dclose, doing);
    write_u64(dset.get(), "checksum",
              tensor_checksum(data.data(), static_cast<int64_t>(data.size())));
    if (bf16_) {
      TESSERA_H5_CHECK(
          H5Dwrite(dset.get(), file_type_.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, half.data()),
          doing.c_str());
    } else {
      TESSERA_H5_CHECK(
          H5Dwrite(dset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data.data()),
          doing.c_str());
    }
  }

  void close() override {
    file_type_.reset();
    TESSERA_H5_CHECK(H5Fflush(file_.get(), H5F_SCOPE_GLOBAL), "flushing a converted checkpoint");
    file_.reset();
  }

 private:
  bool bf16_;
  H5Id file_, file_type_;
};

class LlmcSink : public Sink {
 public:
  LlmcSink(const std::string& tmp, const core::ModelConfig& m) : tmp_(tmp) {
    file_.reset(std::fopen(tmp.c_str(), "wb"));
    if (!file_) throw Error("cannot create '" + tmp + "': " + std::strerror(errno));
    int32_t h[kLlmcHeaderWords] = {};
    h[0] = kLlmcMagic;
    h[1] = kLlmcVersionF32;
    h[2] = m.max_seq_len;
    h[3] = m.vocab_size;
    h[4] = m.n_layer;
    h[5] = m.n_head;
    h[6] = m.n_embd;
    h[7] = m.padded_vocab_size();
    put(h, 4, kLlmcHeaderWords);
  }

  void write(const std::string&, const params::ParamSpec&, std::vector<float>& data) override {
    put(data.data(), 4, data.size());
  }

  void close() override {
    if (std::fflush(file_.get()) != 0) throw Error("cannot flush '" + tmp_ + "'");
    file_.reset();
  }

 private:
  void put(const void* p, size_t size, size_t n) {
    if (std::fwrite(p, size, n, file_.get()) != n) {
      throw Error("cannot write '" + tmp_ + "': " + std::strerror(errno) +
                  "; check free space on its disk");
    }
  }
  std::string tmp_;
  File file_;
};

// model.safetensors in Hugging Face's names and layouts: Conv1D weights transposed to (in, out),
// wte cut to its vocab_size real rows. The header (every offset) is written first.
class SafetensorsSink : public Sink {
 public:
  SafetensorsSink(const std::string& tmp, const Meta& meta,
                  const std::vector<params::ParamSpec>& specs, bool bf16)
      : model_(meta.config.model) {
    std::vector<SafetensorsTensor> layout;
    for (const params::ParamSpec& spec : specs) {
      layout.push_back(
          {hf_gpt2_name(spec.name).name, bf16 ? "BF16" : "F32", hf_gpt2_shape(spec, model_)});
    }
    // "format": "pt" is what transformers' loader requires of a safetensors file's metadata.
    const std::map<std::string, std::string> metadata = {
        {"format", "pt"},
        {kHfTesseraConfigKey, meta.config.to_yaml()},
        {"tessera_step", std::to_string(meta.state.step)}};
    auto writer = SafetensorsWriter::create(tmp, std::move(layout), metadata);
    if (!writer) throw Error(writer.status().message());
    writer_ = std::make_unique<SafetensorsWriter>(std::move(*writer));
  }

  void write(const std::string&, const params::ParamSpec& spec, std::vector<float>& data) override {
    const HfName hf = hf_gpt2_name(spec.name);
    const float* out = data.data();
    int64_t n = static_cast<int64_t>(data.size());
    if (spec.name == "wte") {
      const int64_t C = spec.global_shape[1];
      n = static_cast<int64_t>(model_.vocab_size) * C;
      nonzero_padding_ = std::any_of(data.begin() + n, data.end(), [](float x) { return x != 0; });
    } else if (hf.transposed) {
      // (out, in) -> Conv1D (in, out).
      const int64_t rows_out = spec.global_shape[0], cols_in = spec.global_shape[1];
      scratch_.resize(data.size());
      for (int64_t o = 0; o < rows_out; ++o) {
        const float* row = data.data() + o * cols_in;
        for (int64_t i = 0; i < cols_in; ++i) scratch_[i * rows_out + o] = row[i];
      }
      out = scratch_.data();
    }
    core::Status st = writer_->write(hf.name, out, n);
    if (!st.is_ok()) throw Error(st.message());
  }

  void close() override {
    core::Status st = writer_->close();
    if (!st.is_ok()) throw Error(st.message());
  }

  bool nonzero_padding() const { return nonzero_padding_; }

 private:
  core::ModelConfig model_;
  std::unique_ptr<SafetensorsWriter> writer_;
  std::vector<float> scratch_;  // one transposed matrix
  bool nonzero_padding_ = false;
};

// Writes `text` to `path` as `path.tmp`, fsynced and renamed.
core::Status write_file_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      return core::Status::error("cannot write '" + tmp + "'; check free space on its disk");
    }
  }
  TESSERA_RETURN_IF_ERROR(sync_file(tmp));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return core::Status::error("cannot rename '" + tmp + "' to '" + path +
                               "': " + std::strerror(errno));
  }
  return core::Status::ok();
}

core::Result<std::string> read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return core::Status::error("cannot read '" + path + "'");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return text;
}

// The id of "<|endoftext|>" in a GPT-2 vocab.json, or -1.
int eot_id(const std::string& vocab_json) {
  const nlohmann::json v = nlohmann::json::parse(vocab_json, nullptr, false);
  if (v.is_discarded() || !v.is_object() || !v.contains("<|endoftext|>") ||
      !v["<|endoftext|>"].is_number_integer()) {
    return -1;
  }
  return v["<|endoftext|>"].get<int>();
}

// A GPT-2 tokenizer's two files and where they go.
struct TokenizerCopy {
  std::string vocab_from, merges_from, vocab_to, merges_to;
};

core::Result<std::unique_ptr<Source>> open_source(const std::string& in) {
  core::Result<FileKind> kind = detect_file_kind(in);
  if (!kind) return kind.status();
  if (*kind == FileKind::kSafetensors) {
    auto source = SafetensorsSource::open(in);
    if (!source) return source.status();
    return std::unique_ptr<Source>(std::move(*source));
  }
  if (*kind == FileKind::kHdf5) {
    auto source = Hdf5Source::open(in);
    if (!source) return source.status();
    return std::unique_ptr<Source>(std::move(*source));
  }
  auto source = LlmcSource::open(in);
  if (!source) return source.status();
  return std::unique_ptr<Source>(std::move(*source));
}

}  // namespace

core::Result<FileKind> detect_file_kind(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(fs::path(path) / kHfWeightsFile, ec) ||
        fs::exists(fs::path(path) / "model.safetensors.index.json", ec)) {
      return FileKind::kSafetensors;
    }
    return core::Status::error("'" + path + "' is a directory without " + kHfWeightsFile +
                               "; give a Hugging Face model directory, a checkpoint file or an "
                               "llm.c model file");
  }
  if (!fs::is_regular_file(path, ec)) {
    return core::Status::error("'" + path + "' not found or not a regular file; check the path");
  }
  File f(std::fopen(path.c_str(), "rb"));
  if (!f) return core::Status::error("'" + path + "' cannot be opened: " + std::strerror(errno));
  std::array<unsigned char, 9> head{};
  const size_t got = std::fread(head.data(), 1, head.size(), f.get());
  if (got >= 8 && std::equal(kHdf5Signature.begin(), kHdf5Signature.end(), head.begin())) {
    return FileKind::kHdf5;
  }
  int32_t magic = 0;
  if (got >= 4) std::memcpy(&magic, head.data(), 4);
  if (magic == kLlmcMagic) return FileKind::kLlmc;
  // safetensors: a little-endian u64 header length within the format's limit, then the JSON's
  // '{'. A length past the file still counts (the reader then says the file is truncated).
  uint64_t header_length = 0;
  for (int i = 7; i >= 0 && got == 9; --i) header_length = (header_length << 8) | head[i];
  if (got == 9 && head[8] == '{' && header_length <= kSafetensorsMaxHeader) {
    return FileKind::kSafetensors;
  }
  return core::Status::error("'" + path +
                             "' is neither an HDF5 file (a Tessera checkpoint), an llm.c GPT-2 "
                             "model file (magic 20240326) nor a safetensors file; give one of "
                             "those");
}

core::Result<ConvertReport> convert_checkpoint(const std::string& in, const std::string& out_arg,
                                               const ConvertOptions& options) {
  std::error_code ec;
  const bool to_hf = options.to == ConvertTarget::kSafetensors;
  std::string out = out_arg;  // "out/hf/" names the directory out/hf
  while (to_hf && out.size() > 1 && out.back() == '/') out.pop_back();
  if (options.bf16 && !to_hf) {
    return core::Status::error(
        "convert: bf16 safetensors are for --to safetensors; for a "
        "bfloat16 Tessera checkpoint use --to bf16");
  }
  // The files written: `target` (through the sink), then for Hugging Face config.json and the
  // tokenizer's files, all in `out_dir`.
  const bool hf_dir = to_hf && fs::path(out).extension() != ".safetensors";
  const std::string out_dir =
      hf_dir ? out
             : (fs::path(out).parent_path().empty() ? "." : fs::path(out).parent_path().string());
  const std::string target = hf_dir ? (fs::path(out) / kHfWeightsFile).string() : out;
  const std::string hf_config = (fs::path(out_dir) / kHfConfigFile).string();
  const std::string in_file =
      fs::is_directory(in, ec) ? (fs::path(in) / kHfWeightsFile).string() : in;
  if (fs::exists(target, ec) && fs::equivalent(in_file, target, ec)) {
    return core::Status::error("convert: output '" + out +
                               "' is the input; give another output path");
  }
  const fs::path parent = fs::path(hf_dir ? out : target).parent_path();
  if (!parent.empty() && !fs::is_directory(parent, ec)) {
    return core::Status::error("convert: output directory '" + parent.string() +
                               "' does not exist; create it first");
  }
  if (hf_dir && fs::exists(out, ec) && !fs::is_directory(out, ec)) {
    return core::Status::error("convert: output '" + out +
                               "' is a file; a Hugging Face model is a directory (or give a "
                               "name ending .safetensors)");
  }
  core::Result<std::unique_ptr<Source>> source = open_source(in);
  if (!source) return source.status();
  Meta meta = (*source)->meta();
  const core::ModelConfig& m = meta.config.model;
  if ((options.to == ConvertTarget::kLlmc || to_hf) && m.arch != "gpt2") {
    return core::Status::error("convert: model.arch '" + m.arch + "' has no " +
                               (to_hf ? "Hugging Face GPT-2" : "llm.c") +
                               " layout; those files hold GPT-2 only");
  }

  ConvertReport report;
  // Tokenizer files travel with the weights when they are GPT-2's vocab.json / merges.txt.
  std::optional<TokenizerCopy> tokenizer;
  int eot = m.vocab_size - 1;  // Tessera's trained tokenizers and GPT-2's put <|endoftext|> last
  if (to_hf) {
    const std::string prefix = meta.config.data.tokenizer;
    TokenizerCopy t{prefix + ".vocab.json", prefix + ".merges.txt",
                    (fs::path(out_dir) / "vocab.json").string(),
                    (fs::path(out_dir) / "merges.txt").string()};
    if (fs::is_regular_file(t.vocab_from, ec) && fs::is_regular_file(t.merges_from, ec)) {
      tokenizer = t;
      if (auto text = read_text(t.vocab_from); text && eot_id(*text) >= 0) eot = eot_id(*text);
    } else {
      report.notes.push_back("no tokenizer files copied: the stored data.tokenizer '" + prefix +
                             "' has no .vocab.json / .merges.txt here; copy a GPT-2-format "
                             "tokenizer into " +
                             out_dir + " as vocab.json and merges.txt");
    }
  } else if (auto* hf = dynamic_cast<SafetensorsSource*>(source->get())) {
    const fs::path dir = hf->paths().dir;
    const std::string stem = (fs::path(out).parent_path() / fs::path(out).stem()).string();
    TokenizerCopy t{(dir / "vocab.json").string(), (dir / "merges.txt").string(),
                    stem + ".vocab.json", stem + ".merges.txt"};
    if (fs::is_regular_file(t.vocab_from, ec) && fs::is_regular_file(t.merges_from, ec)) {
      tokenizer = t;
      meta.config.data.tokenizer = stem;
    } else {
      report.notes.push_back(
          "no vocab.json / merges.txt beside the weights: the stored "
          "data.tokenizer is '" +
          meta.config.data.tokenizer + "'; give tessera-generate --tokenizer when it is not that");
    }
  }
  std::vector<std::string> outputs = {target};
  if (to_hf) outputs.push_back(hf_config);
  if (tokenizer) outputs.insert(outputs.end(), {tokenizer->vocab_to, tokenizer->merges_to});
  if (!options.overwrite) {
    for (const std::string& path : outputs) {
      if (fs::exists(path, ec)) {
        return core::Status::error("convert: output '" + path +
                                   "' exists; remove it, choose another name, or pass --force");
      }
    }
  }
  if (hf_dir && !fs::is_directory(out, ec) && !fs::create_directory(out, ec)) {
    return core::Status::error("convert: cannot create directory '" + out + "': " + ec.message());
  }

  report.had_optimizer = meta.has_optimizer;
  report.wrote_optimizer =
      options.to == ConvertTarget::kHdf5 && meta.has_optimizer && !options.drop_optimizer;
  const std::vector<params::ParamSpec> specs = models::Gpt::param_specs(m);
  std::vector<std::pair<std::string, const params::ParamSpec*>> order;
  if (options.to == ConvertTarget::kLlmc) {
    for (const std::string& name : llmc_order(m.n_layer)) {
      order.emplace_back("/model/" + name, &spec_named(specs, name));
    }
  } else {
    for (const char* group : {"/model/", "/optim/m/", "/optim/v/"}) {
      if (group != std::string("/model/") && !report.wrote_optimizer) continue;
      for (const params::ParamSpec& s : specs) order.emplace_back(group + s.name, &s);
    }
  }

  const std::string tmp = target + ".tmp";
  {
    std::unique_ptr<Sink> sink;
    SafetensorsSink* hf_sink = nullptr;
    if (options.to == ConvertTarget::kLlmc) {
      sink = std::make_unique<LlmcSink>(tmp, m);
    } else if (to_hf) {
      auto s = std::make_unique<SafetensorsSink>(tmp, meta, specs, options.bf16);
      hf_sink = s.get();
      sink = std::move(s);
    } else {
      sink = std::make_unique<Hdf5Sink>(tmp, meta, options.to == ConvertTarget::kBf16,
                                        report.wrote_optimizer);
    }
    std::vector<float> buffer;  // the one tensor in memory
    for (const auto& [path, spec] : order) {
      core::Status read = (*source)->read(path, *spec, &buffer);
      if (!read.is_ok()) {
        sink.reset();
        fs::remove(tmp, ec);
        return read;
      }
      sink->write(path, *spec, buffer);
      report.datasets += 1;
      report.elements += static_cast<int64_t>(buffer.size());
      report.largest_tensor = std::max(report.largest_tensor, static_cast<int64_t>(buffer.size()));
    }
    sink->close();
    if (hf_sink != nullptr && hf_sink->nonzero_padding()) {
      report.notes.push_back("wte's padding rows (" + std::to_string(m.vocab_size) + " to " +
                             std::to_string(m.padded_vocab_size()) +
                             ") held non-zero values; they were dropped (no token reaches them)");
    }
  }
  TESSERA_RETURN_IF_ERROR(sync_file(tmp));
  if (std::rename(tmp.c_str(), target.c_str()) != 0) {
    return core::Status::error("convert: cannot rename '" + tmp + "' to '" + target +
                               "': " + std::strerror(errno));
  }
  if (to_hf) {
    TESSERA_RETURN_IF_ERROR(write_file_atomic(
        hf_config, hf_gpt2_config_json(m, eot, options.bf16 ? "bfloat16" : "float32")));
  }
  if (tokenizer) {
    for (const auto& [from, to] : {std::pair{tokenizer->vocab_from, tokenizer->vocab_to},
                                   std::pair{tokenizer->merges_from, tokenizer->merges_to}}) {
      auto text = read_text(from);
      if (!text) return text.status().with_context("convert: copying the tokenizer: ");
      TESSERA_RETURN_IF_ERROR(write_file_atomic(to, *text));
    }
    report.notes.push_back("tokenizer: copied " + tokenizer->vocab_from + " and " +
                           tokenizer->merges_from + " to " + tokenizer->vocab_to + " and " +
                           tokenizer->merges_to);
  }
  TESSERA_RETURN_IF_ERROR(sync_directory(out_dir));
  report.output_bytes = static_cast<int64_t>(fs::file_size(target, ec));
  return report;
}

}  // namespace tessera::checkpoint
