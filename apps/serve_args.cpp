#include "apps/serve_args.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <limits>

#include "apps/flag_checks.h"
#include "apps/yaml_config.h"
#include "config/kv_cache_dtype.h"
#include "core/error.h"

namespace ds::cli {

namespace {
constexpr int kIntMax = std::numeric_limits<int>::max();
constexpr int64_t kTokensMax = kIntMax;  // token counts and page numbers are int32 in the engine
constexpr int kDay = 86400;

// --allowed-origins (--allowed-methods, --allowed-headers) values: items, or vLLM's spelling, one JSON list
// ('["https://a.example"]'), which CLI11 already splits at its commas into quoted items
// ('"https://a.example"'): surrounding blanks and quotes are dropped.
std::vector<std::string> list_values(const std::vector<std::string>& values, const char* flag) {
  std::vector<std::string> out;
  for (std::string v : values) {
    const size_t b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
    v = b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
    if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front())
      v = v.substr(1, v.size() - 2);
    if (v.empty()) fail("{}: an empty item", flag);
    out.push_back(v);
  }
  return out;
}
}  // namespace

void add_serve_options(CLI::App& cmd, ServeArgs& a) {
  cmd.add_option("model,--model", a.model,
                 "Model: a directory (config.json, safetensors, tokenizer files) or a Hugging Face repo id "
                 "(ORG/NAME, found in or downloaded to the Hugging Face cache)")
      ->required();
  cmd.add_option("--tokenizer", a.tokenizer, "Tokenizer directory (default: the model directory)");
  cmd.add_option("--device", a.device, "cpu | cuda")->capture_default_str()->check(CLI::IsMember({"cpu", "cuda"}));
  cmd.add_option("--host", a.host, "Address to listen on")->capture_default_str()->check(non_empty());
  cmd.add_option("--port", a.port, "Port to listen on (0: any free port)")
      ->capture_default_str()
      ->check(in_range(0, 65535));
  cmd.add_option("--api-key", a.api_key, "Require 'Authorization: Bearer KEY' (all endpoints but /health)")
      ->envname("DELTASERVE_API_KEY")
      ->check(non_empty());
  cmd.add_option("--served-model-name", a.served_model_names, "Model name(s) in the API (default: --model)")
      ->check(non_empty());
  cmd.add_option("--max-model-len", a.max_model_len,
                 "Context length limit (0, -1 or auto: the model's, lowered to what the cache holds; a value given "
                 "must fit the cache); vLLM's forms 4k = 4000, 4K = 4096, 1m = 1000000, 1M = 1048576")
      ->capture_default_str()
      ->transform(human_readable_int("0"))
      ->check(in_range<int64_t>(0, kTokensMax));
  cmd.add_option("--max-num-seqs", a.max_num_seqs, "Sequences in a batch")
      ->capture_default_str()
      ->check(in_range(1, 65536));
  cmd.add_option("--max-num-batched-tokens", a.max_num_batched_tokens, "Token budget of one step")
      ->capture_default_str()
      ->check(in_range(1, 1 << 24));
  cmd.add_option("--max-step-cost", a.max_step_cost,
                 "Cost budget of a step with decodes or waiting requests beside a long prefill, in units of one "
                 "token's matmuls (16.5 us on an H200); attention and key re-expansion over the context count "
                 "(0: 12000, ~200 ms)")
      ->capture_default_str()
      ->check(in_range(0.0, 1e12));
  cmd.add_option("--long-prefill-interval", a.long_prefill_interval,
                 "While requests decode, a long prefill joins one step in this many (1: every step)")
      ->capture_default_str()
      ->check(in_range(1, 1000));
  cmd.add_option("--gpu-memory-utilization", a.gpu_memory_utilization, "Fraction of GPU memory to use")
      ->capture_default_str()
      ->check(in_range(0.01, 1.0));
  cmd.add_option("--load-format", a.load_format, "auto | safetensors | dummy")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "safetensors", "dummy"}));
  // float16/half are refused: the kernels exist in bf16 and fp32 only (vLLM would accept them).
  cmd.add_option("--dtype", a.dtype, "auto | bfloat16 | float32 (GPU activations)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "bfloat16", "bf16", "float32", "fp32", "float"}));
  cmd.add_option("-q,--quantization", a.quantization,
                 "none | fp8: quantize a bf16 checkpoint's projections to FP8 per 128x128 block at load (an FP8 "
                 "checkpoint is used as it is) | int4: an INT4 (pack-quantized) checkpoint, or with --load-format "
                 "dummy INT4 experts | compressed-tensors: a compressed-tensors checkpoint as it is")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "fp8", "int4", "compressed-tensors"}));
  cmd.add_option("--kv-cache-dtype", a.kv_cache_dtype,
                 "auto (the activation dtype) | fp8 (= fp8_e4m3: the MLA latent cache in e4m3 with a scale per "
                 "token, about half the bytes; fp8_e5m2 is not supported)")
      ->capture_default_str()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            try {
              parse_kv_cache_dtype(v);
              return {};
            } catch (const Error& e) {
              return e.what();
            }
          },
          "auto | fp8 | fp8_e4m3"));
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
  cmd.add_flag("--strict-request-fields", a.strict_request_fields,
               "Reject unrecognized request fields with 400 (default: ignore them, one warning per field name)");
  cmd.add_option("--allowed-origins", a.allowed_origins, "CORS: origins allowed to read responses ('*': any)")
      ->capture_default_str()
      ->check(non_empty());
  cmd.add_option("--responses-store-mib", a.responses_store_mib,
                 "MiB of host memory for /v1/responses kept for previous_response_id and GET/DELETE "
                 "/v1/responses/{id}, least recently used dropped first (0: keep none)")
      ->capture_default_str()
      ->check(in_range(0.0, 1e6));
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
  cmd.add_option("--scheduling-policy", a.scheduling_policy,
                 "fcfs: first come, first served; priority: by each request's `priority` (lower first), then "
                 "arrival; the least urgent running request is preempted first")
      ->capture_default_str()
      ->check(CLI::IsMember({"fcfs", "priority"}));
  add_operations_options(cmd, a);
  add_vllm_options(cmd, a.vllm);
  add_config_option(cmd);
}

void add_run_batch_options(CLI::App& cmd, RunBatchArgs& b) {
  cmd.add_option("-i,--input-file", b.input,
                 "The batch: OpenAI batch-file lines (custom_id, method POST, url /v1/chat/completions, "
                 "/v1/completions or /v1/responses, body); '-': standard input")
      ->required();
  cmd.add_option("-o,--output-file", b.output,
                 "The results, a line per request line in its order; '-': standard output (the log goes to standard "
                 "error)")
      ->required();
  cmd.add_option("--output-tmp-dir", b.output_tmp_dir,
                 "vLLM, ignored: the output is written where -o says, line by line as the requests finish");
}

std::vector<std::string> expand_serve_config(const std::vector<std::string>& argv) {
  auto serve = std::find_if(argv.begin() + (argv.empty() ? 0 : 1), argv.end(),
                            [](const std::string& s) { return s == "serve" || s == "run-batch"; });
  if (serve == argv.end()) return argv;
  ServeArgs probe;  // the probe parse writes here
  RunBatchArgs batch_probe;
  const bool batch = *serve == "run-batch";
  std::vector<std::string> tail = expand_config_file(std::vector<std::string>(serve + 1, argv.end()), [&](CLI::App& app) {
    add_serve_options(app, probe);
    if (batch) add_run_batch_options(app, batch_probe);
  });
  std::vector<std::string> out(argv.begin(), serve + 1);
  out.insert(out.end(), tail.begin(), tail.end());
  return out;
}

void add_operations_options(CLI::App& cmd, ServeArgs& a) {
  const char* g = "Operations";
  cmd.add_option("--log-format", a.log_format, "text | json (one JSON object per line)")
      ->capture_default_str()
      ->check(CLI::IsMember({"text", "json"}))
      ->group(g);
  cmd.add_flag("--access-log", a.access_log, "Log one line per answered request (client, request line, status, time)")
      ->group(g);
  cmd.add_option("--stats-interval", a.stats_interval, "Seconds between periodic stats lines (when busy)")
      ->capture_default_str()
      ->check(in_range(0.1, 86400.0))
      ->group(g);
  cmd.add_option("--metrics-prefix", a.metrics_prefix, "Metric names: deltaserve (deltaserve_...) or vllm (vLLM's exact vllm:... names)")
      ->capture_default_str()
      ->check(CLI::IsMember({"deltaserve", "vllm"}))
      ->group(g);
  cmd.add_flag("--protect-metrics", a.protect_metrics, "/metrics needs the API key too (default: open, as in vLLM)")
      ->group(g);
}

void validate_serve_args(const ServeArgs& a) {
  // CLI11 ignores an empty environment variable: say so instead of serving without a key.
  const char* env_key = std::getenv("DELTASERVE_API_KEY");
  if (a.api_key.empty() && env_key != nullptr && *env_key == '\0')
    fail("DELTASERVE_API_KEY is set but empty: unset it to serve without an API key, or give a key");
  if (a.protect_metrics && a.api_key.empty()) fail("--protect-metrics needs --api-key (the key /metrics would ask for)");
  validate_vllm_args(a.vllm, visible_gpu_count(), a.device);
}

std::string check_model_dirs(const std::string& model_dir, const std::string& tokenizer) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const auto has = [&ec](const fs::path& dir, const char* file) { return fs::exists(dir / file, ec); };
  if (!tokenizer.empty() && !has(tokenizer, "tiktoken.model"))
    fail("--tokenizer {}: no tiktoken.model there", tokenizer);
  const bool config = has(model_dir, "config.json");
  const bool tok_files = !tokenizer.empty() || has(model_dir, "tiktoken.model");
  if (config && tok_files) return tokenizer.empty() ? model_dir : tokenizer;
  const char* kTokFiles = "tokenizer files (tiktoken.model, tokenizer_config.json)";
  if (config) fail("the model directory {} has no {}; pass --tokenizer DIR", model_dir, kTokFiles);
  // Sub-folders holding a model's config or tokenizer files: the directory above the model was given.
  std::vector<fs::path> models, tokenizers;
  for (fs::directory_iterator it(model_dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_directory(ec)) continue;
    if (has(it->path(), "config.json")) models.push_back(it->path());
    if (has(it->path(), "tiktoken.model")) tokenizers.push_back(it->path());
  }
  std::string msg = fmt::format("the model directory {} has no config.json{}", model_dir,
                                tok_files ? "" : fmt::format(" and no {}", kTokFiles));
  if (models.size() == 1) {
    std::string line = "deltaserve serve " + models[0].string();
    if (tokenizer.empty() && !has(models[0], "tiktoken.model"))
      line += " --tokenizer " + (tokenizers.size() == 1 ? tokenizers[0].string() : std::string("DIR"));
    msg += fmt::format("; its sub-folder {} holds a model's config.json: did you mean `{}`?", models[0].string(), line);
  } else {
    msg += "; give the directory that holds the model's config.json and *.safetensors (or a Hugging Face repo id)";
  }
  fail("{}", msg);
}

hub::HubEnv hub_env(const ServeArgs& a) {
  hub::HubEnv env = hub::hub_env_from_environment(a.vllm.download_dir);
  if (!a.vllm.hf_token) return env;
  if (!a.vllm.hf_token->empty()) {
    env.token = *a.vllm.hf_token;
  } else if (env.token.empty()) {
    env.token = hub::stored_token();
    if (env.token.empty())
      fail("--hf-token without a token: HF_TOKEN is not set and no stored login token was found "
           "(huggingface-cli login writes one); give the token: --hf-token TOKEN");
  }
  return env;
}

EngineOptions engine_options(const ServeArgs& a) {
  EngineOptions eo;
  eo.backend.device = a.device;
  eo.backend.model_dir = a.model_dir.empty() ? a.model : a.model_dir;
  eo.backend.load_format = a.load_format;
  eo.backend.dtype = a.dtype;
  eo.backend.quantization = a.quantization;
  eo.backend.kv_cache_dtype = parse_kv_cache_dtype(a.kv_cache_dtype);
  eo.backend.max_num_seqs = a.max_num_seqs;
  eo.backend.max_model_len = a.max_model_len;
  eo.backend.block_size = a.block_size;
  eo.backend.gpu_memory_utilization = a.gpu_memory_utilization;
  eo.backend.kv_cache_tokens = a.kv_cache_tokens;
  eo.backend.parallel = parallel_config(a.vllm);
  eo.max_num_seqs = a.max_num_seqs;
  eo.max_num_batched_tokens = a.max_num_batched_tokens;
  eo.step_cost.max_step_cost = a.max_step_cost;
  eo.step_cost.long_prefill_interval = a.long_prefill_interval;
  eo.max_model_len = a.max_model_len;
  eo.max_waiting = a.max_queue;
  eo.enable_prefix_caching = a.enable_prefix_caching;
  eo.prefix_snapshot_interval = a.prefix_snapshot_interval;
  eo.scheduling_policy = a.scheduling_policy == "priority" ? SchedulingPolicy::Priority : SchedulingPolicy::Fcfs;
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
  so.model_root = a.model_dir.empty() ? a.model : a.model_dir;
  so.metrics.prefix = a.metrics_prefix == "vllm" ? "vllm:" : "deltaserve_";
  so.metrics.model_name = so.model_names.front();
  so.protect_metrics = a.protect_metrics;
  so.access_log = (a.access_log || a.vllm.enable_access_log) && !a.vllm.disable_access_log;
  so.max_concurrent_requests = a.max_num_seqs + a.max_queue + 64;
  so.chat_template_specials_in_content = a.chat_template_specials_in_content;
  so.strict_request_fields = a.strict_request_fields;
  so.allowed_origins = list_values(a.allowed_origins, "--allowed-origins");
  so.allowed_methods = list_values(a.vllm.allowed_methods, "--allowed-methods");
  so.allowed_headers = list_values(a.vllm.allowed_headers, "--allowed-headers");
  so.allow_credentials = a.vllm.allow_credentials;
  so.request_id_headers = a.vllm.request_id_headers;
  so.response_role = a.vllm.response_role;
  so.force_include_usage = a.vllm.force_include_usage;
  so.content_parts_as_string = a.vllm.content_format == "string";
  so.responses_store_bytes = size_t(a.responses_store_mib * 1048576.0);
  if (a.vllm.seed) so.seed = uint64_t(*a.vllm.seed);
  return so;
}

}  // namespace ds::cli
