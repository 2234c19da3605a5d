#include "mock_openai_server.h"

#include <atomic>
#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including <utility>

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <mutex>
#include <sstream>
#include <thread>

namespace ds::bench::testing {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

struct MockOpenAIServer::Impl {
  MockBehavior behavior;
  asio::io_context io;
  tcp::acceptor acceptor{io};
  std::thread thread;
  mutable std::mutex mu;
  std::vector<Received> received;
  std::atomic<int> in_flight{0}, max_in_flight{0};

  void enter() {
    const int now = ++in_flight;
    for (int prev = max_in_flight.load(); now > prev && !max_in_flight.compare_exchange_weak(prev, now);) {
    }
  }
  http::response<http::string_body> answer(const Received& rec, bool post) const;
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> session(tcp::socket sock);
  asio::awaitable<void> stream_tokens(tcp::socket& sock, const json& body, bool chat);
};

namespace {

int64_t count_words(const std::string& s) {
  std::istringstream in(s);
  int64_t n = 0;
  for (std::string w; in >> w;) ++n;
  return n;
}

int64_t prompt_tokens_of(const json& body) {
  if (body.contains("messages")) {
    int64_t n = 0;
    for (const auto& m : body["messages"])
      if (m.contains("content") && m["content"].is_string()) n += count_words(m["content"].get<std::string>());
    return n;
  }
  const json& p = body.value("prompt", json());
  if (p.is_array()) return static_cast<int64_t>(p.size());
  if (p.is_string()) return count_words(p.get<std::string>());
  return 0;
}

int64_t max_tokens_of(const json& body) { return body.value("max_tokens", int64_t{16}); }

std::string token_text(int64_t i) { return "tok" + std::to_string(i) + " "; }

json choice_chunk(bool chat, const std::string& text, const json& finish) {
  json choice = {{"index", 0}, {"finish_reason", finish}};
  if (chat)
    choice["delta"] = {{"content", text}};
  else
    choice["text"] = text;
  return {{"id", "cmpl-mock"},
          {"object", chat ? "chat.completion.chunk" : "text_completion"},
          {"created", 0},
          {"model", "mock-model"},
          {"choices", json::array({choice})}};
}

std::string error_payload(const std::string& message) {
  return json{{"error", {{"message", message}, {"code", 500}}}}.dump();
}

std::string usage_payload(const json& body, bool chat, int64_t completion_tokens) {
  const int64_t prompt_tokens = prompt_tokens_of(body);
  return json{{"id", "cmpl-mock"},
              {"object", chat ? "chat.completion.chunk" : "text_completion"},
              {"model", "mock-model"},
              {"choices", json::array()},
              {"usage",
               {{"prompt_tokens", prompt_tokens},
                {"completion_tokens", completion_tokens},
                {"total_tokens", prompt_tokens + completion_tokens}}}}
      .dump();
}

std::string token_payload(bool chat, int64_t i, int64_t n) {
  json finish = nullptr;
  if (i + 1 == n) finish = "length";
  return choice_chunk(chat, token_text(i), finish).dump();
}

std::string role_payload() {
  json first = choice_chunk(true, "", nullptr);
  first["choices"][0]["delta"] = {{"role", "assistant"}, {"content", ""}};
  return first.dump();
}

}  // namespace

MockOpenAIServer::MockOpenAIServer(MockBehavior behavior) : impl_(std::make_unique<Impl>()) {
  impl_->behavior = std::move(behavior);
  tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), 0);
  impl_->acceptor.open(ep.protocol());
  impl_->acceptor.set_option(asio::socket_base::reuse_address(true));
  impl_->acceptor.bind(ep);
  impl_->acceptor.listen();
  asio::co_spawn(impl_->io, impl_->accept_loop(), asio::detached);
  impl_->thread = std::thread([this] { impl_->io.run(); });
}

MockOpenAIServer::~MockOpenAIServer() {
  impl_->io.stop();
  impl_->thread.join();
}

int MockOpenAIServer::port() const { return impl_->acceptor.local_endpoint().port(); }
std::string MockOpenAIServer::base_url() const { return "http://127.0.0.1:" + std::to_string(port()); }
int MockOpenAIServer::max_in_flight() const { return impl_->max_in_flight.load(); }

std::vector<MockOpenAIServer::Received> MockOpenAIServer::received() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->received;
}

asio::awaitable<void> MockOpenAIServer::Impl::accept_loop() {
  for (;;) {
    tcp::socket sock = co_await acceptor.async_accept(asio::use_awaitable);
    asio::co_spawn(io, session(std::move(sock)), asio::detached);
  }
}

http::response<http::string_body> MockOpenAIServer::Impl::answer(const Received& rec, bool post) const {
  http::status status = http::status::ok;
  json body;
  const bool chat = rec.target == "/v1/chat/completions";
  if (!behavior.api_key.empty() && rec.authorization != "Bearer " + behavior.api_key) {
    status = http::status::unauthorized;
    body = {{"error", {{"message", "invalid API key"}, {"type", "AuthenticationError"}, {"code", 401}}}};
  } else if (!post && rec.target == "/v1/models") {
    body = {{"object", "list"}, {"data", json::array({{{"id", "mock-model"}, {"object", "model"}}})}};
  } else if (post && rec.target == "/tokenize" && behavior.tokenize) {
    const int64_t n = rec.body.is_object() && rec.body.contains("prompt") && rec.body["prompt"].is_string()
                          ? count_words(rec.body["prompt"].get<std::string>())
                          : -1;
    if (n < 0) {
      status = http::status::bad_request;
      body = {{"error", {{"message", "'prompt' (a string) is required"}, {"code", 400}}}};
    } else {
      json tokens = json::array();
      for (int64_t i = 0; i < n; ++i) tokens.push_back(i);
      body = {{"count", n}, {"max_model_len", 4096}, {"tokens", tokens}, {"token_strs", nullptr}};
    }
  } else if (post && (chat || rec.target == "/v1/completions")) {
    if (behavior.status != 200) {
      status = static_cast<http::status>(behavior.status);
      body = {{"error",
               {{"message", behavior.error_message},
                {"type", "BadRequestError"},
                {"param", nullptr},
                {"code", behavior.status}}}};
    } else {
      std::string text;
      if (behavior.reply) {
        text = behavior.reply(rec.body);
      } else {
        for (int64_t i = 0; i < max_tokens_of(rec.body); ++i) text += token_text(i);
      }
      json choice = {{"index", 0}, {"finish_reason", "stop"}};
      if (chat)
        choice["message"] = {{"role", "assistant"}, {"content", text}};
      else
        choice["text"] = text;
      const int64_t in_tokens = prompt_tokens_of(rec.body), out_tokens = count_words(text);
      body = {{"id", "cmpl-mock"},
              {"object", chat ? "chat.completion" : "text_completion"},
              {"model", "mock-model"},
              {"choices", json::array({choice})},
              {"usage",
               {{"prompt_tokens", in_tokens},
                {"completion_tokens", out_tokens},
                {"total_tokens", in_tokens + out_tokens}}}};
    }
  } else {
    status = http::status::not_found;
    body = {{"error", {{"message", "no route " + rec.target}, {"code", 404}}}};
  }
  http::response<http::string_body> res{status, 11};
  res.set(http::field::content_type, "application/json");
  res.body() = body.dump();
  res.keep_alive(false);
  res.prepare_payload();
  return res;
}

asio::awaitable<void> MockOpenAIServer::Impl::session(tcp::socket sock) {
  sock.set_option(tcp::no_delay(true));
  beast::flat_buffer buf;
  http::request<http::string_body> req;
  boost::system::error_code ec;
  co_await http::async_read(sock, buf, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;
  Received rec{std::string(req.method_string()), std::string(req.target()),
               std::string(req[http::field::authorization]), json()};
  const bool post = req.method() == http::verb::post;
  if (post) rec.body = json::parse(req.body(), nullptr, false);
  {
    std::lock_guard<std::mutex> lock(mu);
    received.push_back(rec);
  }
  const bool authorized = behavior.api_key.empty() || rec.authorization == "Bearer " + behavior.api_key;
  const bool generate = post && (rec.target == "/v1/completions" || rec.target == "/v1/chat/completions");
  if (authorized && generate && behavior.status == 200 && rec.body.value("stream", false)) {
    enter();
    co_await stream_tokens(sock, rec.body, rec.target == "/v1/chat/completions");
    --in_flight;
  } else {
    if (generate) enter();
    http::response<http::string_body> res = answer(rec, post);
    co_await http::async_write(sock, res, asio::redirect_error(asio::use_awaitable, ec));
    if (generate) --in_flight;
  }
  sock.shutdown(tcp::socket::shutdown_both, ec);
}

asio::awaitable<void> MockOpenAIServer::Impl::stream_tokens(tcp::socket& sock, const json& body, bool chat) {
  boost::system::error_code ec;
  http::response<http::empty_body> res{http::status::ok, 11};
  res.set(http::field::content_type, "text/event-stream");
  res.chunked(true);
  res.keep_alive(false);
  http::response_serializer<http::empty_body> sr{res};
  co_await http::async_write_header(sock, sr, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return;
  asio::steady_timer timer(io);
  auto pause = [&](double s) -> asio::awaitable<void> {
    if (s <= 0) co_return;
    timer.expires_after(std::chrono::microseconds(static_cast<int64_t>(s * 1e6)));
    co_await timer.async_wait(asio::use_awaitable);
  };
  auto send_event = [&](const std::string& payload) -> asio::awaitable<void> {
    const std::string event = "data: " + payload + "\n\n";
    if (behavior.split_events) {
      const size_t half = event.size() / 2;
      std::string a = event.substr(0, half), b = event.substr(half);
      auto first = http::make_chunk(asio::buffer(a));
      co_await asio::async_write(sock, first, asio::redirect_error(asio::use_awaitable, ec));
      co_await pause(0.002);
      auto second = http::make_chunk(asio::buffer(b));
      co_await asio::async_write(sock, second, asio::redirect_error(asio::use_awaitable, ec));
    } else {
      auto chunk = http::make_chunk(asio::buffer(event));
      co_await asio::async_write(sock, chunk, asio::redirect_error(asio::use_awaitable, ec));
    }
  };
  const int64_t n = max_tokens_of(body);
  if (chat && behavior.role_chunk) {
    const std::string payload = role_payload();
    co_await send_event(payload);
  }
  for (int64_t i = 0; i < n && !ec; ++i) {
    if (behavior.error_after_tokens >= 0 && i == behavior.error_after_tokens) {
      const std::string payload = error_payload("mock failure mid-stream");
      co_await send_event(payload);
      break;
    }
    co_await pause(behavior.token_delay_s);
    const std::string payload = token_payload(chat, i, n);
    co_await send_event(payload);
  }
  const bool usage =
      behavior.send_usage && body.contains("stream_options") && body["stream_options"].value("include_usage", false);
  if (usage && !ec) {
    const std::string payload = usage_payload(body, chat, n);
    co_await send_event(payload);
  }
  const std::string done = "[DONE]";
  if (!ec) co_await send_event(done);
  auto last = http::make_chunk_last();
  if (!ec) co_await asio::async_write(sock, last, asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace ds::bench::testing
