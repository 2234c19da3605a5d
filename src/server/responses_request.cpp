#include "server/responses_request.h"

#include <fmt/format.h>

#include "server/api_error.h"
#include "server/response_store.h"

namespace ds::server {

using nlohmann::json;

namespace {

// Message content: a string, or parts of type input_text / output_text (/ text) joined as chat text parts.
json message_content(const json& content, const std::string& at) {
  if (content.is_string()) return content;
  if (!content.is_array()) throw bad_request(fmt::format("'{}' must be a string or an array of content parts", at), at);
  json parts = json::array();
  for (size_t j = 0; j < content.size(); ++j) {
    const json& p = content[j];
    std::string where = fmt::format("{}[{}]", at, j);
    std::string type = string_field(p, "type", where + ".type").value_or("");
    if (type == "input_text" || type == "output_text" || type == "text") {
      auto text = string_field(p, "text", where + ".text");
      if (!text) throw bad_request(fmt::format("'{}.text' (a string) is required", where), where + ".text");
      parts.push_back({{"type", "text"}, {"text", *text}});
    } else if (type == "refusal") {
      parts.push_back({{"type", "text"}, {"text", string_field(p, "refusal", where + ".refusal").value_or("")}});
    } else {
      throw bad_request(
          fmt::format("'{}': content type '{}' is not supported (only input_text and output_text)", where, type),
          where + ".type");
    }
  }
  return parts;
}

// The function tools of a Responses request ({type, name, description, parameters, strict}) as chat tools.
json chat_tools(const json& tools) {
  if (!tools.is_array()) throw bad_request("'tools' must be an array", "tools");
  json out = json::array();
  for (size_t i = 0; i < tools.size(); ++i) {
    const json& t = tools[i];
    std::string at = fmt::format("tools[{}]", i);
    if (!t.is_object()) throw bad_request(fmt::format("'{}' must be an object", at), at);
    std::string type = string_field(t, "type", at + ".type").value_or("");
    if (type != "function")
      throw bad_request(fmt::format("'{}.type' '{}' is not supported (only function tools)", at, type), at + ".type");
    auto name = string_field(t, "name", at + ".name");
    if (!name || name->empty())
      throw bad_request(fmt::format("'{}.name' must be a non-empty string", at), at + ".name");
    json fn = {{"name", *name}};
    if (auto d = string_field(t, "description", at + ".description")) fn["description"] = *d;
    if (const json* p = find_field(t, "parameters")) {
      if (!p->is_object()) throw bad_request(fmt::format("'{}.parameters' must be an object", at), at + ".parameters");
      fn["parameters"] = *p;
    }
    out.push_back({{"type", "function"}, {"function", std::move(fn)}});
  }
  return out;
}

json chat_tool_choice(const json& tc) {
  if (tc.is_string()) return tc;  // none / auto / required: checked by the chat parser
  if (tc.is_object() && string_field(tc, "type", "tool_choice.type") == "function") {
    auto name = string_field(tc, "name", "tool_choice.name");
    if (!name) throw bad_request("'tool_choice.name' is required for a function tool choice", "tool_choice.name");
    return {{"type", "function"}, {"function", {{"name", *name}}}};
  }
  throw bad_request("'tool_choice' must be \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}",
                    "tool_choice");
}

// text.format → chat response_format.
json chat_response_format(const json& format) {
  if (!format.is_object()) throw bad_request("'text.format' must be an object", "text.format");
  std::string type = string_field(format, "type", "text.format.type").value_or("");
  if (type == "text" || type == "json_object") return {{"type", type}};
  if (type != "json_schema")
    throw bad_request(
        fmt::format("'text.format.type' must be \"text\", \"json_object\" or \"json_schema\", got '{}'", type),
        "text.format.type");
  json js = json::object();
  for (const char* k : {"name", "description", "schema", "strict"})
    if (const json* v = find_field(format, k)) js[k] = *v;
  if (!js.contains("schema"))
    throw bad_request("'text.format.schema' is required for a json_schema format", "text.format.schema");
  return {{"type", "json_schema"}, {"json_schema", std::move(js)}};
}

// The input items as chat messages (after the system message from `instructions`).
void add_input_messages(const json& input, json* messages) {
  if (input.is_string()) {
    messages->push_back({{"role", "user"}, {"content", input}});
    return;
  }
  if (!input.is_array()) throw bad_request("'input' must be a string or an array of input items", "input");
  for (size_t i = 0; i < input.size(); ++i) {
    const json& item = input[i];
    std::string at = fmt::format("input[{}]", i);
    if (!item.is_object()) throw bad_request(fmt::format("'{}' must be an object", at), at);
    std::string type = string_field(item, "type", at + ".type").value_or("message");
    if (type == "message") {
      auto role = string_field(item, "role", at + ".role");
      if (!role) throw bad_request(fmt::format("'{}.role' is required", at), at + ".role");
      if (*role != "user" && *role != "system" && *role != "developer" && *role != "assistant")
        throw bad_request(fmt::format("'{}.role' must be user, system, developer or assistant; got '{}'", at, *role),
                          at + ".role");
      const json* content = find_field(item, "content");
      if (!content) throw bad_request(fmt::format("'{}.content' is required", at), at + ".content");
      messages->push_back({{"role", *role}, {"content", message_content(*content, at + ".content")}});
    } else if (type == "function_call") {
      auto call_id = string_field(item, "call_id", at + ".call_id");
      auto name = string_field(item, "name", at + ".name");
      auto args = string_field(item, "arguments", at + ".arguments");
      if (!call_id || !name || !args)
        throw bad_request(fmt::format("'{}' needs 'call_id', 'name' and 'arguments' (strings)", at), at);
      json call = {{"id", *call_id}, {"type", "function"}, {"function", {{"name", *name}, {"arguments", *args}}}};
      // Consecutive calls belong to one assistant turn.
      if (!messages->empty() && messages->back()["role"] == "assistant" && messages->back().contains("tool_calls"))
        messages->back()["tool_calls"].push_back(std::move(call));
      else
        messages->push_back({{"role", "assistant"}, {"content", ""}, {"tool_calls", json::array({std::move(call)})}});
    } else if (type == "function_call_output") {
      auto call_id = string_field(item, "call_id", at + ".call_id");
      if (!call_id) throw bad_request(fmt::format("'{}.call_id' is required", at), at + ".call_id");
      const json* output = find_field(item, "output");
      if (!output) throw bad_request(fmt::format("'{}.output' is required", at), at + ".output");
      messages->push_back(
          {{"role", "tool"}, {"tool_call_id", *call_id}, {"content", message_content(*output, at + ".output")}});
    } else if (type == "reasoning") {
      // The model's earlier reasoning: not part of the prompt here.
    } else {
      throw bad_request(fmt::format("'{}.type' '{}' is not supported (this server takes message, "
                                    "function_call and function_call_output items)",
                                    at, type),
                        at + ".type");
    }
  }
}

}  // namespace

ResponsesRequest parse_responses_request(const json& body, int vocab_size, const UnknownFieldPolicy* unknown,
                                         const SamplingDefaults* defaults, ResponseStore* store) {
  if (!body.is_object()) throw bad_request("the request body must be a JSON object");
  ResponsesRequest req;
  FieldReader r(body, "", unknown);
  ResponseStore::EntryPtr previous;
  if (r.has("previous_response_id")) {
    auto prev = r.string("previous_response_id");
    if (!prev || prev->empty())
      throw bad_request("'previous_response_id' must be a response id (a string)", "previous_response_id");
    if (!store || !store->enabled())
      throw bad_request(
          "'previous_response_id' needs the response store, which is off (--responses-store-mib 0): send the "
          "whole conversation in 'input'",
          "previous_response_id");
    previous = store->get(*prev);
    if (!previous)
      throw ApiError(404, "invalid_request_error", fmt::format("Previous response with id '{}' not found.", *prev),
                     "previous_response_id", "not_found");
    req.previous_response_id = *prev;
  }
  if (r.has("conversation"))
    throw bad_request("'conversation' is not supported: this server does not keep conversations", "conversation");
  if (r.boolean("background").value_or(false))
    throw bad_request("'background' responses are not supported", "background");
  if (r.has("prompt")) throw bad_request("stored prompt templates ('prompt') are not supported", "prompt");
  if (r.has("top_logprobs")) throw bad_request("'top_logprobs' is not supported on /v1/responses", "top_logprobs");

  json chat = json::object();
  json messages = json::array();
  if (auto ins = r.string("instructions")) {
    req.instructions = *ins;
    messages.push_back({{"role", "system"}, {"content", *ins}});
  }
  const json* input = r.get("input");
  if (!input) throw bad_request("'input' is required", "input");
  // The stored conversation first (the instructions are this request's only, as OpenAI does), then this
  // input; both kept as items for the store.
  req.input_items = json::array();
  if (previous) {
    add_input_messages(previous->items, &messages);
    req.input_items = previous->items;
  }
  const size_t before = messages.size();
  add_input_messages(*input, &messages);
  if (messages.size() == before) throw bad_request("'input' must not be empty", "input");
  if (input->is_string()) req.input_items.push_back({{"type", "message"}, {"role", "user"}, {"content", *input}});
  else req.input_items.insert(req.input_items.end(), input->begin(), input->end());
  chat["messages"] = std::move(messages);

  if (const json* tools = r.get("tools")) {
    req.tools = *tools;
    json converted = chat_tools(*tools);
    if (!converted.empty()) chat["tools"] = std::move(converted);
  }
  if (const json* tc = r.get("tool_choice")) {
    req.tool_choice = *tc;
    json choice = chat_tool_choice(*tc);
    if (chat.contains("tools") || (choice != "none" && choice != "auto")) chat["tool_choice"] = std::move(choice);
  }
  if (auto p = r.boolean("parallel_tool_calls")) {
    req.parallel_tool_calls = *p;
    chat["parallel_tool_calls"] = *p;
  }
  if (const json* text = r.get("text")) {
    if (!text->is_object()) throw bad_request("'text' must be an object", "text");
    FieldReader t(*text, "text.", unknown);
    if (const json* format = t.get("format")) {
      req.text_format = *format;
      chat["response_format"] = chat_response_format(*format);
    }
    t.string("verbosity");
    t.reject_unknown();
  }
  if (auto m = r.integer("max_output_tokens", 1, kMaxTokensLimit)) {  // checked here to name this field
    req.max_output_tokens = *m;
    chat["max_completion_tokens"] = *m;
  }
  req.temperature = r.number("temperature", 0.0, 2.0).value_or(1.0);
  req.top_p = r.number("top_p", 0.0, 1.0).value_or(1.0);
  // Fields with the chat meaning (vLLM accepts its sampling extensions here too).
  for (const char* k :
       {"model", "stream", "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty", "frequency_penalty",
        "repetition_penalty", "logit_bias", "min_tokens", "allowed_token_ids", "bad_words", "stop", "ignore_eos",
        "priority"})
    if (const json* v = r.get(k)) chat[k] = *v;
  req.store = r.boolean("store").value_or(true);
  if (const json* md = r.get("metadata")) {
    if (!md->is_object()) throw bad_request("'metadata' must be an object", "metadata");
    req.metadata = *md;
  }
  if (auto user = r.string("user")) req.user = *user;
  if (auto tr = r.string("truncation"); tr && *tr != "disabled" && *tr != "auto")
    throw bad_request("'truncation' must be \"disabled\" or \"auto\"", "truncation");
  r.ignore({"reasoning", "include", "service_tier", "prompt_cache_key", "prompt_cache_retention", "safety_identifier",
            "max_tool_calls", "stream_options"});
  r.reject_unknown();
  req.chat = parse_chat_request(chat, vocab_size, nullptr, defaults);
  req.chat.max_tokens_field = "max_output_tokens";
  // The constraint's schemas are where the client wrote them, not where the chat body put them.
  OutputConstraint& c = req.chat.opt.constraint;
  if (c.field == "response_format") {
    c.field = "text.format";
    if (!c.schema_at.empty()) c.schema_at = "/text/format/schema";
  }
  for (size_t i = 0; i < c.tools.size(); ++i)
    if (!c.tools[i].parameters_at.empty()) c.tools[i].parameters_at = fmt::format("/tools/{}/parameters", i);
  return req;
}

}  // namespace ds::server
