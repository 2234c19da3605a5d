// The options of `deltaserve serve`: registration on the CLI (each numeric flag range-checked,
// errors naming the flag) and the checks across flags, apart from running the server so that a
// unit test can parse command lines (tests/apps).
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "apps/vllm_flags.h"
#include "engine/engine.h"
#include "hub/hub_cache.h"
#include "server/openai_server.h"

namespace ds::cli {

struct ServeArgs {
  std::string model, tokenizer, device = "cpu", host = "127.0.0.1", api_key, load_format = "auto", dtype = "auto";
  std::vector<std::string> served_model_names;
  int port = 8000;
  int64_t max_model_len = 0;
  int max_num_seqs = 64, max_num_batched_tokens = 2048, block_size = 16, max_queue = 1024, threads = 0;
  int http_threads = 2;
  int64_t kv_cache_tokens = 0;
  double gpu_memory_utilization = 0.9;
  double max_step_cost = 0;  // 0: the default (docs/SCHEDULER.md, "Step cost")
  int long_prefill_interval = 3;  // while requests decode, a long prefill joins one step in this many
  int64_t max_request_bytes = 32 << 20;
  int max_connections = 0;  // 0: from the file-descriptor limit
  int idle_timeout = 60, header_timeout = 30;
  double shutdown_timeout = 30.0;
  std::string log_level;
  bool chat_template_specials_in_content = false;
  VllmArgs vllm;  // vLLM's flags (apps/vllm_flags.h)
  // Operations: log format, access log, periodic stats, /metrics naming and protection.
  std::string log_format = "text", metrics_prefix = "deltaserve";
  bool access_log = false, protect_metrics = false;
  double stats_interval = 10.0;
  std::string model_dir;  // the local directory of `model` (set by `serve` once resolved; "" : model)
  bool strict_request_fields = false;                // unknown request fields: 400 instead of a warning
  std::vector<std::string> allowed_origins = {"*"};  // CORS
  double responses_store_mib = 256;                  // /v1/responses kept for previous_response_id (0: none)
  std::string quantization = "none";  // none | fp8 | int4 | compressed-tensors (weights; docs/QUANTIZATION.md)
  std::string kv_cache_dtype = "auto";  // auto (the activation dtype) | fp8 | fp8_e4m3 (config/kv_cache_dtype.h)
  // prefix caching (docs/PREFIX_CACHE.md)
  bool enable_prefix_caching = true;
  double prefix_snapshot_memory = 0;        // GiB for KDA snapshots (0: the backend's default)
  int64_t prefix_snapshot_interval = 8192;  // tokens between snapshots inside long prefills (0: none)
  std::string scheduling_policy = "fcfs";    // fcfs | priority (vLLM's --scheduling-policy)
};

// Adds the serve options to `cmd`, writing into `a` (which must outlive the parse).
void add_serve_options(CLI::App& cmd, ServeArgs& a);
// `deltaserve run-batch`'s own flags (vLLM's `vllm run-batch`), beside serve's (apps/cmd_run_batch.cpp).
struct RunBatchArgs {
  std::string input, output, output_tmp_dir;
};
void add_run_batch_options(CLI::App& cmd, RunBatchArgs& b);
// argv with serve's (and run-batch's) `--config FILE.yaml` expanded into arguments (apps/yaml_config.h); other
// commands' argv unchanged. Throws CLI::ConfigError on a bad file.
std::vector<std::string> expand_serve_config(const std::vector<std::string>& argv);
// The operations flags alone (log format, access log, stats interval, metrics); part of the above.
void add_operations_options(CLI::App& cmd, ServeArgs& a);
// Checks that span several flags or the environment; throws ds::Error naming the flag.
void validate_serve_args(const ServeArgs& a);

// The tokenizer directory to load (--tokenizer, else the model directory), after checking that `model_dir` has
// a config.json and that the tokenizer directory has the tokenizer files; throws ds::Error naming every
// missing piece, and, when one sub-folder of `model_dir` holds a config.json (tests/fixtures/tiny/model), the
// command line that was probably meant.
std::string check_model_dirs(const std::string& model_dir, const std::string& tokenizer);
// The Hugging Face settings: the environment's, --download-dir, and --hf-token (alone: $HF_TOKEN, else the
// stored login token; throws ds::Error when there is neither).
hub::HubEnv hub_env(const ServeArgs& a);

// The engine's and the HTTP server's options from validated arguments.
EngineOptions engine_options(const ServeArgs& a);
server::ServerOptions server_options(const ServeArgs& a);

}  // namespace ds::cli
