// Checkpoint conversion (tessera-ckpt convert): Tessera HDF5 checkpoints to and from llm.c's GPT-2
// model file and Hugging Face's GPT-2 (model.safetensors + config.json), to bfloat16 for serving,
// and without optimizer state. Serial (one process) and
// streaming: one tensor is in memory at a time, never the model. Every dataset read from an HDF5
// input has its checksum verified; the output is written under a temporary name, fsynced and
// renamed, so a failed conversion never leaves a partial file under the output name.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/status.h"

namespace tessera::checkpoint {

// llm.c's GPT-2 model file (llm.c train_gpt2.c, gpt2_build_from_checkpoint): 256 int32 header
// words [magic, version, maxT, V, L, NH, C, Vp, 0...], then every parameter in llm.c's order.
constexpr int32_t kLlmcMagic = 20240326;
constexpr int32_t kLlmcVersionF32 = 3;   // float32 parameters, padded vocabulary in word 7
constexpr int32_t kLlmcVersionBf16 = 5;  // bfloat16 parameters (read only)
constexpr int kLlmcHeaderWords = 256;

enum class FileKind { kHdf5, kLlmc, kSafetensors };

// What a file is, from its first bytes (the HDF5 signature, llm.c's magic, or a safetensors
// header: a little-endian length that fits the file, then '{'). A directory holding
// model.safetensors (or a sharded model's index) is kSafetensors. Errors name the file and what
// was found.
core::Result<FileKind> detect_file_kind(const std::string& path);

enum class ConvertTarget {
  kHdf5,         // float32 Tessera checkpoint (optimizer state kept when the input has it and
                 // drop_optimizer is false)
  kBf16,         // bfloat16 Tessera checkpoint for serving: model weights only
  kLlmc,         // llm.c GPT-2 model file, version 3 (float32): model weights only
  kSafetensors,  // Hugging Face GPT2LMHeadModel: model.safetensors + config.json (hf_gpt2.h)
};

struct ConvertOptions {
  ConvertTarget to = ConvertTarget::kHdf5;
  bool drop_optimizer = false;
  bool overwrite = false;  // replace an existing output file
  bool bf16 = false;       // kSafetensors: store BF16 tensors instead of F32
};

struct ConvertReport {
  int64_t datasets = 0;        // tensors written
  int64_t elements = 0;        // numbers written
  int64_t output_bytes = 0;    // size of the output file
  int64_t largest_tensor = 0;  // elements in the one buffer the conversion held
  bool had_optimizer = false;  // the input held AdamW state
  bool wrote_optimizer = false;
  std::vector<std::string> notes;  // what else was done or not (tokenizer files, dropped rows)
};

// Converts `in` (a Tessera HDF5 checkpoint, float32 or bfloat16, an llm.c model file of version
// 3 or 5, or a Hugging Face GPT-2 directory or .safetensors file) to `out`. An llm.c input becomes
// a checkpoint at step 0 whose stored config is the default config with the header's model sizes
// (pad_vocab_to chosen so Vp matches); a Hugging Face input likewise with config.json's sizes,
// or with the Tessera config a Tessera export stored in its metadata, and its vocab.json /
// merges.txt copied beside `out` as <out stem>.vocab.json / .merges.txt (data.tokenizer points
// there). With to = kSafetensors, `out` ending ".safetensors" is that file (config.json goes
// beside it), any other `out` a directory (created if missing) receiving model.safetensors,
// config.json and the stored config's tokenizer files as vocab.json and merges.txt. Errors:
// unreadable or unrecognised input, a checksum mismatch (names the dataset), a truncated llm.c
// file, a model llm.c or Hugging Face cannot hold (arch other than gpt2), `out` equal to `in`,
// `out` (or model.safetensors / config.json in it) existing without overwrite, an unwritable
// output directory, and every check of HfGpt2Reader::open.
core::Result<ConvertReport> convert_checkpoint(const std::string& in, const std::string& out,
                                               const ConvertOptions& options);

}  // namespace tessera::checkpoint
