// Fuzzes the llm.c GPT-2 model-file reader of tessera-ckpt convert (checkpoint/convert.h) with
// arbitrary file contents, converting to an llm.c file again (no HDF5 involved, so every
// finding is in our reader). Properties: convert_checkpoint never crashes or throws and refuses
// with a message; a float32 (version 3) file it accepts comes out with the same eight header
// words and the same parameter bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "checkpoint/convert.h"
#include "core/config.h"
#include "fuzz_util.h"
#include "models/gpt.h"

namespace {

namespace ckpt = tessera::checkpoint;

// A valid llm.c file of a tiny model (V 10 padded to 16, maxT 4, L 1, NH 2, C 4), with
// parameters i * 0.01 (float32) or their bf16 upper halves.
void write_seed(const std::string& path, bool bf16) {
  tessera::core::ModelConfig m;
  m.vocab_size = 10;
  m.pad_vocab_to = 16;
  m.max_seq_len = 4;
  m.n_layer = 1;
  m.n_head = 2;
  m.n_embd = 4;
  int64_t count = 0;
  for (const auto& spec : tessera::models::Gpt::param_specs(m)) {
    int64_t n = 1;
    for (int64_t d : spec.global_shape) n *= d;
    count += n;
  }
  std::vector<int32_t> header(ckpt::kLlmcHeaderWords, 0);
  const int32_t words[] = {ckpt::kLlmcMagic, bf16 ? ckpt::kLlmcVersionBf16 : ckpt::kLlmcVersionF32,
                           m.max_seq_len,    m.vocab_size,
                           m.n_layer,        m.n_head,
                           m.n_embd,         m.padded_vocab_size()};
  std::memcpy(header.data(), words, sizeof words);
  std::string bytes(reinterpret_cast<const char*>(header.data()), header.size() * 4);
  for (int64_t i = 0; i < count; ++i) {
    const float x = static_cast<float>(i) * 0.01f;
    uint32_t bits = 0;
    std::memcpy(&bits, &x, 4);
    if (bf16) {
      const auto half = static_cast<uint16_t>(bits >> 16);
      bytes.append(reinterpret_cast<const char*>(&half), 2);
    } else {
      bytes.append(reinterpret_cast<const char*>(&bits), 4);
    }
  }
  tessera::fuzz::write_file(path, bytes);
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const std::string dir = tessera::fuzz::seed_dir(); !dir.empty()) {
    write_seed(dir + "/tiny_v3.bin", false);
    write_seed(dir + "/tiny_v5_bf16.bin", true);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string in = tessera::fuzz::scratch_path("model.bin");
  static const std::string out = tessera::fuzz::scratch_path("out.bin");
  tessera::fuzz::write_file(in, data, size);
  ckpt::ConvertOptions options;
  options.to = ckpt::ConvertTarget::kLlmc;
  options.overwrite = true;
  auto report = ckpt::convert_checkpoint(in, out, options);
  if (!report) {
    TESSERA_FUZZ_CHECK(!report.status().message().empty(), "a refusal without a message");
    return 0;
  }
  int32_t version = 0;
  std::memcpy(&version, data + 4, 4);  // accepted, so the header is there
  if (version == ckpt::kLlmcVersionF32) {
    const std::string got = read_all(out);
    const std::string want(reinterpret_cast<const char*>(data), size);
    TESSERA_FUZZ_CHECK(got.size() == want.size(), "the round trip changed the file's size");
    TESSERA_FUZZ_CHECK(got.compare(0, 32, want, 0, 32) == 0, "the header words changed");
    TESSERA_FUZZ_CHECK(got.compare(1024, std::string::npos, want, 1024) == 0,
                       "the parameters changed");
  }
  return 0;
}
