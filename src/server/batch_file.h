// OpenAI batch files run in process (`deltaserve run-batch`, as vLLM's `vllm run-batch`): each line
//   {"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
// goes through the same endpoint handler the HTTP server would call (chat completions, completions, Responses),
// several at once; each gives one output line, written in the input's order as the lines finish:
//   {"id": "batch_req_...", "custom_id": "...", "response": {"status_code": 200, "request_id": "...", "body": {...}},
//    "error": null}
// An endpoint's error (a 4xx / 5xx answer) is a response with that status and the error object as its body, as
// OpenAI's batch output has it; a line that is not a request at all (bad JSON, no custom_id, a repeated custom_id,
// another method or url) has `response` null and `error` {"code", "message", "line"}. A full engine queue (429)
// is waited out, not reported. Nothing stops the run but the end of the input.
#pragma once
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "server/serving.h"

namespace ds::server {

struct BatchProgress {
  int64_t total = 0;   // request lines (blank lines are skipped)
  int64_t done = 0;    // finished and written
  int64_t failed = 0;  // of them, not a 200
  int64_t prompt_tokens = 0, completion_tokens = 0;  // of the 200s' usage
  double elapsed_s = 0;
};

struct BatchOptions {
  int concurrency = 64;  // lines in the handlers at once
  double progress_interval_s = 10;
  std::function<void(const BatchProgress&)> on_progress;  // every interval while lines run, and once at the end
};

// Runs the request lines of `lines` (blank ones skipped) and writes their outputs to `out`, one line each, in
// order; returns the final tally.
BatchProgress run_batch(const ServingContext& ctx, const std::vector<std::string>& lines, std::ostream& out,
                        const BatchOptions& o);

// The request lines of `lines` (those run_batch runs: the blank ones skipped).
int64_t batch_request_count(const std::vector<std::string>& lines);

// One line's output object. `line_no` (1-based) names it in errors; `repeats` is the earlier line with the same
// custom_id (0: none).
nlohmann::ordered_json run_batch_line(const ServingContext& ctx, const std::string& line, int64_t line_no,
                              int64_t repeats = 0);

}  // namespace ds::server
