#include "apps/serve_args.h"

#include <cstdlib>
#include <limits>

#include "apps/flag_checks.h"
#include "core/error.h"

namespace ds::cli {

namespace {
constexpr int kIntMax = std::numeric_limits<int>::max();
constexpr int64_t kTokensMax = kIntMax;  // token counts and page numbers are int32 in the engine
constexpr int kDay = 86400;
}  // namespace

void add_serve_options(CLI::App& cmd, ServeArgs& a) {
  cmd.add_option("--model", a.model, "Model directory (config.json, safetensors, tokenizer files)")->required();
  cmd.add_option("--tokenizer", a.tokenizer, "Tokenizer directory (default: the model directory)");
  cmd.add_option("--device", a.device, "cpu | cuda")->capture_default_str();
  cmd.add_option("--host", a.host, "Address to listen on")->capture_default_str()->check(non_empty());
  cmd.add_option("--port", a.port, "Port to listen on (0: any free port)")
      ->capture_default_str()
      ->check(in_range(0, 65535));
  cmd.add_option("--api-key", a.api_key, "Require 'Authorization: Bearer KEY' (all endpoints but /health)")
      ->envname("DELTASERVE_API_KEY")
      ->check(non_empty());
  cmd.add_option("--served-model-name", a.served_model_names, "Model name(s) in the API (default: --model)")
      ->check(non_empty());
  cmd.add_option("--max-model-len", a.max_model_len, "Context length limit (0: the model's)")
      ->capture_default_str()
      ->check(in_range<int64_t>(0, kTokensMax));
  cmd.add_option("--max-num-seqs", a.max_num_seqs, "Sequences in a batch")
      ->capture_default_str()
      ->check(in_range(1, 65536));
  cmd.add_option("--max-num-batched-tokens", a.max_num_batched_tokens, "Token budget of one step")
      ->capture_default_str()
      ->check(in_range(1, 1 << 24));
  cmd.add_option("--gpu-memory-utilization", a.gpu_memory_utilization, "Fraction of GPU memory to use")
      ->capture_default_str()
      ->check(in_range(0.01, 1.0));
  cmd.add_option("--load-format", a.load_format, "auto | safetensors | dummy")->capture_default_str();
  cmd.add_option("--dtype", a.dtype, "auto | bfloat16 | float32 (GPU activations)")->capture_default_str();
  cmd.add_option("--block-size", a.block_size, "Tokens per MLA cache page")
      ->capture_default_str()
      ->check(in_range(1, 4096));
  cmd.add_option("--kv-cache-tokens", a.kv_cache_tokens, "CPU: MLA cache capacity in tokens (0: default)")
      ->capture_default_str()
      ->check(in_range<int64_t>(0, kTokensMax));
  cmd.add_option("--max-queue", a.max_queue, "Waiting requests beyond which new ones get 429")
      ->capture_default_str()
      ->check(in_range(1, 1 << 24));
  cmd.add_option("--threads", a.threads, "CPU compute threads (0: all cores)")
      ->capture_default_str()
      ->check(in_range(0, 4096));
  cmd.add_option("--http-threads", a.http_threads, "HTTP I/O threads")->capture_default_str()->check(in_range(1, 256));
  cmd.add_option("--max-request-bytes", a.max_request_bytes, "Largest request body (413 beyond)")
      ->capture_default_str()
      ->check(in_range<int64_t>(1, int64_t(1) << 32));
  cmd.add_option("--max-connections", a.max_connections,
                 "Open connections; beyond, new ones wait in the listen backlog (0: from the fd limit)")
      ->capture_default_str()
      ->check(in_range(0, 1 << 20));
  cmd.add_option("--idle-timeout", a.idle_timeout, "Seconds an idle connection may wait for its next request")
      ->capture_default_str()
      ->check(in_range(1, kDay));
  cmd.add_option("--header-timeout", a.header_timeout, "Seconds from a request's first byte to its complete headers")
      ->capture_default_str()
      ->check(in_range(1, kDay));
  cmd.add_option("--shutdown-timeout", a.shutdown_timeout, "Seconds to let requests finish on SIGTERM")
      ->capture_default_str()
      ->check(in_range(0.0, double(kDay)));
  cmd.add_option("--log-level", a.log_level, "trace|debug|info|warn|error|off");
  cmd.add_flag("--chat-template-specials-in-content", a.chat_template_specials_in_content,
               "Encode special-token text inside chat messages/tools as control tokens (HF behaviour; lets a "
               "client forge turns; see docs/SERVER.md)");
  // prefix caching
  cmd.add_flag("--enable-prefix-caching,!--no-enable-prefix-caching", a.enable_prefix_caching,
               "Reuse computed prompt prefixes: MLA pages + KDA state snapshots (on by default)");
  cmd.add_option("--prefix-snapshot-memory", a.prefix_snapshot_memory,
                 "GiB of KDA state snapshots for prefix caching (0: CPU 1 GiB, GPU 20% of the cache budget)")
      ->capture_default_str()
      ->check(in_range(0.0, 1e6));
  cmd.add_option("--prefix-snapshot-interval", a.prefix_snapshot_interval,
                 "Tokens between KDA snapshots inside long prefills (0: only at prompt and request ends)")
      ->capture_default_str()
      ->check(in_range<int64_t>(0, int64_t(1) << 30));
}

void validate_serve_args(const ServeArgs& a) {
  // CLI11 ignores an empty environment variable: say so instead of serving without a key.
  const char* env_key = std::getenv("DELTASERVE_API_KEY");
  if (a.api_key.empty() && env_key != nullptr && *env_key == '\0')
    fail("DELTASERVE_API_KEY is set but empty: unset it to serve without an API key, or give a key");
}

EngineOptions engine_options(const ServeArgs& a) {
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
  eo.enable_prefix_caching = a.enable_prefix_caching;
  eo.prefix_snapshot_interval = a.prefix_snapshot_interval;
  eo.backend.num_snapshots = a.enable_prefix_caching ? -1 : 0;  // -1: as many as the budget holds
  eo.backend.snapshot_memory_gib = a.prefix_snapshot_memory;
  return eo;
}

server::ServerOptions server_options(const ServeArgs& a) {
  server::ServerOptions so;
  so.http.host = a.host;
  so.http.port = a.port;
  so.http.threads = a.http_threads;
  so.http.max_body_bytes = size_t(a.max_request_bytes);
  so.http.max_connections = a.max_connections;
  so.http.idle_timeout = std::chrono::seconds(a.idle_timeout);
  so.http.header_timeout = std::chrono::seconds(a.header_timeout);
  so.api_key = a.api_key;
  so.model_names = a.served_model_names.empty() ? std::vector<std::string>{a.model} : a.served_model_names;
  so.model_root = a.model;
  so.max_concurrent_requests = a.max_num_seqs + a.max_queue + 64;
  so.chat_template_specials_in_content = a.chat_template_specials_in_content;
  return so;
}

}  // namespace ds::cli
