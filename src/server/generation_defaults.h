// Server-wide sampling defaults, vLLM's `--generation-config` / `--override-generation-config`: the
// sampling fields of a model's generation_config.json (or of a folder's), merged with an override
// object. A request's own fields always win; max_new_tokens also caps every request's completion
// length, as in vLLM ("a server-wide limit on the number of output tokens").
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

namespace ds::server {

struct SamplingDefaults {
  std::optional<double> temperature, top_p, min_p, repetition_penalty;
  std::optional<int64_t> top_k;
  std::optional<int64_t> max_tokens;  // generation_config's max_new_tokens
  // Not from a generation config: vLLM's --return-tokens-as-token-ids, the default of the request field
  // return_tokens_as_token_ids (logprob tokens as "token_id:N").
  bool tokens_as_ids = false;
  // Nor this: vLLM's --max-logprobs, the most logprobs / top_logprobs a request may ask for (400 above).
  int max_logprobs = 20;
  bool empty() const { return !temperature && !top_p && !min_p && !repetition_penalty && !top_k && !max_tokens; }
  // "temperature=0.6, top_p=0.95, max_new_tokens=4096" (the fields set, in that order); "" when empty.
  std::string describe() const;
};

// The fields vLLM takes from a generation config object: temperature, top_p, top_k, min_p,
// repetition_penalty, max_new_tokens (others: token ids, do_sample..., are not sampling defaults and are
// skipped). Each is range-checked as a request's field is; a bad one throws ds::Error naming `source`
// and the key. top_k 0 means off (as -1), as in Hugging Face's configs.
SamplingDefaults sampling_defaults_from_json(const nlohmann::json& obj, const std::string& source);

// Fields set in `over` replace those of `base`.
SamplingDefaults merge_sampling_defaults(SamplingDefaults base, const SamplingDefaults& over);

// `--generation-config` must be "auto", "vllm" or an existing folder: throws ds::Error otherwise.
void check_generation_config_mode(const std::string& mode);
// `--override-generation-config`: a JSON object of the fields above ("" : none). Throws ds::Error.
SamplingDefaults parse_generation_config_override(const std::string& text);

// What the server uses: with `mode` "auto", MODEL_DIR/generation_config.json if there is one; with a
// folder, its generation_config.json if there is one; with "vllm", nothing; then the override on top.
// `found` (optional) is set to the file read, or "".
SamplingDefaults load_sampling_defaults(const std::string& mode, const std::string& model_dir,
                                        const std::string& override_text, std::string* found = nullptr);

}  // namespace ds::server
