// Hugging Face GPT-2 names, shapes and config.json, and the reader that turns model.safetensors
// back into Tessera's layout one tensor at a time. See hf_gpt2.h and docs/CHECKPOINT-FORMAT.md.
#include "checkpoint/hf_gpt2.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "checkpoint/safetensors.h"
#include "core/error.h"
#include "models/gpt.h"
#include "parallel/communicator.h"
#include "parallel/process_grid.h"
#include "params/param_spec.h"

namespace tessera::checkpoint {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kLmPrefix = "transformer.";

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// An attention-mask buffer older GPT-2 files carry beside the weights: h.<l>.attn.bias (a causal
// mask of shape (1, 1, n_positions, n_positions), unlike c_attn.bias) or h.<l>.attn.masked_bias.
bool is_mask_buffer(const std::string& name) {
  return ends_with(name, ".attn.bias") || ends_with(name, ".attn.masked_bias");
}

// Collective over comm: the status of the lowest world rank that failed (OK when none did).
core::Status agree(const core::Status& local, parallel::Communicator& comm, int rank, int size) {
  double first_failed = local.is_ok() ? 0.0 : static_cast<double>(size - rank);
  comm.all_reduce(&first_failed, 1, parallel::ReduceOp::kMax);
  if (first_failed == 0.0) return core::Status::ok();
  const int root = size - static_cast<int>(first_failed);
  std::string message = rank == root ? local.message() : std::string();
  uint64_t length = message.size();
  comm.broadcast_bytes(&length, sizeof length, root);
  message.resize(length);
  comm.broadcast_bytes(message.data(), static_cast<int64_t>(length), root);
  return core::Status::error(message);
}

// Reads config.json into the model sizes of `config`, checking what Tessera computes alike.
core::Status read_hf_config(const std::string& path, core::ModelConfig* m) {
  const std::string where = "Hugging Face config '" + path + "': ";
  std::ifstream in(path);
  if (!in) {
    return core::Status::error(where +
                               "not found; a model directory needs config.json beside "
                               "model.safetensors (transformers' save_pretrained writes "
                               "both)");
  }
  std::stringstream text;
  text << in.rdbuf();
  const json c = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (c.is_discarded() || !c.is_object()) {
    return core::Status::error(where + "is not a JSON object; write it again");
  }
  const std::string type = c.value("model_type", std::string());
  if (type != "gpt2") {
    return core::Status::error(where + "model_type is '" + type +
                               "'; Tessera imports GPT-2 (model_type gpt2) only");
  }
  auto positive = [&](const char* key, int* out) -> core::Status {
    if (!c.contains(key) || !c[key].is_number_integer() || c[key].get<int64_t>() <= 0 ||
        c[key].get<int64_t>() > (int64_t{1} << 30)) {
      return core::Status::error(where + key + " is " +
                                 (c.contains(key) ? c[key].dump() : "absent") +
                                 "; expected a positive integer");
    }
    *out = c[key].get<int>();
    return core::Status::ok();
  };
  TESSERA_RETURN_IF_ERROR(positive("vocab_size", &m->vocab_size));
  TESSERA_RETURN_IF_ERROR(positive("n_positions", &m->max_seq_len));
  TESSERA_RETURN_IF_ERROR(positive("n_layer", &m->n_layer));
  TESSERA_RETURN_IF_ERROR(positive("n_head", &m->n_head));
  TESSERA_RETURN_IF_ERROR(positive("n_embd", &m->n_embd));
  // What Hugging Face's GPT-2 may vary that Tessera's model fixes; absent keys take GPT2Config's
  // defaults, which are Tessera's.
  const std::string act = c.value("activation_function", std::string("gelu_new"));
  if (act != "gelu_new" && act != "gelu_pytorch_tanh") {
    return core::Status::error(where + "activation_function is '" + act +
                               "'; Tessera's GELU is the tanh approximation (gelu_new)");
  }
  if (c.contains("layer_norm_epsilon") &&
      (!c["layer_norm_epsilon"].is_number() || c["layer_norm_epsilon"].get<double>() != 1e-5)) {
    return core::Status::error(where + "layer_norm_epsilon is " + c["layer_norm_epsilon"].dump() +
                               "; Tessera's LayerNorm uses 1e-5");
  }
  if (c.contains("n_inner") && !c["n_inner"].is_null() &&
      !(c["n_inner"].is_number_integer() && c["n_inner"].get<int64_t>() == 4LL * m->n_embd)) {
    return core::Status::error(where + "n_inner is " + c["n_inner"].dump() +
                               "; Tessera's MLP has 4 n_embd = " + std::to_string(4 * m->n_embd) +
                               " hidden units");
  }
  for (const auto& [key, expected] :
       std::vector<std::pair<const char*, bool>>{{"tie_word_embeddings", true},
                                                 {"scale_attn_weights", true},
                                                 {"scale_attn_by_inverse_layer_idx", false},
                                                 {"add_cross_attention", false}}) {
    if (c.contains(key) && c[key] != expected) {
      return core::Status::error(where + key + " is " + c[key].dump() + "; Tessera's GPT-2 has " +
                                 (expected ? "true" : "false"));
    }
  }
  return core::Status::ok();
}

// "model.n_embd 768 in the Hugging Face model, 64 in this model, ..." (empty when they agree).
std::string model_diff(const core::ModelConfig& theirs, const core::ModelConfig& ours) {
  std::string diff;
  auto add = [&](const char* key, int a, int b) {
    if (a == b) return;
    if (!diff.empty()) diff += ", ";
    diff += std::string(key) + " " + std::to_string(a) + " in the Hugging Face model, " +
            std::to_string(b) + " in this model";
  };
  add("model.vocab_size", theirs.vocab_size, ours.vocab_size);
  add("model.max_seq_len", theirs.max_seq_len, ours.max_seq_len);
  add("model.n_layer", theirs.n_layer, ours.n_layer);
  add("model.n_head", theirs.n_head, ours.n_head);
  add("model.n_embd", theirs.n_embd, ours.n_embd);
  return diff;
}

}  // namespace

HfName hf_gpt2_name(const std::string& name) {
  static const std::map<std::string, HfName> kPerLayer = {
      {"ln_1.weight", {"ln_1.weight", false}},
      {"ln_1.bias", {"ln_1.bias", false}},
      {"attn.qkv.weight", {"attn.c_attn.weight", true}},
      {"attn.qkv.bias", {"attn.c_attn.bias", false}},
      {"attn.proj.weight", {"attn.c_proj.weight", true}},
      {"attn.proj.bias", {"attn.c_proj.bias", false}},
      {"ln_2.weight", {"ln_2.weight", false}},
      {"ln_2.bias", {"ln_2.bias", false}},
      {"mlp.fc.weight", {"mlp.c_fc.weight", true}},
      {"mlp.fc.bias", {"mlp.c_fc.bias", false}},
      {"mlp.proj.weight", {"mlp.c_proj.weight", true}},
      {"mlp.proj.bias", {"mlp.c_proj.bias", false}}};
  const std::string p = kLmPrefix;
  if (name == "wte" || name == "wpe") return {p + name + ".weight", false};
  if (name.rfind("ln_f.", 0) == 0) return {p + name, false};
  // "h.<l>.<kind>"
  const size_t dot = name.find('.', 2);
  TESSERA_ASSERT(name.rfind("h.", 0) == 0 && dot != std::string::npos,
                 ("mapping parameter " + name + " to a Hugging Face name").c_str());
  auto it = kPerLayer.find(name.substr(dot + 1));
  TESSERA_ASSERT(it != kPerLayer.end(),
                 ("mapping parameter " + name + " to a Hugging Face name").c_str());
  return {p + name.substr(0, dot + 1) + it->second.name, it->second.transposed};
}

std::vector<int64_t> hf_gpt2_shape(const params::ParamSpec& spec, const core::ModelConfig& model) {
  core::Shape shape = spec.global_shape;
  if (spec.name == "wte") shape[0] = model.vocab_size;
  if (hf_gpt2_name(spec.name).transposed) std::swap(shape[0], shape[1]);
  return shape;
}

std::string hf_gpt2_config_json(const core::ModelConfig& m, int eot_token,
                                const std::string& torch_dtype) {
  json c = {{"architectures", {"GPT2LMHeadModel"}},
            {"model_type", "gpt2"},
            {"vocab_size", m.vocab_size},
            {"n_positions", m.max_seq_len},
            {"n_ctx", m.max_seq_len},
            {"n_embd", m.n_embd},
            {"n_layer", m.n_layer},
            {"n_head", m.n_head},
            {"n_inner", nullptr},
            {"activation_function", "gelu_new"},
            {"layer_norm_epsilon", 1e-5},
            {"initializer_range", m.init_std},
            {"resid_pdrop", 0.0},
            {"embd_pdrop", 0.0},
            {"attn_pdrop", 0.0},
            {"scale_attn_weights", true},
            {"tie_word_embeddings", true},
            {"bos_token_id", eot_token},
            {"eos_token_id", eot_token},
            {"use_cache", true},
            {"torch_dtype", torch_dtype}};
  return c.dump(2) + "\n";
}

core::Result<HfPaths> resolve_hf_paths(const std::string& path) {
  std::error_code ec;
  HfPaths p;
  if (fs::is_directory(path, ec)) {
    p.dir = path;
    p.weights = (fs::path(path) / kHfWeightsFile).string();
    p.config = (fs::path(path) / kHfConfigFile).string();
    if (!fs::is_regular_file(p.weights, ec)) {
      const bool sharded = fs::exists(fs::path(path) / "model.safetensors.index.json", ec);
      return core::Status::error(
          "Hugging Face model directory '" + path + "' has no " + kHfWeightsFile +
          (sharded ? " (it is sharded: model.safetensors.index.json; this build reads one file: "
                     "merge the shards, e.g. save_pretrained with a larger max_shard_size)"
                   : "; give a directory that transformers' save_pretrained wrote"));
    }
  } else {
    p.weights = path;
    const fs::path parent = fs::path(path).parent_path();
    p.dir = parent.empty() ? "." : parent.string();
    p.config = (fs::path(p.dir) / kHfConfigFile).string();
  }
  return p;
}

// ---- reader ----

HfGpt2Reader::~HfGpt2Reader() = default;

core::Result<std::unique_ptr<HfGpt2Reader>> HfGpt2Reader::open(const std::string& path) {
  auto paths = resolve_hf_paths(path);
  if (!paths) return paths.status();
  std::unique_ptr<HfGpt2Reader> r(new HfGpt2Reader());
  r->paths_ = *paths;
  core::ModelConfig hf;
  TESSERA_RETURN_IF_ERROR(read_hf_config(r->paths_.config, &hf));
  auto file = SafetensorsReader::open(r->paths_.weights);
  if (!file) return file.status();
  r->file_ = std::make_unique<SafetensorsReader>(std::move(*file));
  const std::string where = "safetensors file '" + r->paths_.weights + "': ";

  // The config: the Tessera one an export stored, with config.json's sizes (which must agree).
  core::Config& config = r->config_;
  const auto& meta = r->file_->metadata();
  if (auto it = meta.find(kHfTesseraConfigKey); it != meta.end()) {
    auto stored = core::parse_config(
        it->second, r->paths_.weights + " (metadata " + kHfTesseraConfigKey + ")", {});
    if (!stored) return stored.status();
    config = *stored;
    r->from_tessera_ = true;
    const std::string diff = model_diff(hf, config.model);
    if (!diff.empty()) {
      return core::Status::error(where + "its stored Tessera config and " + r->paths_.config +
                                 " disagree (" + diff +
                                 " of the stored config); restore the config.json it was "
                                 "exported with");
    }
  } else {
    config.model.vocab_size = hf.vocab_size;
    config.model.max_seq_len = hf.max_seq_len;
    config.model.n_layer = hf.n_layer;
    config.model.n_head = hf.n_head;
    config.model.n_embd = hf.n_embd;
    config.train.seq_len = std::min(config.train.seq_len, hf.max_seq_len);
  }
  TESSERA_RETURN_IF_ERROR(
      config.validate().with_context("Hugging Face model '" + path + "', its sizes: "));

  // The tensor set: exactly the model's, under one naming convention.
  if (r->file_->find(std::string(kLmPrefix) + "wte.weight") != nullptr) {
    r->prefix_ = kLmPrefix;
  } else if (r->file_->find("wte.weight") == nullptr) {
    return core::Status::error(where +
                               "has neither transformer.wte.weight nor wte.weight: not "
                               "a GPT-2 model");
  }
  std::set<std::string> expected;
  for (const params::ParamSpec& spec : models::Gpt::param_specs(config.model)) {
    const std::string name = r->prefix_ + hf_gpt2_name(spec.name).name.substr(strlen(kLmPrefix));
    expected.insert(name);
    const SafetensorsTensor* t = r->file_->find(name);
    if (t == nullptr) {
      return core::Status::error(where + "has no tensor '" + name + "', which a GPT-2 of " +
                                 r->paths_.config +
                                 "'s sizes needs: the file is incomplete or for another model");
    }
    const core::Shape shape = hf_gpt2_shape(spec, config.model);
    if (t->shape != shape) {
      return core::Status::error(where + "tensor '" + name + "' has shape " +
                                 core::shape_string(t->shape) + ", " + r->paths_.config +
                                 " implies " + core::shape_string(shape) +
                                 ": the weights and the config are of different models");
    }
  }
  const std::string wte = r->prefix_ + "wte.weight";
  for (const SafetensorsTensor& t : r->file_->tensors()) {
    if (t.name == "lm_head.weight") {
      r->has_lm_head_ = true;
      if (t.shape != r->file_->find(wte)->shape) {
        return core::Status::error(where + "lm_head.weight has shape " +
                                   core::shape_string(t.shape) + ", " + wte + " " +
                                   core::shape_string(r->file_->find(wte)->shape) +
                                   ": the head is not tied to the embedding, which Tessera's "
                                   "GPT-2 requires");
      }
    } else if (expected.count(t.name) == 0 && !is_mask_buffer(t.name)) {
      return core::Status::error(where + "holds tensor '" + t.name + "', which a GPT-2 of " +
                                 r->paths_.config + "'s sizes (n_layer " +
                                 std::to_string(config.model.n_layer) +
                                 ") does not have: the weights and the config are of different "
                                 "models");
    }
    if (expected.count(t.name) != 0 || t.name == "lm_head.weight") {
      if (t.dtype != "F32" && t.dtype != "BF16" && t.dtype != "F16" && t.dtype != "F64") {
        return core::Status::error(where + "tensor '" + t.name + "' has dtype " + t.dtype +
                                   "; weights must be F32, BF16, F16 or F64");
      }
    }
  }
  return r;
}

core::Status HfGpt2Reader::read(const params::ParamSpec& spec, std::vector<float>* out) {
  const HfName hf = hf_gpt2_name(spec.name);
  const std::string name = prefix_ + hf.name.substr(strlen(kLmPrefix));
  std::vector<float> stored;
  TESSERA_RETURN_IF_ERROR(file_->read_f32(name, &stored));
  out->assign(static_cast<size_t>(core::shape_numel(spec.global_shape)), 0.0f);
  if (spec.name == "wte") {
    // Hugging Face's V rows, then zero rows up to the model's padded vocabulary.
    TESSERA_ASSERT(stored.size() <= out->size(), "wte: the model's rows hold the file's");
    std::copy(stored.begin(), stored.end(), out->begin());
    if (has_lm_head_) {
      std::vector<float> head;
      TESSERA_RETURN_IF_ERROR(file_->read_f32("lm_head.weight", &head));
      for (size_t i = 0; i < head.size(); ++i) {
        if (std::memcmp(&head[i], &stored[i], sizeof(float)) != 0) {
          return core::Status::error(
              "safetensors file '" + paths_.weights + "': lm_head.weight differs from " + name +
              " (first at flat index " + std::to_string(i) +
              "): the head is not tied to the embedding, which Tessera's GPT-2 requires");
        }
      }
    }
    return core::Status::ok();
  }
  if (!hf.transposed) {
    *out = std::move(stored);
    return core::Status::ok();
  }
  // Conv1D (in, out) -> (out, in).
  const int64_t rows_out = spec.global_shape[0], cols_in = spec.global_shape[1];
  for (int64_t i = 0; i < cols_in; ++i) {
    const float* row = stored.data() + i * rows_out;
    for (int64_t o = 0; o < rows_out; ++o) (*out)[o * cols_in + i] = row[o];
  }
  return core::Status::ok();
}

// ---- train.init_from ----

core::Status load_hf_gpt2(const std::string& path, models::Gpt& model,
                          parallel::ProcessGrid& grid) {
  const int rank = grid.world_rank(), size = grid.world_size();
  std::unique_ptr<HfGpt2Reader> reader;
  core::Status opened = [&]() -> core::Status {
    auto r = HfGpt2Reader::open(path);
    if (!r) return r.status();
    reader = std::move(*r);
    const std::string diff = model_diff(reader->config().model, model.config());
    if (!diff.empty()) {
      return core::Status::error("Hugging Face model '" + path + "' does not fit this model (" +
                                 diff + "); set those model keys to the Hugging Face model's");
    }
    return core::Status::ok();
  }();
  TESSERA_RETURN_IF_ERROR(agree(opened, grid.world_comm(), rank, size));

  // This rank's shards, written into a host arena (the model's own on the CPU backend).
  const params::ParamSet& ps = model.param_set();
  backends::Backend& backend = model.backend();
  const bool host = backend.device() == core::Device::kCpu;
  core::Tensor staged;
  if (!host) staged = core::Tensor::zeros(model.weights().shape());
  const core::Tensor& arena = host ? model.weights() : staged;
  core::Status loaded;
  std::vector<float> global;
  for (int i = 0; i < ps.size() && loaded.is_ok(); ++i) {
    const params::ParamSpec& spec = ps.specs()[i];
    loaded = reader->read(spec, &global);
    if (!loaded.is_ok()) break;
    float* shard = ps.view(arena, i).f32();
    const int64_t n = ps.local_numel(i);
    for (int64_t j = 0; j < n; ++j)
      shard[j] = global[spec.global_index(j, ps.tp_rank(), ps.tp_size())];
  }
  TESSERA_RETURN_IF_ERROR(agree(loaded, grid.world_comm(), rank, size));
  if (!host) backend.copy_to_device(model.weights().raw(), staged.raw(), staged.bytes());
  return core::Status::ok();
}

}  // namespace tessera::checkpoint
