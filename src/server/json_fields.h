// Typed access to the fields of a JSON request object that turns every type or range problem into
// a 400 naming the field, and remembers which fields were read so that the rest can be rejected
// as unrecognized (OpenAI's behaviour). JSON null counts as absent.
#pragma once
#include <cstdint>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>

namespace ds::server {

// What happens to request fields nobody reads. Strict: a 400 naming the field (OpenAI's behaviour).
// Lenient (vLLM's, the server's default): the field is ignored and one warning is logged per field
// name (array indices left out: messages[0].x and messages[3].x are one name). Thread-safe.
class UnknownFieldPolicy {
 public:
  explicit UnknownFieldPolicy(bool strict) : strict_(strict) {}
  bool strict() const { return strict_; }
  // Logs the warning for `name` unless it was logged before; true when it logged now.
  bool warn_once(const std::string& name) const;

 private:
  bool strict_;
  mutable std::mutex mu_;
  mutable std::set<std::string> warned_;
};

class FieldReader {
 public:
  // `where` prefixes field names in messages ("messages[2]." for a nested object). `unknown`: what
  // reject_unknown() does (nullptr: strict).
  explicit FieldReader(const nlohmann::json& obj, std::string where = "", const UnknownFieldPolicy* unknown = nullptr);

  const nlohmann::json* get(const std::string& key);  // marks known; nullptr when absent or null
  bool has(const std::string& key) { return get(key) != nullptr; }
  std::optional<bool> boolean(const std::string& key);
  std::optional<int64_t> integer(const std::string& key, int64_t lo, int64_t hi);
  std::optional<double> number(const std::string& key, double lo, double hi);
  std::optional<std::string> string(const std::string& key);
  // Accepted and ignored (known OpenAI/vLLM fields without an effect here).
  void ignore(std::initializer_list<const char*> keys);
  // Fields that were never read: a 400 for the first (strict policy), or a warning per new name.
  void reject_unknown() const;

  std::string name(const std::string& key) const { return where_ + key; }
  const UnknownFieldPolicy* policy() const { return unknown_; }

 private:
  const nlohmann::json& obj_;
  std::string where_;
  const UnknownFieldPolicy* unknown_;
  std::set<std::string> known_;
};

// obj[key] when obj is an object holding key with a non-null value, else nullptr: what request code
// uses instead of the const operator[] (undefined on a missing key) or value() (throws on a type).
const nlohmann::json* find_field(const nlohmann::json& obj, const char* key);
// The string at obj[key]; nullopt when absent or null; a 400 naming `where` when it is not a string.
std::optional<std::string> string_field(const nlohmann::json& obj, const char* key, const std::string& where);

// "a string", "an array", ... for messages.
const char* json_type_name(const nlohmann::json& v);

}  // namespace ds::server
