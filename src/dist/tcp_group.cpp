#include "dist/tcp_group.h"

#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "dist/socket_io.h"

namespace ds {

struct TcpGroup::Link {
  net::Fd fd;
  std::mutex send_mu;             // rank's thread and abort() both send
  std::mutex recv_mu;             // held while a collective reads a frame: the watcher never peeks mid-frame
  std::string peer;               // "rank 3 (node 1)", "rank 0 (node 0 at host:port)"
  std::atomic<uint64_t> frames{0};  // frame headers read by the collectives (the watcher's cue)
  bool answered = false;          // start-up: node 0's answer read
};

namespace {

// Start-up (little-endian u32 fields): hello = "DSTG" version rank world nnodes len fingerprint[len];
// answer = "DSTA" status len bytes[len] (status 0: bytes are the payload; 1: a refusal, bytes its reason).
// Then frames: header {u32 op, u32 arg, u64 len} and, where the op carries data, len bytes.
constexpr char kHelloMagic[4] = {'D', 'S', 'T', 'G'}, kAnswerMagic[4] = {'D', 'S', 'T', 'A'};
constexpr uint32_t kVersion = 2, kOk = 0, kRefused = 1;
constexpr uint32_t kMaxHelloField = 1u << 20;
enum Op : uint32_t { kAllReduce = 1, kAllGather, kBroadcast, kBarrier, kResult, kAbort };

const char* op_name(uint32_t op) {
  switch (op) {
    case kAllReduce: return "all_reduce_sum";
    case kAllGather: return "all_gather";
    case kBroadcast: return "broadcast";
    case kBarrier: return "barrier";
    case kResult: return "a result";
    case kAbort: return "abort";
    default: return "an unknown operation";
  }
}

struct Header {
  uint32_t op = 0, arg = 0;
  uint64_t len = 0;
};

// The group was aborted by another rank: its reason.
struct RemoteAbort : Error {
  using Error::Error;
};

void put_u32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
}
uint32_t get_u32(int fd, net::Clock::time_point deadline, const std::string& peer) {
  uint8_t b[4];
  net::recv_all(fd, b, 4, deadline, peer);
  return uint32_t(b[0]) | uint32_t(b[1]) << 8 | uint32_t(b[2]) << 16 | uint32_t(b[3]) << 24;
}
void expect_magic(int fd, net::Clock::time_point deadline, const std::string& peer, const char (&magic)[4]) {
  char m[4];
  net::recv_all(fd, m, 4, deadline, peer);
  DS_CHECK(std::memcmp(m, magic, 4) == 0, "{} is not a deltaserve rank (bad greeting)", peer);
}
std::string get_bytes(int fd, uint64_t n, net::Clock::time_point deadline, const std::string& peer) {
  DS_CHECK(n <= kMaxHelloField, "{} sent a field of {} bytes", peer, n);
  std::string s(size_t(n), '\0');
  if (n) net::recv_all(fd, s.data(), size_t(n), deadline, peer);
  return s;
}
void answer(int fd, uint32_t status, const std::string& bytes, net::Clock::time_point deadline, const std::string& peer) {
  std::vector<uint8_t> b(kAnswerMagic, kAnswerMagic + 4);
  put_u32(b, status);
  put_u32(b, uint32_t(bytes.size()));
  b.insert(b.end(), bytes.begin(), bytes.end());
  net::send_all(fd, b.data(), b.size(), deadline, peer);
}

bool readable_now(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

void send_frame(TcpGroup::Link& l, Header h, const void* data) {
  std::lock_guard<std::mutex> lk(l.send_mu);
  net::send_all(l.fd.get(), &h, sizeof h, net::kNoDeadline, l.peer);
  if (data && h.len) net::send_all(l.fd.get(), data, size_t(h.len), net::kNoDeadline, l.peer);
}

// A header, or the other side's abort (its reason read and thrown).
Header recv_header(TcpGroup::Link& l) {
  Header h;
  net::recv_all(l.fd.get(), &h, sizeof h, net::kNoDeadline, l.peer);
  l.frames.fetch_add(1);
  if (h.op == kAbort) throw RemoteAbort(get_bytes(l.fd.get(), h.len, net::kNoDeadline, l.peer));
  return h;
}

}  // namespace

class TcpComm : public Communicator {
 public:
  TcpComm(TcpGroup& g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return g_.size(); }

  void all_reduce_sum(std::span<float> data) override {
    const uint64_t bytes = data.size_bytes();
    run([&] {
      if (rank_ != 0) return client(kAllReduce, 0, bytes, data.data(), data.data(), bytes);
      const auto in = hub_gather(kAllReduce, 0, bytes, [](int) { return true; });
      std::vector<float> sum(data.size(), 0.0f);  // rank order from 0.0f, as InProcessGroup
      for (int r = 0; r < size(); ++r) {
        const float* src = r == 0 ? data.data() : reinterpret_cast<const float*>(in[size_t(r)].data());
        for (size_t i = 0; i < sum.size(); ++i) sum[i] += src[i];
      }
      std::memcpy(data.data(), sum.data(), bytes);
      hub_answer(data.data(), bytes);
    });
  }

  void all_gather(std::span<const float> in, std::span<float> out) override {
    const uint64_t bytes = in.size_bytes();
    run([&] {
      DS_CHECK(out.size() == in.size() * size_t(size()), "all_gather: rank {} has room for {} elements, {} are needed",
               rank_, out.size(), in.size() * size_t(size()));
      if (rank_ != 0) return client(kAllGather, 0, bytes, in.data(), out.data(), out.size_bytes());
      const auto got = hub_gather(kAllGather, 0, bytes, [](int) { return true; });
      for (int r = 0; r < size(); ++r)
        if (bytes) std::memcpy(out.data() + size_t(r) * in.size(), r == 0 ? in.data() : (const void*)got[size_t(r)].data(), bytes);
      hub_answer(out.data(), out.size_bytes());
    });
  }

  void broadcast(std::span<std::byte> data, int root) override {
    const uint64_t bytes = data.size();
    run([&] {
      DS_CHECK(root >= 0 && root < size(), "broadcast: root {} is outside 0..{}", root, size() - 1);
      if (rank_ != 0) return client(kBroadcast, uint32_t(root), bytes, rank_ == root ? data.data() : nullptr, data.data(), bytes);
      const auto got = hub_gather(kBroadcast, uint32_t(root), bytes, [root](int r) { return r == root; });
      if (root != 0 && bytes) std::memcpy(data.data(), got[size_t(root)].data(), bytes);
      hub_answer(data.data(), bytes);
    });
  }

  void barrier() override {
    run([&] {
      if (rank_ != 0) return client(kBarrier, 0, 0, nullptr, nullptr, 0);
      hub_gather(kBarrier, 0, 0, [](int) { return false; });
      hub_answer(nullptr, 0);
    });
  }

 private:
  // A collective: the group's abort (here or anywhere) is an error; any failure aborts the group.
  template <typename F> void run(F&& f) {
    if (g_.aborted()) fail("communicator aborted: {}", g_.why());
    try {
      f();
    } catch (const RemoteAbort& a) {
      g_.abort(a.what());
      fail("communicator aborted: {}", a.what());
    } catch (const std::exception& e) {
      if (g_.aborted()) fail("communicator aborted: {}", g_.why());
      g_.abort(fmt::format("{}: {}", g_.peer_name(rank_), e.what()));
      throw Error(e.what());
    }
  }

  // A rank other than 0: its frame (with `send` when not null) to rank 0, then rank 0's result into `out`.
  void client(uint32_t op, uint32_t arg, uint64_t len, const void* send, void* out, uint64_t out_len) {
    TcpGroup::Link& l = *g_.up_[size_t(rank_ - g_.first_)];
    send_frame(l, {op, arg, len}, send);
    std::lock_guard<std::mutex> lk(l.recv_mu);
    const Header h = recv_header(l);
    DS_CHECK(h.op == kResult && h.len == out_len, "{}: rank 0 answered {} of {} bytes, {} expected", op_name(op),
             op_name(h.op), h.len, out_len);
    if (out_len) net::recv_all(l.fd.get(), out, size_t(out_len), net::kNoDeadline, l.peer);
  }

  // Rank 0: every other rank's frame of this collective, checked against rank 0's own; the data of the
  // ranks for which has_data(r), by rank. Reads whichever rank is ready (an abort from any rank is seen at once).
  template <typename HasData>
  std::vector<std::vector<uint8_t>> hub_gather(uint32_t op, uint32_t arg, uint64_t len, HasData has_data) {
    const int n = size();
    std::vector<std::vector<uint8_t>> data(static_cast<size_t>(n));
    std::vector<bool> done(size_t(n), false);
    int pending = n - 1;
    std::vector<pollfd> fds;
    std::vector<int> who;
    while (pending > 0) {
      fds.clear();
      who.clear();
      for (int r = 1; r < n; ++r)
        if (!done[size_t(r)]) {
          fds.push_back({g_.hub_[size_t(r)]->fd.get(), POLLIN, 0});
          who.push_back(r);
        }
      const int k = ::poll(fds.data(), fds.size(), -1);
      if (k < 0 && errno == EINTR) continue;
      DS_CHECK(k > 0, "poll failed: {}", std::strerror(errno));
      for (size_t i = 0; i < fds.size(); ++i) {
        if (!fds[i].revents) continue;
        const int r = who[i];
        TcpGroup::Link& l = *g_.hub_[size_t(r)];
        std::lock_guard<std::mutex> lk(l.recv_mu);
        const Header h = recv_header(l);
        DS_CHECK(h.op == op, "{} called {} while rank 0 called {}", l.peer, op_name(h.op), op_name(op));
        DS_CHECK(h.arg == arg, "{}: {} gave root {}, rank 0 {}", op_name(op), l.peer, h.arg, arg);
        DS_CHECK(h.len == len, "{}: {} gave {} bytes, rank 0 {}", op_name(op), l.peer, h.len, len);
        if (has_data(r) && len) {
          data[size_t(r)].resize(size_t(len));
          net::recv_all(l.fd.get(), data[size_t(r)].data(), size_t(len), net::kNoDeadline, l.peer);
        }
        done[size_t(r)] = true;
        --pending;
      }
    }
    return data;
  }

  void hub_answer(const void* data, uint64_t len) {
    for (int r = 1; r < size(); ++r) send_frame(*g_.hub_[size_t(r)], {kResult, 0, len}, data);
  }

  TcpGroup& g_;
  int rank_;
};

std::string TcpGroup::peer_name(int rank) const {
  return fmt::format("rank {} (node {})", rank, rank / local_);
}

void TcpGroup::read_answer(Link& l, net::Clock::time_point deadline) {
  expect_magic(l.fd.get(), deadline, l.peer, kAnswerMagic);
  const uint32_t status = get_u32(l.fd.get(), deadline, l.peer);
  const std::string bytes = get_bytes(l.fd.get(), get_u32(l.fd.get(), deadline, l.peer), deadline, l.peer);
  DS_CHECK(status == kOk, "{} refused node {}: {}", l.peer, cfg_.node_rank, bytes);
  l.answered = true;
  payload_.assign(bytes.begin(), bytes.end());
}

TcpGroup::TcpGroup(const TcpGroupConfig& c, const std::vector<uint8_t>& payload,
                   const std::function<void(int)>& on_listening)
    : cfg_(c) {
  DS_CHECK(c.world_size >= 1 && c.nnodes >= 1 && c.world_size % c.nnodes == 0,
           "--nnodes {} does not divide the group's {} ranks", c.nnodes, c.world_size);
  DS_CHECK(c.node_rank >= 0 && c.node_rank < c.nnodes, "--node-rank {} is not one of 0..{}", c.node_rank, c.nnodes - 1);
  local_ = c.world_size / c.nnodes;
  first_ = c.node_rank * local_;
  const auto deadline = net::deadline_in(c.timeout_s);
  const std::string where = fmt::format("{}:{}", c.master_addr, c.master_port);
  net::Fd listener;
  int port = c.master_port;
  if (first_ == 0) {
    listener = net::listen_on(c.master_port, &port, "--master-port");
    if (on_listening) on_listening(port);
  }
  // This process's ranks other than 0 connect and say hello (node 0's own to its loopback).
  up_.resize(size_t(local_));
  for (int r = std::max(first_, 1); r < first_ + local_; ++r) {
    auto l = std::make_unique<Link>();
    l->peer = first_ == 0 ? "rank 0 (node 0)" : fmt::format("rank 0 (node 0 at {})", where);
    // In slices of a second: between them, an earlier rank's link that is readable holds node 0's answer. A
    // refusal (node 0 then stops listening, so this connect could only time out) ends the wait with its reason.
    for (;;) {
      try {
        l->fd = net::connect_to(first_ == 0 ? "127.0.0.1" : c.master_addr, port,
                                std::min(deadline, net::deadline_in(1.0)), l->peer);
        break;
      } catch (const Error& e) {
        for (auto& prev : up_)
          if (prev && !prev->answered && readable_now(prev->fd.get())) read_answer(*prev, deadline);
        if (net::seconds_left(deadline) <= 0)
          fail("{} within {:g} s; is node 0 started with the same --master-addr and --master-port?", e.what(),
               c.timeout_s);
      }
    }
    std::vector<uint8_t> hello(kHelloMagic, kHelloMagic + 4);
    for (uint32_t v : {kVersion, uint32_t(r), uint32_t(c.world_size), uint32_t(c.nnodes), uint32_t(c.fingerprint.size())})
      put_u32(hello, v);
    hello.insert(hello.end(), c.fingerprint.begin(), c.fingerprint.end());
    net::send_all(l->fd.get(), hello.data(), hello.size(), deadline, l->peer);
    up_[size_t(r - first_)] = std::move(l);
  }
  if (first_ == 0) {  // rank 0: every other rank's hello, then everyone's answer
    hub_.resize(size_t(c.world_size));
    std::set<int> seen;
    while (int(seen.size()) + 1 < c.world_size) {
      if (!net::wait_fd(listener.get(), POLLIN, deadline)) {
        std::string missing;
        for (int r = 1; r < c.world_size; ++r)
          if (!seen.count(r)) missing += (missing.empty() ? "" : ", ") + peer_name(r);
        fail("timed out after {:g} s waiting for {} to join the group of {} ranks at port {}", c.timeout_s, missing,
             c.world_size, port);
      }
      net::Fd conn(::accept(listener.get(), nullptr, nullptr));
      if (!conn.valid()) continue;
      net::tune_stream(conn.get());
      // A hello within 10 s (a rank sends it as it connects); anything else that connects (a port probe, a
      // stray client) is dropped with a warning, not a failure of the group.
      const std::string peer = "a connecting rank";
      const auto hello_by = std::min(deadline, net::deadline_in(10.0));
      uint32_t version = 0, rank = 0, world = 0, nn = 0;
      std::string fp;
      try {
        expect_magic(conn.get(), hello_by, peer, kHelloMagic);
        version = get_u32(conn.get(), hello_by, peer);
        rank = get_u32(conn.get(), hello_by, peer);
        world = get_u32(conn.get(), hello_by, peer);
        nn = get_u32(conn.get(), hello_by, peer);
        fp = get_bytes(conn.get(), get_u32(conn.get(), hello_by, peer), hello_by, peer);
      } catch (const Error& e) {
        spdlog::warn("rank 0 at port {}: dropped a connection that is not a rank's hello ({})", port, e.what());
        continue;
      }
      std::string why;
      if (version != kVersion) why = fmt::format("protocol version {} (rank 0 speaks {})", version, kVersion);
      else if (int(world) != c.world_size) why = fmt::format("a group of {} ranks (rank 0's has {})", world, c.world_size);
      else if (int(nn) != c.nnodes) why = fmt::format("--nnodes {} (node 0 has --nnodes {})", nn, c.nnodes);
      else if (rank == 0 || rank >= uint32_t(c.world_size)) why = fmt::format("rank {} is not one of 1..{}", rank, c.world_size - 1);
      else if (seen.count(int(rank))) why = fmt::format("{} joined twice (the same --node-rank on two nodes?)", peer_name(int(rank)));
      else if (fp != c.fingerprint) why = fmt::format("a different model or layout ('{}'; node 0 runs '{}')", fp, c.fingerprint);
      if (!why.empty()) {
        answer(conn.get(), kRefused, why, deadline, peer);
        fail("{} refused: {}", rank < uint32_t(c.world_size) ? peer_name(int(rank)) : fmt::format("rank {}", rank), why);
      }
      seen.insert(int(rank));
      auto l = std::make_unique<Link>();
      l->fd = std::move(conn);
      l->peer = peer_name(int(rank));
      hub_[rank] = std::move(l);
    }
    const std::string bytes(payload.begin(), payload.end());
    for (int r = 1; r < c.world_size; ++r) answer(hub_[size_t(r)]->fd.get(), kOk, bytes, deadline, hub_[size_t(r)]->peer);
    payload_ = payload;
  }
  for (auto& l : up_)
    if (l && !l->answered) read_answer(*l, deadline);
  for (int r = first_; r < first_ + local_; ++r) comms_.push_back(std::make_unique<TcpComm>(*this, r));
}

TcpGroup::~TcpGroup() { watch({}); }

Communicator& TcpGroup::comm(int rank) {
  DS_CHECK(is_local(rank), "rank {} is not one of this process's ranks {}..{}", rank, first_, first_ + local_ - 1);
  return *comms_[size_t(rank - first_)];
}

bool TcpGroup::aborted() const {
  std::lock_guard<std::mutex> lk(mu_);
  return aborted_;
}

std::string TcpGroup::why() const {
  std::lock_guard<std::mutex> lk(mu_);
  return why_;
}

void TcpGroup::abort(const std::string& why) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (aborted_) return;
    aborted_ = true;
    why_ = why;
  }
  // Tell the other end of every connection this process holds (best effort: a link whose sender is busy, or
  // whose peer is gone, is only shut), then shut them, which wakes this process's ranks waiting in them.
  auto tell = [&](Link* l) {
    if (!l) return;
    std::unique_lock<std::mutex> lk(l->send_mu, std::try_to_lock);
    if (lk.owns_lock()) {
      try {
        const Header h{kAbort, 0, why.size()};
        const auto soon = net::deadline_in(2.0);
        net::send_all(l->fd.get(), &h, sizeof h, soon, l->peer);
        net::send_all(l->fd.get(), why.data(), why.size(), soon, l->peer);
      } catch (const std::exception&) {
      }
    }
    ::shutdown(l->fd.get(), SHUT_RDWR);
  };
  for (auto& l : hub_) tell(l.get());
  for (auto& l : up_) tell(l.get());
}

std::unique_ptr<TcpGroup> join_nodes(const ParallelConfig& p, const std::string& fingerprint,
                                     const std::vector<uint8_t>& payload, const std::string& what) {
  const int n = p.world_size(), first = p.first_local_rank();
  spdlog::info("{}: node {} of {} (ranks {}..{} of {}): {} at {}:{}", what, p.node_rank, p.nnodes, first,
               first + p.ranks_per_node() - 1, n, p.node_rank == 0 ? "waiting for the other nodes" : "joining node 0",
               p.master_addr, p.master_port);
  return std::make_unique<TcpGroup>(TcpGroupConfig{.master_addr = p.master_addr,
                                                   .master_port = p.master_port,
                                                   .world_size = n,
                                                   .nnodes = p.nnodes,
                                                   .node_rank = p.node_rank,
                                                   .timeout_s = p.join_timeout_s,
                                                   .fingerprint = fingerprint},
                                    payload);
}

void TcpGroup::expect_close() { closing_ = true; }

void TcpGroup::watch(std::function<void(const std::string&)> on_failure) {
  if (watcher_.joinable()) {
    stop_watch_ = true;
    watcher_.join();
  }
  stop_watch_ = false;
  if (!on_failure) return;
  on_failure_ = std::move(on_failure);
  watcher_ = std::thread([this] { watch_loop(); });
}

// Between (and during) collectives: a connection that closes or carries an Abort frame fails the group at once,
// so a rank waiting elsewhere (an NCCL kernel, an idle engine) hears of it. Frames are only peeked at: a normal
// one is left for its collective (and that link left alone until the collective has read it).
void TcpGroup::watch_loop() {
  std::vector<Link*> links;
  for (auto& l : hub_)
    if (l) links.push_back(l.get());
  for (auto& l : up_)
    if (l) links.push_back(l.get());
  // A link whose next frame waits for its collective (a worker's rank waits for the next step with its frame
  // sent) is only watched for its close (POLLRDHUP), until the collective has read the frame.
  std::vector<uint64_t> parked(links.size(), UINT64_MAX);  // frames count while a normal frame waits
  std::vector<bool> gone(links.size(), false), busy(links.size(), false);
  auto fail_with = [&](const std::string& why) {
    if (aborted()) return;
    abort(why);
    try {
      on_failure_(this->why());  // the group's reason (another thread's abort may have come first)
    } catch (const std::exception& e) {
      spdlog::error("the group's failure handler failed: {}", e.what());
    }
  };
  auto closed = [&](size_t i) {
    gone[i] = true;
    // after a Stop the peers go away: give this process's rank threads a moment to say so
    for (int k = 0; k < 20 && !closing_ && !stop_watch_; ++k) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (!closing_ && !stop_watch_) fail_with(fmt::format("{} closed the connection", links[i]->peer));
  };
  std::vector<pollfd> fds;
  std::vector<size_t> idx;
  while (!stop_watch_ && !aborted()) {
    fds.clear();
    idx.clear();
    bool any_busy = false;
    for (size_t i = 0; i < links.size(); ++i) {
      if (gone[i]) continue;
      // a link whose frame waits for its collective, or that a collective is reading: its close only
      const bool waiting = parked[i] == links[i]->frames.load() || busy[i];
      any_busy = any_busy || busy[i];
      busy[i] = false;
      fds.push_back({links[i]->fd.get(), short(waiting ? POLLRDHUP : (POLLIN | POLLRDHUP)), 0});
      idx.push_back(i);
    }
    if (fds.empty()) return;
    if (::poll(fds.data(), fds.size(), any_busy ? 5 : 100) <= 0) continue;
    for (size_t j = 0; j < fds.size() && !aborted() && !stop_watch_; ++j) {
      const short ev = fds[j].revents;
      if (!ev) continue;
      const size_t i = idx[j];
      Link& l = *links[i];
      std::unique_lock<std::mutex> reading(l.recv_mu, std::try_to_lock);
      if (!reading.owns_lock()) {  // a collective is reading it (and will hear of a close itself)
        busy[i] = true;
        continue;
      }
      const uint64_t before = l.frames.load();
      char buf[sizeof(Header) + 1024];
      const ssize_t m = ::recv(l.fd.get(), buf, sizeof buf, MSG_PEEK | MSG_DONTWAIT);
      reading.unlock();
      const bool hup = ev & (POLLRDHUP | POLLHUP | POLLERR);
      if (m >= ssize_t(sizeof(Header))) {
        Header h;
        std::memcpy(&h, buf, sizeof h);
        if (h.op == kAbort) {
          const size_t have = std::min<size_t>(size_t(m) - sizeof h, size_t(h.len));
          if (have < h.len && have < 1024 && !hup) continue;  // the reason is on its way
          fail_with(std::string(buf + sizeof h, have));
          continue;
        }
        if (!hup) {
          parked[i] = before;  // a frame for a collective
          continue;
        }
      }
      if (m == 0 || hup || (m < 0 && errno != EAGAIN && errno != EINTR)) closed(i);
      // else: the rest of a header is on its way
    }
  }
}

}  // namespace ds
