// OpenAI-compatible completions API: parsing, checks and formatting; see openai_api.h.
#include "serve/openai_api.h"

#include <algorithm>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/tokenizer.h"

namespace tessera::serve {
namespace {

using nlohmann::json;

// JSON text; invalid UTF-8 (a model may emit part of a character) becomes U+FFFD.
std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

ApiError invalid(const std::string& param, const std::string& message) {
  ApiError e;
  e.param = param;
  e.message = message;
  return e;
}

const char* type_name(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  return "an object";
}

ApiError wrong_type(const std::string& param, const char* expected, const json& v) {
  return invalid(param, param + " must be " + expected + ", not " + type_name(v));
}

// Fields of OpenAI's completions API that we do not implement, and whether a value is the
// default (which we can honour by doing nothing).
bool is_unsupported_default(const std::string& key, const json& v) {
  if (v.is_null()) return true;
  if (key == "n" || key == "best_of") return v.is_number_integer() && v.get<int64_t>() == 1;
  if (key == "echo") return v.is_boolean() && !v.get<bool>();
  if (key == "presence_penalty" || key == "frequency_penalty") {
    return v.is_number() && v.get<double>() == 0.0;
  }
  if (key == "logit_bias") return v.empty();  // {} (or [])
  return false;                               // suffix: only null
}

bool is_unsupported_field(Endpoint endpoint, const std::string& key) {
  if (key == "n" || key == "presence_penalty" || key == "frequency_penalty" ||
      key == "logit_bias") {
    return true;
  }
  if (endpoint == Endpoint::kCompletions) {
    return key == "best_of" || key == "echo" || key == "suffix";
  }
  return key == "tools" || key == "tool_choice" || key == "parallel_tool_calls" ||
         key == "response_format" || key == "functions" || key == "function_call";
}

// A message's content: a string, or a list of text parts [{"type": "text", "text": "..."}],
// joined.
std::optional<ApiError> parse_content(const json& v, const std::string& where, std::string* out) {
  if (v.is_string()) {
    *out = v.get<std::string>();
    return std::nullopt;
  }
  if (!v.is_array()) return wrong_type(where, "a string or a list of text parts", v);
  out->clear();
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string part = where + "[" + std::to_string(i) + "]";
    const json& p = v[i];
    if (!p.is_object()) return wrong_type(part, "an object {\"type\": \"text\", \"text\": ...}", p);
    if (!p.contains("type") || p["type"] != "text") {
      return invalid(part + ".type",
                     part +
                         " is not a text part; only {\"type\": \"text\", \"text\": ...} is "
                         "supported (this model reads text alone)");
    }
    for (const auto& [key, pv] : p.items()) {
      if (key == "type") continue;
      if (key != "text") {
        return invalid(part + "." + key,
                       "unknown field '" + part + "." + key + "'; a text part takes type and text");
      }
      if (!pv.is_string()) return wrong_type(part + ".text", "a string", pv);
      *out += pv.get<std::string>();
    }
  }
  return std::nullopt;
}

// messages: a non-empty list of {"role", "content"[, "name"]}.
std::optional<ApiError> parse_messages(const json& v, std::vector<ChatMessage>* out) {
  if (!v.is_array()) return wrong_type("messages", "a list of messages", v);
  if (v.empty()) {
    return invalid("messages",
                   "messages is empty; give at least one, e.g. [{\"role\": \"user\", "
                   "\"content\": \"Hello\"}]");
  }
  out->clear();
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string where = "messages[" + std::to_string(i) + "]";
    const json& m = v[i];
    if (!m.is_object()) return wrong_type(where, "an object with role and content", m);
    ChatMessage message;
    bool have_role = false, have_content = false;
    for (const auto& [key, mv] : m.items()) {
      if (key == "role") {
        if (!mv.is_string()) return wrong_type(where + ".role", "a string", mv);
        const std::string role = mv.get<std::string>();
        if (role == "system" || role == "developer") {
          message.role = ChatRole::kSystem;
        } else if (role == "user") {
          message.role = ChatRole::kUser;
        } else if (role == "assistant") {
          message.role = ChatRole::kAssistant;
        } else {
          return invalid(where + ".role", where + ".role is '" + role +
                                              "'; the roles are system (or developer), user and "
                                              "assistant (tool messages are not supported)");
        }
        have_role = true;
      } else if (key == "content") {
        if (auto e = parse_content(mv, where + ".content", &message.content)) return e;
        have_content = true;
      } else if (key == "name") {
        if (!mv.is_string()) return wrong_type(where + ".name", "a string", mv);
      } else {
        return invalid(where + "." + key, "unknown field '" + where + "." + key +
                                              "'; a message takes role, content and name");
      }
    }
    if (!have_role)
      return invalid(where + ".role", where + " has no role (system, user, assistant)");
    if (!have_content) return invalid(where + ".content", where + " has no content");
    out->push_back(std::move(message));
  }
  return std::nullopt;
}

// stop: null, a string, or a list of at most kMaxStopStrings strings; "" and [] mean none.
std::optional<ApiError> parse_stop(const json& v, std::vector<std::string>* stop) {
  stop->clear();
  if (v.is_null()) return std::nullopt;
  if (v.is_string()) {
    if (!v.get<std::string>().empty()) stop->push_back(v.get<std::string>());
  } else if (v.is_array()) {
    if (v.size() > static_cast<size_t>(kMaxStopStrings)) {
      return invalid("stop", "stop has " + std::to_string(v.size()) + " strings; at most " +
                                 std::to_string(kMaxStopStrings) + " are allowed");
    }
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) {
        return invalid("stop", "stop string " + std::to_string(i) + " is " + type_name(v[i]) +
                                   "; stop takes a string or a list of strings");
      }
      if (v[i].get<std::string>().empty()) {
        return invalid("stop", "stop string " + std::to_string(i) +
                                   " is empty; every stop string needs at least one character");
      }
      stop->push_back(v[i].get<std::string>());
    }
  } else {
    return wrong_type("stop", "a string or a list of strings", v);
  }
  for (const std::string& s : *stop) {
    if (s.size() > kMaxStopBytes) {
      return invalid("stop", "a stop string is " + std::to_string(s.size()) +
                                 " bytes; the limit is " + std::to_string(kMaxStopBytes));
    }
  }
  return std::nullopt;
}

json completion_json(const std::string& id, int64_t created, const std::string& model,
                     const char* object = "text_completion") {
  return json{{"id", id}, {"object", object}, {"created", created}, {"model", model}};
}

json usage_json(const Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens},
              {"prompt_tokens_details", json{{"cached_tokens", u.cached_tokens}}}};
}

}  // namespace

std::string error_body(const ApiError& e) {
  json inner{{"message", e.message}, {"type", e.type}};
  inner["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  inner["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return dump(json{{"error", inner}});
}

std::string chat_prompt(const std::vector<ChatMessage>& messages) {
  std::string text;
  for (const ChatMessage& m : messages) {
    switch (m.role) {
      case ChatRole::kSystem:
        text += m.content + "\n\n";
        break;
      case ChatRole::kUser:
        text += "User: " + m.content + "\n";
        break;
      case ChatRole::kAssistant:
        text += "Assistant: " + m.content + "\n";
        break;
    }
  }
  return text + "Assistant:";
}

namespace {

// Both endpoints' bodies: the shared fields, and each one's own (completions: prompt, logprobs as
// an integer; chat: messages, max_completion_tokens, logprobs as a boolean with top_logprobs).
std::optional<ApiError> parse_request(std::string_view body, const ApiLimits& limits,
                                      const data::Tokenizer& tokenizer, uint64_t default_seed,
                                      Endpoint endpoint, CompletionRequest* out) {
  const bool chat = endpoint == Endpoint::kChatCompletions;
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::parse_error& e) {
    return invalid("", "the request body is not valid JSON (byte " + std::to_string(e.byte) +
                           "); send a JSON object such as {\"prompt\": \"Hello\"}");
  } catch (const json::exception&) {
    // The parser throws out_of_range, not parse_error, for a number past a double's range
    // (found by tests/fuzz/serve_request_fuzz.cpp: it escaped as a 500 server_error).
    return invalid("",
                   "the request body holds a number beyond a double's range (about 1.8e308); "
                   "send numbers within it");
  }
  if (!j.is_object()) {
    return invalid("", std::string("the request body must be a JSON object, not ") + type_name(j));
  }
  *out = CompletionRequest{};
  out->endpoint = endpoint;
  RequestSpec& spec = out->spec;
  spec.sampling.seed = default_seed;
  bool have_prompt = false;
  bool chat_logprobs = false;  // chat: logprobs true
  int top_logprobs = -1;       // chat: top_logprobs given
  for (const auto& [key, v] : j.items()) {
    if (key == "model") {
      if (!v.is_string()) return wrong_type("model", "a string", v);
      if (v.get<std::string>() != limits.model_name) {
        ApiError e = invalid("model", "model '" + v.get<std::string>() +
                                          "' is not served here; this server serves '" +
                                          limits.model_name + "' (GET /v1/models)");
        e.status = 404;
        e.code = "model_not_found";
        return e;
      }
    } else if (chat && key == "messages") {
      std::vector<ChatMessage> messages;
      if (auto e = parse_messages(v, &messages)) return e;
      spec.prompt = tokenizer.encode(chat_prompt(messages));
      have_prompt = true;
    } else if (!chat && key == "prompt") {
      have_prompt = true;
      if (v.is_string()) {
        spec.prompt = tokenizer.encode(v.get<std::string>());
      } else if (v.is_array()) {
        for (size_t i = 0; i < v.size(); ++i) {
          const json& t = v[i];
          if (t.is_string() || t.is_array()) {
            return invalid("prompt",
                           "a list of prompts is not supported; send one request per prompt "
                           "(prompt: a string or a list of token ids)");
          }
          if (!t.is_number_integer()) {
            return invalid("prompt", "prompt token " + std::to_string(i) + " is " + type_name(t) +
                                         "; token ids are integers in [0, " +
                                         std::to_string(limits.vocab_size) + ")");
          }
          const int64_t id = t.get<int64_t>();
          if (id < 0 || id >= limits.vocab_size) {
            return invalid("prompt", "prompt token " + std::to_string(i) + " is id " +
                                         std::to_string(id) + ", outside the vocabulary [0, " +
                                         std::to_string(limits.vocab_size) + ")");
          }
          spec.prompt.push_back(static_cast<int32_t>(id));
        }
      } else {
        return wrong_type("prompt", "a string or a list of token ids", v);
      }
    } else if (key == "max_tokens" || (chat && key == "max_completion_tokens")) {
      if (v.is_null()) continue;
      if (!v.is_number_integer()) return wrong_type(key, "an integer", v);
      const int64_t n = v.get<int64_t>();
      if (n < 1 || n > limits.context) {
        return invalid(key, key + " is " + std::to_string(n) + "; it must lie in [1, " +
                                std::to_string(limits.context) + "] (the model's context)");
      }
      spec.max_tokens = static_cast<int>(n);
    } else if (key == "temperature") {
      if (v.is_null()) continue;
      if (!v.is_number()) return wrong_type("temperature", "a number", v);
      spec.sampling.temperature = v.get<float>();
    } else if (key == "top_p") {
      if (v.is_null()) continue;
      if (!v.is_number()) return wrong_type("top_p", "a number", v);
      spec.sampling.top_p = v.get<float>();
    } else if (key == "top_k") {
      if (v.is_null()) continue;
      if (!v.is_number_integer()) return wrong_type("top_k", "an integer", v);
      // Negative values are left for validate_request; huge ones mean "all tokens".
      const int64_t k = v.get<int64_t>();
      spec.sampling.top_k = static_cast<int>(std::clamp<int64_t>(k, -1, limits.vocab_size));
    } else if (key == "seed") {
      if (v.is_null()) continue;
      if (!v.is_number_unsigned()) {
        if (v.is_number_integer()) {
          return invalid("seed", "seed is " + std::to_string(v.get<int64_t>()) +
                                     "; it must be an integer >= 0");
        }
        return wrong_type("seed", "an integer >= 0", v);
      }
      spec.sampling.seed = v.get<uint64_t>();
    } else if (key == "stream") {
      if (v.is_null()) continue;
      if (!v.is_boolean()) return wrong_type("stream", "a boolean", v);
      out->stream = v.get<bool>();
    } else if (key == "stream_options") {
      if (v.is_null()) continue;
      if (!v.is_object()) return wrong_type("stream_options", "an object", v);
      for (const auto& [option, ov] : v.items()) {
        if (option != "include_usage") {
          return invalid("stream_options." + option, "unknown field 'stream_options." + option +
                                                         "'; stream_options takes include_usage");
        }
        if (!ov.is_boolean()) return wrong_type("stream_options.include_usage", "a boolean", ov);
        out->include_usage = ov.get<bool>();
      }
    } else if (key == "stop") {
      if (auto e = parse_stop(v, &out->stop)) return e;
    } else if (chat && key == "logprobs") {
      if (v.is_null()) continue;
      if (!v.is_boolean()) return wrong_type("logprobs", "a boolean", v);
      chat_logprobs = v.get<bool>();
    } else if (chat && key == "top_logprobs") {
      if (v.is_null()) continue;
      if (!v.is_number_integer()) return wrong_type("top_logprobs", "an integer in [0, 5]", v);
      const int64_t n = v.get<int64_t>();
      if (n < 0 || n > generate::kMaxTopLogprobs) {
        return invalid("top_logprobs", "top_logprobs is " + std::to_string(n) +
                                           "; it must lie in [0, " +
                                           std::to_string(generate::kMaxTopLogprobs) +
                                           "] (the most likely tokens to list at each position)");
      }
      top_logprobs = static_cast<int>(n);
    } else if (key == "logprobs") {
      if (v.is_null()) continue;
      if (!v.is_number_integer()) return wrong_type("logprobs", "an integer in [0, 5] or null", v);
      const int64_t n = v.get<int64_t>();
      if (n < 0 || n > generate::kMaxTopLogprobs) {
        return invalid("logprobs", "logprobs is " + std::to_string(n) + "; it must lie in [0, " +
                                       std::to_string(generate::kMaxTopLogprobs) +
                                       "] (0: the chosen token's log-probability, N: also the N "
                                       "most likely tokens'), or null for none");
      }
      spec.logprobs = static_cast<int>(n);
    } else if (key == "user") {
      if (!v.is_string() && !v.is_null()) return wrong_type("user", "a string", v);
    } else if (is_unsupported_field(endpoint, key)) {
      if (!is_unsupported_default(key, v)) {
        return invalid(key, "'" + key +
                                "' is not supported by tessera-serve yet; leave it out "
                                "(or at its default)");
      }
    } else if (chat) {
      return invalid(key, "unknown field '" + key +
                              "'; /v1/chat/completions takes model, messages, max_tokens, "
                              "max_completion_tokens, temperature, top_p, top_k, seed, stop, "
                              "logprobs, top_logprobs, stream, stream_options, user");
    } else {
      return invalid(key, "unknown field '" + key +
                              "'; /v1/completions takes model, prompt, max_tokens, temperature, "
                              "top_p, top_k, seed, stop, logprobs, stream, stream_options, user");
    }
  }
  if (chat) {
    if (!have_prompt) {
      return invalid("messages", "messages is required (a list of {\"role\", \"content\"})");
    }
    if (top_logprobs >= 0 && !chat_logprobs) {
      return invalid("top_logprobs", "top_logprobs needs logprobs: true");
    }
    if (chat_logprobs) spec.logprobs = std::max(top_logprobs, 0);
    // The template's next turn ends the answer (chat_prompt).
    out->stop.push_back(kChatTurnStop);
  } else if (!have_prompt) {
    return invalid("prompt", "prompt is required (a string or a list of token ids)");
  }
  SchedulerOptions limits_as_scheduler;
  limits_as_scheduler.context = limits.context;
  limits_as_scheduler.vocab_size = limits.vocab_size;
  if (auto e = validate_request(spec, limits_as_scheduler)) {
    // A chat's prompt is its messages in the template.
    return invalid(chat && e->param == "prompt" ? "messages" : e->param,
                   chat ? "the messages in the chat template: " + e->message : e->message);
  }
  const int64_t n = static_cast<int64_t>(spec.prompt.size());
  if (n + spec.max_tokens > limits.context) {
    const std::string prompt = chat ? "the messages" : "the prompt";
    return invalid("max_tokens", prompt + " (" + std::to_string(n) + " tokens) plus max_tokens (" +
                                     std::to_string(spec.max_tokens) + ") is " +
                                     std::to_string(n + spec.max_tokens) +
                                     " tokens, over the model's context of " +
                                     std::to_string(limits.context) + "; ask for at most " +
                                     std::to_string(limits.context - n) + " tokens or shorten " +
                                     prompt);
  }
  return std::nullopt;
}

}  // namespace

std::optional<ApiError> parse_completion_request(std::string_view body, const ApiLimits& limits,
                                                 const data::Tokenizer& tokenizer,
                                                 uint64_t default_seed, CompletionRequest* out) {
  return parse_request(body, limits, tokenizer, default_seed, Endpoint::kCompletions, out);
}

std::optional<ApiError> parse_chat_request(std::string_view body, const ApiLimits& limits,
                                           const data::Tokenizer& tokenizer, uint64_t default_seed,
                                           CompletionRequest* out) {
  return parse_request(body, limits, tokenizer, default_seed, Endpoint::kChatCompletions, out);
}

ApiError rejection_error(const SubmitResult& r) {
  ApiError e;
  e.message = r.message;
  switch (r.rejection) {
    case Rejection::kQueueFull:
      e.status = 429;
      e.type = "rate_limit_error";
      e.code = "queue_full";
      break;
    case Rejection::kUnavailable:
      e.status = 503;
      e.type = "service_unavailable";
      e.code = "draining";
      break;
    default:
      e.param = r.param;
      break;
  }
  return e;
}

const char* openai_finish_reason(Finish finish) {
  switch (finish) {
    case Finish::kStop:
      return "stop";
    case Finish::kLength:
    case Finish::kContextFull:
      return "length";
    default:
      return finish_name(finish);
  }
}

namespace {
json logprobs_object(const LogprobsField& l) {
  if (l.requested < 0) return nullptr;
  json tokens = json::array(), token_logprobs = json::array(), offsets = json::array();
  json top = l.requested > 0 ? json::array() : json(nullptr);
  for (const LoggedToken& t : l.tokens) {
    tokens.push_back(t.text);
    token_logprobs.push_back(t.logprob);
    offsets.push_back(t.text_offset);
    if (l.requested > 0) {
      json alternatives = json::object();
      for (const auto& [text, logprob] : t.top) {
        // Two tokens may share a text (bytes of a split character both read U+FFFD): the first,
        // the more likely, is kept.
        if (!alternatives.contains(text)) alternatives[text] = logprob;
      }
      top.push_back(std::move(alternatives));
    }
  }
  return json{{"tokens", std::move(tokens)},
              {"token_logprobs", std::move(token_logprobs)},
              {"top_logprobs", std::move(top)},
              {"text_offset", std::move(offsets)}};
}

// One server-sent event: "data: {json}\n\n".
std::string sse_event(const json& j) { return "data: " + dump(j) + "\n\n"; }

// A stream chunk's finish_reason: null until the last chunk.
json chunk_finish_reason(Finish finish) {
  return finish == Finish::kNone ? json(nullptr) : json(openai_finish_reason(finish));
}

// The usage event of stream_options.include_usage: choices [] and usage, as `object`.
std::string usage_event(const std::string& id, int64_t created, const std::string& model,
                        const char* object, const Usage& usage) {
  json j = completion_json(id, created, model, object);
  j["choices"] = json::array();
  j["usage"] = usage_json(usage);
  return sse_event(j);
}

// The chat API's logprobs: {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token",
// "logprob", "bytes"}]}]}, or null.
json chat_logprobs_object(const LogprobsField& l) {
  if (l.requested < 0) return nullptr;
  auto bytes = [](const std::string& text) {
    json b = json::array();
    for (unsigned char c : text) b.push_back(static_cast<int>(c));
    return b;
  };
  json content = json::array();
  for (const LoggedToken& t : l.tokens) {
    json top = json::array();
    for (const auto& [text, logprob] : t.top) {
      top.push_back(json{{"token", text}, {"logprob", logprob}, {"bytes", bytes(text)}});
    }
    content.push_back(json{{"token", t.text},
                           {"logprob", t.logprob},
                           {"bytes", bytes(t.text)},
                           {"top_logprobs", std::move(top)}});
  }
  return json{{"content", std::move(content)}};
}
}  // namespace

std::string logprobs_json(const LogprobsField& logprobs) { return dump(logprobs_object(logprobs)); }

std::string chat_completion_body(const std::string& id, int64_t created, const std::string& model,
                                 const std::string& text, Finish finish, const Usage& usage,
                                 const LogprobsField& logprobs) {
  json j = completion_json(id, created, model, "chat.completion");
  j["choices"] = json::array({json{{"index", 0},
                                   {"message", json{{"role", "assistant"}, {"content", text}}},
                                   {"logprobs", chat_logprobs_object(logprobs)},
                                   {"finish_reason", openai_finish_reason(finish)}}});
  j["usage"] = usage_json(usage);
  return dump(j);
}

std::string chat_chunk_event(const std::string& id, int64_t created, const std::string& model,
                             const std::string& text, Finish finish, const LogprobsField& logprobs,
                             bool first) {
  json j = completion_json(id, created, model, "chat.completion.chunk");
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (first || !text.empty()) delta["content"] = text;
  json choice{{"index", 0}, {"delta", std::move(delta)}};
  choice["logprobs"] = chat_logprobs_object(logprobs);
  choice["finish_reason"] = chunk_finish_reason(finish);
  j["choices"] = json::array({choice});
  return sse_event(j);
}

std::string chat_usage_chunk_event(const std::string& id, int64_t created, const std::string& model,
                                   const Usage& usage) {
  return usage_event(id, created, model, "chat.completion.chunk", usage);
}

std::string completion_body(const std::string& id, int64_t created, const std::string& model,
                            const std::string& text, Finish finish, const Usage& usage,
                            const LogprobsField& logprobs) {
  json j = completion_json(id, created, model);
  j["choices"] = json::array({json{{"index", 0},
                                   {"text", text},
                                   {"logprobs", logprobs_object(logprobs)},
                                   {"finish_reason", openai_finish_reason(finish)}}});
  j["usage"] = usage_json(usage);
  return dump(j);
}

std::string completion_chunk_event(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, Finish finish,
                                   const LogprobsField& logprobs) {
  json j = completion_json(id, created, model);
  json choice{{"index", 0}, {"text", text}, {"logprobs", logprobs_object(logprobs)}};
  choice["finish_reason"] = chunk_finish_reason(finish);
  j["choices"] = json::array({choice});
  return sse_event(j);
}

std::string usage_chunk_event(const std::string& id, int64_t created, const std::string& model,
                              const Usage& usage) {
  return usage_event(id, created, model, "text_completion", usage);
}

std::string done_event() { return "data: [DONE]\n\n"; }

std::string error_event(const ApiError& error) { return "data: " + error_body(error) + "\n\n"; }

std::string models_body(const std::string& model, int64_t created, int64_t context) {
  json m{{"id", model},
         {"object", "model"},
         {"created", created},
         {"owned_by", "tessera"},
         {"max_model_len", context}};
  return dump(json{{"object", "list"}, {"data", json::array({m})}});
}

size_t utf8_complete_prefix(std::string_view bytes) {
  const size_t n = bytes.size();
  // The last byte that is not a continuation byte (10xxxxxx), at most 4 back.
  size_t lead = n;
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto b = static_cast<unsigned char>(bytes[n - back]);
    if ((b & 0xC0) != 0x80) {
      lead = n - back;
      break;
    }
  }
  if (lead == n) return n;
  const auto b = static_cast<unsigned char>(bytes[lead]);
  const size_t need = b < 0x80             ? 1
                      : (b & 0xE0) == 0xC0 ? 2
                      : (b & 0xF0) == 0xE0 ? 3
                      : (b & 0xF8) == 0xF0 ? 4
                                           : 1;
  return n - lead < need ? lead : n;  // an unfinished character: cut before it
}

std::string Utf8Joiner::push(std::string_view bytes) {
  held_.append(bytes);
  const size_t cut = utf8_complete_prefix(held_);
  std::string out = held_.substr(0, cut);
  held_.erase(0, cut);
  return out;
}

std::string Utf8Joiner::flush() {
  std::string out;
  out.swap(held_);
  return out;
}

CompletionText::CompletionText(std::vector<std::string> stop) : stop_(std::move(stop)) {}

CompletionText::Piece CompletionText::release(size_t end, bool all_tokens) {
  Piece piece;
  piece.text = text_.substr(released_, end - released_);
  released_ = end;
  size_t n = 0;
  while (n < pending_.size() &&
         (all_tokens || pending_[n].text_offset < static_cast<int64_t>(end))) {
    ++n;
  }
  piece.tokens.assign(std::make_move_iterator(pending_.begin()),
                      std::make_move_iterator(pending_.begin() + static_cast<std::ptrdiff_t>(n)));
  pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(n));
  return piece;
}

CompletionText::Piece CompletionText::push(std::string_view bytes, const LoggedToken* logged) {
  TESSERA_ASSERT(!stopped_, "no token follows a stop string");
  ++tokens_pushed_;
  if (logged) {
    pending_.push_back(*logged);
    pending_.back().text_offset = static_cast<int64_t>(text_.size());
  }
  text_.append(bytes);
  // Invariant: no stop string starts before released_ (a tail that could begin one is held), so
  // the first occurrence of any stop string lies at or after it.
  size_t first = std::string::npos;
  for (const std::string& s : stop_) first = std::min(first, text_.find(s, released_));
  if (first != std::string::npos) {
    stopped_ = true;
    text_.resize(first);
    Piece piece = release(first, false);
    pending_.clear();
    return piece;
  }
  // Hold back the longest tail that is a proper prefix of a stop string.
  size_t end = text_.size();
  for (const std::string& s : stop_) {
    const size_t longest = std::min(s.size() - 1, text_.size() - released_);
    for (size_t k = longest; k >= 1; --k) {
      if (text_.compare(text_.size() - k, k, s, 0, k) == 0) {
        end = std::min(end, text_.size() - k);
        break;
      }
    }
  }
  end =
      released_ + utf8_complete_prefix(std::string_view(text_).substr(released_, end - released_));
  return release(end, false);
}

CompletionText::Piece CompletionText::finish() {
  if (stopped_) return {};
  return release(text_.size(), true);
}

}  // namespace tessera::serve
