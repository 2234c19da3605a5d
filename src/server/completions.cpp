// POST /v1/completions: prompts as text or token ids (one or a batch), echo, logprobs in the
// legacy format (with echo: the prompt's tokens first, scored by the engine), vLLM's prompt_logprobs, n choices
// per prompt, streaming as SSE.
#include <fmt/format.h>

#include "core/log.h"
#include "server/api_error.h"
#include "server/generation_job.h"
#include "server/openai_response.h"
#include "server/serving.h"
#include "tokenizer/tokenizer.h"

namespace ds::server {

using nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

const char* reported_finish(FinishReason f) { return finish_reason_str(f); }

}  // namespace

void serve_completions(const ServingContext& ctx, const HttpRequest& http, ResponseWriter& w) {
  const Tokenizer& tok = *ctx.tokenizer;
  CompletionRequest req = parse_completion_request(parse_json_body(http.body), ctx.vocab_size(), ctx.unknown_fields, ctx.defaults);
  SamplingOptions& opt = req.opt;
  std::string model = ctx.resolve_model(opt.model);
  opt.grammar = compile_output_constraint(opt.constraint, http.body);
  ctx.apply_usage_policy(opt);

  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> prompt_texts;  // for echo
  std::vector<int> max_tokens;
  for (size_t p = 0; p < req.prompts.size(); ++p) {
    const auto& in = req.prompts[p];
    std::vector<int32_t> ids = in.is_text ? tok.encode(in.text) : in.ids;
    if (ids.empty()) throw bad_request("the prompt has no tokens", "prompt");
    max_tokens.push_back(ctx.resolve_max_tokens(ids.size(), opt.max_tokens));
    prompt_texts.push_back(!req.echo ? std::string() : in.is_text ? in.text : tok.decode(ids));
    prompts.push_back(std::move(ids));
  }

  // echo with logprobs: the prompt's tokens lead the logprobs, scored with the same number of alternatives
  const bool echo_logprobs = req.echo && opt.sampling.num_logprobs >= 0;
  const int asked_prompt_logprobs = opt.prompt_logprobs;  // vLLM's field (-1: not asked)
  if (echo_logprobs) opt.prompt_logprobs = std::max(opt.prompt_logprobs, opt.sampling.num_logprobs);
  const std::string id = make_request_id("cmpl-");
  const int64_t created = unix_time();
  spdlog::debug("request {}: completions, {} prompt(s) x n={}, max_tokens={}, stream={}", id, prompts.size(), opt.n,
                max_tokens[0], opt.stream);
  GenerationJob job(*ctx.engine, *ctx.metrics, http.received);
  job.set_prompts_per_choice(opt.n);
  job.submit(ctx.make_requests(opt, id, prompts, max_tokens));
  const size_t num_choices = job.choices().size();
  auto prompt_of = [&](size_t choice) { return choice / size_t(opt.n); };
  const bool want_logprobs = opt.sampling.num_logprobs >= 0;
  std::vector<CompletionLogprobs> logprobs;
  for (size_t i = 0; i < num_choices; ++i)  // (echo with logprobs: the prompt's tokens give the offsets from 0)
    logprobs.emplace_back(tok, opt.tokens_as_ids, echo_logprobs ? std::string() : prompt_texts[prompt_of(i)]);
  // The prompt's scores of a choice's first output: the echoed tokens' logprobs, and prompt_logprobs if asked.
  std::vector<json> prompt_scores(num_choices, json(nullptr));
  auto take_prompt_scores = [&](size_t i, const GenerationOutput& o) -> json {
    if (o.prompt_logprobs.empty() && prompts[prompt_of(i)].size() > 1) return nullptr;
    if (asked_prompt_logprobs >= 0)
      prompt_scores[i] = prompt_logprobs_json(tok, o.prompt_logprobs, asked_prompt_logprobs, opt.tokens_as_ids);
    if (!echo_logprobs) return nullptr;
    return logprobs[i].add_prompt(prompts[prompt_of(i)][0], o.prompt_logprobs, opt.sampling.num_logprobs);
  };
  const auto cancelled = watch_cancellation(job, w);

  auto usage = [&] {  // echo_only: the dropped tokens are not the answer's
    json u = job.usage();
    if (req.echo_only) {
      u["completion_tokens"] = 0;
      u["total_tokens"] = u["prompt_tokens"];
    }
    return u;
  };
  auto chunk = [&](json choices) {
    json c = {{"id", id},
              {"object", "text_completion"},
              {"created", created},
              {"model", model},
              {"choices", std::move(choices)}};
    if (opt.include_usage) c["usage"] = nullptr;
    return c;
  };

  if (!opt.stream) {
    std::vector<std::string> texts(num_choices);
    for (size_t i = 0; i < num_choices; ++i) texts[i] = prompt_texts[prompt_of(i)];
    std::vector<bool> first(num_choices, true);
    bool complete = job.run(
        [&](int i, const GenerationOutput& o) {
          if (first[size_t(i)] && o.finish != FinishReason::Error && o.completion_tokens > 0) {
            first[size_t(i)] = false;
            take_prompt_scores(size_t(i), o);
          }
          if (req.echo_only) return;  // the generated token is dropped
          texts[i] += o.text;
          if (want_logprobs) logprobs[i].add(o.logprobs);
        },
        cancelled);
    if (!complete) throw unavailable("the request was cancelled (the client went away or the server is stopping)");
    json choices = json::array();
    for (size_t i = 0; i < num_choices; ++i) {
      const auto& c = job.choices()[i];
      if (c.finish == FinishReason::Error) throw internal_error("generation failed: " + c.error);
      json choice = {{"index", i},
                     {"text", texts[i]},
                     {"logprobs", want_logprobs ? logprobs[i].all() : json(nullptr)},
                     {"finish_reason", reported_finish(c.finish)},
                     {"stop_reason", stop_reason_json(opt, c.finish, c.stop_reason)}};
      if (asked_prompt_logprobs >= 0) choice["prompt_logprobs"] = prompt_scores[i];
      choices.push_back(std::move(choice));
    }
    json res = {{"id", id},           {"object", "text_completion"},
                {"created", created}, {"model", model},
                {"choices", choices}, {"usage", usage()}};
    w.send({200, "application/json", dump(res), {}});
    return;
  }

  w.begin_stream(200, "text/event-stream");
  // the echoed prompt: at once, or with its tokens' logprobs (echo with logprobs) or prompt_logprobs when the
  // choice's first output brings its scores
  const bool echo_later = echo_logprobs || asked_prompt_logprobs >= 0;
  auto echo_chunk = [&](size_t i, json lp) {
    json choice = {{"index", i},
                   {"text", req.echo ? prompt_texts[prompt_of(i)] : std::string()},
                   {"logprobs", std::move(lp)},
                   {"finish_reason", nullptr}};
    if (asked_prompt_logprobs >= 0) choice["prompt_logprobs"] = prompt_scores[i];
    w.write(sse_event(chunk(json::array({choice}))));
  };
  if (req.echo && !echo_later)
    for (size_t i = 0; i < num_choices; ++i) echo_chunk(i, nullptr);
  std::vector<bool> first(num_choices, true);
  std::string error;
  bool complete = job.run(
      [&](int i, const GenerationOutput& o) {
        if (o.finish == FinishReason::Error) {
          error = o.error;
          return;
        }
        if (echo_later && first[size_t(i)] && o.completion_tokens > 0) {
          first[size_t(i)] = false;
          echo_chunk(size_t(i), take_prompt_scores(size_t(i), o));
        }
        json lp = want_logprobs && !o.logprobs.empty() && !req.echo_only ? logprobs[i].add(o.logprobs) : json(nullptr);
        const std::string text = req.echo_only ? std::string() : o.text;
        if (text.empty() && lp.is_null() && !o.finished()) return;
        json choice = {{"index", i},
                       {"text", text},
                       {"logprobs", lp},
                       {"finish_reason", o.finished() ? json(reported_finish(o.finish)) : json(nullptr)}};
        if (o.finished()) choice["stop_reason"] = stop_reason_json(opt, o.finish, o.stop_reason);
        json c = chunk(json::array({choice}));
        if (opt.continuous_usage) c["usage"] = usage_json(o.prompt_tokens, o.completion_tokens, o.cached_tokens);
        w.write(sse_event(c));
      },
      [&] { return cancelled() || !error.empty(); });
  if (!error.empty()) {
    w.write(sse_event(json::parse(error_body(internal_error("generation failed: " + error)))));
  } else if (complete && opt.include_usage) {
    json c = chunk(json::array());
    c["usage"] = usage();
    w.write(sse_event(c));
  }
  w.write(kSseDone);
  w.end_stream();
}

}  // namespace ds::server
