#include "server/api_error.h"

#include <nlohmann/json.hpp>

namespace ds::server {

ApiError bad_request(const std::string& message, const std::string& param) {
  return ApiError(400, "invalid_request_error", message, param);
}
ApiError not_found(const std::string& message, const std::string& code) {
  return ApiError(404, "invalid_request_error", message, {}, code);
}
ApiError unauthorized(const std::string& message) {
  return ApiError(401, "authentication_error", message, {}, "invalid_api_key");
}
ApiError too_many_requests(const std::string& message) {
  return ApiError(429, "rate_limit_error", message, {}, "rate_limit_exceeded");
}
ApiError unavailable(const std::string& message) { return ApiError(503, "service_unavailable", message); }
ApiError internal_error(const std::string& message) { return ApiError(500, "internal_server_error", message); }

std::string error_body(const ApiError& e) {
  nlohmann::json err = {{"message", e.what()},
                        {"type", e.type},
                        {"param", e.param.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.param)},
                        {"code", e.code.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.code)}};
  return nlohmann::json{{"error", err}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string error_body(int status, const std::string& message) {
  const char* type = status == 401   ? "authentication_error"
                     : status == 429 ? "rate_limit_error"
                     : status >= 500 ? "internal_server_error"
                                     : "invalid_request_error";
  return error_body(ApiError(status, type, message));
}

}  // namespace ds::server
