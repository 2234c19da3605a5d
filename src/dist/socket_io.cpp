#include "dist/socket_io.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "core/error.h"

namespace ds::net {

Clock::time_point deadline_in(double seconds) {
  if (seconds >= 1e9) return kNoDeadline;
  return Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

double seconds_left(Clock::time_point deadline) {
  if (deadline == kNoDeadline) return 1e18;
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const double s = seconds_left(deadline);
    if (s <= 0) return false;
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, int(std::min(s * 1000.0, 1e9)) + 1);
    if (r > 0) return true;
    if (r == 0) continue;
    if (errno != EINTR) fail("poll failed: {}", std::strerror(errno));
  }
}

void send_all(int fd, const void* data, size_t n, Clock::time_point deadline, const std::string& peer) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    DS_CHECK(wait_fd(fd, POLLOUT, deadline), "timed out sending to {}", peer);
    const ssize_t k = ::send(fd, p, n, MSG_NOSIGNAL);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    DS_CHECK(k > 0 || (errno != EPIPE && errno != ECONNRESET), "{} closed the connection", peer);
    DS_CHECK(k > 0, "sending to {} failed: {}", peer, std::strerror(errno));
    p += k;
    n -= size_t(k);
  }
}

void recv_all(int fd, void* data, size_t n, Clock::time_point deadline, const std::string& peer) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    DS_CHECK(wait_fd(fd, POLLIN, deadline), "timed out waiting for {}", peer);
    const ssize_t k = ::recv(fd, p, n, 0);
    if (k < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    DS_CHECK(k != 0 && (k > 0 || errno != ECONNRESET), "{} closed the connection", peer);
    DS_CHECK(k > 0, "receiving from {} failed: {}", peer, std::strerror(errno));
    p += k;
    n -= size_t(k);
  }
}

Fd listen_on(int port, int* bound, const std::string& flag) {
  Fd ls(::socket(AF_INET, SOCK_STREAM, 0));
  DS_CHECK(ls.valid(), "socket failed: {}", std::strerror(errno));
  const int one = 1;
  ::setsockopt(ls.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(uint16_t(port));
  DS_CHECK(::bind(ls.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "cannot listen on port {}: {} ({})", port,
           std::strerror(errno), flag);
  DS_CHECK(::listen(ls.get(), 64) == 0, "listen failed: {}", std::strerror(errno));
  socklen_t len = sizeof a;
  ::getsockname(ls.get(), reinterpret_cast<sockaddr*>(&a), &len);
  if (bound) *bound = int(ntohs(a.sin_port));
  return ls;
}

Fd connect_to(const std::string& host, int port, Clock::time_point deadline, const std::string& peer) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  const int g = ::getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &res);
  DS_CHECK(g == 0 && res, "cannot resolve {}: {}", host, ::gai_strerror(g));
  sockaddr_in addr{};
  std::memcpy(&addr, res->ai_addr, sizeof addr);
  ::freeaddrinfo(res);
  std::string last = "no attempt";
  for (;;) {  // the peer may not listen yet; a non-blocking connect, so an unreachable host cannot outwait the deadline
    Fd s(::socket(AF_INET, SOCK_STREAM, 0));
    DS_CHECK(s.valid(), "socket failed: {}", std::strerror(errno));
    const int flags = ::fcntl(s.get(), F_GETFL, 0);
    ::fcntl(s.get(), F_SETFL, flags | O_NONBLOCK);
    int err = ::connect(s.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      const auto until = std::min(deadline, Clock::now() + std::chrono::seconds(2));
      if (wait_fd(s.get(), POLLOUT, until)) {
        socklen_t len = sizeof err;
        ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      } else {
        err = ETIMEDOUT;
      }
    }
    if (err == 0) {
      // A connect to a port on this host that nobody listens on yet can meet itself (TCP simultaneous open,
      // when the ephemeral port chosen is the port asked for): not a peer; try again.
      sockaddr_in self{}, peer{};
      socklen_t ls = sizeof self, lp = sizeof peer;
      const bool itself = ::getsockname(s.get(), reinterpret_cast<sockaddr*>(&self), &ls) == 0 &&
                          ::getpeername(s.get(), reinterpret_cast<sockaddr*>(&peer), &lp) == 0 &&
                          self.sin_port == peer.sin_port && self.sin_addr.s_addr == peer.sin_addr.s_addr;
      if (!itself) {
        ::fcntl(s.get(), F_SETFL, flags);  // blocking again: every read and write waits in poll first anyway
        tune_stream(s.get());
        return s;
      }
      err = ECONNREFUSED;
    }
    last = std::strerror(err);
    DS_CHECK(seconds_left(deadline) > 0, "could not reach {} ({})", peer, last);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void tune_stream(int fd) {
  const int one = 1, idle = 10, interval = 5, probes = 3;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // a peer host that vanishes without closing is noticed in about 25 s of silence (10 + 3 x 5)
  ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
}

}  // namespace ds::net
