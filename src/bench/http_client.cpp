#include "bench/http_client.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>

#include "core/error.h"

namespace ds::bench {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

std::string ServerAddress::url() const { return fmt::format("http://{}:{}{}", host, port, prefix); }

ServerAddress parse_base_url(std::string_view url) {
  constexpr std::string_view kHttp = "http://";
  if (url.substr(0, 8) == "https://")
    fail("--base-url {}: https is not supported by this client; put a plain-HTTP address", url);
  DS_CHECK(url.substr(0, kHttp.size()) == kHttp, "--base-url {}: expected http://host[:port][/path]", url);
  std::string_view rest = url.substr(kHttp.size());
  const size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string path = slash == std::string_view::npos ? std::string() : std::string(rest.substr(slash));
  ServerAddress a;
  const size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
    a.host = std::string(authority.substr(0, colon));
    a.port = std::string(authority.substr(colon + 1));
  } else {
    a.host = std::string(authority);
  }
  if (a.host.size() > 2 && a.host.front() == '[' && a.host.back() == ']') a.host = a.host.substr(1, a.host.size() - 2);
  DS_CHECK(!a.host.empty() && !a.port.empty(), "--base-url {}: no host or port", url);
  for (char c : a.port) DS_CHECK(c >= '0' && c <= '9', "--base-url {}: bad port '{}'", url, a.port);
  while (!path.empty() && path.back() == '/') path.pop_back();
  if (path.size() >= 3 && path.compare(path.size() - 3, 3, "/v1") == 0) path.resize(path.size() - 3);
  a.prefix = path;
  return a;
}

HttpClient::HttpClient(asio::any_io_executor ex, ServerAddress addr, double idle_timeout_s)
    : ex_(std::move(ex)), addr_(std::move(addr)), idle_timeout_s_(idle_timeout_s) {
  tcp::resolver resolver(ex_);
  boost::system::error_code ec;
  auto results = resolver.resolve(addr_.host, addr_.port, ec);
  if (ec) fail("cannot resolve {}: {}", addr_.url(), ec.message());
  for (const auto& r : results) endpoints_.push_back(r.endpoint());
  DS_CHECK(!endpoints_.empty(), "cannot resolve {}: no address", addr_.url());
}

asio::awaitable<HttpResult> HttpClient::request(HttpRequest req, BodySink sink) {
  HttpResult res;
  beast::tcp_stream stream(ex_);
  auto arm_timeout = [&] {
    if (idle_timeout_s_ > 0)
      stream.expires_after(std::chrono::milliseconds(static_cast<int64_t>(idle_timeout_s_ * 1e3)));
    else
      stream.expires_never();
  };
  auto describe = [&](const boost::system::error_code& ec) {
    if (ec == beast::error::timeout) return fmt::format("no data from the server for {} s", idle_timeout_s_);
    return ec.message();
  };
  boost::system::error_code ec;
  arm_timeout();
  co_await stream.async_connect(endpoints_, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    res.transport_error = fmt::format("cannot connect to {}: {}", addr_.url(), describe(ec));
    co_return res;
  }
  stream.socket().set_option(tcp::no_delay(true), ec);

  const bool post = req.method == "POST";
  http::request<http::string_body> r{post ? http::verb::post : http::verb::get, addr_.prefix + req.path, 11};
  r.set(http::field::host, addr_.host + ":" + addr_.port);
  r.set(http::field::user_agent, "deltaserve-bench");
  r.set(http::field::accept, "application/json, text/event-stream");
  if (!req.api_key.empty()) r.set(http::field::authorization, "Bearer " + req.api_key);
  if (post) {
    r.set(http::field::content_type, "application/json");
    r.body() = std::move(req.body);
  }
  r.keep_alive(false);
  r.prepare_payload();
  co_await http::async_write(stream, r, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    res.transport_error = fmt::format("sending {} {} failed: {}", req.method, req.path, describe(ec));
    co_return res;
  }

  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  parser.body_limit((std::numeric_limits<std::uint64_t>::max)());
  arm_timeout();
  co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    res.transport_error = fmt::format("no HTTP response to {} {}: {}", req.method, req.path, describe(ec));
    co_return res;
  }
  res.status = static_cast<int>(parser.get().result_int());
  const bool to_sink = sink && res.status >= 200 && res.status < 300;
  char chunk[16384];
  while (!parser.is_done()) {
    parser.get().body().data = chunk;
    parser.get().body().size = sizeof chunk;
    arm_timeout();
    co_await http::async_read_some(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    const size_t n = sizeof chunk - parser.get().body().size;
    if (n > 0) {
      if (to_sink)
        sink(std::string_view(chunk, n));
      else
        res.body.append(chunk, n);
    }
    if (ec) {
      res.transport_error = fmt::format("reading the response to {} {} failed: {}", req.method, req.path, describe(ec));
      break;
    }
  }
  stream.socket().shutdown(tcp::socket::shutdown_both, ec);
  co_return res;
}

HttpResult http_request_blocking(const ServerAddress& addr, HttpRequest req, double idle_timeout_s, BodySink sink) {
  asio::io_context io;
  HttpClient client(io.get_executor(), addr, idle_timeout_s);
  HttpResult out;
  std::exception_ptr error;
  asio::co_spawn(io, client.request(std::move(req), std::move(sink)), [&](std::exception_ptr e, HttpResult r) {
    error = e;
    out = std::move(r);
  });
  io.run();
  if (error) std::rethrow_exception(error);
  return out;
}

}  // namespace ds::bench
