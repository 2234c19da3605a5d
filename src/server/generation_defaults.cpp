#include "server/generation_defaults.h"

#include <fmt/format.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"

namespace ds::server {

namespace fs = std::filesystem;
using nlohmann::json;

std::string SamplingDefaults::describe() const {
  std::string s;
  auto add = [&](const char* k, const std::string& v) { s += (s.empty() ? "" : ", ") + fmt::format("{}={}", k, v); };
  if (temperature) add("temperature", fmt::format("{}", *temperature));
  if (top_p) add("top_p", fmt::format("{}", *top_p));
  if (top_k) add("top_k", fmt::format("{}", *top_k));
  if (min_p) add("min_p", fmt::format("{}", *min_p));
  if (repetition_penalty) add("repetition_penalty", fmt::format("{}", *repetition_penalty));
  if (max_tokens) add("max_new_tokens", fmt::format("{}", *max_tokens));
  return s;
}

SamplingDefaults sampling_defaults_from_json(const json& obj, const std::string& source) {
  DS_CHECK(obj.is_object(), "{}: a generation config must be a JSON object", source);
  SamplingDefaults d;
  auto number = [&](const char* key, double lo, double hi, bool lo_open) -> std::optional<double> {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::nullopt;
    DS_CHECK(it->is_number(), "{}: '{}' must be a number, got {}", source, key, it->dump());
    const double v = it->get<double>();
    DS_CHECK(v <= hi && (lo_open ? v > lo : v >= lo), "{}: '{}' must be in {}{}, {}], got {}", source, key,
             lo_open ? "(" : "[", lo, hi, v);
    return v;
  };
  auto integer = [&](const char* key, int64_t lo, int64_t hi) -> std::optional<int64_t> {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::nullopt;
    DS_CHECK(it->is_number_integer(), "{}: '{}' must be an integer, got {}", source, key, it->dump());
    const int64_t v = it->get<int64_t>();
    DS_CHECK(v >= lo && v <= hi, "{}: '{}' must be in [{}, {}], got {}", source, key, lo, hi, v);
    return v;
  };
  d.temperature = number("temperature", 0.0, 2.0, false);
  d.top_p = number("top_p", 0.0, 1.0, true);
  d.min_p = number("min_p", 0.0, 1.0, false);
  d.repetition_penalty = number("repetition_penalty", 0.0, 10.0, true);
  d.top_k = integer("top_k", -1, int64_t(1) << 30);
  if (d.top_k && *d.top_k == 0) d.top_k = -1;  // Hugging Face's "no top-k"
  d.max_tokens = integer("max_new_tokens", 1, int64_t(1) << 40);
  return d;
}

SamplingDefaults merge_sampling_defaults(SamplingDefaults base, const SamplingDefaults& over) {
  auto take = [](auto& a, const auto& b) {
    if (b) a = b;
  };
  take(base.temperature, over.temperature);
  take(base.top_p, over.top_p);
  take(base.min_p, over.min_p);
  take(base.repetition_penalty, over.repetition_penalty);
  take(base.top_k, over.top_k);
  take(base.max_tokens, over.max_tokens);
  return base;
}

void check_generation_config_mode(const std::string& mode) {
  if (mode == "auto" || mode == "vllm") return;
  std::error_code ec;
  DS_CHECK(fs::is_directory(mode, ec),
           "--generation-config {}: must be 'auto' (the model's generation_config.json), 'vllm' (none) or a folder "
           "holding a generation_config.json",
           mode);
}

SamplingDefaults parse_generation_config_override(const std::string& text) {
  if (text.empty()) return {};
  json j = json::parse(text, nullptr, false);
  DS_CHECK(!j.is_discarded(), "--override-generation-config: not valid JSON: {}", text);
  return sampling_defaults_from_json(j, "--override-generation-config");
}

SamplingDefaults load_sampling_defaults(const std::string& mode, const std::string& model_dir,
                                        const std::string& override_text, std::string* found) {
  check_generation_config_mode(mode);
  SamplingDefaults d;
  if (found) found->clear();
  if (mode != "vllm") {
    const fs::path file = fs::path(mode == "auto" ? model_dir : mode) / "generation_config.json";
    std::error_code ec;
    if (fs::is_regular_file(file, ec)) {
      std::ifstream in(file);
      json j = json::parse(in, nullptr, false);
      DS_CHECK(!j.is_discarded(), "{}: not valid JSON", file.string());
      d = sampling_defaults_from_json(j, file.string());
      if (found) *found = file.string();
    }
  }
  return merge_sampling_defaults(d, parse_generation_config_override(override_text));
}

}  // namespace ds::server
