// A minimal HTTP/1.1 client for OpenAI-compatible servers (Boost.Beast over plain TCP, C++20 coroutines).
// One connection per request (Connection: close), so concurrent requests never share a socket. A body
// sink sees the response bytes as they arrive (chunked transfer decoding included), which is what SSE
// timing needs. Transport failures (refused, reset, idle timeout) are reported in the result, never thrown.
#pragma once
#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including <utility>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace ds::bench {

// http://host[:port][/prefix]; a trailing "/v1" is dropped (OpenAI clients take base URLs ending in it).
struct ServerAddress {
  std::string host;
  std::string port = "80";
  std::string prefix;  // path prepended to every request path, "" or "/something"
  std::string url() const;
};
ServerAddress parse_base_url(std::string_view url);  // throws ds::Error (https is not supported)

struct HttpRequest {
  std::string method = "GET";  // GET | POST
  std::string path;            // e.g. /v1/models (the address prefix is added)
  std::string body;            // JSON for POST
  std::string api_key;         // sent as "Authorization: Bearer <key>" when set
};

struct HttpResult {
  int status = 0;               // 0: no HTTP response was received
  std::string transport_error;  // set when the exchange failed below HTTP (connect, reset, timeout)
  std::string body;             // the body, unless it went to the sink
  bool ok() const { return transport_error.empty() && status >= 200 && status < 300; }
};

// Receives body bytes as they arrive (only for 2xx responses; other bodies are collected in HttpResult).
using BodySink = std::function<void(std::string_view)>;

class HttpClient {
 public:
  // Resolves the host once; throws ds::Error when that fails. idle_timeout_s: a request fails when the
  // server sends nothing for that long (0: never).
  HttpClient(boost::asio::any_io_executor ex, ServerAddress addr, double idle_timeout_s);

  boost::asio::awaitable<HttpResult> request(HttpRequest req, BodySink sink = nullptr);
  const ServerAddress& address() const { return addr_; }

 private:
  boost::asio::any_io_executor ex_;
  ServerAddress addr_;
  double idle_timeout_s_;
  std::vector<boost::asio::ip::tcp::endpoint> endpoints_;
};

// One request on a private event loop; for setup calls (GET /v1/models) outside the load loop, and the
// interactive clients (a 2xx body to `sink` as it arrives, when given).
HttpResult http_request_blocking(const ServerAddress& addr, HttpRequest req, double idle_timeout_s,
                                 BodySink sink = nullptr);

}  // namespace ds::bench
