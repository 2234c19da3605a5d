#include "apps/vllm_flags.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <limits>

#include "apps/flag_checks.h"
#include "core/error.h"
#include "dist/parallel_config.h"
#include "server/generation_defaults.h"
#include "server/openai_request.h"

namespace ds::cli {

namespace {

enum class Value { None, Text, Int, Number };

// A vLLM flag deltaserve accepts without acting on it, or refuses. `ok` (refused flags only): the
// one value that is accepted because it is what deltaserve does anyway (e.g. --cpu-offload-gb 0).
struct CompatFlag {
  const char* names;  // CLI11 names, e.g. "-O,--compilation-config"
  Value value;
  double lo, hi;      // range of a numeric value
  const char* ok;
  const char* why;
};

constexpr double kI64 = 9.2e18;

const CompatFlag kIgnored[] = {
    {"--trust-remote-code", Value::None, 0, 0, "", "Kimi-Linear is implemented natively: no Python code from the repository runs"},
    {"--guided-decoding-backend", Value::Text, 0, 0, "", "structured outputs use deltaserve's own grammar engine (docs/STRUCTURED_OUTPUT.md)"},
    {"--swap-space", Value::Number, 0, 1e6, "", "no CPU swap: preempted sequences are recomputed"},
    {"--disable-custom-all-reduce", Value::None, 0, 0, "", "the ranks' all-reduce is NCCL's (or the in-process group's): there is no custom all-reduce to turn off"},
    {"--max-seq-len-to-capture", Value::Int, 1, 1e9, "", "CUDA graphs cover decode at every context length"},
    {"--tokenizer-mode", Value::Text, 0, 0, "", "the Kimi tiktoken tokenizer is built in"},
    {"--max-log-len", Value::Int, 0, 1e9, "", "prompts are never logged"},
    {"--disable-frontend-multiprocessing", Value::None, 0, 0, "", "the HTTP server and the engine share one process"},
    {"--distributed-executor-backend", Value::Text, 0, 0, "", "the ranks are threads of a process, one per GPU, and a process per node (docs/PARALLEL.md)"},
    {"--enable-chunked-prefill", Value::None, 0, 0, "", "chunked prefill is always on (--max-num-batched-tokens is the step budget)"},
    {"--disable-fastapi-docs", Value::None, 0, 0, "", "no /docs page is served"},
    {"--max-parallel-loading-workers", Value::Int, 1, 4096, "", "weights are memory-mapped and uploaded in one pass"},
    {"-O,--compilation-config", Value::Text, 0, 0, "", "no torch.compile: the kernels are compiled ahead of time"},
    {"--model-impl", Value::Text, 0, 0, "", "deltaserve runs its own implementation"},
    {"--code-revision", Value::Text, 0, 0, "", "no remote code is run"},
    {"--tokenizer-revision", Value::Text, 0, 0, "", "the tokenizer files come from the model's --revision"},
    {"--enable-prompt-tokens-details", Value::None, 0, 0, "", "usage.prompt_tokens_details.cached_tokens is always reported"},
    {"--async-scheduling", Value::None, 0, 0, "", "the step thread plans each step itself (its time: engine_step_schedule_seconds_total)"},
    {"--long-prefill-token-threshold", Value::Int, 0, 1e12, "", "a prefill is long when its remainder exceeds a step's token budget; --max-step-cost and --long-prefill-interval shape long prefills (docs/SCHEDULER.md)"},
    {"--max-num-partial-prefills", Value::Int, 1, 1e6, "", "the scheduler's step cost decides how many prefills share a step (--max-step-cost, --long-prefill-interval; docs/SCHEDULER.md)"},
};

const CompatFlag kRefused[] = {
    {"--cpu-offload-gb", Value::Number, 0, 1e6, "0", "weights are not offloaded to CPU memory"},
    {"--ssl-keyfile", Value::Text, 0, 0, "", "the server speaks plain HTTP: put a TLS reverse proxy (nginx, Caddy) in front"},
    {"--ssl-certfile", Value::Text, 0, 0, "", "the server speaks plain HTTP: put a TLS reverse proxy (nginx, Caddy) in front"},
    {"--ssl-ca-certs", Value::Text, 0, 0, "", "the server speaks plain HTTP: put a TLS reverse proxy (nginx, Caddy) in front"},
    {"--root-path", Value::Text, 0, 0, "", "the API is served at /v1; strip a prefix in the reverse proxy"},
    {"--enable-lora", Value::None, 0, 0, "", "LoRA adapters are not supported"},
    {"--lora-modules", Value::Text, 0, 0, "", "LoRA adapters are not supported"},
    {"--max-lora-rank", Value::Int, 0, 1e6, "", "LoRA adapters are not supported"},
    {"--speculative-config", Value::Text, 0, 0, "", "no speculative decoding"},
    {"--hf-overrides", Value::Text, 0, 0, "", "config.json is read as is; edit a copy of the model directory instead"},
    {"--limit-mm-per-prompt", Value::Text, 0, 0, "", "Kimi-Linear is text-only"},
    {"--enable-sleep-mode", Value::None, 0, 0, "", "no sleep mode"},
    {"--otlp-traces-endpoint", Value::Text, 0, 0, "", "no OpenTelemetry tracing; scrape /metrics"},
    {"--reasoning-parser", Value::Text, 0, 0, "", "Kimi-Linear-Instruct writes no reasoning section to parse"},
    {"--api-server-count", Value::Int, 1, 1024, "1", "one API server process (it has its own I/O threads: --http-threads)"},
    {"--middleware", Value::Text, 0, 0, "", "no Python middleware"},
    {"--skip-tokenizer-init", Value::None, 0, 0, "", "the server tokenizes and detokenizes"},
    {"--logprobs-mode", Value::Text, 0, 0, "raw_logprobs", "logprobs are of the raw model distribution (raw_logprobs) only"},
};

std::string first_long_name(const char* names) {
  std::string s = names;
  auto pos = s.find("--");
  return pos == std::string::npos ? s : s.substr(pos, s.find(',', pos) - pos);
}

void add_compat(CLI::App& cmd, const CompatFlag& f, std::vector<std::pair<std::string, std::string>>* sink,
                const char* group) {
  const std::string name = first_long_name(f.names);
  const std::string help = fmt::format("{}: {}", group, f.why);
  if (f.value == Value::None) {
    cmd.add_flag_function(
           f.names, [sink, name](int64_t) { sink->emplace_back(name, "true"); }, help)
        ->group(group);
    return;
  }
  CLI::Option* o = cmd.add_option_function<std::string>(
      f.names, [sink, name](const std::string& v) { sink->emplace_back(name, v); }, help);
  o->group(group);
  if (f.value == Value::Int) o->check(in_range<int64_t>(int64_t(f.lo), int64_t(f.hi)));
  if (f.value == Value::Number) o->check(in_range<double>(f.lo, f.hi));
}

// A CLI11 check from a function that throws ds::Error on a bad value (its message is the check's).
template <typename F> CLI::Validator throws_error(F check) {
  return CLI::Validator(
      [check](std::string& value) -> std::string {
        try {
          check(value);
        } catch (const Error& e) {
          return e.what();
        }
        return {};
      },
      "");
}

const CompatFlag* find_refused(const std::string& name) {
  for (const CompatFlag& f : kRefused)
    if (first_long_name(f.names) == name) return &f;
  return nullptr;
}
const CompatFlag* find_ignored(const std::string& name) {
  for (const CompatFlag& f : kIgnored)
    if (first_long_name(f.names) == name) return &f;
  return nullptr;
}

}  // namespace

void add_vllm_options(CLI::App& cmd, VllmArgs& v) {
  const char* g = "vLLM compatibility";
  cmd.add_option("--revision", v.revision, "Hugging Face model: branch, tag or commit")
      ->capture_default_str()
      ->check(non_empty())
      ->group(g);
  cmd.add_option("--download-dir", v.download_dir,
                 "Hugging Face cache folder (default: $HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub)")
      ->check(non_empty())
      ->group(g);
  cmd.add_option("--chat-template", v.chat_template, "Chat template file (Jinja) replacing the model's")
      ->check(CLI::ExistingFile)
      ->group(g);
  cmd.add_option("--tool-call-parser", v.tool_call_parser, "Tool-call format: kimi_k2 (the only one)")
      ->check(CLI::IsMember({"kimi_k2"}))
      ->group(g);
  cmd.add_flag("--enable-auto-tool-choice", v.auto_tool_choice, "Accepted: tool calls are always parsed (tool_choice auto)")
      ->group(g);
  cmd.add_option("--tensor-parallel-size", v.tensor_parallel,
                 "Ranks per model (-tp): 1, 2, 4 or 8: one rank per GPU on --device cuda (NCCL), rank threads on --device cpu")
      ->capture_default_str()
      ->check(in_range(1, 1024))
      ->group(g);
  cmd.add_flag("--enable-expert-parallel", v.enable_expert_parallel,
               "Routed experts sharded by id over the --tensor-parallel-size ranks (instead of split by columns)")
      ->group(g);
  cmd.add_option("--nnodes", v.nnodes,
                 "Nodes (processes) the --tensor-parallel-size ranks span, as torchrun's: each holds tp / nnodes "
                 "ranks; node 0 runs the engine and the API server, the others only their ranks (docs/PARALLEL.md)")
      ->capture_default_str()
      ->check(in_range(1, 1024))
      ->group(g);
  cmd.add_option("--node-rank", v.node_rank, "This node's number, 0..nnodes-1 (0: the engine and the API server)")
      ->capture_default_str()
      ->check(in_range(0, 1023))
      ->group(g);
  cmd.add_option("--master-addr", v.master_addr, "Node 0's address, where the other nodes join (--nnodes above 1)")
      ->capture_default_str()
      ->check(non_empty())
      ->group(g);
  cmd.add_option("--master-port", v.master_port, "The port node 0 listens on for the other nodes (--nnodes above 1)")
      ->capture_default_str()
      ->check(in_range(1, 65535))
      ->group(g);
  cmd.add_flag("--headless", v.headless,
               "A node above 0 (--node-rank): no engine and no API server, only its ranks (which such a node is anyway)")
      ->group(g);
  cmd.add_option("--pipeline-parallel-size", v.pipeline_parallel, "Pipeline stages (-pp): 1")
      ->capture_default_str()
      ->check(in_range(1, 1024))
      ->group(g);
  cmd.add_option("--data-parallel-size", v.data_parallel, "Engine replicas (-dp): 1")
      ->capture_default_str()
      ->check(in_range(1, 1024))
      ->group(g);
  cmd.add_option("--uvicorn-log-level", v.uvicorn_log_level, "Log level when --log-level is not given")
      ->check(CLI::IsMember({"critical", "error", "warning", "info", "debug", "trace"}))
      ->group(g);
  cmd.add_option("--generation-config", v.generation_config,
                 "Sampling defaults for fields a request leaves out: 'auto' (the model's generation_config.json, "
                 "if any), 'vllm' (none: the OpenAI API's), or a folder holding a generation_config.json; its "
                 "max_new_tokens caps every request's max_tokens")
      ->capture_default_str()
      ->check(throws_error(server::check_generation_config_mode))
      ->group(g);
  cmd.add_option("--override-generation-config", v.override_generation_config,
                 "JSON object of sampling defaults (temperature, top_p, top_k, min_p, repetition_penalty, "
                 "max_new_tokens) over --generation-config's, e.g. '{\"temperature\": 0.6}'")
      ->check(throws_error(server::parse_generation_config_override))
      ->group(g);
  cmd.add_option("--seed", v.seed,
                 "Requests without their own 'seed' draw seeds from a sequence seeded with this, so a run of the "
                 "same requests in the same order repeats (default: random seeds)")
      ->group(g);
  cmd.add_flag("--return-tokens-as-token-ids", v.tokens_as_ids,
               "Logprob tokens as 'token_id:N' unless a request sets return_tokens_as_token_ids false")
      ->group(g);
  cmd.add_flag("--enforce-eager", v.enforce_eager, "No CUDA graphs: every decode step runs eagerly (slower)")->group(g);
  cmd.add_flag("--disable-log-stats", v.disable_log_stats, "No periodic stats line")->group(g);
  cmd.add_flag("--disable-log-requests,--disable-uvicorn-access-log", v.disable_access_log,
               "No access log line per request (even with --access-log)")
      ->group(g);
  cmd.add_flag("--enable-log-requests", v.enable_access_log, "An access log line per request (as --access-log)")->group(g);
  cmd.add_option("--max-logprobs", v.max_logprobs,
                 fmt::format("The most logprobs (completions) / top_logprobs (chat) a request may ask for; more is a "
                             "400 (at most {}: the sampler returns {} per token)",
                             server::kMaxLogprobs, server::kMaxLogprobs))
      ->capture_default_str()
      ->check(in_range(-1, std::numeric_limits<int>::max()))
      ->group(g);
  cmd.add_option("--chat-template-content-format", v.content_format,
                 "Message content as the chat template sees it: openai (a list of content parts, which the Kimi "
                 "templates read; auto means this) or string (text parts joined by newlines)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "string", "openai"}))
      ->group(g);
  cmd.add_option("--response-role", v.response_role,
                 "The role of chat completion messages (with add_generation_prompt false: the last message's role)")
      ->capture_default_str()
      ->check(non_empty())
      ->group(g);
  cmd.add_flag("--enable-force-include-usage", v.force_include_usage,
               "Every stream ends with a usage chunk, as if stream_options.include_usage were true")
      ->group(g);
  cmd.add_option("--allowed-methods", v.allowed_methods, "CORS: methods a preflight allows ('*': any)")
      ->capture_default_str()
      ->check(non_empty())
      ->group(g);
  cmd.add_option("--allowed-headers", v.allowed_headers, "CORS: request headers a preflight allows ('*': any)")
      ->capture_default_str()
      ->check(non_empty())
      ->group(g);
  cmd.add_flag("--allow-credentials", v.allow_credentials,
               "CORS: Access-Control-Allow-Credentials: true (the origin is then named, never '*')")
      ->group(g);
  cmd.add_flag("--enable-request-id-headers", v.request_id_headers,
               "Every response carries X-Request-Id: the request's own, else a new random id")
      ->group(g);
  cmd.add_option_function<std::string>(
         "--hf-token", [&v](const std::string& t) { v.hf_token = t; },
         "Hugging Face token for downloads (instead of $HF_TOKEN); alone: $HF_TOKEN, else the token "
         "`huggingface-cli login` stored")
      ->expected(0, 1)
      ->default_str("")
      ->group(g);
  for (const CompatFlag& f : kIgnored) add_compat(cmd, f, &v.ignored, "vLLM, ignored");
  for (const CompatFlag& f : kRefused) add_compat(cmd, f, &v.refused, "vLLM, refused");
}

void validate_vllm_args(const VllmArgs& v, int gpus, const std::string& device) {
  for (const auto& [name, value] : v.refused) {
    const CompatFlag* f = find_refused(name);
    if (f != nullptr && *f->ok != '\0' && value == f->ok) continue;  // deltaserve's behaviour anyway
    fail("{}{}: not supported by deltaserve: {}", name, f && f->value != Value::None ? " " + value : "",
         f ? f->why : "refused");
  }
  if (v.max_logprobs < 0 || v.max_logprobs > server::kMaxLogprobs)
    fail("--max-logprobs {}: not supported by deltaserve: the sampler returns at most {} top logprobs per token "
         "(use --max-logprobs {} or less)",
         v.max_logprobs, server::kMaxLogprobs, server::kMaxLogprobs);
  auto parallel = [gpus](const char* flag, int n, const char* what, const char* hint = "") {
    if (n <= 1) return;
    if (n > gpus)
      fail("{} {}: only {} GPU(s) visible here, and multi-GPU serving ({}) is not built yet: use {} 1{}", flag, n,
           gpus, what, flag, hint);
    fail("{} {}: multi-GPU serving ({}) is not built yet; deltaserve serves Kimi-Linear-48B-A3B on one GPU: use {} 1{}",
         flag, n, what, flag, hint);
  };
  ParallelConfig pc = parallel_config(v);
  pc.validate();  // 1, 2, 4 or 8; the nodes (the model's dimensions are checked when it is loaded)
  DS_CHECK(!v.headless || v.node_rank > 0,
           "--headless: node 0 runs the engine and the API server; --headless is for the other nodes (--node-rank 1 "
           "and above)");
  // The GPU runs one rank per GPU (tensor and expert parallelism: docs/PARALLEL.md), a node's share of them on
  // each node; the CPU runs ranks as threads.
  const int local = pc.ranks_per_node();
  if (device != "cpu" && local > 1 && local > gpus)
    fail("--tensor-parallel-size {}: only {} GPU(s) visible here; tensor parallelism on --device {} puts one rank "
         "on each GPU{}: use --tensor-parallel-size {} or fewer (--device cpu runs ranks on threads)",
         v.tensor_parallel, gpus, device,
         v.nnodes > 1 ? fmt::format(" ({} ranks on each of the {} nodes)", local, v.nnodes) : "",
         std::max(1, gpus) * v.nnodes);
  parallel("--pipeline-parallel-size", v.pipeline_parallel, "pipeline parallel");
  parallel("--data-parallel-size", v.data_parallel, "data parallel");
}

ParallelConfig parallel_config(const VllmArgs& v) {
  ParallelConfig pc;
  pc.tensor_parallel_size = v.tensor_parallel;
  pc.enable_expert_parallel = v.enable_expert_parallel;
  pc.nnodes = v.nnodes;
  pc.node_rank = v.node_rank;
  pc.master_addr = v.master_addr;
  pc.master_port = v.master_port;
  return pc;
}

std::vector<std::string> ignored_flag_messages(const VllmArgs& v) {
  std::vector<std::string> out;
  for (const auto& [name, value] : v.ignored) {
    const CompatFlag* f = find_ignored(name);
    out.push_back(fmt::format("ignoring vLLM flag {}{}: {}", name, value == "true" ? "" : " " + value,
                              f ? f->why : ""));
  }
  return out;
}

int visible_gpu_count() {
  if (const char* cvd = std::getenv("CUDA_VISIBLE_DEVICES")) {
    std::string s = cvd;
    if (s.empty() || s == "-1" || s == "NoDevFiles") return 0;
    int n = 1;
    for (char c : s) n += c == ',';
    return n;
  }
  int n = 0;
  std::error_code ec;
  while (std::filesystem::exists("/dev/nvidia" + std::to_string(n), ec)) ++n;
  return n;
}

std::vector<std::string> expand_vllm_short_flags(const std::vector<std::string>& argv) {
  static const std::pair<const char*, const char*> kShort[] = {
      {"-tp", "--tensor-parallel-size"}, {"-pp", "--pipeline-parallel-size"}, {"-dp", "--data-parallel-size"}};
  std::vector<std::string> out;
  out.reserve(argv.size());
  for (size_t i = 0; i < argv.size(); ++i) {
    std::string a = argv[i];
    if (i > 0) {
      for (const auto& [s, l] : kShort) {
        const std::string sh = s;
        if (a == sh) a = l;
        else if (a.rfind(sh + "=", 0) == 0) a = std::string(l) + a.substr(sh.size());
      }
    }
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace ds::cli
