// A minimal blocking HTTP/1.1 client for the server tests (Boost.Beast), with raw-socket helpers
// for the malformed-request cases.
#pragma once
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <string>
#include <vector>

namespace ds::test {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

struct Reply {
  int status = 0;
  std::string body;
  std::string content_type;
  bool chunked = false;
  bool keep_alive = false;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string header(const std::string& name) const {
    for (const auto& [k, v] : headers)
      if (boost::beast::iequals(k, name)) return v;
    return {};
  }
};

class HttpClient {
 public:
  explicit HttpClient(int port) : port_(port), stream_(ioc_) { connect(); }

  void connect() {
    tcp::resolver r(ioc_);
    stream_.connect(r.resolve("127.0.0.1", std::to_string(port_)));
  }

  Reply request(http::verb method, const std::string& target, const std::string& body = {},
                const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "127.0.0.1");
    for (const auto& [k, v] : headers) req.set(k, v);
    if (!body.empty() || method == http::verb::post) {
      req.set(http::field::content_type, "application/json");
      req.body() = body;
      req.prepare_payload();
    }
    http::write(stream_, req);
    http::response_parser<http::string_body> p;
    p.body_limit(1u << 30);
    http::read(stream_, buf_, p);
    auto& res = p.get();
    Reply reply{int(res.result_int()), res.body(), std::string(res[http::field::content_type]), res.chunked(),
                res.keep_alive(), {}};
    for (const auto& h : res) reply.headers.emplace_back(std::string(h.name_string()), std::string(h.value()));
    return reply;
  }

  Reply get(const std::string& target, const std::vector<std::pair<std::string, std::string>>& h = {}) {
    return request(http::verb::get, target, {}, h);
  }
  Reply post(const std::string& target, const std::string& body,
             const std::vector<std::pair<std::string, std::string>>& h = {}) {
    return request(http::verb::post, target, body, h);
  }

  // Sends raw bytes and reads whatever comes back until the server closes (or `max` bytes).
  std::string raw(const std::string& bytes, size_t max = 1u << 20) {
    net::write(stream_.socket(), net::buffer(bytes));
    std::string out;
    char b[4096];
    beast::error_code ec;
    while (out.size() < max) {
      size_t n = stream_.socket().read_some(net::buffer(b), ec);
      if (ec) break;
      out.append(b, n);
    }
    return out;
  }

  beast::tcp_stream& stream() { return stream_; }
  beast::flat_buffer& buffer() { return buf_; }

 private:
  int port_;
  net::io_context ioc_;
  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
};

}  // namespace ds::test
