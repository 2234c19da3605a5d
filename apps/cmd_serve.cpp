// `deltaserve serve`: load a model, start the engine and serve the OpenAI-compatible API until
// SIGINT/SIGTERM (then drain: requests in progress are answered, new ones refused; a second
// signal cancels what is left).
#include <pthread.h>

#include <csignal>
#include <filesystem>
#include <thread>

#include "apps/commands.h"
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

struct ServeArgs {
  std::string model, tokenizer, device = "cpu", host = "127.0.0.1", api_key, load_format = "auto", dtype = "auto";
  std::vector<std::string> served_model_names;
  int port = 8000;
  int64_t max_model_len = 0;
  int max_num_seqs = 64, max_num_batched_tokens = 2048, block_size = 16, max_queue = 1024, threads = 0;
  int http_threads = 2;
  int64_t kv_cache_tokens = 0;
  double gpu_memory_utilization = 0.9;
  size_t max_request_bytes = 32u << 20;
  double shutdown_timeout = 30.0;
  std::string log_level;
  bool chat_template_specials_in_content = false;
};

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

  EngineOptions eo;
  eo.backend.device = a.device;
  eo.backend.model_dir = a.model;
  eo.backend.load_format = a.load_format;
  eo.backend.dtype = a.dtype;
  eo.backend.max_num_seqs = a.max_num_seqs;
  eo.backend.max_model_len = a.max_model_len;
  eo.backend.block_size = a.block_size;
  eo.backend.gpu_memory_utilization = a.gpu_memory_utilization;
  eo.backend.kv_cache_tokens = a.kv_cache_tokens;
  eo.max_num_seqs = a.max_num_seqs;
  eo.max_num_batched_tokens = a.max_num_batched_tokens;
  eo.max_model_len = a.max_model_len;
  eo.max_waiting = a.max_queue;
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
  server::ServerOptions so;
  so.http.host = a.host;
  so.http.port = a.port;
  so.http.threads = a.http_threads;
  so.http.max_body_bytes = a.max_request_bytes;
  so.api_key = a.api_key;
  so.model_names = a.served_model_names.empty() ? std::vector<std::string>{a.model} : a.served_model_names;
  so.model_root = a.model;
  so.max_concurrent_requests = a.max_num_seqs + a.max_queue + 64;
  so.chat_template_specials_in_content = a.chat_template_specials_in_content;
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
  cmd->add_option("--model", a->model, "Model directory (config.json, safetensors, tokenizer files)")->required();
  cmd->add_option("--tokenizer", a->tokenizer, "Tokenizer directory (default: the model directory)");
  cmd->add_option("--device", a->device, "cpu | cuda")->capture_default_str();
  cmd->add_option("--host", a->host, "Address to listen on")->capture_default_str();
  cmd->add_option("--port", a->port, "Port to listen on (0: any free port)")->capture_default_str();
  cmd->add_option("--api-key", a->api_key, "Require 'Authorization: Bearer KEY' (all endpoints but /health)")
      ->envname("DELTASERVE_API_KEY");
  cmd->add_option("--served-model-name", a->served_model_names, "Model name(s) in the API (default: --model)");
  cmd->add_option("--max-model-len", a->max_model_len, "Context length limit (0: the model's)")->capture_default_str();
  cmd->add_option("--max-num-seqs", a->max_num_seqs, "Sequences in a batch")->capture_default_str();
  cmd->add_option("--max-num-batched-tokens", a->max_num_batched_tokens, "Token budget of one step")
      ->capture_default_str();
  cmd->add_option("--gpu-memory-utilization", a->gpu_memory_utilization, "Fraction of GPU memory to use")
      ->capture_default_str();
  cmd->add_option("--load-format", a->load_format, "auto | safetensors | dummy")->capture_default_str();
  cmd->add_option("--dtype", a->dtype, "auto | bfloat16 | float32 (GPU activations)")->capture_default_str();
  cmd->add_option("--block-size", a->block_size, "Tokens per MLA cache page")->capture_default_str();
  cmd->add_option("--kv-cache-tokens", a->kv_cache_tokens, "CPU: MLA cache capacity in tokens (0: default)")
      ->capture_default_str();
  cmd->add_option("--max-queue", a->max_queue, "Waiting requests beyond which new ones get 429")->capture_default_str();
  cmd->add_option("--threads", a->threads, "CPU compute threads (0: all cores)")->capture_default_str();
  cmd->add_option("--http-threads", a->http_threads, "HTTP I/O threads")->capture_default_str();
  cmd->add_option("--max-request-bytes", a->max_request_bytes, "Largest request body (413 beyond)")
      ->capture_default_str();
  cmd->add_option("--shutdown-timeout", a->shutdown_timeout, "Seconds to let requests finish on SIGTERM")
      ->capture_default_str();
  cmd->add_option("--log-level", a->log_level, "trace|debug|info|warn|error|off");
  cmd->add_flag("--chat-template-specials-in-content", a->chat_template_specials_in_content,
                "Encode special-token text inside chat messages/tools as control tokens (HF behaviour; lets a "
                "client forge turns; see docs/SERVER.md)");
  cmd->callback([a] { run_serve(*a); });
}

}  // namespace ds::cli
