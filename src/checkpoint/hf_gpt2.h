// Hugging Face GPT2LMHeadModel interchange: the tensor names and orientations of a
// model.safetensors + config.json directory (what transformers' save_pretrained writes and vLLM,
// TGI and transformers load), mapped to and from Tessera's ParamSpec table. Tensors are handed
// out one at a time in Tessera's layout; the whole model is never in memory.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/config.h"
#include "core/status.h"

namespace tessera::models {
class Gpt;
}
namespace tessera::params {
struct ParamSpec;
}
namespace tessera::parallel {
class ProcessGrid;
}

namespace tessera::checkpoint {

class SafetensorsReader;

// File names inside a Hugging Face model directory.
constexpr const char* kHfWeightsFile = "model.safetensors";
constexpr const char* kHfConfigFile = "config.json";
// __metadata__ key holding the Tessera config (YAML) of an exported model, so an import restores
// pad_vocab_to, the tokenizer path and the rest; Hugging Face readers ignore it.
constexpr const char* kHfTesseraConfigKey = "tessera_config_yaml";

// The Hugging Face name of Tessera parameter `name` ("h.0.attn.qkv.weight" ->
// "transformer.h.0.attn.c_attn.weight") and whether its matrix is stored transposed: Hugging
// Face's Conv1D keeps weights as (in, out), Tessera (and nn.Linear) as (out, in).
struct HfName {
  std::string name;
  bool transposed = false;
};
HfName hf_gpt2_name(const std::string& name);

// The Hugging Face shape of Tessera parameter `spec`: transposed matrices swapped, wte cut to
// vocab_size rows (Hugging Face's vocabulary is unpadded).
std::vector<int64_t> hf_gpt2_shape(const params::ParamSpec& spec, const core::ModelConfig& model);

// config.json for `model` (model_type gpt2, GPT2LMHeadModel, sizes, gelu_new, epsilon 1e-5,
// tied embeddings, no dropout; bos/eos = eot_token, and torch_dtype), pretty-printed.
std::string hf_gpt2_config_json(const core::ModelConfig& model, int eot_token,
                                const std::string& torch_dtype);

// Where a Hugging Face model lives: `path` is a directory holding model.safetensors and
// config.json, or a .safetensors file with config.json beside it.
struct HfPaths {
  std::string weights, config, dir;
};
core::Result<HfPaths> resolve_hf_paths(const std::string& path);

// A Hugging Face GPT-2 model opened for reading.
class HfGpt2Reader {
 public:
  // Reads config.json and checks it is a GPT-2 Tessera computes alike (model_type gpt2, gelu_new
  // or gelu_pytorch_tanh, layer_norm_epsilon 1e-5, tied embeddings, n_inner null or 4 n_embd, no
  // cross-attention, no per-layer attention scaling), then checks model.safetensors holds exactly
  // the tensors of that model in float types with Hugging Face's shapes. Names may carry the
  // "transformer." prefix (GPT2LMHeadModel) or not (GPT2Model, as the hub's gpt2 files);
  // lm_head.weight is optional (a tied model may omit it; if present read() requires it equal to
  // wte); the attention-mask buffers older files hold (h.<l>.attn.bias, .masked_bias) are
  // ignored. Any other tensor, a missing one, a wrong shape or dtype is an error naming it.
  static core::Result<std::unique_ptr<HfGpt2Reader>> open(const std::string& path);
  ~HfGpt2Reader();

  // The model: sizes from config.json; pad_vocab_to (and the rest of the config) from the
  // Tessera config a Tessera export stored in the metadata, else Tessera's defaults.
  const core::Config& config() const { return config_; }
  bool from_tessera() const { return from_tessera_; }  // the metadata held a Tessera config
  const HfPaths& paths() const { return paths_; }

  // Tessera parameter `spec`'s global tensor in Tessera's layout: (out, in) matrices, wte padded
  // with zero rows up to spec.global_shape[0]. Preconditions: spec's shape is that of a model of
  // config().model's sizes with any pad_vocab_to. Errors: a short read, lm_head.weight differing
  // from wte.
  core::Status read(const params::ParamSpec& spec, std::vector<float>* out);

 private:
  HfGpt2Reader() = default;
  HfPaths paths_;
  core::Config config_;
  bool from_tessera_ = false;
  std::string prefix_;  // "transformer." or ""
  bool has_lm_head_ = false;
  std::unique_ptr<SafetensorsReader> file_;
};

// Collective over grid.world_comm(): train.init_from from a Hugging Face model. Every rank opens
// `path`, checks its sizes against model.config() (a mismatch names each differing key, both
// values and the fix) and copies its own shard of each tensor into model.weights(); the verdict
// is agreed over the world, so all ranks fail alike. Every rank reads the whole file, one tensor
// at a time. On error the weights are unspecified.
core::Status load_hf_gpt2(const std::string& path, models::Gpt& model, parallel::ProcessGrid& grid);

}  // namespace tessera::checkpoint
