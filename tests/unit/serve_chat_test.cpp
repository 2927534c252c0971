// The chat completions API of tessera-serve without a socket (src/serve/openai_api.h): the
// chat template renders each role as documented; a chat body parses into the RequestSpec of the
// equivalent completions body (prompt = the template, the turn stop string added); every bad
// message is a 400 naming the field (messages[i].role and the like); answers and stream events
// have the chat shapes (message, delta with the role first, logprobs.content).
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

class ServeChatTest : public ::testing::Test {
 protected:
  ServeChatTest()
      : tokenizer_(std::move(data::Tokenizer::load(kDataDir + "/tiny_gpt2_vocab.json",
                                                   kDataDir + "/tiny_gpt2_merges.txt")
                                 .value())) {
    limits_.model_name = "tiny";
    limits_.context = 64;
    limits_.vocab_size = tokenizer_.vocab_size();
  }

  std::optional<ApiError> parse(const std::string& body, CompletionRequest* out = nullptr) {
    CompletionRequest scratch;
    return parse_chat_request(body, limits_, tokenizer_, 77, out ? out : &scratch);
  }

  void expect_error(const std::string& body, const std::string& param, const std::string& says) {
    auto e = parse(body);
    ASSERT_TRUE(e.has_value()) << "accepted: " << body;
    EXPECT_EQ(e->status, 400) << body;
    EXPECT_EQ(e->param, param) << body << ": " << e->message;
    EXPECT_NE(e->message.find(says), std::string::npos)
        << body << ": message '" << e->message << "' does not say '" << says << "'";
  }

  data::Tokenizer tokenizer_;
  ApiLimits limits_;
};

TEST(ServeChatTemplate, RendersEachRoleInOrderAndEndsWithTheAssistantsTurn) {
  EXPECT_EQ(chat_prompt({{ChatRole::kUser, "Hi"}}), "User: Hi\nAssistant:");
  EXPECT_EQ(chat_prompt({{ChatRole::kSystem, "Be brief."},
                         {ChatRole::kUser, "Hi"},
                         {ChatRole::kAssistant, "Hello."},
                         {ChatRole::kUser, "Bye"}}),
            "Be brief.\n\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:");
  EXPECT_EQ(std::string(kChatTurnStop), "\nUser:");
}

// A chat body is the completions body of its template: the same RequestSpec, with the turn stop.
TEST_F(ServeChatTest, MessagesBecomeTheTemplatePromptWithTheTurnStop) {
  CompletionRequest chat;
  ASSERT_FALSE(parse(R"({"model": "tiny", "messages": [
                           {"role": "system", "content": "Be brief."},
                           {"role": "user", "content": [{"type": "text", "text": "Hel"},
                                                        {"type": "text", "text": "lo"}],
                            "name": "ann"}],
                          "max_completion_tokens": 9, "temperature": 0.5, "top_k": 4,
                          "seed": 12, "stop": ["END"], "stream": true,
                          "stream_options": {"include_usage": true}, "n": 1,
                          "tools": null, "response_format": null})",
                     &chat)
                   .has_value());
  EXPECT_EQ(chat.endpoint, Endpoint::kChatCompletions);
  const std::string prompt = "Be brief.\n\nUser: Hello\nAssistant:";
  EXPECT_EQ(chat.spec.prompt, tokenizer_.encode(prompt));
  EXPECT_EQ(chat.spec.max_tokens, 9);
  EXPECT_EQ(chat.spec.sampling.temperature, 0.5f);
  EXPECT_EQ(chat.spec.sampling.top_k, 4);
  EXPECT_EQ(chat.spec.sampling.seed, 12u);
  EXPECT_EQ(chat.spec.logprobs, -1);
  EXPECT_EQ(chat.stop, (std::vector<std::string>{"END", "\nUser:"}));
  EXPECT_TRUE(chat.stream);
  EXPECT_TRUE(chat.include_usage);

  CompletionRequest plain;
  json body{{"prompt", prompt}, {"max_tokens", 9}, {"temperature", 0.5},
            {"top_k", 4},       {"seed", 12},      {"stop", {"END", "\nUser:"}}};
  ASSERT_FALSE(parse_completion_request(body.dump(), limits_, tokenizer_, 77, &plain).has_value());
  EXPECT_EQ(plain.endpoint, Endpoint::kCompletions);
  EXPECT_EQ(chat.spec.prompt, plain.spec.prompt);
  EXPECT_EQ(chat.stop, plain.stop);
}

TEST_F(ServeChatTest, LogprobsIsABooleanWithTopLogprobs) {
  CompletionRequest r;
  ASSERT_FALSE(parse(R"({"messages": [{"role": "user", "content": "a"}]})", &r).has_value());
  EXPECT_EQ(r.spec.logprobs, -1);
  ASSERT_FALSE(parse(R"({"messages": [{"role": "user", "content": "a"}], "logprobs": true})", &r)
                   .has_value());
  EXPECT_EQ(r.spec.logprobs, 0);
  ASSERT_FALSE(parse(R"({"messages": [{"role": "user", "content": "a"}], "logprobs": true,
                         "top_logprobs": 3})",
                     &r)
                   .has_value());
  EXPECT_EQ(r.spec.logprobs, 3);
  expect_error(R"({"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2})",
               "top_logprobs", "needs logprobs: true");
  expect_error(R"({"messages": [{"role": "user", "content": "a"}], "logprobs": 2})", "logprobs",
               "logprobs must be a boolean, not an integer");
  expect_error(R"({"messages": [{"role": "user", "content": "a"}], "logprobs": true,
                   "top_logprobs": 6})",
               "top_logprobs", "top_logprobs is 6; it must lie in [0, 5]");
}

TEST_F(ServeChatTest, BadMessagesNameTheFieldAndTheFix) {
  expect_error(R"({"max_tokens": 3})", "messages", "messages is required");
  expect_error(R"({"messages": []})", "messages", "messages is empty");
  expect_error(R"({"messages": "hi"})", "messages", "messages must be a list of messages");
  expect_error(R"({"messages": [5]})", "messages[0]", "must be an object with role and content");
  expect_error(R"({"messages": [{"content": "a"}]})", "messages[0].role", "has no role");
  expect_error(R"({"messages": [{"role": "user"}]})", "messages[0].content", "has no content");
  expect_error(R"({"messages": [{"role": "user", "content": "a"}, {"role": "tool",
                   "content": "b"}]})",
               "messages[1].role", "roles are system (or developer), user and assistant");
  expect_error(R"({"messages": [{"role": "user", "content": 3}]})", "messages[0].content",
               "a string or a list of text parts, not an integer");
  expect_error(R"({"messages": [{"role": "user", "content": [{"type": "image_url",
                   "image_url": {"url": "x"}}]}]})",
               "messages[0].content[0].type", "only {\"type\": \"text\"");
  expect_error(R"({"messages": [{"role": "user", "content": "a", "tool_calls": []}]})",
               "messages[0].tool_calls", "unknown field 'messages[0].tool_calls'");
  // The completions endpoint's own fields are unknown here, and the other way round.
  expect_error(R"({"messages": [{"role": "user", "content": "a"}], "prompt": "b"})", "prompt",
               "unknown field 'prompt'; /v1/chat/completions takes model, messages");
  CompletionRequest scratch;
  auto e = parse_completion_request(R"({"prompt": "a", "messages": []})", limits_, tokenizer_, 77,
                                    &scratch);
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->param, "messages");
  expect_error(R"({"messages": [{"role": "user", "content": "a"}], "tools": [{}]})", "tools",
               "not supported");
  // The messages with max_tokens over the context: the error says messages, not prompt.
  expect_error(R"({"messages": [{"role": "user", "content": "a"}], "max_tokens": 60})",
               "max_tokens", "the messages (");
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += "ab cd ";
  expect_error(R"({"messages": [{"role": "user", "content": ")" + long_text + R"("}]})", "messages",
               "the messages in the chat template: ");
}

TEST(ServeChatFormat, AnswerAndStreamEventsHaveTheChatShapes) {
  LogprobsField field{1, {}};
  LoggedToken t;
  t.text = "Hi";
  t.logprob = -0.5f;
  t.top = {{"Hi", -0.5f}};
  field.tokens.push_back(t);
  const json body = json::parse(chat_completion_body("chatcmpl-3", 100, "tiny", "Hi",
                                                     Finish::kLength, Usage{4, 1, 3}, field));
  EXPECT_EQ(body["object"], "chat.completion");
  EXPECT_EQ(body["id"], "chatcmpl-3");
  EXPECT_EQ(body["choices"][0]["message"], (json{{"role", "assistant"}, {"content", "Hi"}}));
  EXPECT_EQ(body["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(body["usage"]["total_tokens"], 5);
  EXPECT_EQ(body["usage"]["prompt_tokens_details"]["cached_tokens"], 3);
  const json& content = body["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 1u);
  EXPECT_EQ(content[0]["token"], "Hi");
  EXPECT_EQ(content[0]["logprob"], -0.5f);
  EXPECT_EQ(content[0]["bytes"], (json{72, 105}));
  EXPECT_EQ(content[0]["top_logprobs"][0]["token"], "Hi");
  EXPECT_TRUE(json::parse(chat_completion_body("c", 1, "tiny", "", Finish::kStop,
                                               {}))["choices"][0]["logprobs"]
                  .is_null());

  auto event = [](const std::string& e) {
    EXPECT_EQ(e.rfind("data: ", 0), 0u);
    EXPECT_EQ(e.substr(e.size() - 2), "\n\n");
    return json::parse(e.substr(6));
  };
  const json first = event(chat_chunk_event("c", 1, "tiny", "", Finish::kNone, {}, true));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"], (json{{"role", "assistant"}, {"content", ""}}));
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const json piece = event(chat_chunk_event("c", 1, "tiny", "lo", Finish::kNone));
  EXPECT_EQ(piece["choices"][0]["delta"], (json{{"content", "lo"}}));
  const json last = event(chat_chunk_event("c", 1, "tiny", "", Finish::kStop));
  EXPECT_EQ(last["choices"][0]["delta"], json::object());
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  const json usage = event(chat_usage_chunk_event("c", 1, "tiny", Usage{2, 3}));
  EXPECT_EQ(usage["object"], "chat.completion.chunk");
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 3);
}

}  // namespace
}  // namespace tessera::serve
