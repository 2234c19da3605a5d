// `deltaserve serve`: load a model, start the engine and serve the OpenAI-compatible API until
// SIGINT/SIGTERM (then drain: requests in progress are answered, new ones refused; a second
// signal cancels what is left).
#include <pthread.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "apps/commands.h"
#include "apps/serve_args.h"
#include "config/model_config.h"
#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "engine/backend_factory.h"
#include "engine/engine.h"
#include "hub/hub_download.h"
#include "server/stats_log.h"
#include "server/engine_client.h"
#include "server/openai_server.h"
#include "tokenizer/tokenizer.h"

namespace ds::cli {
namespace {

namespace fs = std::filesystem;

std::shared_ptr<const Tokenizer> load_tokenizer(const std::string& dir, const std::string& chat_template) {
  if (chat_template.empty()) return Tokenizer::from_dir(dir);
  const fs::path config = fs::path(dir) / "tokenizer_config.json";
  spdlog::info("chat template from {}", chat_template);
  return Tokenizer::from_files((fs::path(dir) / "tiktoken.model").string(),
                               fs::exists(config) ? config.string() : std::string(), chat_template);
}

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
  set_log_format(a.log_format);
  validate_serve_args(a);
  std::string level = a.log_level;
  if (level.empty() && !a.vllm.uvicorn_log_level.empty())
    level = a.vllm.uvicorn_log_level == "warning" ? "warn" : a.vllm.uvicorn_log_level;  // spdlog's names
  if (!level.empty()) {
    auto lvl = spdlog::level::from_str(level);
    if (lvl == spdlog::level::off && level != "off") fail("unknown log level '{}'", level);
    spdlog::set_level(lvl);
  }
  for (const std::string& line : ignored_flag_messages(a.vllm)) spdlog::info("{}", line);
  if (a.vllm.enforce_eager) {  // read once, when the CUDA backend starts (config/runtime_env.h)
    ::setenv("DELTASERVE_CUDA_GRAPHS", "0", 1);
    spdlog::info("--enforce-eager: CUDA graphs off, decode steps run eagerly");
  }
  // A worker node: a signal ends it at once (its connections close; node 0's group fails its steps, naming it).
  if (a.vllm.node_rank > 0) return run_worker_node(std::move(a));
  const sigset_t sigs = stop_signals();
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // before any thread starts: they inherit the mask
  if (a.threads > 0) set_num_threads(a.threads);

  a.model_dir = hub::resolve_model(a.model, a.vllm.revision, hub_env(a));
  std::string tok_dir = check_model_dirs(a.model_dir, a.tokenizer);
  ModelConfig cfg = ModelConfig::from_file((fs::path(a.model_dir) / "config.json").string());
  spdlog::info("model {}: {}", a.model, cfg.summary());
  spdlog::info("loading tokenizer from {}", tok_dir);
  std::shared_ptr<const Tokenizer> tok = load_tokenizer(tok_dir, a.vllm.chat_template);
  tok->check_vocab(cfg.vocab_size);

  EngineOptions eo = engine_options(a);
  spdlog::info("loading weights on {} (load format {}, {} threads)", a.device, a.load_format, num_threads());
  auto t0 = std::chrono::steady_clock::now();
  auto backend = create_backend(eo.backend);
  spdlog::info("loaded in {:.1f} s on {}", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               backend->device_name());
  Engine engine(std::move(backend), tok, eo);
  const BackendLimits geo = engine.backend_limits();
  spdlog::info("cache: {} KDA state slots, {} MLA pages x {} tokens = {} latent tokens; max_model_len {}",
               geo.num_state_slots, geo.num_blocks, geo.block_size, int64_t(geo.num_blocks) * geo.block_size,
               engine.max_model_len());

  auto client = server::make_engine_client(engine);
  server::ServerOptions so = server_options(a);
  std::string gen_file;
  so.sampling_defaults = server::load_sampling_defaults(a.vllm.generation_config, a.model_dir,
                                                         a.vllm.override_generation_config, &gen_file);
  so.sampling_defaults.tokens_as_ids = a.vllm.tokens_as_ids;
  so.sampling_defaults.max_logprobs = a.vllm.max_logprobs;
  if (!so.sampling_defaults.empty()) {
    std::string from = gen_file;
    if (!a.vllm.override_generation_config.empty())
      from += (from.empty() ? "" : " and ") + std::string("--override-generation-config");
    spdlog::info("sampling defaults for fields a request leaves out: {} (from {}); a request's own values win",
                 so.sampling_defaults.describe(), from);
  }
  so.metrics.cache_config = {{"block_size", std::to_string(geo.block_size)},
                             {"cache_dtype", "auto"},
                             {"gpu_memory_utilization", fmt::format("{}", a.gpu_memory_utilization)},
                             {"num_gpu_blocks", std::to_string(geo.num_blocks)},
                             {"num_state_slots", std::to_string(geo.num_state_slots)},
                             {"max_model_len", std::to_string(engine.max_model_len())}};
  server::OpenAIServer srv(so, *client, tok);
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
