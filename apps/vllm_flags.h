// vLLM's `vllm serve` flags on `deltaserve serve`, so that a command line from a vLLM guide works:
// each flag a Kimi-Linear user would type is either implemented (the native options in
// serve_args.cpp and the ones here: --revision, --download-dir, --tensor-parallel-size...),
// accepted and ignored with one log line (--trust-remote-code), or refused with a message saying
// why. docs/VLLM_FLAGS.md is the table; tests/apps/test_vllm_flags.cpp checks every row of it.
// Also: vLLM's multi-letter short flags (-tp, -pp, -dp) and `--config FILE.yaml` (yaml_config.h).
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "dist/parallel_config.h"

namespace ds::cli {

struct VllmArgs {
  std::string revision = "main";  // --revision: branch, tag or commit of a Hub model
  std::string download_dir;       // --download-dir: the Hugging Face cache folder to use
  std::string chat_template;      // --chat-template FILE
  std::string tool_call_parser;   // --tool-call-parser (only kimi_k2)
  int tensor_parallel = 1, pipeline_parallel = 1, data_parallel = 1;
  bool enable_expert_parallel = false;  // --enable-expert-parallel: routed experts by id over the TP ranks
  int nnodes = 1, node_rank = 0;        // --nnodes, --node-rank: the ranks over several processes (torchrun's)
  std::string master_addr = "127.0.0.1";  // --master-addr: node 0's address
  int master_port = 29500;              // --master-port: node 0 listens there for the other nodes
  bool headless = false;                // --headless: a node above 0 (no engine, no API server)
  std::string uvicorn_log_level;  // --uvicorn-log-level: deltaserve's log level when --log-level is not given
  bool auto_tool_choice = false;      // --enable-auto-tool-choice: tool calls are always parsed anyway
  bool enforce_eager = false;         // --enforce-eager: no CUDA graphs (DELTASERVE_CUDA_GRAPHS=0)
  bool disable_log_stats = false;     // --disable-log-stats: no periodic stats line
  bool disable_access_log = false;    // --disable-log-requests / --disable-uvicorn-access-log
  bool enable_access_log = false;     // --enable-log-requests: the access log line per request (as --access-log)
  int max_logprobs = 20;              // --max-logprobs: the most (top) logprobs a request may ask for (400 above)
  std::string content_format = "auto";     // --chat-template-content-format: auto | string | openai
  std::string response_role = "assistant";  // --response-role: the role of chat completion messages
  bool force_include_usage = false;         // --enable-force-include-usage: usage in every stream
  // CORS beside --allowed-origins: methods and request headers a preflight allows ("*": any), credentials.
  std::vector<std::string> allowed_methods = {"*"}, allowed_headers = {"*"};
  bool allow_credentials = false;
  bool request_id_headers = false;     // --enable-request-id-headers: X-Request-Id on every response
  std::optional<std::string> hf_token;  // --hf-token TOKEN; "" (the flag alone): $HF_TOKEN or the stored login
  std::string generation_config = "auto";  // --generation-config: auto | vllm | FOLDER (sampling defaults)
  std::string override_generation_config;  // --override-generation-config: JSON object ("" none)
  bool tokens_as_ids = false;              // --return-tokens-as-token-ids: the request field's default
  std::optional<int64_t> seed;             // --seed: the seed sequence of requests without their own
  // Flags given that are ignored or refused, as typed (name, value), in command-line order.
  std::vector<std::pair<std::string, std::string>> ignored, refused;
};

// Registers the vLLM flags on `cmd`, writing into `v` (which must outlive the parse).
void add_vllm_options(CLI::App& cmd, VllmArgs& v);

// Checks across the vLLM flags: a refused flag fails with its reason; -pp/-dp above 1 fail; -tp must
// be 1, 2, 4 or 8, split evenly over --nnodes, with --node-rank below it; on cuda a node's ranks need a GPU
// each (says how many there are); --headless only above node 0. Throws ds::Error naming the flag.
void validate_vllm_args(const VllmArgs& v, int visible_gpus, const std::string& device = "cpu");

// The parallel layout the flags ask for (-tp, --enable-expert-parallel, the nodes).
ParallelConfig parallel_config(const VllmArgs& v);

// One log line per ignored flag (what it does in vLLM and why deltaserve does without it).
std::vector<std::string> ignored_flag_messages(const VllmArgs& v);

// GPUs this process may use: $CUDA_VISIBLE_DEVICES when set, else the /dev/nvidiaN devices.
int visible_gpu_count();

// vLLM's multi-letter short flags rewritten to their long names ("-tp 4" -> "--tensor-parallel-size 4",
// "-tp=4" too); everything else unchanged. argv[0] is kept.
std::vector<std::string> expand_vllm_short_flags(const std::vector<std::string>& argv);

}  // namespace ds::cli
