// OpenAI-compatible completions API: parsing, checks and formatting; see openai_api.h.
#include "serve/openai_api.h"

#include <algorithm>
#include <nlohmann/json.hpp>

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
  if (key == "stop" || key == "logit_bias") return v.empty();  // [] or {} (or "")
  if (key == "logprobs" || key == "suffix") return false;      // only null
  return false;
}

bool is_unsupported_field(const std::string& key) {
  return key == "n" || key == "best_of" || key == "echo" || key == "presence_penalty" ||
         key == "frequency_penalty" || key == "stop" || key == "logit_bias" || key == "logprobs" ||
         key == "suffix";
}

json completion_json(const std::string& id, int64_t created, const std::string& model) {
  return json{{"id", id}, {"object", "text_completion"}, {"created", created}, {"model", model}};
}

json usage_json(const Usage& u) {
  return json{{"prompt_tokens", u.prompt_tokens},
              {"completion_tokens", u.completion_tokens},
              {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

}  // namespace

std::string error_body(const ApiError& e) {
  json inner{{"message", e.message}, {"type", e.type}};
  inner["param"] = e.param.empty() ? json(nullptr) : json(e.param);
  inner["code"] = e.code.empty() ? json(nullptr) : json(e.code);
  return dump(json{{"error", inner}});
}

std::optional<ApiError> parse_completion_request(std::string_view body, const ApiLimits& limits,
                                                 const data::Tokenizer& tokenizer,
                                                 uint64_t default_seed, CompletionRequest* out) {
  json j;
  try {
    j = json::parse(body.begin(), body.end());
  } catch (const json::parse_error& e) {
    return invalid("", "the request body is not valid JSON (byte " + std::to_string(e.byte) +
                           "); send a JSON object such as {\"prompt\": \"Hello\"}");
  }
  if (!j.is_object()) {
    return invalid("", std::string("the request body must be a JSON object, not ") + type_name(j));
  }
  *out = CompletionRequest{};
  RequestSpec& spec = out->spec;
  spec.sampling.seed = default_seed;
  bool have_prompt = false;
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
    } else if (key == "prompt") {
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
    } else if (key == "max_tokens") {
      if (v.is_null()) continue;
      if (!v.is_number_integer()) return wrong_type("max_tokens", "an integer", v);
      const int64_t n = v.get<int64_t>();
      if (n < 1 || n > limits.context) {
        return invalid("max_tokens", "max_tokens is " + std::to_string(n) +
                                         "; it must lie in [1, " + std::to_string(limits.context) +
                                         "] (the model's context)");
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
    } else if (key == "user") {
      if (!v.is_string() && !v.is_null()) return wrong_type("user", "a string", v);
    } else if (is_unsupported_field(key)) {
      if (!is_unsupported_default(key, v)) {
        return invalid(key, "'" + key +
                                "' is not supported by tessera-serve yet; leave it out "
                                "(or at its default)");
      }
    } else {
      return invalid(key, "unknown field '" + key +
                              "'; /v1/completions takes model, prompt, max_tokens, temperature, "
                              "top_p, top_k, seed, stream, stream_options, user");
    }
  }
  if (!have_prompt)
    return invalid("prompt", "prompt is required (a string or a list of token ids)");
  SchedulerOptions limits_as_scheduler;
  limits_as_scheduler.context = limits.context;
  limits_as_scheduler.vocab_size = limits.vocab_size;
  if (auto e = validate_request(spec, limits_as_scheduler)) return invalid(e->param, e->message);
  const int64_t n = static_cast<int64_t>(spec.prompt.size());
  if (n + spec.max_tokens > limits.context) {
    return invalid("max_tokens", "the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" +
                                     std::to_string(spec.max_tokens) + ") is " +
                                     std::to_string(n + spec.max_tokens) +
                                     " tokens, over the model's context of " +
                                     std::to_string(limits.context) + "; ask for at most " +
                                     std::to_string(limits.context - n) +
                                     " tokens or shorten the prompt");
  }
  return std::nullopt;
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

std::string completion_body(const std::string& id, int64_t created, const std::string& model,
                            const std::string& text, Finish finish, const Usage& usage) {
  json j = completion_json(id, created, model);
  j["choices"] = json::array({json{{"index", 0},
                                   {"text", text},
                                   {"logprobs", nullptr},
                                   {"finish_reason", openai_finish_reason(finish)}}});
  j["usage"] = usage_json(usage);
  return dump(j);
}

std::string completion_chunk_event(const std::string& id, int64_t created, const std::string& model,
                                   const std::string& text, Finish finish) {
  json j = completion_json(id, created, model);
  json choice{{"index", 0}, {"text", text}, {"logprobs", nullptr}};
  choice["finish_reason"] =
      finish == Finish::kNone ? json(nullptr) : json(openai_finish_reason(finish));
  j["choices"] = json::array({choice});
  return "data: " + dump(j) + "\n\n";
}

std::string usage_chunk_event(const std::string& id, int64_t created, const std::string& model,
                              const Usage& usage) {
  json j = completion_json(id, created, model);
  j["choices"] = json::array();
  j["usage"] = usage_json(usage);
  return "data: " + dump(j) + "\n\n";
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

std::string Utf8Joiner::push(std::string_view bytes) {
  held_.append(bytes);
  const size_t n = held_.size();
  // The last byte that is not a continuation byte (10xxxxxx), at most 4 back.
  size_t lead = n;
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto b = static_cast<unsigned char>(held_[n - back]);
    if ((b & 0xC0) != 0x80) {
      lead = n - back;
      break;
    }
  }
  size_t cut = n;
  if (lead < n) {
    const auto b = static_cast<unsigned char>(held_[lead]);
    const size_t need = b < 0x80             ? 1
                        : (b & 0xE0) == 0xC0 ? 2
                        : (b & 0xF0) == 0xE0 ? 3
                        : (b & 0xF8) == 0xF0 ? 4
                                             : 1;
    if (n - lead < need) cut = lead;  // an unfinished character: hold it
  }
  std::string out = held_.substr(0, cut);
  held_.erase(0, cut);
  return out;
}

std::string Utf8Joiner::flush() {
  std::string out;
  out.swap(held_);
  return out;
}

}  // namespace tessera::serve
