#include "server/serving.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>

#include "core/json_depth.h"
#include "core/log.h"
#include "core/splitmix.h"
#include "server/api_error.h"
#include "server/json_fields.h"
#include "server/openai_response.h"
#include "tokenizer/tokenizer.h"

namespace ds::server {

using nlohmann::json;

std::string ServingContext::resolve_model(const std::string& requested) const {
  if (requested.empty()) return model_name();
  for (const auto& n : model_names)
    if (n == requested) return n;
  throw not_found(fmt::format("The model `{}` does not exist.", requested), "model_not_found");
}

int ServingContext::resolve_max_tokens(size_t prompt_len, std::optional<int64_t> requested,
                                       const std::string& prompt_param, const std::string& max_tokens_param) const {
  int64_t limit = max_model_len();
  const std::string note = engine->context_limit_note();
  const std::string why = note.empty() ? "" : fmt::format(" ({})", note);
  if (int64_t(prompt_len) >= limit)
    throw bad_request(fmt::format("This model's maximum context length is {} tokens. However, your prompt has {} "
                                  "tokens, which leaves no room for the completion. Please reduce the length of "
                                  "the prompt.{}",
                                  limit, prompt_len, why),
                      prompt_param);
  int64_t room = limit - int64_t(prompt_len);
  const int64_t cap = defaults && defaults->max_tokens ? *defaults->max_tokens : INT64_MAX;
  if (!requested) return int(std::min<int64_t>({room, cap, INT_MAX}));
  if (*requested > room)
    throw bad_request(fmt::format("This model's maximum context length is {} tokens. However, you requested {} "
                                  "tokens ({} in the prompt, {} in the completion). Please reduce the length of "
                                  "the prompt or completion.{}",
                                  limit, int64_t(prompt_len) + *requested, prompt_len, *requested, why),
                      max_tokens_param);
  return int(std::min<int64_t>(*requested, cap));
}

std::vector<GenerationRequest> ServingContext::make_requests(const SamplingOptions& opt, const std::string& id,
                                                             const std::vector<std::vector<int32_t>>& prompts,
                                                             const std::vector<int>& max_tokens) const {
  std::vector<GenerationRequest> out;
  // --seed: splitmix64 of (seed, arrival index), distinct and repeatable across runs
  const uint64_t base_seed = opt.seed ? *opt.seed
                             : seed   ? splitmix64(*seed + 0x9e3779b97f4a7c15ull * seeded_requests->fetch_add(1)) >> 1
                                      : random_seed();
  for (size_t p = 0; p < prompts.size(); ++p) {
    for (int i = 0; i < opt.n; ++i) {
      GenerationRequest r;
      r.request_id = fmt::format("{}-{}", id, p * size_t(opt.n) + size_t(i));
      r.prompt_tokens = prompts[p];
      r.sampling = opt.sampling;
      r.sampling.seed = base_seed + uint64_t(i);
      r.max_tokens = max_tokens[p];
      r.priority = opt.priority;
      r.prompt_logprobs = opt.prompt_logprobs;
      r.stop_token_ids = opt.stop_token_ids;
      r.stop = opt.stop;
      r.ignore_eos = opt.ignore_eos;
      r.include_stop_str_in_output = opt.include_stop_str_in_output;
      r.skip_special_tokens = opt.skip_special_tokens;
      r.detokenize = true;
      r.grammar = opt.grammar;
      apply_token_controls(opt.tokens, *tokenizer, &r);
      out.push_back(std::move(r));
    }
  }
  return out;
}

json parse_json_body(const std::string& body) {
  if (body.empty()) throw bad_request("the request body is empty; expected a JSON object");
  if (json_nesting_depth(body) > kMaxJsonDepth)
    throw bad_request(fmt::format("the request body nests arrays/objects more than {} levels deep", kMaxJsonDepth));
  try {
    return json::parse(body);
  } catch (const json::parse_error& e) {
    // In our own words: where it went wrong (line and column, 1-based), not the library's text.
    size_t at = std::min<size_t>(e.byte > 0 ? e.byte - 1 : 0, body.size());
    size_t line = 1 + size_t(std::count(body.begin(), body.begin() + ptrdiff_t(at), '\n'));
    size_t nl = at == 0 ? std::string::npos : body.rfind('\n', at - 1);
    size_t column = nl == std::string::npos ? at + 1 : at - nl;
    throw bad_request(fmt::format("Invalid JSON in the request body: syntax error at line {}, column {}", line, column));
  } catch (const json::exception&) {
    // out_of_range: a number literal beyond what a double holds (1e400). Parse again, remembering the
    // last key seen, to name the field.
    std::string key;
    json::parser_callback_t remember = [&key](int, json::parse_event_t ev, json& j) {
      if (ev == json::parse_event_t::key && j.is_string()) key = j.get<std::string>();
      return true;
    };
    try {
      json ignored = json::parse(body, remember);
    } catch (const json::exception&) {
    }
    if (key.empty()) throw bad_request("Invalid JSON in the request body: a number is too large to represent");
    throw bad_request(fmt::format("Invalid JSON in the request body: the number in '{}' is too large to represent", key),
                      key);
  }
}

json stop_reason_json(const SamplingOptions& opt, FinishReason finish, const std::string& stop_reason) {
  if (finish != FinishReason::Stop || stop_reason.empty()) return nullptr;
  for (const auto& s : opt.stop)
    if (s == stop_reason) return stop_reason;
  char* end = nullptr;
  long v = std::strtol(stop_reason.c_str(), &end, 10);
  if (end && *end == '\0') {
    for (int32_t id : opt.stop_token_ids)
      if (id == v) return int(v);
    return nullptr;  // an EOS id
  }
  return stop_reason;
}

ChatPrompt render_chat_prompt(const Tokenizer& tok, const ChatRequest& req) {
  ChatPrompt prompt;
  try {
    prompt = tok.render_chat(req.messages, req.tools, req.add_generation_prompt, req.template_kwargs);
  } catch (const std::exception& e) {
    throw bad_request(fmt::format("the chat template failed to render the messages: {}", e.what()), "messages");
  }
  if (req.continue_final_message) {
    // Cut what the template closes the final message with (<|im_end|>), so the model continues it.
    // parse_chat_request checked that the final message is an assistant one with content.
    const json* content = find_field(req.messages.back(), "content");
    std::string last;
    if (content && content->is_string()) {
      last = content->get<std::string>();
    } else if (content && content->is_array()) {
      for (const auto& part : *content) last += string_field(part, "text", "messages[-1].content[].text").value_or("");
    }
    size_t pos = last.empty() ? std::string::npos : prompt.text.rfind(last);
    if (pos == std::string::npos)
      throw bad_request("continue_final_message: the final message's content was not found in the rendered prompt",
                        "continue_final_message");
    const size_t cut = pos + last.size();
    prompt.text.resize(cut);
    std::erase_if(prompt.data, [cut](const auto& s) { return s.first >= cut; });
    if (!prompt.data.empty()) prompt.data.back().second = std::min(prompt.data.back().second, cut);
  }
  return prompt;
}

namespace {
// --chat-template-content-format string: messages whose content is a list of parts get it as one string, the
// text parts joined by newlines (vLLM's string form); nullopt when no message has a list.
std::optional<ChatRequest> with_string_content(const ChatRequest& req) {
  const auto listed = [](const json& m) {
    const json* c = find_field(m, "content");
    return c && c->is_array();
  };
  if (std::none_of(req.messages.begin(), req.messages.end(), listed)) return std::nullopt;
  ChatRequest out = req;
  for (json& m : out.messages) {
    if (!listed(m)) continue;
    std::string text;
    for (const json& part : m["content"]) {
      if (!text.empty()) text += '\n';
      text += string_field(part, "text", "messages[].content[].text").value_or("");
    }
    m["content"] = std::move(text);
  }
  return out;
}
}  // namespace

std::vector<int32_t> chat_prompt_ids(const ServingContext& ctx, const ChatRequest& req) {
  const std::optional<ChatRequest> joined = ctx.content_parts_as_string ? with_string_content(req) : std::nullopt;
  ChatPrompt prompt = render_chat_prompt(*ctx.tokenizer, joined ? *joined : req);
  return ctx.specials_in_content ? ctx.tokenizer->encode(prompt.text) : ctx.tokenizer->encode_chat(prompt);
}

void serve_tokenize(const ServingContext& ctx, const HttpRequest& http, ResponseWriter& w) {
  json body = parse_json_body(http.body);
  if (!body.is_object()) throw bad_request("the request body must be a JSON object");
  const Tokenizer& tok = *ctx.tokenizer;
  std::vector<int32_t> ids;
  bool return_strs = false;
  if (body.contains("messages")) {
    // Chat form: the same fields as a chat request.
    json chat = body;
    {
      FieldReader r(body);
      return_strs = r.boolean("return_token_strs").value_or(false);
      r.boolean("add_special_tokens");  // Kimi adds none
    }
    chat.erase("return_token_strs");
    chat.erase("add_special_tokens");
    ChatRequest req = parse_chat_request(chat, ctx.vocab_size(), ctx.unknown_fields, ctx.defaults);
    ctx.resolve_model(req.opt.model);
    ids = chat_prompt_ids(ctx, req);
  } else {
    FieldReader r(body, "", ctx.unknown_fields);
    ctx.resolve_model(r.string("model").value_or(""));
    auto prompt = r.string("prompt");
    if (!prompt) throw bad_request("'prompt' (a string) or 'messages' is required", "prompt");
    r.boolean("add_special_tokens");  // Kimi adds none
    return_strs = r.boolean("return_token_strs").value_or(false);
    r.reject_unknown();
    ids = tok.encode(*prompt);
  }
  json strs = nullptr;
  if (return_strs) {
    strs = json::array();
    for (int32_t id : ids) strs.push_back(tok.decode({id}));
  }
  json out = {{"count", ids.size()}, {"max_model_len", ctx.max_model_len()}, {"tokens", ids}, {"token_strs", strs}};
  w.send({200, "application/json", out.dump(-1, ' ', false, json::error_handler_t::replace), {}});
}

void serve_detokenize(const ServingContext& ctx, const HttpRequest& http, ResponseWriter& w) {
  json body = parse_json_body(http.body);
  if (!body.is_object()) throw bad_request("the request body must be a JSON object");
  FieldReader r(body, "", ctx.unknown_fields);
  ctx.resolve_model(r.string("model").value_or(""));
  const json* tokens = r.get("tokens");
  if (!tokens || !tokens->is_array()) throw bad_request("'tokens' (an array of token ids) is required", "tokens");
  r.reject_unknown();
  std::vector<int32_t> ids;
  for (size_t i = 0; i < tokens->size(); ++i) {
    const auto& t = (*tokens)[i];
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() >= ctx.tokenizer->vocab_size())
      throw bad_request(fmt::format("'tokens[{}]' is not a valid token id", i), "tokens");
    ids.push_back(t.get<int32_t>());
  }
  json out = {{"prompt", ctx.tokenizer->decode(ids)}};
  w.send({200, "application/json", out.dump(-1, ' ', false, json::error_handler_t::replace), {}});
}

std::function<bool()> watch_cancellation(const GenerationJob& job, ResponseWriter& w) {
  w.on_gone([n = std::weak_ptr<Notifier>(job.notifier())] {
    if (auto p = n.lock()) p->notify();
  });
  return [&w] { return w.client_gone(); };
}

void serve_invocation(const ServingContext& ctx, const HttpRequest& http, ResponseWriter& w) {
  const json body = parse_json_body(http.body);
  if (!body.is_object()) throw bad_request("the request body must be a JSON object");
  if (body.contains("messages")) return serve_chat_completions(ctx, http, w);
  if (body.contains("prompt")) return serve_completions(ctx, http, w);
  throw bad_request("/invocations takes a chat completion (\"messages\") or a completion (\"prompt\") request");
}

bool serve_generation(const ServingContext& ctx, const HttpRequest& req, ResponseWriter& w) {
  if (req.path == "/v1/completions")
    serve_completions(ctx, req, w);
  else if (req.path == "/v1/chat/completions")
    serve_chat_completions(ctx, req, w);
  else if (req.path == "/v1/responses")
    serve_responses(ctx, req, w);
  else
    return false;
  return true;
}

ApiError handler_failure(const HttpRequest& req) {
  try {
    throw;
  } catch (const ApiError& e) {
    spdlog::debug("http {}: {} {} -> {}: {}", req.remote, req.method, req.path, e.status, e.what());
    return e;
  } catch (const nlohmann::json::exception& e) {
    // A JSON access the request validation missed: a bug here, but never the library's text in a reply.
    spdlog::error("http {}: {} {} failed reading the request JSON: {}", req.remote, req.method, req.path, e.what());
    return internal_error("the server failed to read a request field (a server bug; see the log)");
  } catch (const std::exception& e) {
    spdlog::error("http {}: {} {} failed: {}", req.remote, req.method, req.path, e.what());
    return internal_error(e.what());
  }
}

}  // namespace ds::server
