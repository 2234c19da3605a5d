// The HTTP layer alone: keep-alive, limits, malformed requests, chunked streaming, disconnects.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "http_client.h"
#include "server/http_server.h"

namespace ds::server {
namespace {

using test::HttpClient;
using test::http::verb;

struct Fixture {
  std::atomic<int> rejected{0};
  std::atomic<bool> saw_gone{false};
  std::vector<std::thread> threads;
  std::unique_ptr<HttpServer> server;

  explicit Fixture(size_t max_body = 1024) {
    HttpServerOptions o;
    o.host = "127.0.0.1";
    o.port = 0;
    o.max_body_bytes = max_body;
    o.on_rejected = [this](int) { rejected++; };
    server = std::make_unique<HttpServer>(o, [this](HttpRequest req, std::shared_ptr<ResponseWriter> w) {
      if (req.path == "/echo") {
        HttpResponse r;
        r.content_type = "text/plain";
        r.body = req.method + " " + req.target + " " + req.body + " " + req.header("x-test");
        w->send(std::move(r));
      } else if (req.path == "/stream") {
        threads.emplace_back([w] {
          w->begin_stream(200, "text/event-stream");
          for (int i = 0; i < 5; ++i) w->write("data: " + std::to_string(i) + "\n\n");
          w->end_stream();
        });
      } else if (req.path == "/forever") {
        // Streams until the client goes away.
        threads.emplace_back([this, w] {
          w->begin_stream(200, "text/event-stream");
          for (int i = 0; i < 2000 && !w->client_gone(); ++i) {
            w->write("data: tick\n\n");
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          saw_gone = w->client_gone();
          w->end_stream();
        });
      } else if (req.path == "/drop") {
        // The writer is dropped without a reply: the layer answers 500.
      } else if (req.path == "/throw") {
        throw std::runtime_error("boom");
      } else {
        HttpResponse r;
        r.status = 404;
        r.body = "{}";
        w->send(std::move(r));
      }
    });
    server->start();
  }
  ~Fixture() {
    for (auto& t : threads) t.join();
    server->stop();
  }
};

TEST(HttpServer, KeepAliveServesSeveralRequestsOnOneConnection) {
  Fixture f;
  HttpClient c(f.server->port());
  for (int i = 0; i < 3; ++i) {
    auto r = c.post("/echo?x=" + std::to_string(i), "body" + std::to_string(i), {{"X-Test", "hdr"}});
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "POST /echo?x=" + std::to_string(i) + " body" + std::to_string(i) + " hdr");
    EXPECT_TRUE(r.keep_alive);
  }
  EXPECT_EQ(c.get("/nothing").status, 404);
  // The count drops when the last write completes, just after the client has the bytes.
  for (int i = 0; i < 200 && f.server->active_responses() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(f.server->active_responses(), 0);
}

TEST(HttpServer, StreamsChunkedBody) {
  Fixture f;
  HttpClient c(f.server->port());
  auto r = c.get("/stream");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(r.chunked);
  EXPECT_EQ(r.content_type, "text/event-stream");
  EXPECT_EQ(r.body, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
  // The connection is still usable afterwards.
  EXPECT_EQ(c.post("/echo", "x").status, 200);
}

TEST(HttpServer, OversizedBodyGets413) {
  Fixture f(1024);
  HttpClient c(f.server->port());
  auto r = c.post("/echo", std::string(5000, 'a'));
  EXPECT_EQ(r.status, 413);
  EXPECT_NE(r.body.find("\"error\""), std::string::npos);
  EXPECT_EQ(f.rejected.load(), 1);
  // The server still serves new connections.
  HttpClient c2(f.server->port());
  EXPECT_EQ(c2.post("/echo", "small").status, 200);
}

TEST(HttpServer, MalformedRequestGets400) {
  Fixture f;
  HttpClient c(f.server->port());
  std::string reply = c.raw("GARBAGE\x01 / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(reply.rfind("HTTP/1.1 400", 0), 0u) << reply;
  HttpClient c2(f.server->port());
  EXPECT_EQ(c2.post("/echo", "ok").status, 200);
}

TEST(HttpServer, ExpectContinueIsAnswered) {
  Fixture f;
  HttpClient c(f.server->port());
  std::string reply = c.raw(
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\nhello");
  EXPECT_EQ(reply.rfind("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", 0), 0u) << reply;
  EXPECT_NE(reply.find("POST /echo hello"), std::string::npos);
}

TEST(HttpServer, HandlerErrorsBecome500) {
  Fixture f;
  HttpClient c(f.server->port());
  EXPECT_EQ(c.get("/drop").status, 500);
  EXPECT_EQ(c.get("/throw").status, 500);
  EXPECT_EQ(c.get("/echo").status, 200);
}

TEST(HttpServer, NoticesClientThatGoesAway) {
  Fixture f;
  {
    HttpClient c(f.server->port());
    test::http::request<test::http::empty_body> req{verb::get, "/forever", 11};
    req.set(test::http::field::host, "x");
    test::http::write(c.stream(), req);
    char b[256];
    c.stream().socket().read_some(test::net::buffer(b));  // the stream has started
  }                                                       // closes the socket
  for (int i = 0; i < 400 && f.server->active_responses() > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_EQ(f.server->active_responses(), 0);
  for (auto& t : f.threads) t.join();
  f.threads.clear();
  EXPECT_TRUE(f.saw_gone.load());
}

TEST(HttpServer, StopAcceptingClosesIdleConnections) {
  Fixture f;
  HttpClient c(f.server->port());
  EXPECT_EQ(c.get("/echo").status, 200);
  f.server->stop_accepting();
  char b[16];
  test::beast::error_code ec;
  c.stream().socket().read_some(test::net::buffer(b), ec);  // the idle connection is closed
  EXPECT_TRUE(ec);
}

}  // namespace
}  // namespace ds::server
