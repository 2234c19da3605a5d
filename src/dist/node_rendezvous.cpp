#include "dist/node_rendezvous.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "core/error.h"

namespace ds {
namespace {

// Wire format (little-endian u32 fields): hello = "DSRZ" version node_rank nnodes len fingerprint[len];
// answer = "DSRZ" status len bytes[len] (status 0: bytes are the payload; 1: a refusal, bytes its reason).
constexpr char kMagic[4] = {'D', 'S', 'R', 'Z'};
constexpr uint32_t kVersion = 1, kOk = 0, kRefused = 1;
constexpr uint32_t kMaxField = 1u << 20;

using Clock = std::chrono::steady_clock;

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      if (fd >= 0) ::close(fd);
      fd = o.fd;
      o.fd = -1;
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

std::string where(const RendezvousConfig& c) { return c.master_addr + ":" + std::to_string(c.master_port); }

double left_s(Clock::time_point deadline) {
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

// Waits until fd is readable (or writable), up to the deadline; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const double s = left_s(deadline);
    if (s <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, int(std::min(s * 1000.0, 1e9)) + 1);
    if (r > 0) return true;
    if (r == 0) continue;
    if (errno != EINTR) fail("rendezvous: poll failed: {}", std::strerror(errno));
  }
}

void send_all(int fd, const void* data, size_t n, Clock::time_point deadline, const std::string& peer) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    DS_CHECK(wait_fd(fd, POLLOUT, deadline), "rendezvous: timed out sending to {}", peer);
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    DS_CHECK(k > 0, "rendezvous: sending to {} failed: {}", peer, std::strerror(errno));
    p += k;
    n -= size_t(k);
  }
}

void recv_all(int fd, void* data, size_t n, Clock::time_point deadline, const std::string& peer) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    DS_CHECK(wait_fd(fd, POLLIN, deadline), "rendezvous: timed out waiting for {}", peer);
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    DS_CHECK(k != 0, "rendezvous: {} closed the connection", peer);
    DS_CHECK(k > 0, "rendezvous: receiving from {} failed: {}", peer, std::strerror(errno));
    p += k;
    n -= size_t(k);
  }
}

void put_u32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
}
uint32_t get_u32(int fd, Clock::time_point deadline, const std::string& peer) {
  uint8_t b[4];
  recv_all(fd, b, 4, deadline, peer);
  return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}
void expect_magic(int fd, Clock::time_point deadline, const std::string& peer) {
  char m[4];
  recv_all(fd, m, 4, deadline, peer);
  DS_CHECK(std::memcmp(m, kMagic, 4) == 0, "rendezvous: {} is not a deltaserve node (bad greeting)", peer);
}
std::string get_bytes(int fd, uint32_t n, Clock::time_point deadline, const std::string& peer) {
  DS_CHECK(n <= kMaxField, "rendezvous: {} sent a field of {} bytes", peer, n);
  std::string s(n, '\0');
  if (n) recv_all(fd, s.data(), n, deadline, peer);
  return s;
}

void answer(int fd, uint32_t status, const std::string& bytes, Clock::time_point deadline, const std::string& peer) {
  std::vector<uint8_t> b(kMagic, kMagic + 4);
  put_u32(b, status);
  put_u32(b, uint32_t(bytes.size()));
  b.insert(b.end(), bytes.begin(), bytes.end());
  send_all(fd, b.data(), b.size(), deadline, peer);
}

}  // namespace

void rendezvous_serve(const RendezvousConfig& c, const std::string& fingerprint, const std::vector<uint8_t>& payload,
                      const std::function<void(int)>& on_listening) {
  DS_CHECK(c.nnodes >= 1 && c.node_rank == 0, "rendezvous: node 0 serves the exchange (node rank {} of {})",
           c.node_rank, c.nnodes);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(c.timeout_s));
  Fd ls(::socket(AF_INET, SOCK_STREAM, 0));
  DS_CHECK(ls.fd >= 0, "rendezvous: socket failed: {}", std::strerror(errno));
  const int one = 1;
  ::setsockopt(ls.fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(uint16_t(c.master_port));
  DS_CHECK(::bind(ls.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0,
           "rendezvous: node 0 cannot listen on port {}: {} (--master-port)", c.master_port, std::strerror(errno));
  DS_CHECK(::listen(ls.fd, 64) == 0, "rendezvous: listen failed: {}", std::strerror(errno));
  socklen_t len = sizeof a;
  ::getsockname(ls.fd, reinterpret_cast<sockaddr*>(&a), &len);
  if (on_listening) on_listening(int(ntohs(a.sin_port)));

  std::vector<Fd> nodes;  // the nodes that said hello, in arrival order
  std::set<uint32_t> seen;
  while (int(seen.size()) + 1 < c.nnodes) {
    if (!wait_fd(ls.fd, POLLIN, deadline)) {
      std::string missing;
      for (int k = 1; k < c.nnodes; ++k)
        if (!seen.count(uint32_t(k))) missing += (missing.empty() ? "" : ", ") + std::to_string(k);
      fail("rendezvous: timed out after {:.0f} s waiting for node(s) {} of {} at port {}", c.timeout_s, missing,
           c.nnodes, ntohs(a.sin_port));
    }
    Fd conn(::accept(ls.fd, nullptr, nullptr));
    if (conn.fd < 0) continue;
    const std::string peer = "a connecting node";
    expect_magic(conn.fd, deadline, peer);
    const uint32_t version = get_u32(conn.fd, deadline, peer), rank = get_u32(conn.fd, deadline, peer),
                   nn = get_u32(conn.fd, deadline, peer);
    const std::string fp = get_bytes(conn.fd, get_u32(conn.fd, deadline, peer), deadline, peer);
    std::string why;
    if (version != kVersion) why = fmt::format("protocol version {} (node 0 speaks {})", version, kVersion);
    else if (int(nn) != c.nnodes) why = fmt::format("--nnodes {} (node 0 has --nnodes {})", nn, c.nnodes);
    else if (rank == 0 || int(rank) >= c.nnodes) why = fmt::format("--node-rank {} is not one of 1..{}", rank, c.nnodes - 1);
    else if (seen.count(rank)) why = fmt::format("--node-rank {} was already given by another node", rank);
    else if (fp != fingerprint) why = fmt::format("a different model or layout ('{}'; node 0 runs '{}')", fp, fingerprint);
    if (!why.empty()) {
      answer(conn.fd, kRefused, why, deadline, peer);
      fail("rendezvous: node {} refused: {}", rank, why);
    }
    seen.insert(rank);
    nodes.push_back(std::move(conn));
  }
  const std::string bytes(payload.begin(), payload.end());
  for (Fd& n : nodes) answer(n.fd, kOk, bytes, deadline, "a node");
}

std::vector<uint8_t> rendezvous_join(const RendezvousConfig& c, const std::string& fingerprint) {
  DS_CHECK(c.node_rank >= 1 && c.node_rank < c.nnodes, "rendezvous: --node-rank {} of --nnodes {} does not join",
           c.node_rank, c.nnodes);
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(c.timeout_s));
  const std::string peer = "node 0 at " + where(c);
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  const int g = ::getaddrinfo(c.master_addr.c_str(), std::to_string(c.master_port).c_str(), &hints, &res);
  DS_CHECK(g == 0 && res, "rendezvous: cannot resolve --master-addr {}: {}", c.master_addr, ::gai_strerror(g));
  sockaddr_in addr{};
  std::memcpy(&addr, res->ai_addr, sizeof addr);
  ::freeaddrinfo(res);
  Fd s;
  std::string last = "no attempt";
  for (;;) {  // node 0 may not listen yet; a non-blocking connect, so an unreachable host cannot outwait the deadline
    s = Fd(::socket(AF_INET, SOCK_STREAM, 0));
    DS_CHECK(s.fd >= 0, "rendezvous: socket failed: {}", std::strerror(errno));
    ::fcntl(s.fd, F_SETFL, ::fcntl(s.fd, F_GETFL, 0) | O_NONBLOCK);
    int err = ::connect(s.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      const auto until = std::min(deadline, Clock::now() + std::chrono::seconds(2));
      if (wait_fd(s.fd, POLLOUT, until)) {
        socklen_t len = sizeof err;
        ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      } else {
        err = ETIMEDOUT;
      }
    }
    if (err == 0) break;
    last = std::strerror(err);
    DS_CHECK(left_s(deadline) > 0, "rendezvous: could not reach {} within {:.0f} s ({}); is node 0 started with the "
             "same --master-addr and --master-port?", peer, c.timeout_s, last);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::vector<uint8_t> hello(kMagic, kMagic + 4);
  put_u32(hello, kVersion);
  put_u32(hello, uint32_t(c.node_rank));
  put_u32(hello, uint32_t(c.nnodes));
  put_u32(hello, uint32_t(fingerprint.size()));
  hello.insert(hello.end(), fingerprint.begin(), fingerprint.end());
  send_all(s.fd, hello.data(), hello.size(), deadline, peer);
  expect_magic(s.fd, deadline, peer);
  const uint32_t status = get_u32(s.fd, deadline, peer);
  const std::string bytes = get_bytes(s.fd, get_u32(s.fd, deadline, peer), deadline, peer);
  DS_CHECK(status == kOk, "rendezvous: {} refused node {}: {}", peer, c.node_rank, bytes);
  return std::vector<uint8_t>(bytes.begin(), bytes.end());
}

}  // namespace ds
