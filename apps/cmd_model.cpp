// `deltaserve score` and `deltaserve generate`: run a model on token ids, without the engine.
//   score:    logits of every position, written as a safetensors file with one float32 tensor `logits`
//             [T, vocab].
//   generate: prefill (optionally in chunks), then one token per step; prints the new ids as a JSON array.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/commands.h"
#include "apps/flag_checks.h"
#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "engine/backend_factory.h"
#include "model/safetensors.h"

namespace ds::cli {
namespace {

struct ModelArgs {
  std::string model_dir;
  std::string device = "cpu";
  std::string load_format = "auto";
  std::string dtype = "auto";
  std::string quantization = "none";
  std::string kv_cache_dtype = "auto";
  std::string ids;
  int threads = 0;
  int prefill_chunk = 0;  // 0: the whole prompt in one step
  bool biased_moe_weights = false;
};

void add_model_options(CLI::App* cmd, ModelArgs& a) {
  cmd->add_option("--model", a.model_dir, "checkpoint directory (config.json + safetensors)")->required();
  cmd->add_option("--ids", a.ids, "prompt token ids, comma-separated (e.g. 1,2,3)")->required();
  cmd->add_option("--device", a.device, "cpu | cuda")->capture_default_str();
  cmd->add_option("--load-format", a.load_format, "auto | safetensors | dummy")->capture_default_str();
  cmd->add_option("--dtype", a.dtype, "GPU activation dtype: auto | bfloat16 | float32")->capture_default_str();
  cmd->add_option("--quantization", a.quantization,
                  "none | fp8 (weights quantized at load) | int4 (an INT4 checkpoint; dummy INT4 weights) | "
                  "compressed-tensors (as the checkpoint is)")
      ->capture_default_str()
      ->check(CLI::IsMember({"none", "fp8", "int4", "compressed-tensors"}));
  cmd->add_option("--kv-cache-dtype", a.kv_cache_dtype, "auto | fp8 (the MLA latent cache in e4m3, a scale per token)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "fp8", "fp8_e4m3"}));
  cmd->add_option("--threads", a.threads, "CPU worker threads (0: all cores)")->check(in_range(0, 4096));
  cmd->add_option("--prefill-chunk", a.prefill_chunk, "prefill the prompt in chunks of N tokens (0: at once)")
      ->check(in_range(0, 1 << 24));
  cmd->add_flag("--biased-moe-weights", a.biased_moe_weights,
                "weight experts by the biased scores (the released remote code's routing)");
}

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= s.size()) {
    const size_t end = std::min(s.find(',', pos), s.size());
    const std::string tok = s.substr(pos, end - pos);
    size_t used = 0;
    long v = -1;
    try {
      v = std::stol(tok, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (tok.empty() || used != tok.size() || v < 0 || v > INT32_MAX)
      fail("--ids: '{}' is not a token id (expected comma-separated non-negative integers)", tok);
    ids.push_back(int32_t(v));
    pos = end + 1;
  }
  if (ids.empty()) fail("--ids: no token ids given");
  return ids;
}

// The one place the CLI creates a backend: one sequence, enough pages for `max_len` tokens.
std::unique_ptr<Backend> open_backend(const ModelArgs& a, int64_t max_len) {
  if (a.threads > 0) set_num_threads(a.threads);
  BackendOptions o;
  o.device = a.device;
  o.model_dir = a.model_dir;
  o.load_format = a.load_format;
  o.dtype = a.dtype;
  o.quantization = a.quantization;
  o.kv_cache_dtype = parse_kv_cache_dtype(a.kv_cache_dtype);
  o.max_num_seqs = 1;
  o.max_model_len = max_len;
  o.block_size = 16;
  if (a.device == "cpu") o.num_blocks = int((max_len + o.block_size - 1) / o.block_size);
  o.biased_moe_weights = a.biased_moe_weights;
  auto b = create_backend(o);
  const auto g = b->limits();
  DS_CHECK(int64_t(g.num_blocks) * g.block_size >= max_len, "the {} backend's cache holds {} tokens, {} are needed",
           a.device, int64_t(g.num_blocks) * g.block_size, max_len);
  return b;
}

std::vector<int32_t> all_pages(const Backend& b, int64_t max_len) {
  const auto g = b.limits();
  std::vector<int32_t> t(size_t((max_len + g.block_size - 1) / g.block_size));
  for (size_t i = 0; i < t.size(); ++i) t[i] = int32_t(i);
  return t;
}

// Runs the prompt through the backend in chunks of `chunk` tokens (0: as many as one step may hold).
// score (`sample` null): returns the logits of every position. generate: the last chunk samples
// `sample`'s row and returns the token in *token.
std::vector<float> prefill(Backend& b, const std::vector<int32_t>& prompt, int chunk, const std::vector<int32_t>& table,
                           const SeqSampling* sample = nullptr, int32_t* token = nullptr) {
  const BackendLimits lim = b.limits();
  int limit = lim.max_tokens_per_step;
  // scoring asks for a logits row per position: a step holds at most max_logit_rows of them
  if (sample == nullptr && lim.max_logit_rows > 0 && (limit <= 0 || lim.max_logit_rows < limit))
    limit = lim.max_logit_rows;
  size_t step = chunk > 0 ? size_t(chunk) : prompt.size();
  if (limit > 0 && step > size_t(limit)) step = size_t(limit);  // one step never holds more
  std::vector<float> out;
  for (size_t s = 0; s < prompt.size(); s += step) {
    const size_t e = std::min(prompt.size(), s + step);
    StepPlan plan;
    auto& slice = plan.batch.add(0, int64_t(s), std::vector<int32_t>(prompt.begin() + s, prompt.begin() + e), table,
                                 /*logits_all=*/sample == nullptr);
    slice.need_logits = sample == nullptr || e == prompt.size();
    plan.return_logits = sample == nullptr;
    if (sample && e == prompt.size()) plan.sampling = {*sample};
    StepResult r = b.execute(plan);
    out.insert(out.end(), r.logits.begin(), r.logits.end());
    if (!r.samples.empty()) *token = r.samples[0].token;
  }
  return out;
}

void run_score(const ModelArgs& a, const std::string& out_path) {
  const auto ids = parse_ids(a.ids);
  auto b = open_backend(a, int64_t(ids.size()));
  const auto logits = prefill(*b, ids, a.prefill_chunk, all_pages(*b, int64_t(ids.size())));
  const int64_t vocab = b->config().vocab_size;
  DS_CHECK(int64_t(logits.size()) == int64_t(ids.size()) * vocab, "score: got {} logits for {} positions",
           logits.size(), ids.size());
  write_safetensors(out_path, {{"logits", DType::F32, {int64_t(ids.size()), vocab}, logits.data()}});
  SPDLOG_INFO("wrote logits [{}, {}] to {}", ids.size(), vocab, out_path);
}

void run_generate(const ModelArgs& a, int max_tokens, SampleParams sp, bool ignore_eos) {
  DS_CHECK(max_tokens >= 0, "--max-tokens must be >= 0, got {}", max_tokens);
  const auto prompt = parse_ids(a.ids);
  const int64_t max_len = int64_t(prompt.size()) + max_tokens;
  auto b = open_backend(a, max_len);
  const auto table = all_pages(*b, max_len);
  const auto& eos = b->config().eos_token_ids;
  std::vector<int32_t> out;
  // One sequence (id 1): its penalty history is the prompt, given once; the backend appends each token.
  SeqSampling row;
  row.seq_id = 1;
  row.params = sp;
  row.history = true;
  row.prompt = prompt;
  int32_t tok = -1;
  if (max_tokens > 0) prefill(*b, prompt, a.prefill_chunk, table, &row, &tok);
  row.history = false;
  row.prompt.clear();
  for (int i = 0; i < max_tokens; ++i) {
    out.push_back(tok);
    if (!ignore_eos && std::find(eos.begin(), eos.end(), tok) != eos.end()) break;
    if (i + 1 == max_tokens) break;
    StepPlan step;
    step.batch.add(0, int64_t(prompt.size()) + i, {tok}, table);
    row.params.step = uint64_t(i + 1);
    step.sampling = {row};
    tok = b->execute(step).samples[0].token;
  }
  std::printf("%s\n", nlohmann::json(out).dump().c_str());
}

}  // namespace

void register_model_commands(CLI::App& app) {
  static ModelArgs score_args, gen_args;
  static std::string out_path;
  auto* score = app.add_subcommand("score", "logits of every position of a prompt, written to a safetensors file");
  add_model_options(score, score_args);
  score->add_option("--out", out_path, "output safetensors file (tensor `logits` [T, vocab], float32)")->required();
  score->callback([] { run_score(score_args, out_path); });

  static int max_tokens = 16;
  static SampleParams sp;
  static bool ignore_eos = false;
  sp.temperature = 0.0f;  // greedy unless asked otherwise
  auto* gen = app.add_subcommand("generate", "continue a prompt; prints the new token ids as a JSON array");
  add_model_options(gen, gen_args);
  gen->add_option("--max-tokens", max_tokens, "tokens to generate")->capture_default_str()->check(in_range(1, 1 << 24));
  gen->add_option("--temperature", sp.temperature, "0: greedy")->capture_default_str()->check(in_range(0.0f, 100.0f));
  gen->add_option("--top-k", sp.top_k, "<= 0: off")->check(in_range(-1, 1 << 24));
  gen->add_option("--top-p", sp.top_p, "nucleus mass")->capture_default_str()->check(in_range(1e-6f, 1.0f));
  gen->add_option("--seed", sp.seed, "sampling seed")->capture_default_str();
  gen->add_flag("--ignore-eos", ignore_eos, "keep going after an end-of-sequence token");
  gen->callback([] { run_generate(gen_args, max_tokens, sp, ignore_eos); });
}

}  // namespace ds::cli
