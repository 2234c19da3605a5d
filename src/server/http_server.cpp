#include "server/http_server.h"

#include <poll.h>
#include <sys/resource.h>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "server/api_error.h"
#include "server/one_shot_event.h"
#include "server/rate_limited_log.h"

namespace ds::server {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

std::string HttpRequest::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (beast::iequals(k, beast::string_view(name.data(), name.size()))) return v;
  return {};
}

namespace {

// What sessions share with the server; holds no I/O objects, so sessions never keep the
// io_context alive.
struct Shared {
  HttpServerOptions opts;
  HttpHandler handler;
  std::atomic<int> active{0};
  std::atomic<int> connections{0};  // sockets accepted and not closed
  std::atomic<bool> stopping{false};
};

std::string status_line(int status) {
  auto reason = http::obsolete_reason(http::int_to_status(unsigned(status)));
  return fmt::format("HTTP/1.1 {} {}\r\n", status, std::string_view(reason.data(), reason.size()));
}

std::string format_headers(const Headers& headers) {
  std::string out;
  for (const auto& [k, v] : headers) out += fmt::format("{}: {}\r\n", k, v);
  return out;
}

// One queued piece of output; `last` marks the end of the response.
struct Out {
  std::string bytes;
  bool last = false;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  // `shared->connections` already counts this socket; the session gives its slot back when it closes.
  Session(tcp::socket socket, std::shared_ptr<Shared> shared) : stream_(std::move(socket)), shared_(std::move(shared)) {
    beast::error_code ec;
    auto ep = stream_.socket().remote_endpoint(ec);
    if (!ec) remote_ = fmt::format("{}:{}", ep.address().to_string(), ep.port());
  }
  ~Session() { release_slot(); }

  void start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] { self->do_read(); });
  }

  // Queues output from any thread; `format` runs on the session's strand.
  void post(std::function<Out(bool keep_alive)> format) {
    net::post(stream_.get_executor(),
              [self = shared_from_this(), f = std::move(format)] { self->enqueue(f(self->keep_alive_)); });
  }

  // Server shutdown: close now when idle, else after the response in progress.
  void close_when_idle() {
    net::post(stream_.get_executor(), [self = shared_from_this()] {
      self->keep_alive_ = false;
      if (self->state_ == State::Reading) self->close();
    });
  }

  bool gone() const { return gone_.fired(); }

  // Runs `fn` once the client is gone (at once, returning 0, when it already is); see OneShotEvent.
  uint64_t add_gone_hook(std::function<void()> fn) { return gone_.add(std::move(fn)); }
  void remove_gone_hook(uint64_t id) { gone_.remove(id); }

 private:
  enum class State { Reading, Responding, AfterResponse, Closed };

  // Marks the client gone (true the first time) and wakes whoever waits on it.
  bool mark_gone() { return gone_.fire(); }

  void do_read() {
    state_ = State::Reading;
    if (shared_->stopping.load()) return close();
    parser_.emplace();
    parser_->body_limit(shared_->opts.max_body_bytes);
    parser_->header_limit(uint32_t(shared_->opts.max_header_bytes));
    if (buffer_.size() > 0) return read_header();  // a pipelined request already started
    // Idle: wait for the first byte under the idle timeout, then the headers get their own.
    stream_.expires_after(shared_->opts.idle_timeout);
    stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](beast::error_code ec, size_t n) {
      if (ec) return self->on_read_error(ec);
      self->buffer_.commit(n);
      self->read_header();
    });
  }

  void read_header() {
    stream_.expires_after(shared_->opts.header_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) { self->on_header(ec); });
  }

  void on_header(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    auto& msg = parser_->get();
    if (beast::iequals(msg[http::field::expect], "100-continue") && !parser_->is_done()) {
      // curl waits for this before sending a larger body.
      auto cont = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
      net::async_write(stream_, net::buffer(*cont), [self = shared_from_this(), cont](beast::error_code ec, size_t) {
        if (ec) return self->close();
        self->read_body();
      });
      return;
    }
    read_body();
  }

  void read_body() {
    stream_.expires_after(shared_->opts.idle_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_read(ec); });
  }

  void on_read_error(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == beast::error::timeout ||
        ec == net::error::operation_aborted || ec == net::error::connection_reset ||
        ec == http::error::partial_message) {
      return close();
    }
    int status = 400;
    std::string msg = "malformed HTTP request: " + ec.message();
    if (ec == http::error::body_limit) {
      status = 413;
      msg = fmt::format("request body is larger than the limit of {} bytes", shared_->opts.max_body_bytes);
    } else if (ec == http::error::header_limit) {
      status = 431;
      msg = fmt::format("request headers are larger than the limit of {} bytes", shared_->opts.max_header_bytes);
    }
    spdlog::debug("http {}: rejected with {}: {}", remote_, status, msg);
    if (shared_->opts.on_rejected) shared_->opts.on_rejected(status);
    keep_alive_ = false;
    state_ = State::Responding;
    rejecting_ = true;
    std::string body = error_body(status, msg);
    out_.push_back({status_line(status) +
                        fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                                    body.size()) +
                        body,
                    true});
    do_write();
  }

  void on_read(beast::error_code ec) {
    if (ec) return on_read_error(ec);
    auto& msg = parser_->get();
    HttpRequest req;
    req.method = std::string(msg.method_string());
    req.target = std::string(msg.target());
    req.path = req.target.substr(0, req.target.find('?'));
    req.body = std::move(msg.body());
    for (const auto& f : msg) req.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));
    req.remote = remote_;
    req.received = std::chrono::steady_clock::now();
    keep_alive_ = msg.keep_alive() && !shared_->stopping.load();
    http11_ = msg.version() >= 11;
    response_bytes_ = false;
    parser_.reset();

    state_ = State::Responding;
    shared_->active.fetch_add(1);
    stream_.expires_never();
    watch();
    auto writer = make_writer();
    try {
      shared_->handler(std::move(req), writer);
    } catch (const std::exception& e) {
      spdlog::error("http {}: handler failed: {}", remote_, e.what());
      HttpResponse res;
      res.status = 500;
      res.body = error_body(500, e.what());
      writer->send(std::move(res));
    }
  }

  // While responding, keep one read outstanding: it sees the peer's close at once. Bytes that
  // arrive (a pipelined request) stay in buffer_ for the next parse.
  void watch() {
    if (watching_ || peer_eof_ || buffer_.size() > (1u << 20)) return;
    watching_ = true;
    stream_.async_read_some(buffer_.prepare(4096),
                            [self = shared_from_this()](beast::error_code ec, size_t n) { self->on_watch(ec, n); });
  }

  void on_watch(beast::error_code ec, size_t n) {
    watching_ = false;
    if (!ec) buffer_.commit(n);
    if (state_ == State::AfterResponse) {
      if (ec && ec != net::error::operation_aborted) return close();
      return do_read();
    }
    if (state_ != State::Responding) return;
    if (ec == net::error::eof) {
      // The client stopped sending after a complete request: a half-close (shutdown(SHUT_WR), it
      // still reads the answer) or a full close. Only a failed write or a reset means "gone"; the
      // connection closes after this response.
      spdlog::debug("http {}: client finished sending; answering, then closing", remote_);
      keep_alive_ = false;
      peer_eof_ = true;
      probe_peer();
      return;
    }
    if (ec) {
      if (mark_gone()) spdlog::debug("http {}: client went away ({})", remote_, ec.message());
      return;
    }
    watch();
  }

  // Tells a half-close from a full close without waiting for the response: a closed peer answers
  // any byte with a reset. Before any response bytes that byte is an interim "100 Continue", which
  // HTTP/1.1 clients must accept and skip (RFC 9110, 15.2); once a response is under way, its next
  // write does the same. The reset shows as an error condition on the socket.
  void probe_peer() {
    if (!http11_ || writing_ || !out_.empty() || response_bytes_) return;
    out_.push_back({"HTTP/1.1 100 Continue\r\n\r\n", false});
    do_write();
    wait_for_reset();
  }

  // A wait's completion is only a hint: with several I/O threads the reactor can hand a reused
  // socket a readiness event of the one it replaced (a CI run saw a half-closed client cut after
  // its first chunk). So the handler asks the kernel itself, and waits again when no reset is there.
  void wait_for_reset() {
    stream_.socket().async_wait(tcp::socket::wait_error, [self = shared_from_this()](beast::error_code ec) {
      if (ec == net::error::operation_aborted || self->state_ != State::Responding) return;
      if (!self->peer_reset()) return self->wait_for_reset();
      if (self->mark_gone()) spdlog::debug("http {}: client went away (reset after close)", self->remote_);
    });
  }

  // Whether the socket now holds an error or a hang-up. While responding this side has not shut its
  // sending half, so a hang-up means the peer reset the connection.
  bool peer_reset() {
    pollfd p{stream_.socket().native_handle(), 0, 0};
    return ::poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0;
  }

  void enqueue(Out out) {
    if (state_ == State::Closed) return;
    if (gone_.fired()) {
      if (out.last) finish_response();
      return;
    }
    response_bytes_ = true;
    out_.push_back(std::move(out));
    if (!writing_) do_write();
  }

  void do_write() {
    writing_ = true;
    stream_.expires_after(shared_->opts.write_timeout);
    net::async_write(stream_, net::buffer(out_.front().bytes),
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->on_write(ec); });
  }

  void on_write(beast::error_code ec) {
    writing_ = false;
    stream_.expires_never();
    if (ec) {
      bool had_last = false;
      for (const auto& o : out_) had_last |= o.last;
      out_.clear();
      if (mark_gone()) spdlog::debug("http {}: write failed ({})", remote_, ec.message());
      if (had_last) finish_response();
      return;
    }
    bool last = out_.front().last;
    out_.pop_front();
    if (last) return finish_response();
    if (!out_.empty()) do_write();
  }

  void finish_response() {
    if (rejecting_) return linger_close();
    if (state_ != State::Responding) return;
    state_ = State::AfterResponse;
    shared_->active.fetch_sub(1);
    if (!keep_alive_ || gone_.fired() || shared_->stopping.load()) return close();
    if (watching_) {
      beast::error_code ec;
      stream_.socket().cancel(ec);  // on_watch resumes reading
    } else {
      do_read();
    }
  }

  // After rejecting a request whose body was not read: stop sending, drain what the client still
  // sends for a moment, then close, so the client reads the error instead of a reset.
  void linger_close() {
    state_ = State::Closed;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    drain();
  }

  void drain() {
    auto buf = std::make_shared<std::array<char, 16384>>();
    stream_.async_read_some(net::buffer(*buf), [self = shared_from_this(), buf](beast::error_code ec, size_t) {
      if (ec) {
        beast::error_code ignored;
        self->stream_.socket().close(ignored);
        self->release_slot();
        return;
      }
      self->drain();
    });
  }

  void close() {
    if (state_ == State::Responding) shared_->active.fetch_sub(1);
    state_ = State::Closed;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.socket().close(ec);
    release_slot();
  }

  void release_slot() {
    if (!released_.exchange(true)) shared_->connections.fetch_sub(1);
  }

  std::shared_ptr<ResponseWriter> make_writer();

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Shared> shared_;
  std::string remote_;
  State state_ = State::Reading;
  bool keep_alive_ = true;
  bool watching_ = false;
  bool writing_ = false;
  bool rejecting_ = false;
  bool peer_eof_ = false;        // the client stopped sending: nothing more to read
  bool http11_ = false;          // the request in progress is HTTP/1.1 (may be sent 1xx)
  bool response_bytes_ = false;  // bytes of the current response were queued
  std::atomic<bool> released_{false};
  OneShotEvent gone_;
  std::deque<Out> out_;
};

class Writer : public ResponseWriter {
 public:
  explicit Writer(std::shared_ptr<Session> s) : s_(std::move(s)) {}
  ~Writer() override {
    std::lock_guard<std::mutex> lk(mu_);
    for (uint64_t id : hooks_) s_->remove_gone_hook(id);
    if (state_ == St::None) {
      spdlog::error("http: a handler dropped its request without a response");
      post_full(500, "application/json", error_body(500, "the request was dropped without a response"), {});
    } else if (state_ == St::Streaming) {
      s_->post([](bool) { return Out{"0\r\n\r\n", true}; });
    }
  }

  void send(HttpResponse res) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (state_ != St::None) return;
    state_ = St::Done;
    post_full(res.status, res.content_type, std::move(res.body), std::move(res.headers));
  }

  void begin_stream(int status, const std::string& content_type, Headers headers) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (state_ != St::None) return;
    state_ = St::Streaming;
    std::string head = status_line(status) + "Content-Type: " + content_type +
                       "\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n" + format_headers(headers);
    s_->post([head = std::move(head)](bool keep_alive) {
      return Out{head + (keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n"), false};
    });
  }

  void write(std::string data) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (state_ != St::Streaming || data.empty()) return;
    std::string chunk = fmt::format("{:x}\r\n", data.size());
    chunk += data;
    chunk += "\r\n";
    s_->post([chunk = std::move(chunk)](bool) { return Out{chunk, false}; });
  }

  void end_stream() override {
    std::lock_guard<std::mutex> lk(mu_);
    if (state_ != St::Streaming) return;
    state_ = St::Done;
    s_->post([](bool) { return Out{"0\r\n\r\n", true}; });
  }

  bool client_gone() const override { return s_->gone(); }
  void on_gone(std::function<void()> fn) override {
    std::lock_guard<std::mutex> lk(mu_);
    if (uint64_t id = s_->add_gone_hook(std::move(fn))) hooks_.push_back(id);
  }

 private:
  enum class St { None, Streaming, Done };

  void post_full(int status, const std::string& content_type, std::string body, Headers headers) {
    std::string head = status_line(status) + "Content-Type: " + content_type +
                       fmt::format("\r\nContent-Length: {}\r\n", body.size()) + format_headers(headers);
    s_->post([head = std::move(head), body = std::move(body)](bool keep_alive) {
      return Out{head + (keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n") + body, true};
    });
  }

  std::shared_ptr<Session> s_;
  std::vector<uint64_t> hooks_;  // this request's gone hooks, dropped with it
  std::mutex mu_;
  St state_ = St::None;
};

std::shared_ptr<ResponseWriter> Session::make_writer() { return std::make_shared<Writer>(shared_from_this()); }

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
  std::mutex mu;
  std::vector<std::weak_ptr<Session>> sessions;
  std::vector<std::thread> threads;
  int port = 0;
  bool started = false;
  // Declared last: destroyed first, together with the handlers (and sessions) it still holds.
  net::io_context ioc;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work;
  tcp::acceptor acceptor{net::make_strand(ioc)};
  // On the acceptor's strand: pauses accepting (connection limit, descriptor exhaustion).
  net::steady_timer pause{acceptor.get_executor()};
  std::chrono::milliseconds backoff{0};
  bool limited = false;
  RateLimitedLog accept_errors{std::chrono::seconds(10)};
  RateLimitedLog at_limit{std::chrono::seconds(10)};

  void do_accept() {
    if (!acceptor.is_open()) return;
    const int limit = shared->opts.max_connections;
    if (shared->connections.load() >= limit) {
      // Wait for a connection to close (checked every 20 ms); new clients wait in the listen
      // backlog meanwhile.
      if (!limited && at_limit.hit())
        spdlog::warn("http: {} connections open, the limit (--max-connections); new ones wait (reached {}x in {} s)",
                     limit, at_limit.count(), at_limit.interval().count());
      limited = true;
      return accept_after(std::chrono::milliseconds(20));
    }
    limited = false;
    acceptor.async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
      if (ec) {
        if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
        // Out of descriptors or memory: the pending connection stays queued, so retrying at once
        // would spin. Back off (10 ms doubling to 500 ms) until an accept succeeds again.
        const bool exhausted = ec == net::error::no_descriptors || ec.value() == ENFILE ||
                               ec == net::error::no_buffer_space || ec == net::error::no_memory;
        if (accept_errors.hit())
          spdlog::warn("http: accept failed: {} ({}x in {} s){}", ec.message(), accept_errors.count(),
                       accept_errors.interval().count(), exhausted ? "; backing off" : "");
        if (exhausted) {
          backoff = std::clamp(backoff * 2, std::chrono::milliseconds(10), std::chrono::milliseconds(500));
          return accept_after(backoff);
        }
      } else {
        backoff = std::chrono::milliseconds(0);
        shared->connections.fetch_add(1);
        socket.set_option(tcp::no_delay(true), ec);
        auto s = std::make_shared<Session>(std::move(socket), shared);
        {
          std::lock_guard<std::mutex> lk(mu);
          std::erase_if(sessions, [](const auto& w) { return w.expired(); });
          sessions.push_back(s);
        }
        s->start();
      }
      do_accept();
    });
  }

  void accept_after(std::chrono::milliseconds delay) {
    pause.expires_after(delay);
    pause.async_wait([this](beast::error_code ec) {
      if (!ec) do_accept();
    });
  }
};

int default_max_connections() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return 4096;
  const int64_t fds = int64_t(rl.rlim_cur);
  const int64_t reserve = std::min<int64_t>(64, fds / 4);
  return int(std::clamp<int64_t>(fds - reserve, 1, 4096));
}

HttpServer::HttpServer(HttpServerOptions opts, HttpHandler handler) : impl_(std::make_shared<Impl>()) {
  impl_->shared->opts = std::move(opts);
  impl_->shared->handler = std::move(handler);
}

HttpServer::~HttpServer() { stop(); }

void HttpServer::start() {
  auto& im = *impl_;
  const auto& o = im.shared->opts;
  beast::error_code ec;
  auto addr = net::ip::make_address(o.host, ec);
  if (ec) {
    // A host name such as "localhost": resolve it.
    tcp::resolver resolver(im.ioc);
    auto results = resolver.resolve(o.host, std::to_string(o.port), ec);
    if (ec || results.empty()) fail("cannot resolve host '{}': {}", o.host, ec.message());
    addr = results.begin()->endpoint().address();
  }
  if (im.shared->opts.max_connections <= 0) im.shared->opts.max_connections = default_max_connections();
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      int64_t(im.shared->opts.max_connections) + 16 > int64_t(rl.rlim_cur))
    spdlog::warn("http: --max-connections {} is close to or above the file-descriptor limit ({}): accepting will "
                 "back off when descriptors run out",
                 im.shared->opts.max_connections, int64_t(rl.rlim_cur));
  tcp::endpoint ep(addr, uint16_t(o.port));
  im.acceptor.open(ep.protocol(), ec);
  if (!ec) im.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) im.acceptor.bind(ep, ec);
  if (!ec) im.acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) fail("cannot listen on {}:{}: {}", o.host, o.port, ec.message());
  im.port = im.acceptor.local_endpoint().port();
  im.work.emplace(im.ioc.get_executor());
  im.do_accept();
  for (int i = 0; i < std::max(1, o.threads); ++i) im.threads.emplace_back([&im] { im.ioc.run(); });
  im.started = true;
}

int HttpServer::port() const { return impl_->port; }

int HttpServer::active_responses() const { return impl_->shared->active.load(); }

int HttpServer::open_connections() const { return impl_->shared->connections.load(); }

int HttpServer::max_connections() const { return impl_->shared->opts.max_connections; }

void HttpServer::stop_accepting() {
  auto& im = *impl_;
  im.shared->stopping = true;
  net::post(im.acceptor.get_executor(), [&im] {
    beast::error_code ec;
    im.acceptor.close(ec);
    im.pause.cancel();
  });
  std::lock_guard<std::mutex> lk(im.mu);
  for (auto& w : im.sessions)
    if (auto s = w.lock()) s->close_when_idle();
}

void HttpServer::stop() {
  auto& im = *impl_;
  if (!im.started) return;
  im.started = false;
  stop_accepting();
  im.work.reset();
  im.ioc.stop();
  for (auto& t : im.threads) t.join();
  im.threads.clear();
}

}  // namespace ds::server
