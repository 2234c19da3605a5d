#include "server/json_fields.h"

#include <fmt/format.h>

#include <cmath>

#include "core/log.h"
#include "server/api_error.h"

namespace ds::server {

const char* json_type_name(const nlohmann::json& v) {
  switch (v.type()) {
    case nlohmann::json::value_t::null: return "null";
    case nlohmann::json::value_t::object: return "an object";
    case nlohmann::json::value_t::array: return "an array";
    case nlohmann::json::value_t::string: return "a string";
    case nlohmann::json::value_t::boolean: return "a boolean";
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned: return "an integer";
    case nlohmann::json::value_t::number_float: return "a number";
    default: return "an unsupported value";
  }
}

const nlohmann::json* find_field(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

std::optional<std::string> string_field(const nlohmann::json& obj, const char* key, const std::string& where) {
  const auto* v = find_field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) throw bad_request(fmt::format("'{}' must be a string, got {}", where, json_type_name(*v)), where);
  return v->get<std::string>();
}

bool UnknownFieldPolicy::warn_once(const std::string& name) const {
  std::string key;  // the name without array indices
  for (size_t i = 0; i < name.size(); ++i) {
    if (name[i] == '[') {
      size_t close = name.find(']', i);
      if (close != std::string::npos) {
        key += "[]";
        i = close;
        continue;
      }
    }
    key += name[i];
  }
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!warned_.insert(key).second) return false;
  }
  spdlog::warn("ignoring the unrecognized request field '{}' (logged once per field name; "
               "--strict-request-fields makes it an error)",
               key);
  return true;
}

FieldReader::FieldReader(const nlohmann::json& obj, std::string where, const UnknownFieldPolicy* unknown)
    : obj_(obj), where_(std::move(where)), unknown_(unknown) {}

const nlohmann::json* FieldReader::get(const std::string& key) {
  known_.insert(key);
  auto it = obj_.find(key);
  if (it == obj_.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<bool> FieldReader::boolean(const std::string& key) {
  const auto* v = get(key);
  if (!v) return std::nullopt;
  if (!v->is_boolean())
    throw bad_request(fmt::format("'{}' must be a boolean, got {}", name(key), json_type_name(*v)), name(key));
  return v->get<bool>();
}

std::optional<int64_t> FieldReader::integer(const std::string& key, int64_t lo, int64_t hi) {
  const auto* v = get(key);
  if (!v) return std::nullopt;
  int64_t x = 0;
  if (v->is_number_unsigned()) {
    const uint64_t u = v->get<uint64_t>();
    if (u > uint64_t(INT64_MAX))  // beyond every range here (int64): never clamped into one
      throw bad_request(fmt::format("'{}' must be between {} and {}, got {}", name(key), lo, hi, u), name(key));
    x = int64_t(u);
  } else if (v->is_number_integer()) {
    x = v->get<int64_t>();
  } else if (v->is_number_float() && std::isfinite(v->get<double>()) &&
             v->get<double>() == std::floor(v->get<double>()) && std::fabs(v->get<double>()) < 9e18) {
    x = int64_t(v->get<double>());
  } else {
    throw bad_request(fmt::format("'{}' must be an integer, got {}", name(key), json_type_name(*v)), name(key));
  }
  if (x < lo || x > hi)
    throw bad_request(fmt::format("'{}' must be between {} and {}, got {}", name(key), lo, hi, x), name(key));
  return x;
}

std::optional<double> FieldReader::number(const std::string& key, double lo, double hi) {
  const auto* v = get(key);
  if (!v) return std::nullopt;
  if (!v->is_number())
    throw bad_request(fmt::format("'{}' must be a number, got {}", name(key), json_type_name(*v)), name(key));
  double x = v->get<double>();
  if (!(x >= lo && x <= hi))
    throw bad_request(fmt::format("'{}' must be between {} and {}, got {}", name(key), lo, hi, x), name(key));
  return x;
}

std::optional<std::string> FieldReader::string(const std::string& key) {
  const auto* v = get(key);
  if (!v) return std::nullopt;
  if (!v->is_string())
    throw bad_request(fmt::format("'{}' must be a string, got {}", name(key), json_type_name(*v)), name(key));
  return v->get<std::string>();
}

void FieldReader::ignore(std::initializer_list<const char*> keys) {
  for (const char* k : keys) known_.insert(k);
}

void FieldReader::reject_unknown() const {
  for (auto it = obj_.begin(); it != obj_.end(); ++it) {
    if (known_.count(it.key())) continue;
    if (!unknown_ || unknown_->strict())
      throw bad_request(fmt::format("Unrecognized request argument supplied: {}", name(it.key())), name(it.key()));
    unknown_->warn_once(name(it.key()));
  }
}

}  // namespace ds::server
