// The terminal clients' core (bench/chat_client.h: `deltaserve chat` / `complete`) against the mock server: the
// model from /v1/models, the request bodies, the reply streamed piece by piece and returned whole, the
// conversation kept across turns (and left as it was when a turn fails), errors with the server's message.
#include <gtest/gtest.h>

#include "bench/chat_client.h"
#include "core/error.h"
#include "mock_openai_server.h"

namespace ds::bench {
namespace {

using nlohmann::json;
using testing::MockBehavior;
using testing::MockOpenAIServer;

ClientOptions options(const MockOpenAIServer& server) {
  ClientOptions o;
  o.url = server.base_url() + "/v1";
  o.max_tokens = 3;
  o.temperature = 0;
  o.seed = 7;
  return o;
}

TEST(ChatClient, RequestBodiesCarryTheSamplingFieldsGiven) {
  ClientOptions o;
  json b = chat_request_body(o, "m", json::array({{{"role", "user"}, {"content", "x"}}}));
  EXPECT_EQ(b, json({{"model", "m"}, {"messages", {{{"role", "user"}, {"content", "x"}}}}, {"stream", true}}));
  o.max_tokens = 5;
  o.temperature = 0.5;
  o.seed = 9;
  b = completion_request_body(o, "m", "p");
  EXPECT_EQ(b, json({{"model", "m"}, {"prompt", "p"}, {"stream", true}, {"max_tokens", 5}, {"temperature", 0.5},
                     {"seed", 9}}));
}

TEST(ChatClient, AConversationStreamsEachReplyAndKeepsTheHistory) {
  MockBehavior behavior;
  behavior.api_key = "k";
  behavior.split_events = true;  // (events cut in two pieces: the SSE parser joins them)
  MockOpenAIServer server(behavior);
  ClientOptions o = options(server);
  o.api_key = "k";
  o.system_prompt = "Be brief.";
  ApiClient c(o);
  EXPECT_EQ(c.model(), "mock-model");
  std::vector<std::string> pieces;
  const std::string r1 = c.chat("hello", [&](std::string_view t) { pieces.emplace_back(t); });
  EXPECT_EQ(r1, "tok0 tok1 tok2 ");
  EXPECT_EQ(pieces, (std::vector<std::string>{"tok0 ", "tok1 ", "tok2 "}));
  EXPECT_EQ(c.chat("more", nullptr), "tok0 tok1 tok2 ");
  const auto got = server.received();
  ASSERT_EQ(got.size(), 3u);  // GET /v1/models, two chats
  EXPECT_EQ(got[0].target, "/v1/models");
  EXPECT_EQ(got[2].authorization, "Bearer k");
  const json want = {{{"role", "system"}, {"content", "Be brief."}},
                     {{"role", "user"}, {"content", "hello"}},
                     {{"role", "assistant"}, {"content", "tok0 tok1 tok2 "}},
                     {{"role", "user"}, {"content", "more"}}};
  EXPECT_EQ(got[2].body["messages"], want);
  EXPECT_EQ(got[2].body["model"], "mock-model");
  EXPECT_EQ(got[2].body["max_tokens"], 3);
  EXPECT_EQ(got[2].body["seed"], 7);
  EXPECT_EQ(c.messages().size(), 5u);
}

TEST(ChatClient, AFailedTurnNamesTheServersMessageAndKeepsTheConversation) {
  MockBehavior behavior;
  behavior.status = 400;
  behavior.error_message = "max_tokens is too large";
  MockOpenAIServer server(behavior);
  ClientOptions o = options(server);
  o.model = "given";  // (no /v1/models call)
  ApiClient c(o);
  try {
    c.chat("hello", nullptr);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("HTTP 400"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("max_tokens is too large"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(c.messages().empty());
  EXPECT_EQ(server.received().size(), 1u);
  EXPECT_THROW(c.complete("p", nullptr), Error);
}

TEST(ChatClient, AnErrorInsideTheStreamFailsTheReply) {
  MockBehavior behavior;
  behavior.error_after_tokens = 1;
  MockOpenAIServer server(behavior);
  ApiClient c(options(server));
  std::string seen;
  EXPECT_THROW(c.complete("p", [&](std::string_view t) { seen += t; }), Error);
  EXPECT_EQ(seen, "tok0 ");
  EXPECT_EQ(server.received().back().body["prompt"], "p");
}

TEST(ChatClient, AnUnreachableServerIsNamed) {
  ClientOptions o;
  o.url = "http://127.0.0.1:1";
  try {
    ApiClient c(o);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot reach"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace ds::bench
