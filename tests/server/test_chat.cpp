// /v1/chat/completions over the fake engine: the template, logprobs, n, streaming, tool calls.
#include <gtest/gtest.h>

#include "server_fixture.h"

namespace ds::test {
namespace {

const json kMessages =
    json::array({{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hello there"}}});

const json kTools = json::array(
    {{{"type", "function"},
      {"function",
       {{"name", "get_weather"},
        {"description", "Weather of a city"},
        {"parameters",
         {{"type", "object"}, {"properties", {{"city", {{"type", "string"}}}}}, {"required", {"city"}}}}}}}});

TEST(Chat, RendersTheTemplateAndAnswers) {
  ServerFixture f;
  auto r = f.post("/v1/chat/completions", {{"model", "tiny"}, {"messages", kMessages}, {"max_tokens", 4}});
  ASSERT_EQ(r.status, 200) << r.body;
  json j = json::parse(r.body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 1u);
  std::string prompt = f.tok->apply_chat_template(kMessages, nullptr, true);
  EXPECT_EQ(prompt,
            "<|im_system|>system<|im_middle|>Be brief.<|im_end|><|im_user|>user<|im_middle|>Hello there<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|>");
  EXPECT_EQ(sub[0].prompt_tokens, f.tok->encode(prompt));
  std::string expect;
  for (int32_t id : f.engine.expected_tokens(sub[0])) expect += f.tok->decode({id});
  EXPECT_EQ(j["choices"][0]["message"], json({{"role", "assistant"}, {"content", expect}}));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], sub[0].prompt_tokens.size());
  EXPECT_EQ(j["usage"]["completion_tokens"], 4);
}

TEST(Chat, MaxTokensDefaultsToTheRoomLeftAndMaxCompletionTokensWins) {
  ServerFixture f;  // max_model_len 256
  ASSERT_EQ(f.post("/v1/chat/completions", {{"messages", kMessages}}).status, 200);
  auto sub = f.engine.submitted_copy();
  EXPECT_EQ(sub[0].max_tokens, 256 - int(sub[0].prompt_tokens.size()));
  ASSERT_EQ(
      f.post("/v1/chat/completions", {{"messages", kMessages}, {"max_tokens", 9}, {"max_completion_tokens", 3}}).status,
      200);
  EXPECT_EQ(f.engine.submitted_copy()[1].max_tokens, 3);
}

TEST(Chat, DeveloperRoleListContentAndContinueFinalMessage) {
  ServerFixture f;
  json msgs = json::array(
      {{{"role", "developer"}, {"content", "Rules."}},
       {{"role", "user"}, {"content", {{{"type", "text"}, {"text", "Hi "}}, {{"type", "text"}, {"text", "you"}}}}},
       {{"role", "assistant"}, {"content", "Well,"}}});
  ASSERT_EQ(
      f.post(
           "/v1/chat/completions",
           {{"messages", msgs}, {"continue_final_message", true}, {"add_generation_prompt", false}, {"max_tokens", 1}})
          .status,
      200);
  auto sub = f.engine.submitted_copy();
  EXPECT_EQ(f.tok->decode(sub[0].prompt_tokens),
            "<|im_system|>system<|im_middle|>Rules.<|im_end|><|im_user|>user<|im_middle|>Hi you<|im_end|>"
            "<|im_assistant|>assistant<|im_middle|>Well,");
}

// vLLM's chat echo: continuing an assistant message, its content leads each choice's content (streamed as a
// chunk after the role); when the last message is the user's (the reply's role differs), echo adds nothing.
TEST(Chat, EchoPrependsTheContinuedMessage) {
  ServerFixture f;
  json msgs = json::array({{{"role", "user"}, {"content", "Hi"}},
                           {{"role", "assistant"}, {"content", {{{"type", "text"}, {"text", "Well,"}},
                                                                {{"type", "text"}, {"text", "so"}}}}}});
  json body = {{"messages", msgs}, {"continue_final_message", true}, {"add_generation_prompt", false},
               {"max_tokens", 3}, {"echo", true}, {"n", 2}, {"seed", 3}};
  auto r = f.post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  const auto sub = f.engine.submitted_copy();
  ASSERT_FALSE(sub.empty());
  std::string gen;
  for (int32_t id : f.engine.expected_tokens(sub[0])) gen += f.tok->decode({id});
  const json plain = json::parse(r.body);
  EXPECT_EQ(plain["choices"][0]["message"]["content"], "Well,\nso" + gen);
  EXPECT_EQ(plain["usage"]["completion_tokens"], 6) << "the echo is not generated";
  body["stream"] = true;
  r = f.post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200) << r.body;
  std::vector<std::string> texts(2);
  for (const json& e : sse_events(r.body))
    if (e.is_object() && !e["choices"].empty() && e["choices"][0]["delta"].contains("content"))
      texts[e["choices"][0]["index"].get<size_t>()] += e["choices"][0]["delta"]["content"].get<std::string>();
  for (size_t i = 0; i < 2; ++i) EXPECT_EQ(texts[i], plain["choices"][i]["message"]["content"]) << i;

  r = f.post("/v1/chat/completions", {{"messages", kMessages}, {"max_tokens", 2}, {"echo", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string text = json::parse(r.body)["choices"][0]["message"]["content"];
  EXPECT_EQ(text.find("Hello there"), std::string::npos) << text;
}

TEST(Chat, LogprobsInChatFormat) {
  ServerFixture f;
  auto r = f.post("/v1/chat/completions",
                  {{"messages", kMessages}, {"max_tokens", 3}, {"logprobs", true}, {"top_logprobs", 2}});
  ASSERT_EQ(r.status, 200) << r.body;
  json content = json::parse(r.body)["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 3u);
  for (const auto& e : content) {
    EXPECT_DOUBLE_EQ(e["logprob"].get<double>(), -0.25);
    std::string tok = e["token"];
    std::string bytes;
    for (int b : e["bytes"]) bytes.push_back(char(b));
    EXPECT_EQ(bytes, tok);
    ASSERT_EQ(e["top_logprobs"].size(), 2u);
    EXPECT_EQ(e["top_logprobs"][0]["token"], tok);
    EXPECT_DOUBLE_EQ(e["top_logprobs"][1]["logprob"].get<double>(), -1.25);
  }
  // logprobs without top_logprobs: the sampled token only.
  r = f.post("/v1/chat/completions", {{"messages", kMessages}, {"max_tokens", 1}, {"logprobs", true}});
  EXPECT_EQ(json::parse(r.body)["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size(), 0u);
  EXPECT_EQ(f.engine.submitted_copy()[1].sampling.num_logprobs, 0);
  // return_tokens_as_token_ids
  r = f.post("/v1/chat/completions",
             {{"messages", kMessages}, {"max_tokens", 1}, {"logprobs", true}, {"return_tokens_as_token_ids", true}});
  EXPECT_EQ(
      json::parse(r.body)["choices"][0]["logprobs"]["content"][0]["token"].get<std::string>().rfind("token_id:", 0),
      0u);
}

// vLLM's prompt_logprobs on chat: the rendered prompt's tokens scored, top-level in the response (the first
// streamed chunk with an output carries them); not asked: absent.
TEST(Chat, PromptLogprobsOfTheRenderedPrompt) {
  ServerFixture f;
  auto r = f.post("/v1/chat/completions", {{"messages", kMessages}, {"max_tokens", 2}, {"prompt_logprobs", 1}});
  ASSERT_EQ(r.status, 200) << r.body;
  const auto sub = f.engine.submitted_copy();
  ASSERT_EQ(sub.size(), 1u);
  EXPECT_EQ(sub[0].prompt_logprobs, 1);
  const size_t np = sub[0].prompt_tokens.size();
  json pl = json::parse(r.body)["prompt_logprobs"];
  ASSERT_EQ(pl.size(), np);
  EXPECT_TRUE(pl[0].is_null());
  const std::string last = std::to_string(sub[0].prompt_tokens.back());
  EXPECT_NEAR(pl[np - 1][last]["logprob"].get<double>(), -0.5 - double(np - 2) / 100, 1e-6);
  r = f.post("/v1/chat/completions", {{"messages", kMessages}, {"max_tokens", 2}});
  EXPECT_FALSE(json::parse(r.body).contains("prompt_logprobs"));
  EXPECT_EQ(f.engine.submitted_copy()[1].prompt_logprobs, -1);
  r = f.post("/v1/chat/completions", {{"messages", kMessages}, {"max_tokens", 2}, {"prompt_logprobs", 0}, {"stream", true}});
  int with = 0;
  for (const json& e : sse_events(r.body))
    if (e.is_object() && e.contains("prompt_logprobs")) {
      ++with;
      EXPECT_EQ(e["prompt_logprobs"].size(), np);
    }
  EXPECT_EQ(with, 1);
}

TEST(Chat, StreamingChunks) {
  ServerFixture f;
  json body = {{"messages", kMessages}, {"max_tokens", 5}, {"seed", 1}, {"n", 2}};
  json plain = json::parse(f.post("/v1/chat/completions", body).body);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto r = f.post("/v1/chat/completions", body);
  ASSERT_EQ(r.status, 200);
  auto events = sse_events(r.body);
  EXPECT_EQ(events.back(), "[DONE]");
  EXPECT_EQ(events[events.size() - 2]["usage"], plain["usage"]);
  std::vector<std::string> texts(2);
  std::vector<int> role_chunks(2, 0);
  std::vector<std::string> finish(2);
  for (size_t e = 0; e + 2 < events.size(); ++e) {
    const json& c = events[e];
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    int i = c["choices"][0]["index"];
    const json& d = c["choices"][0]["delta"];
    if (d.contains("role")) {
      EXPECT_EQ(d["role"], "assistant");
      EXPECT_TRUE(texts[i].empty()) << "the role comes first";
      role_chunks[i]++;
    }
    if (d.contains("content")) texts[i] += d["content"].get<std::string>();
    if (!c["choices"][0]["finish_reason"].is_null()) finish[i] = c["choices"][0]["finish_reason"];
  }
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(role_chunks[i], 1);
    EXPECT_EQ(texts[i], plain["choices"][i]["message"]["content"]);
    EXPECT_EQ(finish[i], "length");
  }
}

TEST(Chat, ToolCallsNonStreaming) {
  ServerFixture f;
  f.engine.script = [](const GenerationRequest&) { return tool_call_pieces(); };
  auto r = f.post("/v1/chat/completions", {{"messages", kMessages}, {"tools", kTools}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto sub = f.engine.submitted_copy();
  EXPECT_FALSE(sub[0].skip_special_tokens);  // the markers must reach the parser
  // The tools were declared in the prompt.
  EXPECT_NE(f.tok->decode(sub[0].prompt_tokens).find("<|im_system|>tool_declare<|im_middle|>[{\"function\""),
            std::string::npos);
  json c = json::parse(r.body)["choices"][0];
  EXPECT_EQ(c["finish_reason"], "tool_calls");
  EXPECT_EQ(c["message"]["content"], "Let me check.");
  ASSERT_EQ(c["message"]["tool_calls"].size(), 1u);
  EXPECT_EQ(c["message"]["tool_calls"][0],
            json({{"id", "functions.get_weather:0"},
                  {"type", "function"},
                  {"function", {{"name", "get_weather"}, {"arguments", "{\"city\": \"Paris\"}"}}}}));
}

TEST(Chat, ToolCallsStreaming) {
  ServerFixture f;
  f.engine.script = [](const GenerationRequest&) { return tool_call_pieces(); };
  auto r = f.post("/v1/chat/completions", {{"messages", kMessages}, {"tools", kTools}, {"stream", true}});
  ASSERT_EQ(r.status, 200);
  std::string content, id, name, args;
  std::string finish;
  for (const auto& e : sse_events(r.body)) {
    if (e == "[DONE]") continue;
    const json& d = e["choices"][0]["delta"];
    if (d.contains("content")) {
      content += d["content"].get<std::string>();
      EXPECT_EQ(d["content"].get<std::string>().find("<|"), std::string::npos) << "marker text leaked";
    }
    if (d.contains("tool_calls")) {
      for (const auto& tc : d["tool_calls"]) {
        EXPECT_EQ(tc["index"], 0);
        if (tc.contains("id")) {
          EXPECT_TRUE(id.empty());
          id = tc["id"];
          EXPECT_EQ(tc["type"], "function");
        }
        if (tc["function"].contains("name")) name += tc["function"]["name"].get<std::string>();
        args += tc["function"]["arguments"].get<std::string>();
      }
    }
    if (!e["choices"][0]["finish_reason"].is_null()) finish = e["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(content, "Let me check.");
  EXPECT_EQ(id, "functions.get_weather:0");
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(args, "{\"city\": \"Paris\"}");
  EXPECT_EQ(finish, "tool_calls");
}

TEST(Chat, ToolChoiceNoneDisablesParsing) {
  ServerFixture f;
  f.engine.script = [](const GenerationRequest&) { return tool_call_pieces(); };
  auto r = f.post("/v1/chat/completions", {{"messages", kMessages}, {"tools", kTools}, {"tool_choice", "none"}});
  ASSERT_EQ(r.status, 200) << r.body;
  json c = json::parse(r.body)["choices"][0];
  EXPECT_EQ(c["finish_reason"], "stop");
  EXPECT_FALSE(c["message"].contains("tool_calls"));
  EXPECT_TRUE(f.engine.submitted_copy()[0].skip_special_tokens);
  // A named function is treated like "auto".
  r = f.post("/v1/chat/completions",
             {{"messages", kMessages},
              {"tools", kTools},
              {"tool_choice", {{"type", "function"}, {"function", {{"name", "get_weather"}}}}}});
  EXPECT_EQ(json::parse(r.body)["choices"][0]["finish_reason"], "tool_calls");
}

TEST(Chat, ToolHistoryRoundTripsThroughTheTemplate) {
  ServerFixture f;
  json msgs = kMessages;
  msgs.push_back({{"role", "assistant"},
                  {"content", nullptr},
                  {"tool_calls",
                   {{{"id", "functions.get_weather:0"},
                     {"type", "function"},
                     {"function", {{"name", "get_weather"}, {"arguments", "{\"city\":\"Paris\"}"}}}}}}});
  msgs.push_back({{"role", "tool"}, {"tool_call_id", "functions.get_weather:0"}, {"content", "sunny"}});
  auto r = f.post("/v1/chat/completions", {{"messages", msgs}, {"tools", kTools}, {"max_tokens", 1}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::string prompt = f.tok->decode(f.engine.submitted_copy()[0].prompt_tokens);
  EXPECT_NE(prompt.find("<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{\"city\":\"Paris\"}"
                        "<|tool_call_end|>"),
            std::string::npos);
  EXPECT_NE(prompt.find("## Return of functions.get_weather:0\nsunny<|im_end|>"), std::string::npos);
}

}  // namespace
}  // namespace ds::test
