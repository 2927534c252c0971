// Fuzzes the serving request parsers (serve/openai_api.h, serve/protocol.h) with one input:
// - as a POST /v1/completions body and as a POST /v1/chat/completions body:
//   parse_completion_request and parse_chat_request never crash or throw, and a
//   request it accepts is one the Generator can run (non-empty prompt of ids in [0, V) leaving
//   room in the context, 1 <= max_tokens, prompt + max_tokens <= context, temperature finite
//   and >= 0, top_k >= 0, 0 < top_p <= 1); a refusal is a 4xx with a message;
// - as a tp-broadcast message: decode_changes never crashes, and what it accepts encodes to
//   bytes that decode and encode again to the same bytes.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "data/tokenizer.h"
#include "fuzz_util.h"
#include "serve/openai_api.h"
#include "serve/protocol.h"

namespace {

std::unique_ptr<tessera::data::Tokenizer> g_tokenizer;
tessera::serve::ApiLimits g_limits;

void check_request(std::string_view body, bool chat) {
  tessera::serve::CompletionRequest request;
  auto error =
      chat ? tessera::serve::parse_chat_request(body, g_limits, *g_tokenizer, 7, &request)
           : tessera::serve::parse_completion_request(body, g_limits, *g_tokenizer, 7, &request);
  if (error) {
    TESSERA_FUZZ_CHECK(error->status >= 400 && error->status < 500 && !error->message.empty(),
                       "a refusal that is not a 4xx with a message");
    return;
  }
  const tessera::serve::RequestSpec& spec = request.spec;
  const auto n = static_cast<int64_t>(spec.prompt.size());
  TESSERA_FUZZ_CHECK(n >= 1 && n < g_limits.context, "accepted prompt length " + std::to_string(n));
  for (int32_t id : spec.prompt) {
    TESSERA_FUZZ_CHECK(id >= 0 && id < g_limits.vocab_size, "accepted id " + std::to_string(id));
  }
  TESSERA_FUZZ_CHECK(spec.max_tokens >= 1 && n + spec.max_tokens <= g_limits.context,
                     "accepted max_tokens " + std::to_string(spec.max_tokens));
  const auto& s = spec.sampling;
  TESSERA_FUZZ_CHECK(std::isfinite(s.temperature) && s.temperature >= 0,
                     "accepted temperature " + std::to_string(s.temperature));
  TESSERA_FUZZ_CHECK(s.top_k >= 0, "accepted top_k " + std::to_string(s.top_k));
  TESSERA_FUZZ_CHECK(s.top_p > 0 && s.top_p <= 1, "accepted top_p " + std::to_string(s.top_p));
}

void check_wire(const uint8_t* data, size_t size) {
  auto changes = tessera::serve::decode_changes(data, size);
  if (!changes) {
    TESSERA_FUZZ_CHECK(!changes.status().message().empty(), "a refusal without a message");
    return;
  }
  const std::vector<uint8_t> once = tessera::serve::encode_changes(*changes);
  auto again = tessera::serve::decode_changes(once.data(), once.size());
  TESSERA_FUZZ_CHECK(again.is_ok(),
                     "its own encoding does not decode: " + again.status().message());
  TESSERA_FUZZ_CHECK(tessera::serve::encode_changes(*again) == once,
                     "encode(decode(encode(c))) != encode(c)");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const std::string data_dir = std::string(TESSERA_SOURCE_DIR) + "/tests/data";
  auto tokenizer = tessera::data::Tokenizer::load(data_dir + "/tiny_gpt2_vocab.json",
                                                  data_dir + "/tiny_gpt2_merges.txt");
  if (!tokenizer) tessera::fuzz::fail("fixture tokenizer: " + tokenizer.status().message());
  g_tokenizer = std::make_unique<tessera::data::Tokenizer>(std::move(*tokenizer));
  g_limits.model_name = "tiny";
  g_limits.context = 32;
  g_limits.vocab_size = g_tokenizer->vocab_size();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  check_request(body, false);
  check_request(body, true);
  check_wire(data, size);
  return 0;
}
