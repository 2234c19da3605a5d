// A small asynchronous HTTP/1.1 server on Boost.Beast: keep-alive, body-size limit, chunked
// streaming responses (for SSE) and client-disconnect detection. It knows nothing about OpenAI:
// every well-formed request goes to one handler together with a thread-safe ResponseWriter that the
// handler may finish later from any thread. While a response is in progress the connection keeps a
// read outstanding, so a client that goes away is noticed at once (ResponseWriter::client_gone()).
#pragma once
#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ds::server {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // as sent, with the query string
  std::string path;    // target without the query string
  std::string body;
  Headers headers;
  std::string remote;  // peer address "ip:port"
  std::chrono::steady_clock::time_point received;
  // Case-insensitive header lookup; "" when absent.
  std::string header(std::string_view name) const;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  Headers headers;  // extra headers
};

// The reply channel of one request. Thread-safe; call exactly one of send() or
// begin_stream() + write()* + end_stream(). A writer dropped without a reply answers 500.
class ResponseWriter {
 public:
  virtual ~ResponseWriter() = default;
  virtual void send(HttpResponse res) = 0;
  virtual void begin_stream(int status, const std::string& content_type, Headers headers = {}) = 0;
  virtual void write(std::string data) = 0;  // one chunk of a streamed body
  virtual void end_stream() = 0;
  // The peer closed the connection or a write failed: stop producing.
  virtual bool client_gone() const = 0;
  // Calls `fn` (from an I/O thread) when client_gone() turns true, or at once when it already is;
  // dropped with the writer. Lets a waiting worker wake instead of polling client_gone().
  virtual void on_gone(std::function<void()> fn) = 0;
};

using HttpHandler = std::function<void(HttpRequest, std::shared_ptr<ResponseWriter>)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                         // 0: an ephemeral port (see HttpServer::port())
  int threads = 2;                         // I/O threads
  size_t max_body_bytes = 32u << 20;       // larger bodies get 413
  size_t max_header_bytes = 64u << 10;     // larger headers get 431
  // Open connections; at the limit accepting pauses (new clients wait in the listen backlog) until
  // one closes. 0: derived from the file-descriptor limit (default_max_connections()).
  int max_connections = 0;
  std::chrono::seconds idle_timeout{60};    // waiting for a request's first byte (keep-alive idle); also the body's limit
  std::chrono::seconds header_timeout{30};  // from a request's first byte to the end of its headers
  std::chrono::seconds write_timeout{60};   // one write that takes longer drops the client
  // Told about requests the HTTP layer answers itself (malformed, too large): status code.
  std::function<void(int status)> on_rejected;
};

// The default connection limit: what RLIMIT_NOFILE leaves after a reserve of descriptors for the
// server itself (listener, epoll, model files, logs), capped at 4096.
int default_max_connections();

class HttpServer {
 public:
  HttpServer(HttpServerOptions opts, HttpHandler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds, listens and starts the I/O threads. Throws ds::Error when the address cannot be bound.
  void start();
  int port() const;  // the bound port
  // Stops accepting connections and closes idle keep-alive connections; responses in progress go
  // on, and their connections close when they are done.
  void stop_accepting();
  // Responses that a handler has received but not finished.
  int active_responses() const;
  // Connections accepted and not yet closed.
  int open_connections() const;
  // The connection limit in force (max_connections, or the default derived from the fd limit).
  int max_connections() const;
  // Closes everything and joins the I/O threads (also done by the destructor).
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace ds::server
