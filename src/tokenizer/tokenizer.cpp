#include "tokenizer/tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "core/parallel.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/unicode_props.h"

namespace ds {
namespace {

constexpr size_t kParallelMinBytes = 1 << 20;  // encode texts at least this long in parallel
constexpr size_t kParallelSegment = 1 << 18;   // target bytes per parallel part
constexpr size_t kCacheMinBytes = 1 << 16;     // texts this long get a cache of merged pieces

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  DS_CHECK(f.good(), "tokenizer: cannot open {}", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

bool base64_decode(std::string_view in, std::string& out) {
  out.clear();
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    int v = base64_value(c);
    if (v < 0) return false;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(char((acc >> bits) & 0xFF));
    }
  }
  return true;
}

// tiktoken.model: "<base64 bytes> <rank>" per line; ranks must be exactly 0..n-1.
std::vector<std::string> parse_tiktoken_model(const std::string& text, const std::string& path) {
  std::vector<std::string> ranks;
  std::vector<uint8_t> seen;
  std::istringstream in(text);
  std::string line, bytes;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    size_t sp = line.find(' ');
    DS_CHECK(sp != std::string::npos, "{}:{}: expected '<base64> <rank>'", path, lineno);
    DS_CHECK(base64_decode(std::string_view(line).substr(0, sp), bytes) && !bytes.empty(),
             "{}:{}: bad base64 token", path, lineno);
    long rank = -1;
    try {
      rank = std::stol(line.substr(sp + 1));
    } catch (const std::exception&) {
    }
    DS_CHECK(rank >= 0 && rank < (1 << 24), "{}:{}: bad rank", path, lineno);
    if (size_t(rank) >= ranks.size()) ranks.resize(size_t(rank) + 1), seen.resize(size_t(rank) + 1);
    DS_CHECK(!seen[size_t(rank)], "{}:{}: rank {} appears twice", path, lineno, rank);
    seen[size_t(rank)] = 1;
    ranks[size_t(rank)] = bytes;
  }
  DS_CHECK(!ranks.empty(), "{}: no tokens", path);
  for (size_t r = 0; r < ranks.size(); ++r)
    DS_CHECK(seen[r], "{}: rank {} is missing (ranks must be 0..{})", path, r, ranks.size() - 1);
  return ranks;
}

// A token name in tokenizer_config.json: a string or {"content": ...}.
std::string token_name(const nlohmann::json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return "";
  const auto& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return "";
}

}  // namespace

// Results of BPE merges for pieces that are not single tokens, direct-mapped, for one encode call
// over a long text (repeated words, indentation and numbers then merge once).
class Tokenizer::PieceCache {
 public:
  PieceCache() : keys_(kSize), ids_(kSize) {}
  // Appends the cached ids of `piece` and returns true, or returns false.
  bool get(std::string_view piece, size_t h, std::vector<int32_t>& out) const {
    const size_t i = h & (kSize - 1);
    if (keys_[i] != piece) return false;
    out.insert(out.end(), ids_[i].begin(), ids_[i].end());
    return true;
  }
  void put(std::string_view piece, size_t h, const int32_t* ids, size_t n) {
    const size_t i = h & (kSize - 1);
    keys_[i].assign(piece);
    ids_[i].assign(ids, ids + n);
  }
  static constexpr size_t kMaxPiece = 256;

 private:
  static constexpr size_t kSize = 4096;
  std::vector<std::string> keys_;
  std::vector<std::vector<int32_t>> ids_;
};

Tokenizer::~Tokenizer() = default;

std::shared_ptr<Tokenizer> Tokenizer::from_dir(const std::string& dir) {
  namespace fs = std::filesystem;
  DS_CHECK(fs::is_directory(dir), "tokenizer: {} is not a directory", dir);
  fs::path model = fs::path(dir) / "tiktoken.model";
  DS_CHECK(fs::exists(model), "tokenizer: {} has no tiktoken.model", dir);
  fs::path config = fs::path(dir) / "tokenizer_config.json";
  fs::path tmpl = fs::path(dir) / "chat_template.jinja";
  return from_files(model.string(), fs::exists(config) ? config.string() : "",
                    fs::exists(tmpl) ? tmpl.string() : "");
}

std::shared_ptr<Tokenizer> Tokenizer::from_files(const std::string& tiktoken_model,
                                                 const std::string& config_json,
                                                 const std::string& chat_template_file) {
  auto ranks = parse_tiktoken_model(read_file(tiktoken_model), tiktoken_model);
  nlohmann::json config;
  if (!config_json.empty()) {
    try {
      config = nlohmann::json::parse(read_file(config_json));
    } catch (const nlohmann::json::exception& e) {
      fail("tokenizer: {}: {}", config_json, e.what());
    }
  }
  std::string source;
  if (!chat_template_file.empty()) {
    source = read_file(chat_template_file);
  } else if (config.is_object() && config.contains("chat_template")) {
    const auto& t = config["chat_template"];
    if (t.is_string()) {
      source = t.get<std::string>();
    } else if (t.is_array()) {  // [{"name": ..., "template": ...}]: "default", else the first
      for (const auto& e : t)
        if (e.value("name", "") == "default" || source.empty()) source = e.value("template", "");
    }
  }
  return std::make_shared<Tokenizer>(std::move(ranks), config, std::move(source));
}

Tokenizer::Tokenizer(std::vector<std::string> ranks, const nlohmann::json& config,
                     std::string chat_template_source)
    : template_source_(std::move(chat_template_source)) {
  ranks_.build(ranks);
  num_base_ = int(ranks.size());
  bytes_ = std::move(ranks);
  std::unordered_map<int, std::pair<std::string, bool>> named;  // id → (name, special)
  if (config.is_object() && config.contains("added_tokens_decoder")) {
    for (const auto& [key, entry] : config["added_tokens_decoder"].items()) {
      int id = -1;
      try {
        id = std::stoi(key);
      } catch (const std::exception&) {
        fail("tokenizer_config.json: added_tokens_decoder key '{}' is not an id", key);
      }
      DS_CHECK(entry.is_object() && entry.contains("content") && entry["content"].is_string(),
               "tokenizer_config.json: added_tokens_decoder[{}] has no content", key);
      named[id] = {entry["content"].get<std::string>(), entry.value("special", true)};
    }
  }
  special_.assign(kNumSpecialTokens, 1);
  bytes_.reserve(size_t(vocab_size()));
  for (int i = 0; i < kNumSpecialTokens; ++i) {
    const int id = num_base_ + i;
    auto it = named.find(id);
    if (it != named.end()) {
      bytes_.push_back(it->second.first);
      special_[size_t(i)] = it->second.second;
    } else {
      bytes_.push_back(fmt::format("<|reserved_token_{}|>", id));
    }
  }
  special_prefix_bits_.assign(65536 / 64, 0);
  for (int i = 0; i < kNumSpecialTokens; ++i) {
    const std::string& name = bytes_[size_t(num_base_ + i)];
    DS_CHECK(name.size() >= 2, "tokenizer: special token {} name '{}' is too short", num_base_ + i, name);
    auto [it, inserted] = special_ids_.emplace(std::string_view(name), num_base_ + i);
    DS_CHECK(inserted, "tokenizer: special token name '{}' is used by ids {} and {}", name, it->second,
             num_base_ + i);
    size_t key = (size_t(uint8_t(name[0])) << 8) | uint8_t(name[1]);
    special_prefix_bits_[key >> 6] |= uint64_t(1) << (key & 63);
    if (std::find(special_lengths_.begin(), special_lengths_.end(), name.size()) == special_lengths_.end())
      special_lengths_.push_back(name.size());
    if (name.find('\n') != std::string::npos) specials_have_newline_ = true;
  }
  std::sort(special_lengths_.rbegin(), special_lengths_.rend());
  auto id_of = [&](const std::string& name) -> int32_t {
    auto it = special_ids_.find(name);
    return it == special_ids_.end() ? -1 : it->second;
  };
  bos_id_ = id_of(config.is_object() ? token_name(config, "bos_token") : "[BOS]");
  eos_id_ = id_of(config.is_object() ? token_name(config, "eos_token") : "[EOS]");
  pad_id_ = id_of(config.is_object() ? token_name(config, "pad_token") : "[PAD]");
  if (!template_source_.empty()) {
    try {
      template_ = std::make_shared<const ChatTemplate>(template_source_);
    } catch (const Error& e) {
      // Loading still succeeds (encode/decode work); rendering reports the error.
      spdlog::warn("tokenizer: the model's chat template does not parse: {}", e.what());
    }
  }
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  DS_CHECK(is_valid(id), "tokenizer: token id {} out of range [0, {})", id, vocab_size());
  return bytes_[size_t(id)];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= num_base_ && id < vocab_size() && special_[size_t(id - num_base_)];
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token_text) const {
  auto it = special_ids_.find(token_text);
  if (it != special_ids_.end()) return it->second;
  int32_t r = ranks_.find(token_text);
  if (r != BpeRanks::kNone) return r;
  return std::nullopt;
}

std::vector<int32_t> Tokenizer::default_stop_ids() const {
  std::vector<int32_t> ids;
  for (const char* name : {"<|im_end|>", "[EOS]", "[EOT]"}) {
    auto it = special_ids_.find(name);
    if (it != special_ids_.end()) ids.push_back(it->second);
  }
  return ids;
}

std::pair<size_t, int32_t> Tokenizer::find_special(std::string_view text, size_t from) const {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t i = from; i + 1 < text.size(); ++i) {
    size_t key = (size_t(s[i]) << 8) | s[i + 1];
    if (!(special_prefix_bits_[key >> 6] & (uint64_t(1) << (key & 63)))) continue;
    for (size_t len : special_lengths_) {  // longest name first
      if (i + len > text.size()) continue;
      auto it = special_ids_.find(text.substr(i, len));
      if (it != special_ids_.end()) return {i, it->second};
    }
  }
  return {std::string_view::npos, -1};
}

void Tokenizer::encode_ordinary(std::string_view text, std::vector<int32_t>& out, PieceCache* cache) const {
  for (size_t p = 0; p < text.size();) {
    const size_t e = kimi_piece_end(text, p);
    const std::string_view piece = text.substr(p, e - p);
    p = e;
    const int32_t whole = ranks_.find(piece);
    if (whole != BpeRanks::kNone) {
      out.push_back(whole);
    } else if (cache && piece.size() <= PieceCache::kMaxPiece) {
      const size_t h = std::hash<std::string_view>()(piece);
      if (cache->get(piece, h, out)) continue;
      const size_t before = out.size();
      ranks_.merge(piece, out);
      cache->put(piece, h, out.data() + before, out.size() - before);
    } else {
      ranks_.merge(piece, out);
    }
  }
}

namespace {
// Whether [b, e) overlaps one of the sorted, disjoint `spans`.
bool overlaps(const std::vector<std::pair<size_t, size_t>>& spans, size_t b, size_t e) {
  auto it = std::upper_bound(spans.begin(), spans.end(), b,
                             [](size_t x, const std::pair<size_t, size_t>& s) { return x < s.second; });
  return it != spans.end() && it->first < e;
}
}  // namespace

void Tokenizer::encode_slice(std::string_view text, bool allow_special, std::vector<int32_t>& out,
                             const std::vector<std::pair<size_t, size_t>>* data, size_t base) const {
  std::unique_ptr<PieceCache> cache;
  if (text.size() >= kCacheMinBytes) cache = std::make_unique<PieceCache>();
  if (!allow_special) {
    encode_ordinary(text, out, cache.get());
    return;
  }
  size_t pos = 0, from = 0;
  for (;;) {
    auto [at, id] = find_special(text, from);
    if (id < 0) break;
    const size_t len = bytes_[size_t(id)].size();
    if (data && overlaps(*data, base + at, base + at + len)) {
      from = at + 1;  // request data: ordinary text, encoded with what surrounds it
      continue;
    }
    encode_ordinary(text.substr(pos, at - pos), out, cache.get());
    out.push_back(id);
    pos = from = at + len;
  }
  encode_ordinary(text.substr(pos), out, cache.get());
}

std::vector<int32_t> Tokenizer::encode_serial(std::string_view text, bool allow_special) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  std::vector<size_t> starts = qkt_slice_starts(text);
  for (size_t k = 0; k < starts.size(); ++k) {
    size_t end = k + 1 < starts.size() ? starts[k + 1] : text.size();
    encode_slice(text.substr(starts[k], end - starts[k]), allow_special, out);
  }
  return out;
}

std::vector<int32_t> Tokenizer::encode_chat(const ChatPrompt& prompt) const {
  if (prompt.data.empty()) return encode(prompt.text);
  const std::string_view text = prompt.text;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  std::vector<size_t> starts = qkt_slice_starts(text);
  for (size_t k = 0; k < starts.size(); ++k) {
    size_t end = k + 1 < starts.size() ? starts[k + 1] : text.size();
    encode_slice(text.substr(starts[k], end - starts[k]), true, out, &prompt.data, starts[k]);
  }
  return out;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool allow_special) const {
  if (text.size() < kParallelMinBytes || num_threads() < 2 || specials_have_newline_)
    return encode_serial(text, allow_special);
  // QK-T slices, each cut further where cutting cannot change the pieces; encode the parts in
  // parallel and concatenate.
  std::vector<std::string_view> parts;
  std::vector<size_t> starts = qkt_slice_starts(text);
  for (size_t k = 0; k < starts.size(); ++k) {
    size_t end = k + 1 < starts.size() ? starts[k + 1] : text.size();
    std::string_view slice = text.substr(starts[k], end - starts[k]);
    size_t prev = 0;
    for (size_t cut : safe_cut_points(slice, kParallelSegment)) {
      parts.push_back(slice.substr(prev, cut - prev));
      prev = cut;
    }
    parts.push_back(slice.substr(prev));
  }
  std::vector<std::vector<int32_t>> ids(parts.size());
  parallel_for(parts.size(), [&](size_t b, size_t e) {
    for (size_t i = b; i < e; ++i) {
      ids[i].reserve(parts[i].size() / 3 + 4);
      encode_slice(parts[i], allow_special, ids[i]);
    }
  });
  size_t total = 0;
  for (const auto& v : ids) total += v.size();
  std::vector<int32_t> out;
  out.reserve(total);
  for (const auto& v : ids) out.insert(out.end(), v.begin(), v.end());
  return out;
}

std::string Tokenizer::decode_bytes(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    DS_CHECK(is_valid(id), "tokenizer: cannot decode id {} (vocabulary has {} ids)", id, vocab_size());
    if (skip_special && is_special(id)) continue;
    out += bytes_[size_t(id)];
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string bytes = decode_bytes(ids, skip_special);
  std::string out;
  unicode::utf8_replace_invalid(bytes, out);
  return out;
}

std::string Tokenizer::vocab_problem(int model_vocab_size) const {
  if (model_vocab_size < num_base_)
    return fmt::format("the model's vocab_size {} is smaller than the tokenizer's {} base tokens",
                       model_vocab_size, num_base_);
  for (int i = 0; i < kNumSpecialTokens; ++i) {
    const int id = num_base_ + i;
    const std::string& name = bytes_[size_t(id)];
    if (id >= model_vocab_size && name != fmt::format("<|reserved_token_{}|>", id))
      return fmt::format("special token {} has id {} but the model's vocab_size is {}", name, id,
                         model_vocab_size);
  }
  return "";
}

void Tokenizer::check_vocab(int model_vocab_size) const {
  std::string problem = vocab_problem(model_vocab_size);
  DS_CHECK(problem.empty(), "tokenizer/model mismatch: {}", problem);
  if (model_vocab_size < vocab_size())
    spdlog::info("tokenizer: reserved special ids {}..{} have no model rows (never produced)",
                 model_vocab_size, vocab_size() - 1);
  else if (model_vocab_size > vocab_size())
    spdlog::warn("tokenizer: the model has {} rows beyond the tokenizer's {} ids (never sampled by a "
                 "trained model; decoding them fails)", model_vocab_size - vocab_size(), vocab_size());
}

std::string Tokenizer::apply_chat_template(const nlohmann::ordered_json& messages,
                                           const nlohmann::ordered_json& tools,
                                           bool add_generation_prompt,
                                           const nlohmann::ordered_json& extra) const {
  return render_chat(messages, tools, add_generation_prompt, extra).text;
}

ChatPrompt Tokenizer::render_chat(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                                  bool add_generation_prompt, const nlohmann::ordered_json& extra) const {
  nlohmann::ordered_json ctx = nlohmann::ordered_json::object();
  auto name = [&](int32_t id) { return id >= 0 ? bytes_[size_t(id)] : std::string(); };
  ctx["bos_token"] = name(bos_id_);
  ctx["eos_token"] = name(eos_id_);
  ctx["pad_token"] = name(pad_id_);
  if (auto unk = token_id("[UNK]")) ctx["unk_token"] = name(*unk);
  std::vector<std::string> data_keys = {"messages", "tools"};
  if (extra.is_object())
    for (const auto& [k, v] : extra.items()) {
      ctx[k] = v;
      data_keys.push_back(k);
    }
  ctx["messages"] = messages.is_null() ? nlohmann::ordered_json::array() : messages;
  ctx["tools"] = tools;
  ctx["add_generation_prompt"] = add_generation_prompt;
  if (template_source_.empty()) return ChatTemplate::builtin_kimi().render_marked(ctx, data_keys);
  if (!template_) {
    ChatTemplate t(template_source_);  // throws the parse error, naming the line
    return t.render_marked(ctx, data_keys);
  }
  return template_->render_marked(ctx, data_keys);
}

std::string Tokenizer::apply_chat_template(const nlohmann::json& messages, const nlohmann::json& tools,
                                           bool add_generation_prompt, const nlohmann::json& extra) const {
  return render_chat(messages, tools, add_generation_prompt, extra).text;
}

ChatPrompt Tokenizer::render_chat(const nlohmann::json& messages, const nlohmann::json& tools,
                                  bool add_generation_prompt, const nlohmann::json& extra) const {
  auto ordered = [](const nlohmann::json& j) { return nlohmann::ordered_json::parse(j.dump()); };
  return render_chat(ordered(messages), ordered(tools), add_generation_prompt,
                     extra.is_null() ? nlohmann::ordered_json() : ordered(extra));
}

}  // namespace ds
