// Tool-call parsing: the model template's own rendering of tool calls parses back to the same
// calls, whole, streamed character by character, and streamed token by token.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tokenizer/detokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tool_parser.h"

namespace {

using ojson = nlohmann::ordered_json;
const std::string kTokDir = std::string(DS_FIXTURES_DIR) + "/tiny/tokenizer";
const std::string kHeader = "<|im_assistant|>assistant<|im_middle|>";

// Accumulates deltas the way an OpenAI client does.
struct Collected {
  std::string content;
  std::vector<ds::ToolCall> calls;
  void add(const ds::ToolParseDelta& d) {
    content += d.content;
    for (const auto& c : d.calls) {
      if (size_t(c.index) == calls.size()) {
        // A call's first delta carries its id and name.
        EXPECT_FALSE(c.id.empty());
        EXPECT_FALSE(c.name.empty());
        calls.push_back({c.id, c.name, ""});
      }
      ASSERT_LT(size_t(c.index), calls.size());
      if (size_t(c.index) + 1 != calls.size()) ADD_FAILURE() << "delta for an earlier call";
      if (!c.id.empty()) {
        EXPECT_EQ(c.id, calls[size_t(c.index)].id);
      }
      calls[size_t(c.index)].arguments += c.arguments;
    }
  }
};

// The assistant turn's body as the template renders it (without header and <|im_end|>).
std::string render_assistant(const ds::Tokenizer& tok, const ojson& msg) {
  std::string full = tok.apply_chat_template(ojson::array({msg}), ojson(), false);
  EXPECT_EQ(full.rfind(kHeader, 0), 0u) << full;
  const std::string end = "<|im_end|>";
  EXPECT_EQ(full.substr(full.size() - end.size()), end);
  return full.substr(kHeader.size(), full.size() - kHeader.size() - end.size());
}

void expect_same(const Collected& got, const ojson& msg, const std::string& how) {
  SCOPED_TRACE(how);
  std::string content = msg["content"].is_string() ? msg["content"].get<std::string>() : "";
  EXPECT_EQ(got.content, content);
  const ojson calls = msg.value("tool_calls", ojson::array());
  ASSERT_EQ(got.calls.size(), calls.size());
  for (size_t i = 0; i < calls.size(); ++i) {
    EXPECT_EQ(got.calls[i].id, calls[i]["id"].get<std::string>());
    EXPECT_EQ(got.calls[i].name, calls[i]["function"]["name"].get<std::string>());
    EXPECT_EQ(got.calls[i].arguments, calls[i]["function"]["arguments"].get<std::string>());
  }
}

std::vector<ojson> assistant_messages() {
  return {
      ojson::parse(R"({"role": "assistant", "content": "", "tool_calls": [{"id": "functions.get_weather:0",
        "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]})"),
      ojson::parse(R"({"role": "assistant", "content": "Let me check < that > for you <|im_not_a_marker|>.",
        "tool_calls": [
          {"id": "functions.search:0", "type": "function", "function": {"name": "search",
            "arguments": "{\"q\": \"a < b && c <| d\", \"n\": [1, 2, {\"deep\": \"天气 😀\"}]}"}},
          {"id": "functions.get_time:1", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
          {"id": "functions.ns.tool_v2:2", "type": "function", "function": {"name": "ns.tool_v2",
            "arguments": "{\"x\":\"<|tool_call_end\"}"}}]})"),
      ojson::parse(R"({"role": "assistant", "content": "No tools here, just text ending in <"})"),
  };
}

TEST(ToolParser, RoundTripsTheTemplateRenderingWholeAndStreamed) {
  auto tok = ds::Tokenizer::from_dir(kTokDir);
  for (const ojson& msg : assistant_messages()) {
    const std::string text = render_assistant(*tok, msg);
    SCOPED_TRACE(text);
    EXPECT_EQ(ds::ToolCallParser::has_tool_calls(text), msg.contains("tool_calls"));

    ds::ToolParseResult whole = ds::ToolCallParser::parse(text);
    Collected w;
    w.content = whole.content;
    for (const auto& c : whole.calls) w.calls.push_back(c);
    expect_same(w, msg, "whole");

    ds::ToolCallParser chars;
    Collected c;
    for (char ch : text) {
      ds::ToolParseDelta d = chars.push(std::string_view(&ch, 1));
      EXPECT_EQ(d.content.find("<|tool"), std::string::npos);
      c.add(d);
    }
    c.add(chars.finish());
    expect_same(c, msg, "char by char");

    // As the engine sees it: token ids → streaming detokenizer (specials kept) → parser.
    ds::ToolCallParser tokens;
    ds::IncrementalDetokenizer detok(*tok, /*skip_special=*/false);
    Collected t;
    for (int32_t id : tok->encode(text)) t.add(tokens.push(detok.push(id)));
    t.add(tokens.push(detok.flush()));
    t.add(tokens.finish());
    expect_same(t, msg, "token by token");
  }
}

TEST(ToolParser, ContentAroundTheSectionAndMalformedOutput) {
  // Content after the section continues as content.
  auto r = ds::ToolCallParser::parse(
      "Hi<|tool_calls_section_begin|> <|tool_call_begin|> functions.f:0 <|tool_call_argument_begin|>{}"
      "<|tool_call_end|>\n<|tool_calls_section_end|> bye");
  EXPECT_EQ(r.content, "Hi bye");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].id, "functions.f:0");
  EXPECT_EQ(r.calls[0].name, "f");
  EXPECT_EQ(r.calls[0].arguments, "{}");
  // Output cut off inside the arguments: what arrived is kept, markers never leak.
  r = ds::ToolCallParser::parse("<|tool_calls_section_begin|><|tool_call_begin|>functions.g:0<|tool_call_argument_begin|>{\"a\": 1<|tool_ca");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, "{\"a\": 1<|tool_ca");
  EXPECT_EQ(r.content, "");
  // A call without a section, and the singular section spelling.
  r = ds::ToolCallParser::parse("<|tool_call_begin|>functions.h:3<|tool_call_argument_begin|>[]<|tool_call_end|>");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].name, "h");
  r = ds::ToolCallParser::parse("<|tool_call_section_begin|><|tool_call_begin|>functions.k:0<|tool_call_argument_begin|>1"
                                "<|tool_call_end|><|tool_call_section_end|>");
  ASSERT_EQ(r.calls.size(), 1u);
  EXPECT_EQ(r.calls[0].arguments, "1");
  // A partial marker at the end of plain content is content once the output ends.
  ds::ToolCallParser p;
  EXPECT_EQ(p.push("text <|tool_calls").content, "text ");
  EXPECT_EQ(p.finish().content, "<|tool_calls");
  // A call whose header names no function is dropped with its arguments; the next call is index 0
  // (fuzz_tool_parser: such a call reached clients with an empty id and name).
  for (const char* header : {"", " ", "functions.:0"}) {
    const std::string text = std::string("a<|tool_calls_section_begin|><|tool_call_begin|>") + header +
                             "<|tool_call_argument_begin|>{\"x\": 1}<|tool_call_end|><|tool_call_begin|>" + header +
                             "<|tool_call_end|><|tool_call_begin|>functions.f:1<|tool_call_argument_begin|>2"
                             "<|tool_call_end|><|tool_calls_section_end|>b";
    SCOPED_TRACE(text);
    r = ds::ToolCallParser::parse(text);
    EXPECT_EQ(r.content, "ab");
    ASSERT_EQ(r.calls.size(), 1u);
    EXPECT_EQ(r.calls[0].name, "f");
    EXPECT_EQ(r.calls[0].arguments, "2");
    ds::ToolCallParser s;
    Collected c;
    for (char ch : text) c.add(s.push(std::string_view(&ch, 1)));
    c.add(s.finish());
    ASSERT_EQ(c.calls.size(), 1u);
    EXPECT_EQ(c.calls[0].id, "functions.f:1");
  }
  EXPECT_EQ(ds::ToolCallParser::name_from_id("functions.get_weather:12"), "get_weather");
  EXPECT_EQ(ds::ToolCallParser::name_from_id("plain_name"), "plain_name");
}

}  // namespace
