// POST /v1/chat/completions: messages rendered with the model's chat template, tool declarations
// and tool-call parsing (Kimi's markers → OpenAI tool_calls), chat-format logprobs, n choices,
// streaming as SSE (role chunk, content/tool-call deltas, finish chunk, optional usage chunk).
#include <fmt/format.h>

#include <map>
#include <optional>

#include "core/log.h"
#include "server/api_error.h"
#include "server/generation_job.h"
#include "server/openai_response.h"
#include "server/serving.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tool_parser.h"

namespace ds::server {

using nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// Tool calls of one choice, merged from the parser's deltas (by index).
struct ToolCallAccumulator {
  struct Call {
    std::string id, name, arguments;
  };
  std::map<int, Call> calls;

  void add(const std::vector<ToolCallDelta>& deltas) {
    for (const auto& d : deltas) {
      auto& c = calls[d.index];
      if (c.id.empty()) c.id = d.id;
      if (c.name.empty()) c.name = d.name;
      c.arguments += d.arguments;
    }
  }
  json to_json() const {
    json out = json::array();
    for (const auto& [index, c] : calls)
      out.push_back({{"id", c.id}, {"type", "function"}, {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
    return out;
  }
};

// Stream deltas of tool calls: the id, type and name come with the first delta of each call.
json tool_call_deltas(const std::vector<ToolCallDelta>& deltas) {
  json out = json::array();
  for (const auto& d : deltas) {
    json item = {{"index", d.index}};
    json fn = json::object();
    if (!d.id.empty()) {
      item["id"] = d.id;
      item["type"] = "function";
    }
    if (!d.name.empty()) fn["name"] = d.name;
    fn["arguments"] = d.arguments;
    item["function"] = std::move(fn);
    out.push_back(std::move(item));
  }
  return out;
}

const char* reported_finish(FinishReason f, bool called_tools) {
  if (called_tools && f == FinishReason::Stop) return "tool_calls";
  return finish_reason_str(f);
}

// vLLM's chat echo: the last message's text when its role is the reply's (text parts joined by newlines).
std::string echoed_text(const ChatRequest& req, const std::string& role) {
  if (!req.echo || req.messages.empty()) return {};
  const json& last = req.messages.back();
  if (last.value("role", "") != role) return {};
  const json* content = find_field(last, "content");
  if (!content) return {};
  if (content->is_string()) return content->get<std::string>();
  std::string out;
  if (content->is_array())
    for (const json& part : *content)
      if (const json* t = find_field(part, "text"); t && t->is_string()) {
        if (!out.empty()) out += '\n';
        out += t->get<std::string>();
      }
  return out;
}

}  // namespace

void serve_chat_completions(const ServingContext& ctx, const HttpRequest& http, ResponseWriter& w) {
  const Tokenizer& tok = *ctx.tokenizer;
  ChatRequest req = parse_chat_request(parse_json_body(http.body), ctx.vocab_size(), ctx.unknown_fields, ctx.defaults);
  SamplingOptions& opt = req.opt;
  std::string model = ctx.resolve_model(opt.model);
  opt.grammar = compile_output_constraint(opt.constraint, http.body);
  ctx.apply_usage_policy(opt);
  const bool parse_tools = req.parse_tool_calls();
  // The tool-call markers are special tokens: keep them in the text for the parser.
  if (parse_tools) opt.skip_special_tokens = false;
  // As vLLM: --response-role, or, continuing the conversation without a generation prompt, the last role.
  const std::string role = req.add_generation_prompt ? ctx.response_role
                                                     : req.messages.back().value("role", ctx.response_role);
  const std::string echoed = echoed_text(req, role);

  std::vector<int32_t> ids = chat_prompt_ids(ctx, req);
  int max_tokens = ctx.resolve_max_tokens(ids.size(), opt.max_tokens, "messages", req.max_tokens_field);

  const std::string id = make_request_id("chatcmpl-");
  const int64_t created = unix_time();
  spdlog::debug("request {}: chat, {} messages, {} prompt tokens, n={}, max_tokens={}, stream={}, tools={}", id,
                req.messages.size(), ids.size(), opt.n, max_tokens, opt.stream, parse_tools);
  GenerationJob job(*ctx.engine, *ctx.metrics, http.received);
  job.set_length_param(req.max_tokens_field);
  job.set_prompts_per_choice(opt.n);
  job.submit(ctx.make_requests(opt, id, {ids}, {max_tokens}));
  const size_t num_choices = job.choices().size();
  const bool want_logprobs = opt.sampling.num_logprobs >= 0;
  const auto cancelled = watch_cancellation(job, w);

  std::vector<std::optional<ToolCallParser>> parsers(num_choices);
  if (parse_tools)
    for (auto& p : parsers) p.emplace();

  // vLLM's prompt_logprobs (the rendered prompt's tokens scored): top-level, from the first choice's first output
  json prompt_scores = nullptr;
  auto take_prompt_scores = [&](const GenerationOutput& o) {
    if (opt.prompt_logprobs < 0 || !prompt_scores.is_null() || o.completion_tokens == 0) return false;
    prompt_scores = prompt_logprobs_json(tok, o.prompt_logprobs, opt.prompt_logprobs, opt.tokens_as_ids);
    return true;
  };

  if (!opt.stream) {
    std::vector<std::string> texts(num_choices);
    std::vector<json> lps(num_choices, json::array());
    bool complete = job.run(
        [&](int i, const GenerationOutput& o) {
          if (o.finish != FinishReason::Error) take_prompt_scores(o);
          texts[i] += o.text;
          if (want_logprobs)
            for (auto& e : chat_logprobs_content(tok, o.logprobs, opt.tokens_as_ids)) lps[i].push_back(std::move(e));
        },
        cancelled);
    if (!complete) throw unavailable("the request was cancelled (the client went away or the server is stopping)");
    json choices = json::array();
    for (size_t i = 0; i < num_choices; ++i) {
      const auto& c = job.choices()[i];
      if (c.finish == FinishReason::Error) throw internal_error("generation failed: " + c.error);
      json message = {{"role", role}};
      bool called = false;
      if (parse_tools) {
        ToolParseDelta a = parsers[i]->push(texts[i]);
        ToolParseDelta b = parsers[i]->finish();
        ToolCallAccumulator acc;
        acc.add(a.calls);
        acc.add(b.calls);
        std::string content = a.content + b.content;
        called = !acc.calls.empty();
        message["content"] = called && content.empty() && echoed.empty() ? json(nullptr) : json(echoed + content);
        if (called) message["tool_calls"] = acc.to_json();
      } else {
        message["content"] = echoed + texts[i];
      }
      const char* finish = reported_finish(c.finish, called);
      job.set_reported_reason(int(i), finish);
      choices.push_back({{"index", i},
                         {"message", std::move(message)},
                         {"logprobs", want_logprobs ? json{{"content", lps[i]}} : json(nullptr)},
                         {"finish_reason", finish},
                         {"stop_reason", stop_reason_json(opt, c.finish, c.stop_reason)}});
    }
    json res = {{"id", id},           {"object", "chat.completion"},
                {"created", created}, {"model", model},
                {"choices", choices}, {"usage", job.usage()}};
    if (opt.prompt_logprobs >= 0) res["prompt_logprobs"] = prompt_scores;
    w.send({200, "application/json", dump(res), {}});
    return;
  }

  auto chunk = [&](size_t i, json delta, json logprobs, json finish) {
    json c = {{"id", id},
              {"object", "chat.completion.chunk"},
              {"created", created},
              {"model", model},
              {"choices", json::array({{{"index", i},
                                        {"delta", std::move(delta)},
                                        {"logprobs", std::move(logprobs)},
                                        {"finish_reason", std::move(finish)}}})}};
    if (opt.include_usage) c["usage"] = nullptr;
    return c;
  };

  w.begin_stream(200, "text/event-stream");
  for (size_t i = 0; i < num_choices; ++i)
    w.write(sse_event(chunk(i, {{"role", role}, {"content", ""}}, nullptr, nullptr)));
  if (!echoed.empty())
    for (size_t i = 0; i < num_choices; ++i) w.write(sse_event(chunk(i, {{"content", echoed}}, nullptr, nullptr)));
  std::vector<bool> called(num_choices, false);
  std::string error;
  bool complete = job.run(
      [&](int i, const GenerationOutput& o) {
        if (o.finish == FinishReason::Error) {
          error = o.error;
          return;
        }
        const bool scores_now = take_prompt_scores(o);
        json delta = json::object();
        if (parse_tools) {
          ToolParseDelta d = parsers[i]->push(o.text);
          if (o.finished()) {
            ToolParseDelta f = parsers[i]->finish();
            d.content += f.content;
            d.calls.insert(d.calls.end(), f.calls.begin(), f.calls.end());
          }
          if (!d.content.empty()) delta["content"] = d.content;
          if (!d.calls.empty()) {
            delta["tool_calls"] = tool_call_deltas(d.calls);
            called[i] = true;
          }
        } else if (!o.text.empty()) {
          delta["content"] = o.text;
        }
        json lp = want_logprobs && !o.logprobs.empty()
                      ? json{{"content", chat_logprobs_content(tok, o.logprobs, opt.tokens_as_ids)}}
                      : json(nullptr);
        json finish = nullptr;
        if (o.finished()) {
          finish = reported_finish(o.finish, called[i]);
          job.set_reported_reason(i, finish.get<std::string>());
        }
        if (delta.empty() && lp.is_null() && finish.is_null() && !scores_now) return;
        json c = chunk(size_t(i), std::move(delta), std::move(lp), finish);
        if (scores_now) c["prompt_logprobs"] = prompt_scores;  // (the first chunk with an output carries them)
        if (o.finished()) c["choices"][0]["stop_reason"] = stop_reason_json(opt, o.finish, o.stop_reason);
        if (opt.continuous_usage) c["usage"] = usage_json(o.prompt_tokens, o.completion_tokens, o.cached_tokens);
        w.write(sse_event(c));
      },
      [&] { return cancelled() || !error.empty(); });
  if (!error.empty()) {
    w.write(sse_event(json::parse(error_body(internal_error("generation failed: " + error)))));
  } else if (complete && opt.include_usage) {
    json c = {{"id", id},
              {"object", "chat.completion.chunk"},
              {"created", created},
              {"model", model},
              {"choices", json::array()},
              {"usage", job.usage()}};
    w.write(sse_event(c));
  }
  w.write(kSseDone);
  w.end_stream();
}

}  // namespace ds::server
