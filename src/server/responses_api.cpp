// POST /v1/responses: OpenAI's Responses API over the chat machinery (responses_request.h turns the
// request into a chat request). The answer is a `response` object whose `output` holds a message
// item (output_text) and function_call items; streamed, it is the Responses event sequence
// (`event: TYPE` + `data: {...}` with a sequence_number): response.created, response.in_progress,
// per item output_item.added, content_part.added / output_text.delta / output_text.done /
// content_part.done or function_call_arguments.delta / .done, output_item.done, and finally
// response.completed (or response.incomplete when max_output_tokens cut it). A finished response is
// kept in the server's ResponseStore unless `store` is false, for `previous_response_id` (its
// conversation comes before the new input) and GET / DELETE /v1/responses/{id}.
#include <fmt/format.h>

#include <functional>

#include "core/log.h"
#include "server/api_error.h"
#include "server/generation_job.h"
#include "server/openai_response.h"
#include "server/response_store.h"
#include "server/responses_request.h"
#include "server/serving.h"
#include "tokenizer/tool_parser.h"

namespace ds::server {

using nlohmann::json;

namespace {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

json responses_usage(const GenerationJob& job) {
  const int in = job.prompt_tokens_total(), out = job.completion_tokens_total();
  return {{"input_tokens", in},
          {"input_tokens_details", {{"cached_tokens", job.cached_tokens_total()}}},
          {"output_tokens", out},
          {"output_tokens_details", {{"reasoning_tokens", 0}}},
          {"total_tokens", in + out}};
}

// The output items of one response, built from text and tool-call deltas; in a stream, each change
// is also sent as its Responses event through `emit` (null: no events).
class OutputBuilder {
 public:
  using Emit = std::function<void(const std::string& type, json ev)>;
  explicit OutputBuilder(Emit emit) : emit_(std::move(emit)) {}

  void text(const std::string& delta) {
    if (delta.empty()) return;
    if (open_ < 0 || !open_is_message_) open_message();
    json& part = output_[size_t(open_)]["content"][0];
    part["text"] = part["text"].get<std::string>() + delta;
    send("response.output_text.delta", {{"item_id", item_id()},
                                        {"output_index", open_},
                                        {"content_index", 0},
                                        {"delta", delta},
                                        {"logprobs", json::array()}});
  }

  void call(const ToolCallDelta& d) {
    if (open_ < 0 || open_is_message_ || d.index != call_index_) open_call(d);
    json& item = output_[size_t(open_)];
    if (d.arguments.empty()) return;
    item["arguments"] = item["arguments"].get<std::string>() + d.arguments;
    send("response.function_call_arguments.delta",
         {{"item_id", item_id()}, {"output_index", open_}, {"delta", d.arguments}});
  }

  // Closes the open item with `status` ("incomplete" when max_output_tokens cut it) and returns the output
  // items (an empty output gets one empty message).
  json finish(const char* status = "completed") {
    if (output_.empty()) open_message();
    close(status);
    return output_;
  }

 private:
  std::string item_id() const { return output_[size_t(open_)]["id"].get<std::string>(); }

  void send(const std::string& type, json ev) {
    if (emit_) emit_(type, std::move(ev));
  }

  void open_message() {
    close();
    json part = {{"type", "output_text"}, {"text", ""}, {"annotations", json::array()}, {"logprobs", json::array()}};
    json item = {{"id", make_request_id("msg_")},
                 {"type", "message"},
                 {"status", "in_progress"},
                 {"role", "assistant"},
                 {"content", json::array()}};
    output_.push_back(item);
    open_ = int(output_.size()) - 1;
    open_is_message_ = true;
    send("response.output_item.added", {{"output_index", open_}, {"item", item}});
    send("response.content_part.added",
         {{"item_id", item_id()}, {"output_index", open_}, {"content_index", 0}, {"part", part}});
    output_[size_t(open_)]["content"].push_back(std::move(part));
  }

  void open_call(const ToolCallDelta& d) {
    close();
    json item = {{"id", make_request_id("fc_")},
                 {"type", "function_call"},
                 {"status", "in_progress"},
                 {"call_id", d.id},
                 {"name", d.name.empty() ? ToolCallParser::name_from_id(d.id) : d.name},
                 {"arguments", ""}};
    output_.push_back(item);
    open_ = int(output_.size()) - 1;
    open_is_message_ = false;
    call_index_ = d.index;
    send("response.output_item.added", {{"output_index", open_}, {"item", item}});
  }

  void close(const char* status = "completed") {
    if (open_ < 0) return;
    json& item = output_[size_t(open_)];
    item["status"] = status;
    if (open_is_message_) {
      const json& part = item["content"][0];
      send("response.output_text.done", {{"item_id", item_id()},
                                         {"output_index", open_},
                                         {"content_index", 0},
                                         {"text", part["text"]},
                                         {"logprobs", json::array()}});
      send("response.content_part.done",
           {{"item_id", item_id()}, {"output_index", open_}, {"content_index", 0}, {"part", part}});
    } else {
      send("response.function_call_arguments.done",
           {{"item_id", item_id()}, {"output_index", open_}, {"name", item["name"]}, {"arguments", item["arguments"]}});
    }
    send("response.output_item.done", {{"output_index", open_}, {"item", item}});
    open_ = -1;
  }

  Emit emit_;
  json output_ = json::array();
  int open_ = -1;  // index of the item being built, or -1
  bool open_is_message_ = false;
  int call_index_ = -1;  // the parser's index of the open call
};

// Keeps a finished response: its conversation as items (this request's, then the output) and the object.
void remember(ResponseStore& store, const std::string& id, const ResponsesRequest& req, const json& res) {
  ResponseStore::Entry e;
  e.items = req.input_items;
  for (const json& item : res["output"]) e.items.push_back(item);
  e.response = res;
  if (!store.put(id, std::move(e)))
    spdlog::warn("response {} not stored: larger than the whole response store (--responses-store-mib)", id);
}

}  // namespace

void serve_responses(const ServingContext& ctx, const HttpRequest& http, ResponseWriter& w) {
  ResponseStore* store = ctx.responses && ctx.responses->enabled() ? ctx.responses.get() : nullptr;
  ResponsesRequest req =
      parse_responses_request(parse_json_body(http.body), ctx.vocab_size(), ctx.unknown_fields, ctx.defaults, store);
  const bool keep = store && req.store;
  SamplingOptions& opt = req.chat.opt;
  const std::string model = ctx.resolve_model(opt.model);
  opt.grammar = compile_output_constraint(opt.constraint, http.body);
  const bool parse_tools = req.chat.parse_tool_calls();
  if (parse_tools) opt.skip_special_tokens = false;  // the tool-call markers are special tokens

  std::vector<int32_t> ids = chat_prompt_ids(ctx, req.chat);
  const int max_tokens = ctx.resolve_max_tokens(ids.size(), opt.max_tokens, "input", "max_output_tokens");
  const std::string id = make_request_id("resp_");
  const int64_t created = unix_time();
  spdlog::debug("request {}: responses, {} prompt tokens, max_tokens={}, stream={}, tools={}", id, ids.size(),
                max_tokens, opt.stream, parse_tools);

  auto response_object = [&](const char* status, json output, json usage, json incomplete) {
    return json{{"id", id},
                {"object", "response"},
                {"created_at", created},
                {"status", status},
                {"error", nullptr},
                {"incomplete_details", std::move(incomplete)},
                {"instructions", req.instructions},
                {"max_output_tokens", req.max_output_tokens},
                {"model", model},
                {"output", std::move(output)},
                {"parallel_tool_calls", req.parallel_tool_calls},
                {"previous_response_id", req.previous_response_id.empty() ? json(nullptr) : json(req.previous_response_id)},
                {"reasoning", {{"effort", nullptr}, {"summary", nullptr}}},
                {"store", keep},
                {"temperature", req.temperature},
                {"text", {{"format", req.text_format}}},
                {"tool_choice", req.tool_choice},
                {"tools", req.tools},
                {"top_p", req.top_p},
                {"truncation", "disabled"},
                {"usage", std::move(usage)},
                {"user", req.user},
                {"metadata", req.metadata}};
  };
  // A cut by max_output_tokens is an incomplete response.
  auto final_status = [](FinishReason f) { return f == FinishReason::Length ? "incomplete" : "completed"; };
  auto incomplete_details = [](FinishReason f) {
    return f == FinishReason::Length ? json{{"reason", "max_output_tokens"}} : json(nullptr);
  };

  GenerationJob job(*ctx.engine, *ctx.metrics, http.received);
  job.set_length_param("max_output_tokens");
  job.submit(ctx.make_requests(opt, id, {ids}, {max_tokens}));
  const auto cancelled = watch_cancellation(job, w);
  ToolCallParser parser;

  if (!opt.stream) {
    std::string text;
    bool complete = job.run([&](int, const GenerationOutput& o) { text += o.text; }, cancelled);
    if (!complete) throw unavailable("the request was cancelled (the client went away or the server is stopping)");
    const ChoiceState& c = job.choices()[0];
    if (c.finish == FinishReason::Error) throw internal_error("generation failed: " + c.error);
    OutputBuilder out(nullptr);
    bool called = false;
    if (parse_tools) {
      ToolParseDelta a = parser.push(text), b = parser.finish();
      out.text(a.content + b.content);
      for (const auto* d : {&a, &b}) {
        for (const auto& call : d->calls) out.call(call);
        called |= !d->calls.empty();
      }
    } else {
      out.text(text);
    }
    job.set_reported_reason(0, called && c.finish == FinishReason::Stop ? "tool_calls" : finish_reason_str(c.finish));
    json res = response_object(final_status(c.finish), out.finish(final_status(c.finish)), responses_usage(job),
                               incomplete_details(c.finish));
    if (keep) remember(*store, id, req, res);
    w.send({200, "application/json", dump(res), {}});
    return;
  }

  int sequence = 0;
  auto emit = [&](const std::string& type, json ev) {
    ev["type"] = type;
    ev["sequence_number"] = sequence++;
    w.write("event: " + type + "\ndata: " + dump(ev) + "\n\n");
  };
  w.begin_stream(200, "text/event-stream");
  emit("response.created", {{"response", response_object("in_progress", json::array(), nullptr, nullptr)}});
  emit("response.in_progress", {{"response", response_object("in_progress", json::array(), nullptr, nullptr)}});
  OutputBuilder out(emit);
  bool called = false;
  FinishReason finish = FinishReason::None;
  std::string error;
  bool complete = job.run(
      [&](int, const GenerationOutput& o) {
        if (o.finish == FinishReason::Error) {
          error = o.error;
          return;
        }
        if (parse_tools) {
          ToolParseDelta d = parser.push(o.text);
          if (o.finished()) {
            ToolParseDelta f = parser.finish();
            d.content += f.content;
            d.calls.insert(d.calls.end(), f.calls.begin(), f.calls.end());
          }
          out.text(d.content);
          for (const auto& call : d.calls) out.call(call);
          called |= !d.calls.empty();
        } else {
          out.text(o.text);
        }
        if (o.finished()) {
          finish = o.finish;
          job.set_reported_reason(0, called && finish == FinishReason::Stop ? "tool_calls" : finish_reason_str(finish));
        }
      },
      [&] { return cancelled() || !error.empty(); });
  if (!error.empty() || !complete) {
    ApiError e = !error.empty()
                     ? internal_error("generation failed: " + error)
                     : unavailable("the request was cancelled (the client went away or the server is stopping)");
    emit("error", {{"code", e.type}, {"message", e.what()}, {"param", nullptr}});
  } else {
    const char* status = final_status(finish);
    json res = response_object(status, out.finish(status), responses_usage(job), incomplete_details(finish));
    if (keep) remember(*store, id, req, res);
    emit(finish == FinishReason::Length ? "response.incomplete" : "response.completed", {{"response", std::move(res)}});
  }
  w.end_stream();
}

void serve_stored_response(const ServingContext& ctx, const std::string& method, const std::string& id,
                           ResponseWriter& w) {
  ResponseStore* store = ctx.responses && ctx.responses->enabled() ? ctx.responses.get() : nullptr;
  const auto missing = [&] {
    return not_found(store ? fmt::format("Response with id '{}' not found.", id)
                           : "responses are not stored (--responses-store-mib 0)");
  };
  if (!store) throw missing();
  if (method == "DELETE") {
    if (!store->erase(id)) throw missing();
    w.send({200, "application/json", dump(json{{"id", id}, {"object", "response"}, {"deleted", true}}), {}});
    return;
  }
  const ResponseStore::EntryPtr e = store->get(id);
  if (!e) throw missing();
  w.send({200, "application/json", dump(e->response), {}});
}

}  // namespace ds::server
