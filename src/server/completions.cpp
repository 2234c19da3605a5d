// POST /v1/completions: prompts as text or token ids (one or a batch), echo, logprobs in the
// legacy format, n choices per prompt, streaming as SSE.
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
  for (size_t i = 0; i < num_choices; ++i) logprobs.emplace_back(tok, opt.tokens_as_ids, prompt_texts[prompt_of(i)]);
  const auto cancelled = watch_cancellation(job, w);

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
    bool complete = job.run(
        [&](int i, const GenerationOutput& o) {
          texts[i] += o.text;
          if (want_logprobs) logprobs[i].add(o.logprobs);
        },
        cancelled);
    if (!complete) throw unavailable("the request was cancelled (the client went away or the server is stopping)");
    json choices = json::array();
    for (size_t i = 0; i < num_choices; ++i) {
      const auto& c = job.choices()[i];
      if (c.finish == FinishReason::Error) throw internal_error("generation failed: " + c.error);
      choices.push_back({{"index", i},
                         {"text", texts[i]},
                         {"logprobs", want_logprobs ? logprobs[i].all() : json(nullptr)},
                         {"finish_reason", reported_finish(c.finish)},
                         {"stop_reason", stop_reason_json(opt, c.finish, c.stop_reason)}});
    }
    json res = {{"id", id},           {"object", "text_completion"},
                {"created", created}, {"model", model},
                {"choices", choices}, {"usage", job.usage()}};
    w.send({200, "application/json", dump(res), {}});
    return;
  }

  w.begin_stream(200, "text/event-stream");
  if (req.echo) {
    for (size_t i = 0; i < num_choices; ++i)
      w.write(sse_event(chunk(json::array(
          {{{"index", i}, {"text", prompt_texts[prompt_of(i)]}, {"logprobs", nullptr}, {"finish_reason", nullptr}}}))));
  }
  std::string error;
  bool complete = job.run(
      [&](int i, const GenerationOutput& o) {
        if (o.finish == FinishReason::Error) {
          error = o.error;
          return;
        }
        json lp = want_logprobs && !o.logprobs.empty() ? logprobs[i].add(o.logprobs) : json(nullptr);
        if (o.text.empty() && lp.is_null() && !o.finished()) return;
        json choice = {{"index", i},
                       {"text", o.text},
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
    c["usage"] = job.usage();
    w.write(sse_event(c));
  }
  w.write(kSseDone);
  w.end_stream();
}

}  // namespace ds::server
