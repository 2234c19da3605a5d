// `deltaserve serve`: load a model, start the engine and serve the OpenAI-compatible API until
// SIGINT/SIGTERM (then drain: requests in progress are answered, new ones refused; a second
// signal cancels what is left).
#include <pthread.h>

#include <csignal>
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
#include "server/engine_client.h"
#include "server/openai_server.h"
#include "tokenizer/tokenizer.h"

namespace ds::cli {
namespace {

namespace fs = std::filesystem;

std::string tokenizer_dir(const ServeArgs& a) {
  if (!a.tokenizer.empty()) {
    DS_CHECK(fs::exists(fs::path(a.tokenizer) / "tiktoken.model"), "--tokenizer {}: no tiktoken.model there",
             a.tokenizer);
    return a.tokenizer;
  }
  DS_CHECK(fs::exists(fs::path(a.model) / "tiktoken.model"),
           "the model directory {} has no tokenizer files (tiktoken.model, tokenizer_config.json); "
           "pass --tokenizer DIR",
           a.model);
  return a.model;
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

void run_serve(const ServeArgs& a) {
  validate_serve_args(a);
  if (!a.log_level.empty()) {
    auto lvl = spdlog::level::from_str(a.log_level);
    if (lvl == spdlog::level::off && a.log_level != "off") fail("unknown log level '{}'", a.log_level);
    spdlog::set_level(lvl);
  }
  const sigset_t sigs = stop_signals();
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);  // before any thread starts: they inherit the mask
  if (a.threads > 0) set_num_threads(a.threads);

  DS_CHECK(fs::is_directory(a.model), "--model {}: not a directory", a.model);
  std::string tok_dir = tokenizer_dir(a);
  ModelConfig cfg = ModelConfig::from_file((fs::path(a.model) / "config.json").string());
  spdlog::info("model {}: {}", a.model, cfg.summary());
  spdlog::info("loading tokenizer from {}", tok_dir);
  std::shared_ptr<const Tokenizer> tok = Tokenizer::from_dir(tok_dir);
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
  server::OpenAIServer srv(so, *client, tok);
  srv.start();
  spdlog::info("serving model '{}' on http://{}:{} (OpenAI API under /v1{})", so.model_names.front(), a.host,
               srv.port(), a.api_key.empty() ? "" : ", API key required");

  int sig = 0;
  while ((sig = wait_signal(sigs, 1000)) < 0) {
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
