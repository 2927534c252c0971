// The OpenAI-compatible completions API without the transport: request bodies parsed and checked
// into RequestSpecs, responses and server-sent-event chunks formatted, errors in OpenAI's shape
// {"error": {"message", "type", "param", "code"}}. The HTTP front end (http_front_end.h) calls
// these; the unit tests call them directly.
//
// Field policy: the fields below are read; an OpenAI field we do not implement is accepted only
// at its default value (n=1, best_of=1, echo=false, suffix=null, presence/frequency_penalty=0,
// logit_bias=null or {}), otherwise 400 naming it; any other field is a 400 naming it ("unknown
// field"), so a typo never silently changes a request.
//   model (string, optional; must be the served model's name), prompt (string, or a list of
//   token ids), max_tokens (integer >= 1, default 16; prompt + max_tokens <= the context),
//   temperature (number >= 0, default 1; 0: greedy), top_p (number in (0, 1], default 1),
//   top_k (integer >= 0, default 0: off), seed (integer >= 0; default: a fresh random seed),
//   stream (bool), stream_options ({"include_usage": bool}), user (string, ignored),
//   stop (a string or a list of at most 4 non-empty strings; null, "" and [] are none),
//   logprobs (integer in [0, 5] or null: the chosen token's log-probability, and the N most
//   likely tokens' for N >= 1).
// The chat completions API (POST /v1/chat/completions) takes the same fields but prompt and
// logprobs, and: messages (a non-empty list of {role: system | developer | user | assistant,
// content: a string or a list of text parts, name: ignored}; rendered by chat_prompt),
// max_completion_tokens (an alias of max_tokens), logprobs (a boolean), top_logprobs (an
// integer in [0, 5]; needs logprobs true). Its unsupported fields at their defaults: n,
// penalties, logit_bias, and null tools, tool_choice, parallel_tool_calls, response_format,
// functions, function_call.
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

constexpr int kMaxStopStrings = 4;
constexpr size_t kMaxStopBytes = 256;  // the longest stop string, in bytes

// Which API a request came in on; its responses take that API's shape.
enum class Endpoint { kCompletions, kChatCompletions };

struct CompletionRequest {
  Endpoint endpoint = Endpoint::kCompletions;
  RequestSpec spec;  // spec.logprobs: the request's logprobs (-1: null)
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  std::vector<std::string> stop;  // stop strings, none empty
};

// Parses a POST /v1/completions body. On error returns it (and leaves *out unspecified).
// default_seed is the seed of a request that names none.
std::optional<ApiError> parse_completion_request(std::string_view body, const ApiLimits& limits,
                                                 const data::Tokenizer& tokenizer,
                                                 uint64_t default_seed, CompletionRequest* out);

// The same for a POST /v1/chat/completions body: the messages become the prompt through
// chat_prompt, and kChatTurnStop joins the request's stop strings.
std::optional<ApiError> parse_chat_request(std::string_view body, const ApiLimits& limits,
                                           const data::Tokenizer& tokenizer, uint64_t default_seed,
                                           CompletionRequest* out);

enum class ChatRole { kSystem, kUser, kAssistant };
struct ChatMessage {
  ChatRole role = ChatRole::kUser;
  std::string content;
};
// The chat template, for base models that have none of their own (GPT-2): each system message's
// content then a blank line, "User: " + content + newline, "Assistant: " + content + newline, in
// order, then "Assistant:" for the answer. The answer ends at kChatTurnStop (the model starting
// the user's next turn), at end-of-text, or at max_tokens.
std::string chat_prompt(const std::vector<ChatMessage>& messages);
constexpr const char* kChatTurnStop = "\nUser:";

// The ApiError for a scheduler refusal: 400 (invalid), 429 (queue full), 503 (draining).
ApiError rejection_error(const SubmitResult& result);

// "stop" for end-of-text, "length" for max_tokens or a full context (OpenAI has no third value).
const char* openai_finish_reason(Finish finish);

// One emitted token as the logprobs field lists it: its text (the token's bytes), its
// log-probability, the most likely tokens (text, log-probability; most likely first), and the byte
// offset of its first byte in the completion's text.
struct LoggedToken {
  std::string text;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
  int64_t text_offset = 0;
};
// What a completion (or one stream event) says about log-probabilities: null when the request
// asked for none (logprobs null); top_logprobs is null when it asked for 0.
struct LogprobsField {
  int requested = -1;               // the request's logprobs; -1: the field is null
  std::vector<LoggedToken> tokens;  // the tokens whose first byte lies in the text
};
// OpenAI's completions logprobs object: {"tokens", "token_logprobs", "top_logprobs",
// "text_offset"}, or null (requested < 0). As JSON text.
std::string logprobs_json(const LogprobsField& logprobs);

// A whole completion (non-streaming).
std::string completion_body(const std::string& id, int64_t created, const std::string& model,
                            const std::string& text, Finish finish, const Usage& usage,
                            const LogprobsField& logprobs = {});
// One server-sent event "data: {json}\n\n" of a stream: a text piece, with finish_reason null
// (finish == kNone) or set.
std::string completion_chunk_event(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, Finish finish,
                                   const LogprobsField& logprobs = {});
// The usage event of stream_options.include_usage: choices [] and usage.
std::string usage_chunk_event(const std::string& id, int64_t created, const std::string& model,
                              const Usage& usage);
// "data: [DONE]\n\n".
std::string done_event();
// An error inside a stream (after the 200 was sent): "data: {"error": ...}\n\n".
std::string error_event(const ApiError& error);

// The chat API's answers: a whole chat.completion ({"message": {"role": "assistant",
// "content"}}), and the chat.completion.chunk events of a stream ({"delta": ...}; the first has
// the role and "content": "", later ones the text piece; logprobs in the chat shape, {"content":
// [{"token", "logprob", "bytes", "top_logprobs"}]}), and the usage event.
std::string chat_completion_body(const std::string& id, int64_t created, const std::string& model,
                                 const std::string& text, Finish finish, const Usage& usage,
                                 const LogprobsField& logprobs = {});
std::string chat_chunk_event(const std::string& id, int64_t created, const std::string& model,
                             const std::string& text, Finish finish,
                             const LogprobsField& logprobs = {}, bool first = false);
std::string chat_usage_chunk_event(const std::string& id, int64_t created, const std::string& model,
                                   const Usage& usage);

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
// The length of the longest prefix of `bytes` that does not end inside a UTF-8 character.
size_t utf8_complete_prefix(std::string_view bytes);

// A completion's text as its tokens arrive, with OpenAI's stop strings: the text ends before the
// first occurrence of any stop string (which is not part of it), and the request is then done.
// Text is released only when it is final: never inside a UTF-8 character, and never a tail that
// could still grow into a stop string (held back until the next tokens decide it). So the pieces
// released, joined, are exactly the non-streaming text. Each piece carries the logged tokens whose
// first byte lies in it (after a stop: the tokens that begin before the stop string).
// Not thread-safe; one per request.
class CompletionText {
 public:
  explicit CompletionText(std::vector<std::string> stop = {});
  struct Piece {
    std::string text;
    std::vector<LoggedToken> tokens;
  };
  // Appends one token's bytes; `logged` (nullptr: no logprobs asked) is listed with the piece
  // its first byte is released in, its text_offset set here. Returns what is final now; after a
  // stop (stopped() turns true), the last piece. Precondition: !stopped().
  Piece push(std::string_view bytes, const LoggedToken* logged);
  // The completion ended without a stop: everything still held.
  Piece finish();
  bool stopped() const { return stopped_; }
  int64_t tokens_pushed() const { return tokens_pushed_; }

 private:
  Piece release(size_t end, bool all_tokens);

  std::vector<std::string> stop_;
  std::string text_;                  // every byte so far (up to the stop string, once stopped)
  size_t released_ = 0;               // bytes of text_ released
  std::vector<LoggedToken> pending_;  // logged tokens not yet released
  bool stopped_ = false;
  int64_t tokens_pushed_ = 0;
};

}  // namespace tessera::serve
