// Kimi's tiktoken tokenizer (spec §7): vocabulary files, encode (pre-tokenizer + byte-level BPE,
// special-token text matched as specials or as plain text), decode (bytes → UTF-8 with U+FFFD for
// invalid sequences, like Python's errors="replace"), and the chat template.
// Ids: base tokens 0..num_base-1 (rank = id), then 258 specials at num_base.. named from
// tokenizer_config.json's added_tokens_decoder, else "<|reserved_token_{id}|>".
// A Tokenizer is immutable after loading and safe to use from several threads at once.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/chat_template.h"

namespace ds {

class Tokenizer {
 public:
  static constexpr int kNumSpecialTokens = 258;  // QK-T: num_reserved_special_tokens (256) + 2

  // Loads tiktoken.model + tokenizer_config.json from `dir`; the chat template comes from
  // chat_template.jinja beside them, else tokenizer_config.json's chat_template, else none
  // (then apply_chat_template uses the built-in Kimi format). Throws ds::Error.
  static std::shared_ptr<Tokenizer> from_dir(const std::string& dir);
  // The same from explicit files; `config_json` may be empty (no config: names from defaults).
  static std::shared_ptr<Tokenizer> from_files(const std::string& tiktoken_model,
                                               const std::string& config_json,
                                               const std::string& chat_template_file = "");
  // From in-memory data: ranks[id] = bytes; config as parsed JSON (may be null).
  Tokenizer(std::vector<std::string> ranks, const nlohmann::json& config,
            std::string chat_template_source = "");
  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;  // lookup tables point into its own storage
  Tokenizer& operator=(const Tokenizer&) = delete;

  // allow_special: special-token text in `text` becomes the special id (Kimi's default);
  // otherwise it is ordinary text. Long texts are encoded in parallel (same result).
  std::vector<int32_t> encode(std::string_view text, bool allow_special = true) const;
  // Single-threaded encode (what `encode` does on each part).
  std::vector<int32_t> encode_serial(std::string_view text, bool allow_special = true) const;
  // Concatenated token bytes, made valid UTF-8. skip_special drops ids that are special tokens.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;
  // Concatenated raw bytes (possibly not UTF-8).
  std::string decode_bytes(const std::vector<int32_t>& ids, bool skip_special = false) const;

  const std::string& token_bytes(int32_t id) const;  // raw bytes of one token (throws on bad id)
  // True for ids of the special range that are marked special (added_tokens_decoder "special",
  // default true; reserved tokens are special).
  bool is_special(int32_t id) const;
  bool is_valid(int32_t id) const { return id >= 0 && id < vocab_size(); }
  int vocab_size() const { return num_base_ + kNumSpecialTokens; }
  int num_base_tokens() const { return num_base_; }
  // Id of a special token by name, else of the base token with exactly these bytes.
  std::optional<int32_t> token_id(std::string_view token_text) const;
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t pad_id() const { return pad_id_; }
  std::vector<int32_t> default_stop_ids() const;  // <|im_end|>, [EOS], [EOT] when present

  const std::string& chat_template_source() const { return template_source_; }  // "" when none
  // Renders messages/tools with the model's template (or the built-in Kimi format). The ordered
  // overload keeps the key order of the given objects (what `tojson` prints, e.g. for tools);
  // nlohmann::json objects are key-sorted. `extra` keys are added to the template context.
  std::string apply_chat_template(const nlohmann::json& messages, const nlohmann::json& tools,
                                  bool add_generation_prompt, const nlohmann::json& extra = {}) const;
  std::string apply_chat_template(const nlohmann::ordered_json& messages,
                                  const nlohmann::ordered_json& tools, bool add_generation_prompt,
                                  const nlohmann::ordered_json& extra = {}) const;
  // The same rendering, with the parts that came from messages, tools and `extra` marked as data
  // (see ChatPrompt): what encode_chat needs to keep request text from forging control tokens.
  ChatPrompt render_chat(const nlohmann::json& messages, const nlohmann::json& tools, bool add_generation_prompt,
                         const nlohmann::json& extra = {}) const;
  ChatPrompt render_chat(const nlohmann::ordered_json& messages, const nlohmann::ordered_json& tools,
                         bool add_generation_prompt, const nlohmann::ordered_json& extra = {}) const;
  // Encodes a rendered chat prompt: special-token text is a special id only where it lies wholly
  // in the template's own text; inside (or across) data ranges it is ordinary text. Without data
  // ranges this equals encode(prompt.text).
  std::vector<int32_t> encode_chat(const ChatPrompt& prompt) const;

  // Compares with a model's vocab_size: throws ds::Error when ids the tokenizer produces for
  // ordinary text or named specials would be out of range; logs a warning for unused extra rows
  // or for reserved specials beyond the model (Kimi: 163,842 ids vs 163,840 rows is expected).
  void check_vocab(int model_vocab_size) const;
  // The same check as text: empty when consistent, else the problem (no throw, no log).
  std::string vocab_problem(int model_vocab_size) const;

 private:
  class PieceCache;
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out, PieceCache* cache) const;
  // data: absolute byte ranges where special-token text is not matched; `base` is text's offset.
  void encode_slice(std::string_view text, bool allow_special, std::vector<int32_t>& out,
                    const std::vector<std::pair<size_t, size_t>>* data = nullptr, size_t base = 0) const;
  // Leftmost special-token occurrence at or after `from`: {position, id}; {npos, -1} if none.
  std::pair<size_t, int32_t> find_special(std::string_view text, size_t from) const;

  int num_base_ = 0;
  std::vector<std::string> bytes_;      // [vocab_size]: token bytes (specials: their names)
  std::vector<uint8_t> special_;        // [kNumSpecialTokens]: is_special for the special range
  BpeRanks ranks_;
  std::unordered_map<std::string_view, int32_t> special_ids_;  // name (views bytes_) → id
  std::vector<uint64_t> special_prefix_bits_;  // [65536 bits]: a special name starts with these 2 bytes
  std::vector<size_t> special_lengths_;        // distinct name lengths, longest first
  bool specials_have_newline_ = false;
  int32_t bos_id_ = -1, eos_id_ = -1, pad_id_ = -1;
  std::string template_source_;
  std::shared_ptr<const ChatTemplate> template_;
};

}  // namespace ds
