// Errors at the HTTP edge: one exception type carrying the HTTP status and OpenAI's error object
// ({"error": {"message", "type", "param", "code"}}). Handlers throw it; the router turns it into a
// response. Anything else that escapes a handler becomes a 500 with the message.
#pragma once
#include <stdexcept>
#include <string>

namespace ds::server {

struct ApiError : std::runtime_error {
  int status;         // HTTP status code
  std::string type;   // OpenAI error type: invalid_request_error, authentication_error, ...
  std::string param;  // the offending request field ("" when none)
  std::string code;   // machine-readable code ("" when none)

  ApiError(int status, std::string type, const std::string& message, std::string param = {}, std::string code = {})
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
};

// 400 invalid_request_error naming `param`.
ApiError bad_request(const std::string& message, const std::string& param = {});
ApiError not_found(const std::string& message, const std::string& code = "not_found");
ApiError unauthorized(const std::string& message);
ApiError too_many_requests(const std::string& message);
ApiError unavailable(const std::string& message);
ApiError internal_error(const std::string& message);

// The JSON body of an error response: {"error": {...}}.
std::string error_body(const ApiError& e);
std::string error_body(int status, const std::string& message);

}  // namespace ds::server
