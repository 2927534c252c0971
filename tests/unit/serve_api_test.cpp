// The OpenAI-compatible API of tessera-serve without a socket (src/serve/openai_api.h): request
// bodies parse into the right RequestSpec; every kind of bad input is a 400 (404 for a model we
// do not serve) whose error names the field and the limit; responses, stream events and errors
// have OpenAI's shape; streamed pieces never split a UTF-8 character.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "data/tokenizer.h"
#include "serve/openai_api.h"
#include "test_data.h"

namespace tessera::serve {
namespace {

using nlohmann::json;

using tessera::testing::kDataDir;

class ServeApiTest : public ::testing::Test {
 protected:
  ServeApiTest()
      : tokenizer_(std::move(data::Tokenizer::load(kDataDir + "/tiny_gpt2_vocab.json",
                                                   kDataDir + "/tiny_gpt2_merges.txt")
                                 .value())) {
    limits_.model_name = "tiny";
    limits_.context = 32;
    limits_.vocab_size = tokenizer_.vocab_size();
  }

  std::optional<ApiError> parse(const std::string& body, CompletionRequest* out = nullptr) {
    CompletionRequest scratch;
    return parse_completion_request(body, limits_, tokenizer_, 77, out ? out : &scratch);
  }

  // `body` must fail with `status`, naming `param` (empty: null) and saying `says`.
  void expect_error(const std::string& body, int status, const std::string& param,
                    const std::string& says) {
    auto e = parse(body);
    ASSERT_TRUE(e.has_value()) << "accepted: " << body;
    EXPECT_EQ(e->status, status) << body;
    EXPECT_EQ(e->param, param) << body << ": " << e->message;
    EXPECT_NE(e->message.find(says), std::string::npos)
        << body << ": message '" << e->message << "' does not say '" << says << "'";
    // And the error body is OpenAI's shape.
    const json j = json::parse(error_body(*e));
    EXPECT_EQ(j["error"]["message"], e->message);
    EXPECT_EQ(j["error"]["type"], e->type);
    if (param.empty()) {
      EXPECT_TRUE(j["error"]["param"].is_null());
    } else {
      EXPECT_EQ(j["error"]["param"], param);
    }
  }

  data::Tokenizer tokenizer_;
  ApiLimits limits_;
};

TEST_F(ServeApiTest, TextPromptWithDefaults) {
  CompletionRequest r;
  ASSERT_FALSE(parse(R"({"prompt": "Hello world"})", &r).has_value());
  EXPECT_EQ(r.spec.prompt, tokenizer_.encode("Hello world"));
  EXPECT_EQ(r.spec.max_tokens, 16);
  EXPECT_EQ(r.spec.sampling.temperature, 1.0f);
  EXPECT_EQ(r.spec.sampling.top_p, 1.0f);
  EXPECT_EQ(r.spec.sampling.top_k, 0);
  EXPECT_EQ(r.spec.sampling.seed, 77u) << "no seed: the caller's fresh one";
  EXPECT_TRUE(r.spec.stop_at_eot);
  EXPECT_FALSE(r.stream);
}

TEST_F(ServeApiTest, TokenPromptAndEveryOption) {
  CompletionRequest r;
  ASSERT_FALSE(parse(R"({"model": "tiny", "prompt": [5, 6, 7], "max_tokens": 29,
                          "temperature": 0, "top_p": 0.5, "top_k": 3, "seed": 18446744073709551615,
                          "stream": true, "stream_options": {"include_usage": true},
                          "user": "u", "n": 1, "echo": false, "stop": null, "logprobs": null,
                          "presence_penalty": 0, "frequency_penalty": 0.0, "logit_bias": {}})",
                     &r)
                   .has_value());
  EXPECT_EQ(r.spec.prompt, (std::vector<int32_t>{5, 6, 7}));
  EXPECT_EQ(r.spec.max_tokens, 29) << "3 + 29 = 32 fills the context exactly: allowed";
  EXPECT_EQ(r.spec.sampling.temperature, 0.0f);
  EXPECT_EQ(r.spec.sampling.top_p, 0.5f);
  EXPECT_EQ(r.spec.sampling.top_k, 3);
  EXPECT_EQ(r.spec.sampling.seed, 18446744073709551615ull);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
  // null means "the default" for the optional fields.
  ASSERT_FALSE(parse(R"({"prompt": "a", "max_tokens": null, "temperature": null,
                          "seed": null, "stream": null})",
                     &r)
                   .has_value());
  EXPECT_EQ(r.spec.max_tokens, 16);
}

TEST_F(ServeApiTest, MalformedBodies) {
  expect_error(R"({"prompt": "a",)", 400, "", "not valid JSON");
  expect_error("", 400, "", "not valid JSON");
  expect_error(R"(["a"])", 400, "", "must be a JSON object, not a list");
  expect_error(R"({"max_tokens": 4})", 400, "prompt", "prompt is required");
  // serve_request_fuzz found it: the JSON parser throws out_of_range, not parse_error, here.
  expect_error(R"({"prompt": "a", "temperature": 6e666})", 400, "", "beyond a double's range");
  expect_error(R"({"prompt": "a", "top_p": -1e400})", 400, "", "beyond a double's range");
}

TEST_F(ServeApiTest, UnknownAndUnsupportedFieldsAreNamed) {
  expect_error(R"({"prompt": "a", "max_token": 4})", 400, "max_token", "unknown field 'max_token'");
  expect_error(R"({"prompt": "a", "n": 2})", 400, "n", "not supported");
  expect_error(R"({"prompt": "a", "echo": true})", 400, "echo", "not supported");
  expect_error(R"({"prompt": "a", "suffix": "x"})", 400, "suffix", "not supported");
  expect_error(R"({"prompt": "a", "best_of": 3})", 400, "best_of", "not supported");
  expect_error(R"({"prompt": "a", "stream_options": {"usage": true}})", 400, "stream_options.usage",
               "unknown field");
}

TEST_F(ServeApiTest, WrongTypesAreNamed) {
  expect_error(R"({"prompt": 5})", 400, "prompt",
               "a string or a list of token ids, not an integer");
  expect_error(R"({"prompt": "a", "max_tokens": "4"})", 400, "max_tokens",
               "must be an integer, not a string");
  expect_error(R"({"prompt": "a", "max_tokens": 4.5})", 400, "max_tokens",
               "must be an integer, not a number");
  expect_error(R"({"prompt": "a", "temperature": "hot"})", 400, "temperature", "a number");
  expect_error(R"({"prompt": "a", "top_p": true})", 400, "top_p", "a number, not a boolean");
  expect_error(R"({"prompt": "a", "top_k": 2.5})", 400, "top_k", "an integer");
  expect_error(R"({"prompt": "a", "seed": "1"})", 400, "seed", "an integer >= 0");
  expect_error(R"({"prompt": "a", "stream": "yes"})", 400, "stream", "a boolean");
  expect_error(R"({"prompt": "a", "model": 3})", 400, "model", "a string");
  expect_error(R"({"prompt": [1, "x"]})", 400, "prompt", "one request per prompt");
  expect_error(R"({"prompt": ["one", "two"]})", 400, "prompt", "one request per prompt");
  expect_error(R"({"prompt": [1, 2.5]})", 400, "prompt", "prompt token 1 is a number");
}

TEST_F(ServeApiTest, ValuesOutsideTheirLimits) {
  expect_error(R"({"prompt": ""})", 400, "prompt", "empty");
  expect_error(R"({"prompt": []})", 400, "prompt", "empty");
  const std::string v = std::to_string(tokenizer_.vocab_size());
  expect_error(R"({"prompt": [1, )" + v + "]}", 400, "prompt",
               "prompt token 1 is id " + v + ", outside the vocabulary [0, " + v + ")");
  expect_error(R"({"prompt": [-1]})", 400, "prompt", "outside the vocabulary");
  expect_error(R"({"prompt": [1, 2, 3], "max_tokens": 30})", 400, "max_tokens",
               "over the model's context of 32; ask for at most 29 tokens");
  expect_error(R"({"prompt": "a", "max_tokens": 0})", 400, "max_tokens", "[1, 32]");
  expect_error(R"({"prompt": "a", "max_tokens": 100000})", 400, "max_tokens", "[1, 32]");
  std::string long_prompt = "[";
  for (int i = 0; i < 32; ++i) long_prompt += (i ? ", " : "") + std::to_string(i);
  expect_error(R"({"prompt": )" + long_prompt + "]}", 400, "prompt", "context is 32");
  expect_error(R"({"prompt": "a", "temperature": -0.5})", 400, "temperature",
               "temperature -0.5 is out of range: it must be a finite number >= 0");
  expect_error(R"({"prompt": "a", "top_p": 0})", 400, "top_p", "0 < top_p <= 1");
  expect_error(R"({"prompt": "a", "top_p": 1.01})", 400, "top_p", "top_p 1.01 is out of range");
  expect_error(R"({"prompt": "a", "top_k": -1})", 400, "top_k",
               "top_k -1 is out of range: it must be >= 0");
  expect_error(R"({"prompt": "a", "seed": -4})", 400, "seed", "seed is -4");
  auto e = parse(R"({"prompt": "a", "model": "gpt-4"})");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->status, 404);
  EXPECT_EQ(e->code, "model_not_found");
  EXPECT_NE(e->message.find("serves 'tiny'"), std::string::npos);
}

TEST_F(ServeApiTest, SchedulerRefusalsMapToStatusCodes) {
  SubmitResult full;
  full.rejection = Rejection::kQueueFull;
  full.message = "the request queue is full";
  const ApiError e429 = rejection_error(full);
  EXPECT_EQ(e429.status, 429);
  EXPECT_EQ(e429.code, "queue_full");
  SubmitResult draining;
  draining.rejection = Rejection::kUnavailable;
  EXPECT_EQ(rejection_error(draining).status, 503);
  SubmitResult invalid;
  invalid.rejection = Rejection::kInvalid;
  invalid.param = "top_k";
  EXPECT_EQ(rejection_error(invalid).status, 400);
  EXPECT_EQ(rejection_error(invalid).param, "top_k");
}

TEST_F(ServeApiTest, ResponsesHaveOpenAiShape) {
  const json body = json::parse(
      completion_body("cmpl-3", 1700000000, "tiny", "Hi there", Finish::kContextFull, {4, 2}));
  EXPECT_EQ(body["id"], "cmpl-3");
  EXPECT_EQ(body["object"], "text_completion");
  EXPECT_EQ(body["model"], "tiny");
  EXPECT_EQ(body["choices"][0]["text"], "Hi there");
  EXPECT_EQ(body["choices"][0]["index"], 0);
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length") << "a full context reads as length";
  EXPECT_EQ(body["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(body["usage"]["completion_tokens"], 2);
  EXPECT_EQ(body["usage"]["total_tokens"], 6);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 0);

  const std::string chunk = completion_chunk_event("cmpl-3", 1, "tiny", "a", Finish::kNone);
  ASSERT_EQ(chunk.rfind("data: ", 0), 0u);
  ASSERT_EQ(chunk.substr(chunk.size() - 2), "\n\n");
  const json c = json::parse(chunk.substr(6));
  EXPECT_TRUE(c["choices"][0]["finish_reason"].is_null());
  const json last =
      json::parse(completion_chunk_event("cmpl-3", 1, "tiny", "", Finish::kStop).substr(6));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const json usage = json::parse(usage_chunk_event("cmpl-3", 1, "tiny", {4, 2}).substr(6));
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["total_tokens"], 6);
  EXPECT_EQ(done_event(), "data: [DONE]\n\n");

  const json models = json::parse(models_body("tiny", 1, 32));
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "tiny");
  EXPECT_EQ(models["data"][0]["max_model_len"], 32);
  // Invalid UTF-8 from the model becomes U+FFFD instead of failing the response.
  const json bad = json::parse(completion_body("x", 1, "tiny", "a\xFF", Finish::kStop, {1, 1}));
  EXPECT_EQ(bad["choices"][0]["text"], "a\xEF\xBF\xBD");
}

TEST(ServeUtf8Joiner, HoldsASplitCharacterUntilItsLastByte) {
  Utf8Joiner j;
  EXPECT_EQ(j.push("ab"), "ab");
  EXPECT_EQ(j.push("\xC3"), "");  // first byte of "é"
  EXPECT_EQ(j.push("\xA9 c\xE2\x82"), "\xC3\xA9 c");
  EXPECT_EQ(j.push("\xAC"), "\xE2\x82\xAC");  // "€"
  EXPECT_EQ(j.push("\xF0\x9F"), "");
  EXPECT_EQ(j.flush(), "\xF0\x9F") << "the unfinished end is given back at the finish";
  EXPECT_EQ(j.push("\x80\x80\x80\x80x"), "\x80\x80\x80\x80x") << "stray bytes pass through";
}

}  // namespace
}  // namespace tessera::serve
