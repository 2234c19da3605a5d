// The POSIX socket plumbing of the multi-process group (dist/tcp_group.h): an owned descriptor, whole
// sends and receives with an optional deadline, a listening socket and a connect that retries until the
// peer listens. Failures are ds::Errors that name the peer.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>

namespace ds::net {

using Clock = std::chrono::steady_clock;
inline constexpr Clock::time_point kNoDeadline = Clock::time_point::max();

Clock::time_point deadline_in(double seconds);
double seconds_left(Clock::time_point deadline);

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd();
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }

 private:
  int fd_;
};

// Waits until fd is readable (POLLIN) or writable (POLLOUT), up to the deadline; false on timeout.
bool wait_fd(int fd, short events, Clock::time_point deadline);
// Every byte, or a ds::Error naming `peer` (timed out, closed, failed).
void send_all(int fd, const void* data, size_t n, Clock::time_point deadline, const std::string& peer);
void recv_all(int fd, void* data, size_t n, Clock::time_point deadline, const std::string& peer);

// A socket listening on every address at `port` (0: any free port); *bound gets the port bound.
// `flag` names the setting in the error ("--master-port").
Fd listen_on(int port, int* bound, const std::string& flag);
// Connects to host:port, retrying while nobody listens yet (and when the connect meets itself), until the
// deadline; the error names `peer` and the last reason.
Fd connect_to(const std::string& host, int port, Clock::time_point deadline, const std::string& peer);
// TCP_NODELAY (small collectives go out at once) and keepalive probes after 10 s of silence (a peer host that
// vanishes without closing is noticed in about 25 s).
void tune_stream(int fd);

}  // namespace ds::net
