// `deltaserve serve`: load a model, start the engine and serve the OpenAI-compatible API until
// SIGINT/SIGTERM (then drain: requests in progress are answered, new ones refused; a second
// signal cancels what is left).
#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <thread>

#include "apps/commands.h"
#include "apps/serve_args.h"
#include "apps/serving_stack.h"
#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "engine/backend_factory.h"
#include "engine/engine.h"
#include "hub/hub_download.h"
#include "server/stats_log.h"
#include "server/engine_client.h"
#include "server/openai_server.h"

namespace ds::cli {
namespace {

// SIGINT/SIGTERM are blocked in every thread and taken synchronously by the main thread.
sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

int wait_signal(const sigset_t& set, int timeout_ms) {
  timespec ts{timeout_ms / 1000, long(timeout_ms % 1000) * 1000000L};
  return sigtimedwait(&set, nullptr, &ts);
}

// A node above 0 of a multi-node group (--node-rank): its ranks only, until node 0 stops them.
void run_worker_node(ServeArgs a) {
  if (a.threads > 0) set_num_threads(a.threads);
  a.model_dir = hub::resolve_model(a.model, a.vllm.revision, hub_env(a));
  EngineOptions eo = engine_options(a);
  const ParallelConfig& p = eo.backend.parallel;
  spdlog::info("node {} of {}: ranks {}..{} of {} ({}); no engine and no API server here: node 0 at {}:{} runs them",
               p.node_rank, p.nnodes, p.first_local_rank(), p.first_local_rank() + p.ranks_per_node() - 1,
               p.world_size(), p.describe(), p.master_addr, p.master_port);
  auto t0 = std::chrono::steady_clock::now();
  auto backend = create_backend(eo.backend);
  spdlog::info("loaded in {:.1f} s on {}; joined node 0",
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), backend->device_name());
  backend->run_worker_node();
  spdlog::info("node 0 stopped the group");
}

void run_serve(ServeArgs a) {
  prepare_serve(a);
  // A worker node: a signal ends it at once (its connections close; node 0's group fails its steps, naming it).
  if (a.vllm.node_rank > 0) return run_worker_node(std::move(a));
  const sigset_t sigs = stop_signals();
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // before any thread starts: they inherit the mask
  if (a.threads > 0) set_num_threads(a.threads);

  ServingStack st = load_serving_stack(a);
  Engine& engine = *st.engine;
  const server::ServerOptions& so = st.options;
  server::OpenAIServer srv(so, *st.client, st.tokenizer);
  srv.start();
  spdlog::info("serving model '{}' on http://{}:{} (OpenAI API under /v1{})", so.model_names.front(), a.host,
               srv.port(), a.api_key.empty() ? "" : ", API key required");

  int sig = 0;
  server::StatsLogger stats(std::chrono::duration<double>(a.stats_interval), std::chrono::steady_clock::now());
  const int wait_ms = std::clamp(int(a.stats_interval * 1000), 100, 1000);
  while ((sig = wait_signal(sigs, wait_ms)) < 0) {
    if (a.vllm.disable_log_stats) continue;
    if (auto line = stats.tick(engine.stats(), std::chrono::steady_clock::now())) spdlog::info("{}", *line);
  }
  spdlog::info("received {}: draining (new requests get 503; {} in progress); a second signal cancels them",
               sig == SIGINT ? "SIGINT" : "SIGTERM", srv.requests_in_progress());
  auto grace = std::chrono::milliseconds(int64_t(a.shutdown_timeout * 1000));
  std::thread stopper([&] { srv.shutdown(grace); });
  std::atomic<bool> stopped{false};
  std::thread waiter([&] {
    stopper.join();
    stopped = true;
  });
  while (!stopped) {
    if (wait_signal(sigs, 100) > 0) {
      spdlog::warn("second signal: cancelling the requests in progress");
      srv.cancel_all();
    }
  }
  waiter.join();
  engine.drain();
  spdlog::info("stopped");
}

}  // namespace

void register_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand("serve", "Serve a model over the OpenAI-compatible HTTP API");
  add_serve_options(*cmd, *a);
  cmd->callback([a] { run_serve(*a); });
}

}  // namespace ds::cli
