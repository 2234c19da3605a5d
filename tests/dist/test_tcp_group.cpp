// dist/tcp_group.h on this host's loopback, each "node" a TcpGroup of its own (as each process would hold):
// forming the group (node 0's payload to every rank; a different fingerprint, group size or a repeated node
// refused on both sides by name; nobody arriving or nobody listening a timeout naming what is missing), the
// collectives (the same bits as the in-process group, on every rank, over hundreds of rounds) and failures
// (sizes that differ, a process that goes away, an abort: an error on every rank of every process).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <future>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "dist/in_process.h"
#include "dist/socket_io.h"
#include "dist/tcp_group.h"

namespace ds::test {
namespace {

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TcpGroupConfig node(int k, int nnodes, int world, int port, double timeout = 20) {
  TcpGroupConfig c;
  c.master_addr = "127.0.0.1";
  c.master_port = port;
  c.world_size = world;
  c.nnodes = nnodes;
  c.node_rank = k;
  c.timeout_s = timeout;
  c.fingerprint = "kimi tiny TP " + std::to_string(world);
  return c;
}

// Node 0 on a free port in a thread; returns once it listens (the port in *port).
std::future<std::unique_ptr<TcpGroup>> node0_async(TcpGroupConfig c, std::vector<uint8_t> payload, int* port) {
  auto bound = std::make_shared<std::promise<int>>();
  auto got = bound->get_future();
  auto f = std::async(std::launch::async, [c, payload, bound] {
    bool listening = false;
    try {
      return std::make_unique<TcpGroup>(c, payload, [&](int p) {
        listening = true;
        bound->set_value(p);
      });
    } catch (...) {
      if (!listening) bound->set_exception(std::current_exception());  // no caller waits forever
      throw;
    }
  });
  *port = got.get();
  return f;
}

// A whole group: nnodes TcpGroups of world / nnodes ranks each.
std::vector<std::unique_ptr<TcpGroup>> form(int world, int nnodes, const std::vector<uint8_t>& payload = {}) {
  int port = 0;
  auto zero = node0_async(node(0, nnodes, world, 0), payload, &port);
  std::vector<std::future<std::unique_ptr<TcpGroup>>> others;
  for (int k = nnodes - 1; k >= 1; --k)  // in any order
    others.push_back(std::async(std::launch::async, [=] { return std::make_unique<TcpGroup>(node(k, nnodes, world, port)); }));
  std::vector<std::unique_ptr<TcpGroup>> g;
  g.push_back(zero.get());
  for (auto it = others.rbegin(); it != others.rend(); ++it) g.push_back(it->get());
  return g;
}

// fn(rank, comm) on every rank of every node, each on a thread of its own; the first error rethrown.
template <typename F> void on_every_rank(std::vector<std::unique_ptr<TcpGroup>>& nodes, F fn) {
  std::vector<std::future<void>> f;
  for (auto& n : nodes)
    for (int r = n->first_local(); r < n->first_local() + n->local_size(); ++r)
      f.push_back(std::async(std::launch::async, [&, r, g = n.get()] { fn(r, g->comm(r)); }));
  for (auto& x : f) x.get();
}

TEST(TcpGroup, EveryRankOfEveryNodeGetsNodeZerosPayload) {
  const std::vector<uint8_t> payload = {1, 2, 3, 250, 0, 7};
  for (auto [world, nnodes] : {std::pair{4, 4}, std::pair{4, 2}, std::pair{8, 2}, std::pair{2, 1}}) {
    auto g = form(world, nnodes, payload);
    ASSERT_EQ(int(g.size()), nnodes);
    for (int k = 0; k < nnodes; ++k) {
      EXPECT_EQ(g[size_t(k)]->payload(), payload);
      EXPECT_EQ(g[size_t(k)]->first_local(), k * world / nnodes);
      EXPECT_EQ(g[size_t(k)]->local_size(), world / nnodes);
    }
    EXPECT_THROW(g[0]->comm(world / nnodes), Error);  // another node's rank
  }
}

TEST(TcpGroup, CollectivesGiveTheInProcessGroupsBitsOnEveryRank) {
  for (auto [world, nnodes] : {std::pair{3, 3}, std::pair{4, 2}, std::pair{2, 2}}) {
    SCOPED_TRACE(std::to_string(world) + " ranks over " + std::to_string(nnodes) + " nodes");
    auto tcp = form(world, nnodes);
    InProcessGroup ref(world);
    // Per rank, rounds of: all_reduce (lengths that do not divide), all_gather, broadcast from a rotating root, barrier.
    auto script = [world](int r, Communicator& c, std::vector<std::vector<float>>& out) {
      std::mt19937 rng(1234u + unsigned(r));
      std::normal_distribution<float> d(0.0f, 1e3f);
      for (int round = 0; round < 120; ++round) {
        std::vector<float> x(size_t(1 + round % 37));
        for (float& v : x) v = d(rng);
        c.all_reduce_sum(x);
        out.push_back(x);
        std::vector<float> in(size_t(round % 5), float(r * 1000 + round)), all(in.size() * size_t(world));
        c.all_gather(in, all);
        out.push_back(all);
        std::vector<float> b(7, float(r));
        c.broadcast(std::as_writable_bytes(std::span<float>(b)), round % world);
        out.push_back(b);
        c.barrier();
      }
    };
    std::vector<std::vector<std::vector<float>>> got(static_cast<size_t>(world)), want(static_cast<size_t>(world));
    on_every_rank(tcp, [&](int r, Communicator& c) { script(r, c, got[size_t(r)]); });
    std::vector<std::future<void>> f;
    for (int r = 0; r < world; ++r)
      f.push_back(std::async(std::launch::async, [&, r] { script(r, ref.comm(r), want[size_t(r)]); }));
    for (auto& x : f) x.get();
    for (int r = 0; r < world; ++r) {
      ASSERT_EQ(got[size_t(r)].size(), want[size_t(r)].size());
      for (size_t i = 0; i < got[size_t(r)].size(); ++i)  // bit for bit (the same rank order from 0.0f)
        ASSERT_EQ(got[size_t(r)][i], want[size_t(r)][i]) << "rank " << r << " result " << i;
      EXPECT_EQ(got[size_t(r)], got[0]) << "rank " << r << " differs from rank 0";
    }
  }
}

TEST(TcpGroup, BroadcastOnLocalRanksReachesEveryRankOfEveryNode) {
  auto g = form(6, 3);
  std::vector<std::vector<uint8_t>> got(3);
  got[0] = {4, 8, 15, 16, 23, 42};
  std::vector<std::future<void>> f;
  for (int k = 0; k < 3; ++k)  // each node (process) calls it once for its ranks
    f.push_back(std::async(std::launch::async, [&, k] { broadcast_on_local_ranks(*g[size_t(k)], got[size_t(k)]); }));
  for (auto& x : f) x.get();
  for (int k = 1; k < 3; ++k) EXPECT_EQ(got[size_t(k)], got[0]) << "node " << k;
  // an in-process group: every rank is local
  InProcessGroup one(3);
  std::vector<uint8_t> bytes = {1, 2, 3};
  broadcast_on_local_ranks(one, bytes);
  EXPECT_EQ(bytes, (std::vector<uint8_t>{1, 2, 3}));
}

// A port probe or stray client at node 0's port (it connects and closes, or says something else) is dropped
// with a warning; the ranks then form the group as usual.
TEST(TcpGroup, AStrayConnectionIsDroppedNotFatal) {
  int port = 0;
  auto zero = node0_async(node(0, 2, 2, 0), {5}, &port);
  net::connect_to("127.0.0.1", port, net::deadline_in(5), "node 0");  // closed at once
  {
    net::Fd junk = net::connect_to("127.0.0.1", port, net::deadline_in(5), "node 0");
    const char hello[] = "GET / HTTP/1.0\r\n\r\n";
    net::send_all(junk.get(), hello, sizeof hello - 1, net::deadline_in(5), "node 0");
  }
  TcpGroup one(node(1, 2, 2, port));
  EXPECT_EQ(one.payload(), std::vector<uint8_t>{5});
  EXPECT_EQ(zero.get()->payload(), std::vector<uint8_t>{5});
}

// The watcher: a peer process that goes away while nobody is in a collective (an idle engine, a rank in an
// NCCL kernel) fails the group at once, with the reason; an Abort from a peer likewise; after expect_close()
// a peer going away is no failure.
TEST(TcpGroup, TheWatcherHearsOfAPeerBetweenCollectives) {
  auto wait_for = [](std::atomic<bool>& flag, double s) {
    for (int i = 0; i < int(s * 100) && !flag; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return flag.load();
  };
  {
    std::atomic<bool> called{false};  // (before the group: its watcher may still run while it is destroyed)
    std::string why;
    auto g = form(4, 2);
    g[0]->watch([&](const std::string& w) {
      why = w;
      called = true;
    });
    on_every_rank(g, [&](int, Communicator& c) {  // one collective, then nobody is in one
      std::vector<float> x(2, 1.0f);
      c.all_reduce_sum(x);
    });
    g[1].reset();  // node 1 goes away between collectives
    ASSERT_TRUE(wait_for(called, 5)) << "the watcher did not notice";
    EXPECT_TRUE(has(why, "(node 1) closed the connection")) << why;
    EXPECT_TRUE(g[0]->aborted());
    std::vector<float> y(1);
    EXPECT_THROW(g[0]->comm(0).all_reduce_sum(y), Error);
  }
  {
    std::atomic<bool> called{false};
    std::string why;
    auto g = form(2, 2);
    g[1]->watch([&](const std::string& w) {
      why = w;
      called = true;
    });
    g[0]->abort("rank 0: the engine stopped");  // node 1's ranks are in no collective
    ASSERT_TRUE(wait_for(called, 5));
    EXPECT_EQ(why, "rank 0: the engine stopped");
  }
  {
    std::atomic<bool> called{false};
    auto g = form(2, 2);
    g[0]->watch([&](const std::string&) { called = true; });
    g[0]->expect_close();
    g[1].reset();
    EXPECT_FALSE(wait_for(called, 1.5)) << "a stopped group's peers going away is no failure";
    EXPECT_FALSE(g[0]->aborted());
  }
}

TEST(TcpGroup, AMismatchIsRefusedOnBothSidesByName) {
  int port = 0;
  auto zero = node0_async(node(0, 2, 2, 0), {9}, &port);
  TcpGroupConfig other = node(1, 2, 2, port);
  other.fingerprint = "kimi tiny TP 2 fp8";
  try {
    TcpGroup g(other);
    ADD_FAILURE() << "a different fingerprint was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "refused node 1") && has(e.what(), "kimi tiny TP 2 fp8") && has(e.what(), "'kimi tiny TP 2'"))
        << e.what();
  }
  try {
    zero.get();
    ADD_FAILURE() << "node 0 went on";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "rank 1 (node 1) refused")) << e.what();
  }
  // a group of another size
  auto zero2 = node0_async(node(0, 2, 2, 0), {}, &port);
  try {
    TcpGroup g(node(1, 2, 4, port));
    ADD_FAILURE() << "a group of 4 joined one of 2";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "a group of 4 ranks (rank 0's has 2)")) << e.what();
  }
  EXPECT_THROW(zero2.get(), Error);
}

// A node of two ranks whose second rank cannot connect (node 0's accept queue is full, then node 0 stops
// listening) still hears node 0's refusal of its first rank at once, not a connect timeout. Node 0 here is
// a listener of the test's own with a backlog of 0 (Linux queues one connection), so the order is fixed.
TEST(TcpGroup, ARefusalReachesANodeWhoseLaterRankCannotConnect) {
  std::atomic<int> port{0};
  auto fake = std::async(std::launch::async, [&port] {
    net::Fd ls(::socket(AF_INET, SOCK_STREAM, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    const bool ok = ::bind(ls.get(), reinterpret_cast<sockaddr*>(&a), len) == 0 && ::listen(ls.get(), 0) == 0 &&
                    ::getsockname(ls.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0;
    port = ok ? int(ntohs(a.sin_port)) : -1;
    port.notify_all();
    if (!ok) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // rank 2 queued, rank 3's SYN dropped
    net::Fd first(::accept(ls.get(), nullptr, nullptr));
    ls = net::Fd();  // stops listening: rank 3 can only be refused from now on
    char hello[24];  // "DSTG" version rank world nnodes len (the fingerprint after it is not read)
    net::recv_all(first.get(), hello, sizeof hello, net::deadline_in(5), "rank 2");
    const std::string why = "no room for you";
    std::vector<uint8_t> answer = {'D', 'S', 'T', 'A', 1, 0, 0, 0, uint8_t(why.size()), 0, 0, 0};
    answer.insert(answer.end(), why.begin(), why.end());
    net::send_all(first.get(), answer.data(), answer.size(), net::deadline_in(5), "rank 2");
    std::this_thread::sleep_for(std::chrono::milliseconds(2000));  // node 1 reads it before the close
    return true;
  });
  port.wait(0);
  ASSERT_GT(port.load(), 0) << "no loopback listener";
  const auto start = std::chrono::steady_clock::now();
  try {
    TcpGroup g(node(1, 2, 4, port.load(), 10));
    ADD_FAILURE() << "joined a node 0 that refused it";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "refused node 1: no room for you")) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
  EXPECT_TRUE(fake.get());
}

TEST(TcpGroup, ARepeatedNodeIsRefused) {
  int port = 0;
  auto zero = node0_async(node(0, 3, 3, 0, 5), {}, &port);
  // Two node 1s: whichever arrives second is refused by name, the other hears node 0 close (on a loaded machine
  // the one started first need not arrive first).
  auto join = [port] {
    try {
      TcpGroup g(node(1, 3, 3, port, 5));
      return std::string("accepted");
    } catch (const Error& e) {
      return std::string(e.what());
    }
  };
  auto first = std::async(std::launch::async, join);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  auto second = std::async(std::launch::async, join);
  const std::string a = first.get(), b = second.get();
  EXPECT_TRUE(has(a, "rank 1 (node 1) joined twice") != has(b, "rank 1 (node 1) joined twice")) << a << "\n" << b;
  EXPECT_TRUE(has(a, "closed the connection") || has(b, "closed the connection")) << a << "\n" << b;
  EXPECT_THROW(zero.get(), Error);
}

TEST(TcpGroup, TimeoutsNameWhatIsMissing) {
  try {
    TcpGroup g(node(0, 3, 6, 0, 0.3));
    ADD_FAILURE() << "node 0 formed a group with nobody there";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "timed out") && has(e.what(), "rank 2 (node 1), rank 3 (node 1), rank 4 (node 2)"))
        << e.what();
  }
  int port = 0;
  {
    TcpGroup alone(node(0, 1, 1, 0), {}, [&](int p) { port = p; });  // a port that was free a moment ago
  }
  try {
    TcpGroup g(node(1, 2, 2, port, 0.5));
    ADD_FAILURE() << "joined nobody";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "could not reach rank 0 (node 0 at 127.0.0.1:" + std::to_string(port))) << e.what();
  }
}

TEST(TcpGroup, MismatchedSizesAbortTheGroupOnEveryRank) {
  auto g = form(4, 2);
  std::vector<std::string> errors(4);
  on_every_rank(g, [&](int r, Communicator& c) {
    std::vector<float> x(r == 3 ? 5 : 4, 1.0f);
    try {
      c.all_reduce_sum(x);
    } catch (const Error& e) {
      errors[size_t(r)] = e.what();
    }
    try {
      c.barrier();
      errors[size_t(r)] += " | barrier went on";
    } catch (const Error& e) {
      errors[size_t(r)] += std::string(" | ") + e.what();
    }
  });
  for (int r = 0; r < 4; ++r) {
    EXPECT_TRUE(has(errors[size_t(r)], "rank 3 (node 1) gave 20 bytes, rank 0 16")) << r << ": " << errors[size_t(r)];
    EXPECT_TRUE(has(errors[size_t(r)], "| communicator aborted")) << r << ": " << errors[size_t(r)];
  }
  EXPECT_TRUE(g[0]->aborted() && g[1]->aborted());
}

TEST(TcpGroup, AProcessThatGoesAwayOrAbortsIsAnErrorOnEveryOtherRank) {
  {  // node 1 goes away while node 0's ranks wait in a collective
    auto g = form(4, 2);
    std::vector<std::future<std::string>> waiting;
    for (int r : {0, 1})
      waiting.push_back(std::async(std::launch::async, [&, r] {
        std::vector<float> x(3, 1.0f);
        try {
          g[0]->comm(r).all_reduce_sum(x);
        } catch (const Error& e) {
          return std::string(e.what());
        }
        return std::string("returned");
      }));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    g[1].reset();  // its connections close
    for (auto& w : waiting) {
      const std::string e = w.get();
      EXPECT_TRUE(has(e, "(node 1) closed the connection")) << e;
    }
  }
  {  // abort on node 1 (a rank failed there): node 0's waiting rank gets its reason
    auto g = form(2, 2);
    auto waiting = std::async(std::launch::async, [&] {
      std::vector<float> x(3, 1.0f);
      try {
        g[0]->comm(0).all_reduce_sum(x);
      } catch (const Error& e) {
        return std::string(e.what());
      }
      return std::string("returned");
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    g[1]->abort("rank 1: out of memory");
    const std::string e = waiting.get();
    EXPECT_TRUE(has(e, "communicator aborted: rank 1: out of memory")) << e;
    std::vector<float> x(1);
    EXPECT_THROW(g[1]->comm(1).all_reduce_sum(x), Error);
  }
}

}  // namespace
}  // namespace ds::test
