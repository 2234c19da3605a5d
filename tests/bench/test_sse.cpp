// SSE framing and the reading of OpenAI stream chunks, non-streamed bodies and error bodies.
#include <gtest/gtest.h>

#include "bench/openai_api.h"
#include "bench/sse.h"
#include "core/error.h"

using namespace ds::bench;

namespace {

std::vector<SseEvent> parse_in_pieces(const std::string& bytes, size_t piece) {
  std::vector<SseEvent> events;
  SseParser p;
  auto cb = [&](const SseEvent& e) { events.push_back(e); };
  for (size_t i = 0; i < bytes.size(); i += piece) p.feed(std::string_view(bytes).substr(i, piece), cb);
  p.finish(cb);
  return events;
}

}  // namespace

TEST(Sse, EventsSurviveAnySplitOfTheBytes) {
  const std::string stream =
      ": keep-alive comment\n\n"
      "data: {\"a\":1}\n\n"
      "data:{\"b\":2}\r\n\r\n"
      "event: error\ndata: line1\ndata: line2\n\n"
      "id: 7\nretry: 10\ndata: [DONE]\n\n";
  for (size_t piece : {1, 2, 3, 7, 1000}) {
    auto ev = parse_in_pieces(stream, piece);
    ASSERT_EQ(ev.size(), 4u) << "piece " << piece;
    EXPECT_EQ(ev[0].data, "{\"a\":1}");
    EXPECT_EQ(ev[0].event, "");
    EXPECT_EQ(ev[1].data, "{\"b\":2}");  // no space after the colon, CRLF line ends
    EXPECT_EQ(ev[2].event, "error");
    EXPECT_EQ(ev[2].data, "line1\nline2");
    EXPECT_EQ(ev[3].data, "[DONE]");
    EXPECT_EQ(ev[3].event, "");  // the event name does not leak into the next event
  }
}

TEST(Sse, CarriageReturnOnlyLineEndsAndUnterminatedLastEvent) {
  auto ev = parse_in_pieces("data: x\r\rdata: y\rdata: z", 1);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].data, "x");
  EXPECT_EQ(ev[1].data, "y\nz");  // finish() dispatches the event the server did not terminate
}

TEST(Sse, NoEventWithoutData) {
  auto ev = parse_in_pieces("event: ping\n\n: only a comment\n\n\n\n", 5);
  EXPECT_TRUE(ev.empty());
}

TEST(OpenAiChunks, CompletionsChunk) {
  auto c = parse_stream_chunk(
      R"({"id":"x","object":"text_completion","choices":[{"index":0,"text":" hi","finish_reason":null}]})",
      EndpointType::Completions);
  EXPECT_TRUE(c.error.empty());
  EXPECT_TRUE(c.has_content);
  EXPECT_EQ(c.text, " hi");
  EXPECT_FALSE(c.usage.has_value());
  auto last =
      parse_stream_chunk(R"({"choices":[{"index":0,"text":"","finish_reason":"length"}]})", EndpointType::Completions);
  EXPECT_FALSE(last.has_content);
  EXPECT_EQ(last.finish_reason, "length");
}

TEST(OpenAiChunks, ChatChunks) {
  auto role =
      parse_stream_chunk(R"({"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]})", EndpointType::Chat);
  EXPECT_FALSE(role.has_content);  // the role chunk is not a token: it must not set TTFT
  auto tok = parse_stream_chunk(R"({"choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]})",
                                EndpointType::Chat);
  EXPECT_TRUE(tok.has_content);
  EXPECT_EQ(tok.text, "Hello");
  auto reasoning = parse_stream_chunk(R"({"choices":[{"delta":{"reasoning_content":"hmm"}}]})", EndpointType::Chat);
  EXPECT_TRUE(reasoning.has_content);
  EXPECT_EQ(reasoning.text, "");
  auto tool = parse_stream_chunk(
      R"({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"a\""}}]}}]})", EndpointType::Chat);
  EXPECT_TRUE(tool.has_content);
  // A completions-shaped chunk read as chat carries nothing.
  EXPECT_FALSE(parse_stream_chunk(R"({"choices":[{"text":"x"}]})", EndpointType::Chat).has_content);
}

TEST(OpenAiChunks, UsageChunkDoneAndErrors) {
  auto u = parse_stream_chunk(R"({"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}})",
                              EndpointType::Completions);
  ASSERT_TRUE(u.usage.has_value());
  EXPECT_EQ(u.usage->prompt_tokens, 12);
  EXPECT_EQ(u.usage->completion_tokens, 34);
  EXPECT_FALSE(u.has_content);
  auto nulls = parse_stream_chunk(R"({"choices":[{"text":"a"}],"usage":null})", EndpointType::Completions);
  EXPECT_FALSE(nulls.usage.has_value());
  EXPECT_TRUE(parse_stream_chunk("[DONE]", EndpointType::Chat).done);
  EXPECT_EQ(parse_stream_chunk(R"({"error":{"message":"out of memory","code":500}})", EndpointType::Chat).error,
            "out of memory");
  EXPECT_EQ(parse_stream_chunk(R"({"error":"plain"})", EndpointType::Chat).error, "plain");
  EXPECT_NE(parse_stream_chunk("{not json", EndpointType::Chat).error.find("malformed"), std::string::npos);
}

TEST(OpenAiResponses, NonStreamedBodies) {
  auto c = parse_completion(
      R"({"choices":[{"text":" 42","finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}})",
      EndpointType::Completions);
  EXPECT_EQ(c.text, " 42");
  EXPECT_EQ(c.finish_reason, "stop");
  EXPECT_EQ(c.usage.completion_tokens, 2);
  auto chat = parse_completion(R"({"choices":[{"message":{"role":"assistant","content":"7"}}]})", EndpointType::Chat);
  EXPECT_EQ(chat.text, "7");
  EXPECT_EQ(chat.usage.prompt_tokens, -1);
  EXPECT_EQ(parse_completion(R"({"choices":[]})", EndpointType::Chat).error, "response has no choices");
}

TEST(OpenAiResponses, ErrorMessages) {
  EXPECT_EQ(http_error_message(400, R"({"error":{"message":"max_tokens must be positive","type":"x"}})"),
            "HTTP 400: max_tokens must be positive");
  EXPECT_EQ(http_error_message(422, R"({"detail":"bad"})"), "HTTP 422: bad");
  EXPECT_EQ(http_error_message(502, "Bad Gateway\r\n"), "HTTP 502: Bad Gateway");
  EXPECT_EQ(http_error_message(500, ""), "HTTP 500");
}

TEST(OpenAiResponses, ModelsAndEndpointTypes) {
  EXPECT_EQ(first_model_id(R"({"object":"list","data":[{"id":"kimi"},{"id":"other"}]})"), "kimi");
  EXPECT_THROW(first_model_id(R"({"data":[]})"), ds::Error);
  EXPECT_EQ(parse_endpoint_type("openai-chat"), EndpointType::Chat);
  EXPECT_EQ(parse_endpoint_type("vllm"), EndpointType::Completions);
  EXPECT_THROW(parse_endpoint_type("grpc"), ds::Error);
  EXPECT_STREQ(endpoint_path(EndpointType::Chat), "/v1/chat/completions");
}
