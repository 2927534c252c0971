// Fuzzes the GPT-2 byte-level BPE tokenizer (data/tokenizer.h) on arbitrary bytes, with two
// vocabularies: the GPT-2-format fixture of tests/data (loaded from files) and one trained at
// start-up on the first 32 KB of the bundled corpus (400 tokens). Properties, for each:
// pretokenize's pieces concatenate to the input; every id of encode(x) lies in
// [0, vocab_size) and none is <|endoftext|> (text never becomes the control token);
// decode(encode(x)) == x, byte for byte, for any bytes, valid UTF-8 or not.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "fuzz_util.h"

namespace {

using tessera::data::Tokenizer;
std::vector<std::unique_ptr<Tokenizer>> g_tokenizers;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string root = TESSERA_SOURCE_DIR;
  auto fixture = Tokenizer::load(root + "/tests/data/tiny_gpt2_vocab.json",
                                 root + "/tests/data/tiny_gpt2_merges.txt");
  if (!fixture) tessera::fuzz::fail("fixture tokenizer: " + fixture.status().message());
  g_tokenizers.push_back(std::make_unique<Tokenizer>(std::move(*fixture)));
  std::ifstream corpus(root + "/data/shakespeare.txt", std::ios::binary);
  std::string text(32 * 1024, '\0');
  corpus.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(corpus.gcount()));
  if (text.empty()) tessera::fuzz::fail("cannot read data/shakespeare.txt");
  g_tokenizers.push_back(std::make_unique<Tokenizer>(Tokenizer::train(text, 400)));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::string joined;
  for (std::string_view piece : tessera::data::pretokenize(input)) joined += piece;
  TESSERA_FUZZ_CHECK(joined == input, "pretokenize's pieces do not concatenate to the input");
  for (const auto& tokenizer : g_tokenizers) {
    const std::vector<int32_t> ids = tokenizer->encode(input);
    for (int32_t id : ids) {
      TESSERA_FUZZ_CHECK(id >= 0 && id < tokenizer->vocab_size(),
                         "id " + std::to_string(id) + " outside the vocabulary");
      TESSERA_FUZZ_CHECK(id != tokenizer->eot_token(), "text encoded to <|endoftext|>");
    }
    TESSERA_FUZZ_CHECK(tokenizer->decode(ids) == input, "decode(encode(x)) != x");
  }
  return 0;
}
