// The OpenAI-compatible completions API without the transport: request bodies parsed and checked
// into RequestSpecs, responses and server-sent-event chunks formatted, errors in OpenAI's shape
// {"error": {"message", "type", "param", "code"}}. The HTTP front end (http_front_end.h) calls
// these; the unit tests call them directly.
//
// Field policy: the fields below are read; an OpenAI field we do not implement is accepted only
// at its default value (n=1, best_of=1, echo=false, logprobs=null, stop=null or [], suffix=null,
// presence/frequency_penalty=0, logit_bias=null or {}), otherwise 400 naming it; any other field
// is a 400 naming it ("unknown field"), so a typo never silently changes a request.
//   model (string, optional; must be the served model's name), prompt (string, or a list of
//   token ids), max_tokens (integer >= 1, default 16; prompt + max_tokens <= the context),
//   temperature (number >= 0, default 1; 0: greedy), top_p (number in (0, 1], default 1),
//   top_k (integer >= 0, default 0: off), seed (integer >= 0; default: a fresh random seed),
//   stream (bool), stream_options ({"include_usage": bool}), user (string, ignored).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "serve/scheduler.h"

namespace tessera::data {
class Tokenizer;
}

namespace tessera::serve {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
};
// {"error": {...}} as JSON text.
std::string error_body(const ApiError& error);

struct ApiLimits {
  std::string model_name;
  int64_t context = 0;
  int64_t vocab_size = 0;
};

struct CompletionRequest {
  RequestSpec spec;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
};

// Parses a POST /v1/completions body. On error returns it (and leaves *out unspecified).
// default_seed is the seed of a request that names none.
std::optional<ApiError> parse_completion_request(std::string_view body, const ApiLimits& limits,
                                                 const data::Tokenizer& tokenizer,
                                                 uint64_t default_seed, CompletionRequest* out);

// The ApiError for a scheduler refusal: 400 (invalid), 429 (queue full), 503 (draining).
ApiError rejection_error(const SubmitResult& result);

// "stop" for end-of-text, "length" for max_tokens or a full context (OpenAI has no third value).
const char* openai_finish_reason(Finish finish);

// A whole completion (non-streaming).
std::string completion_body(const std::string& id, int64_t created, const std::string& model,
                            const std::string& text, Finish finish, const Usage& usage);
// One server-sent event "data: {json}\n\n" of a stream: a text piece, with finish_reason null
// (finish == kNone) or set.
std::string completion_chunk_event(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, Finish finish);
// The usage event of stream_options.include_usage: choices [] and usage.
std::string usage_chunk_event(const std::string& id, int64_t created, const std::string& model,
                              const Usage& usage);
// "data: [DONE]\n\n".
std::string done_event();
// An error inside a stream (after the 200 was sent): "data: {"error": ...}\n\n".
std::string error_event(const ApiError& error);

// GET /v1/models.
std::string models_body(const std::string& model, int64_t created, int64_t context);

// Token bytes to text pieces that end on whole UTF-8 characters: a character split across tokens
// is held back until its last byte arrives, so each streamed piece is valid UTF-8 on its own.
class Utf8Joiner {
 public:
  // Appends `bytes` and returns the longest prefix of what is held that ends a character.
  std::string push(std::string_view bytes);
  // What is held (an unfinished character at the end of the stream), emptied.
  std::string flush();

 private:
  std::string held_;
};

}  // namespace tessera::serve
