// dist/node_rendezvous.h on this host's loopback: node 0 hands its payload to every other node once all have
// said hello with its fingerprint; a different fingerprint, node count or a repeated node rank is refused on
// both sides by name; nobody arriving, or nobody listening, is a timeout that names what is missing.
#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "core/error.h"
#include "dist/node_rendezvous.h"

namespace ds::test {
namespace {

bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Node 0 on a free port in a thread; returns once it listens (the port in *port).
std::future<void> serve_async(RendezvousConfig c, std::string fp, std::vector<uint8_t> payload, int* port) {
  std::promise<int> bound;
  auto got = bound.get_future();
  auto f = std::async(std::launch::async, [c, fp, payload, b = std::move(bound)]() mutable {
    rendezvous_serve(c, fp, payload, [&](int p) { b.set_value(p); });
  });
  *port = got.get();
  return f;
}

RendezvousConfig node(int rank, int nnodes, int port, double timeout = 10) {
  RendezvousConfig c;
  c.master_addr = "127.0.0.1";
  c.master_port = port;
  c.nnodes = nnodes;
  c.node_rank = rank;
  c.timeout_s = timeout;
  return c;
}

TEST(Rendezvous, EveryNodeGetsNodeZerosPayload) {
  const std::vector<uint8_t> payload = {1, 2, 3, 250, 0, 7};
  int port = 0;
  auto server = serve_async(node(0, 4, 0), "kimi tp4 bf16", payload, &port);
  std::vector<std::future<std::vector<uint8_t>>> joins;
  for (int k : {3, 1, 2})  // any arrival order
    joins.push_back(std::async(std::launch::async, [k, port] { return rendezvous_join(node(k, 4, port), "kimi tp4 bf16"); }));
  for (auto& j : joins) EXPECT_EQ(j.get(), payload);
  EXPECT_NO_THROW(server.get());
}

TEST(Rendezvous, AMismatchIsRefusedOnBothSidesByName) {
  int port = 0;
  auto server = serve_async(node(0, 2, 0), "kimi tp2 bf16", {9}, &port);
  try {
    rendezvous_join(node(1, 2, port), "kimi tp2 fp8");
    ADD_FAILURE() << "a different fingerprint was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "refused node 1") && has(e.what(), "kimi tp2 fp8") && has(e.what(), "kimi tp2 bf16"))
        << e.what();
  }
  try {
    server.get();
    ADD_FAILURE() << "node 0 went on";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "node 1 refused")) << e.what();
  }
  // a node count that differs
  auto server2 = serve_async(node(0, 2, 0), "m", {9}, &port);
  EXPECT_THROW(rendezvous_join(node(1, 3, port), "m"), Error);
  EXPECT_THROW(server2.get(), Error);
}

TEST(Rendezvous, ARepeatedNodeRankIsRefused) {
  int port = 0;
  auto server = serve_async(node(0, 3, 0, 5), "m", {9}, &port);
  auto first = std::async(std::launch::async, [port] { return rendezvous_join(node(1, 3, port), "m"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // node 1 arrives first
  try {
    rendezvous_join(node(1, 3, port), "m");
    ADD_FAILURE() << "a repeated node rank was accepted";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "--node-rank 1 was already given")) << e.what();
  }
  EXPECT_THROW(server.get(), Error);
  EXPECT_THROW(first.get(), Error);  // node 0 gave up: the first node 1 hears it close
}

TEST(Rendezvous, TimeoutsNameWhatIsMissing) {
  try {
    rendezvous_serve(node(0, 3, 0, 0.3), "m", {1});
    ADD_FAILURE() << "node 0 returned with nobody there";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "timed out") && has(e.what(), "node(s) 1, 2 of 3")) << e.what();
  }
  // nobody listens: a port that was free a moment ago
  int port = 0;
  {
    auto s = serve_async(node(0, 1, 0), "m", {}, &port);  // one node: returns at once, releasing the port
    s.get();
  }
  try {
    rendezvous_join(node(1, 2, port, 0.5), "m");
    ADD_FAILURE() << "joined nobody";
  } catch (const Error& e) {
    EXPECT_TRUE(has(e.what(), "could not reach node 0 at 127.0.0.1:" + std::to_string(port))) << e.what();
  }
}

}  // namespace
}  // namespace ds::test
