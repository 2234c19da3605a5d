// Hostile or unusual clients at the connection level (issue 11): the bearer scheme's case, a
// client that half-closes after its request, streams cut by a forced shutdown, the connection
// limit and accept back-off.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <thread>

#include "server/http_server.h"
#include "server_fixture.h"

namespace ds::test {
namespace {

const json kMsgs = json::array({{{"role", "user"}, {"content", "hi"}}});

TEST(NetLimits, BearerSchemeIsCaseInsensitive) {
  ServerFixture f("sekret");
  auto c = f.client();
  for (const char* ok : {"Bearer sekret", "bearer sekret", "BEARER sekret", "bEaReR   sekret"})
    EXPECT_EQ(c.get("/v1/models", {{"Authorization", ok}}).status, 200) << ok;
  for (const char* bad : {"Bearer sekret2", "Basic sekret", "Bearersekret", "bearer", "Bearer ", "sekret",
                          "Bearer SEKRET", "Bearer: sekret"})
    EXPECT_EQ(c.get("/v1/models", {{"Authorization", bad}}).status, 401) << bad;
}

// Sends `request` raw, half-closes (SHUT_WR), and reads the answer until the server closes.
std::string half_close_exchange(int port, const std::string& request) {
  HttpClient c(port);
  net::write(c.stream().socket(), net::buffer(request));
  ::shutdown(c.stream().socket().native_handle(), SHUT_WR);
  std::string out;
  char b[4096];
  beast::error_code ec;
  for (;;) {
    size_t n = c.stream().socket().read_some(net::buffer(b), ec);
    if (ec) break;
    out.append(b, n);
  }
  // The server may probe the half-closed client with an interim response, which clients skip.
  const std::string interim = "HTTP/1.1 100 Continue\r\n\r\n";
  if (out.rfind(interim, 0) == 0) out = out.substr(interim.size());
  return out;
}

std::string post_bytes(const std::string& path, const json& body) {
  std::string b = body.dump();
  return "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(b.size()) + "\r\n\r\n" + b;
}

TEST(NetLimits, HalfClosedClientStillGetsItsAnswer) {
  ServerFixture f;
  f.engine.delay = std::chrono::milliseconds(5);
  std::string out = half_close_exchange(f.server->port(), post_bytes("/v1/completions", {{"prompt", "x"}, {"max_tokens", 8}}));
  ASSERT_EQ(out.rfind("HTTP/1.1 200", 0), 0u) << out;
  EXPECT_NE(out.find("Connection: close"), std::string::npos) << out;
  json res = json::parse(out.substr(out.find("\r\n\r\n") + 4));
  EXPECT_EQ(res["usage"]["completion_tokens"], 8);
  EXPECT_EQ(res["choices"][0]["finish_reason"], "length");

  std::string s = half_close_exchange(
      f.server->port(), post_bytes("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 6}, {"stream", true}}));
  ASSERT_EQ(s.rfind("HTTP/1.1 200", 0), 0u) << s;
  EXPECT_NE(s.find("\"finish_reason\":\"length\""), std::string::npos) << s;
  EXPECT_NE(s.find("data: [DONE]"), std::string::npos) << s;
  EXPECT_TRUE(f.engine.aborted_copy().empty());
}

// A client that sends its request and closes at once (no half-close) is noticed before any output:
// the interim probe draws its reset, and the request is aborted instead of running to its end.
TEST(NetLimits, ClientClosedBeforeAnyOutputAbortsTheRequest) {
  ServerFixture f;
  f.engine.delay = std::chrono::milliseconds(100);  // 200 tokens: 20 s unless aborted
  {
    HttpClient c(f.server->port());
    net::write(c.stream().socket(),
               net::buffer(post_bytes("/v1/completions", {{"prompt", "x"}, {"max_tokens", 200}})));
    for (int i = 0; i < 1000 && f.engine.submitted_copy().empty(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_EQ(f.engine.submitted_copy().size(), 1u);
  }  // closes the socket
  for (int i = 0; i < 1000 && f.engine.aborted_copy().empty(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(f.engine.aborted_copy().size(), 1u);
}

// Streams `body` to `path` in a thread; returns its SSE events once the stream ends.
std::vector<json> stream_until_cut(ServerFixture& f, const std::string& path, const json& body) {
  Reply r;
  std::thread t([&] { r = f.client().post(path, body.dump()); });
  while (f.engine.submitted_copy().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  std::this_thread::sleep_for(std::chrono::milliseconds(120));  // a few tokens went out
  f.server->cancel_all();                                        // what a second SIGTERM does
  t.join();
  EXPECT_EQ(r.status, 200);
  return sse_events(r.body);
}

void expect_cut_stream(const std::vector<json>& ev) {
  ASSERT_GE(ev.size(), 3u);
  EXPECT_EQ(ev.back(), "[DONE]");
  const json& err = ev[ev.size() - 2];
  ASSERT_TRUE(err.contains("error")) << err.dump();
  EXPECT_EQ(err["error"]["type"], "service_unavailable") << err.dump();
  EXPECT_NE(err["error"]["message"].get<std::string>().find("cancelled"), std::string::npos);
  const json& last = ev[ev.size() - 3];
  ASSERT_TRUE(last.contains("choices")) << last.dump();
  EXPECT_EQ(last["choices"][0]["finish_reason"], "abort") << last.dump();
}

TEST(NetLimits, ForcedCancelEndsStreamsWithAbortAndAnError) {
  ServerFixture f;
  f.engine.delay = std::chrono::milliseconds(30);
  expect_cut_stream(stream_until_cut(f, "/v1/completions", {{"prompt", "x"}, {"max_tokens", 200}, {"stream", true}}));
  EXPECT_EQ(f.engine.aborted_copy().size(), 1u);
  for (int i = 0; i < 200 && f.server->requests_in_progress() > 0; ++i)  // metrics are recorded as the job ends
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(f.server->metrics().finished("abort"), 1);
}

TEST(NetLimits, ForcedCancelEndsChatStreamsWithAbortAndAnError) {
  ServerFixture f;
  f.engine.delay = std::chrono::milliseconds(30);
  auto ev = stream_until_cut(f, "/v1/chat/completions",
                             {{"messages", kMsgs}, {"max_tokens", 200}, {"stream", true}, {"n", 2}});
  expect_cut_stream(ev);
  int aborts = 0;
  for (const auto& e : ev)
    if (e.is_object() && e.contains("choices") && !e["choices"].empty() && e["choices"][0]["finish_reason"] == "abort")
      ++aborts;
  EXPECT_EQ(aborts, 2);  // each choice says it was cut
}

TEST(NetLimits, ForcedCancelOfANonStreamedRequestIs503) {
  ServerFixture f;
  f.engine.delay = std::chrono::milliseconds(30);
  Reply r;
  std::thread t([&] { r = f.post("/v1/chat/completions", {{"messages", kMsgs}, {"max_tokens", 200}}); });
  while (f.engine.submitted_copy().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  f.server->cancel_all();
  t.join();
  EXPECT_EQ(r.status, 503);
  EXPECT_NE(json::parse(r.body)["error"]["message"].get<std::string>().find("cancelled"), std::string::npos);
}

// An HttpServer answering "ok" to everything.
std::unique_ptr<server::HttpServer> ok_server(server::HttpServerOptions o) {
  o.host = "127.0.0.1";
  o.port = 0;
  auto s = std::make_unique<server::HttpServer>(o, [](server::HttpRequest, std::shared_ptr<server::ResponseWriter> w) {
    w->send({200, "text/plain", "ok", {}});
  });
  s->start();
  return s;
}

void wait_for(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (!cond() && std::chrono::steady_clock::now() < end) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

TEST(NetLimits, ConnectionLimitPausesAcceptingUntilOneCloses) {
  server::HttpServerOptions o;
  o.max_connections = 3;
  auto srv = ok_server(o);
  EXPECT_EQ(srv->max_connections(), 3);
  std::vector<std::unique_ptr<HttpClient>> idle;
  for (int i = 0; i < 3; ++i) idle.push_back(std::make_unique<HttpClient>(srv->port()));
  wait_for([&] { return srv->open_connections() == 3; }, std::chrono::seconds(2));
  ASSERT_EQ(srv->open_connections(), 3);

  Reply late;
  std::atomic<bool> answered{false};
  std::thread t([&] {
    HttpClient c(srv->port());  // connects (the kernel queues it) but is not accepted yet
    late = c.get("/x");
    answered = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_FALSE(answered.load());
  EXPECT_EQ(srv->open_connections(), 3);
  idle.pop_back();  // a slot frees
  t.join();
  EXPECT_EQ(late.status, 200);
  EXPECT_EQ(late.body, "ok");
}

TEST(NetLimits, DefaultConnectionLimitLeavesDescriptorsForTheServer) {
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  rlimit low = rl;
  low.rlim_cur = 256;
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &low), 0);
  int at256 = server::default_max_connections();
  ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  EXPECT_EQ(at256, 192);
  EXPECT_LE(server::default_max_connections(), 4096);
  EXPECT_GE(server::default_max_connections(), 1);
}

TEST(NetLimits, SlowHeadersHitTheHeaderTimeout) {
  server::HttpServerOptions o;
  o.idle_timeout = std::chrono::seconds(30);
  o.header_timeout = std::chrono::seconds(1);
  auto srv = ok_server(o);
  HttpClient c(srv->port());
  auto t0 = std::chrono::steady_clock::now();
  net::write(c.stream().socket(), net::buffer(std::string("GET /x HTTP/1.1\r\nHost: x\r\n")));  // never ends
  char b[64];
  beast::error_code ec;
  c.stream().socket().read_some(net::buffer(b), ec);
  EXPECT_TRUE(ec);  // closed
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  wait_for([&] { return srv->open_connections() == 0; }, std::chrono::seconds(2));
  EXPECT_EQ(srv->open_connections(), 0);
}

}  // namespace
}  // namespace ds::test
