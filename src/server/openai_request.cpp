#include "server/openai_request.h"

#include <fmt/format.h>

#include <algorithm>

#include "server/api_error.h"
#include "server/json_fields.h"
#include "server/structured_output.h"

namespace ds::server {

using nlohmann::json;

namespace {

std::vector<int32_t> token_ids(const json& v, const std::string& field, int vocab_size) {
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const auto& t = v[i];
    if (!t.is_number_integer())
      throw bad_request(fmt::format("'{}[{}]' must be an integer token id, got {}", field, i, json_type_name(t)),
                        field);
    int64_t id = t.get<int64_t>();
    if (id < 0 || id >= vocab_size)
      throw bad_request(fmt::format("'{}[{}]': token id {} is out of range [0, {})", field, i, id, vocab_size), field);
    ids.push_back(int32_t(id));
  }
  return ids;
}

// Reads the fields both endpoints share (chat's max_completion_tokens is read by the caller).
void read_common(FieldReader& r, SamplingOptions* o, int vocab_size, const SamplingDefaults* d) {
  const SamplingDefaults none;
  if (!d) d = &none;
  if (auto m = r.string("model")) o->model = *m;
  o->max_tokens = r.integer("max_tokens", INT64_MIN, INT64_MAX);
  o->n = int(r.integer("n", 1, kMaxChoices).value_or(1));
  o->stream = r.boolean("stream").value_or(false);
  if (const auto* so = r.get("stream_options")) {
    if (!so->is_object()) throw bad_request("'stream_options' must be an object", "stream_options");
    if (!o->stream) throw bad_request("'stream_options' is only allowed when 'stream' is true", "stream_options");
    FieldReader s(*so, "stream_options.", r.policy());
    o->include_usage = s.boolean("include_usage").value_or(false);
    o->continuous_usage = s.boolean("continuous_usage_stats").value_or(false);
    s.reject_unknown();
  }
  auto& sp = o->sampling;
  sp.temperature = float(r.number("temperature", 0.0, 2.0).value_or(d->temperature.value_or(1.0)));
  sp.top_p = float(r.number("top_p", 0.0, 1.0).value_or(d->top_p.value_or(1.0)));
  if (sp.top_p <= 0.0f) throw bad_request("'top_p' must be in (0, 1], got 0", "top_p");
  sp.top_k = int(r.integer("top_k", -1, int64_t(1) << 30).value_or(d->top_k.value_or(-1)));
  sp.min_p = float(r.number("min_p", 0.0, 1.0).value_or(d->min_p.value_or(0.0)));
  sp.presence_penalty = float(r.number("presence_penalty", -2.0, 2.0).value_or(0.0));
  sp.frequency_penalty = float(r.number("frequency_penalty", -2.0, 2.0).value_or(0.0));
  sp.repetition_penalty = float(r.number("repetition_penalty", 0.0, 10.0).value_or(d->repetition_penalty.value_or(1.0)));
  if (sp.repetition_penalty <= 0.0f) throw bad_request("'repetition_penalty' must be > 0", "repetition_penalty");
  if (auto s = r.integer("seed", INT64_MIN, INT64_MAX)) o->seed = uint64_t(*s);

  if (const auto* stop = r.get("stop")) {
    if (stop->is_string()) {
      o->stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      for (size_t i = 0; i < stop->size(); ++i) {
        if (!(*stop)[i].is_string())
          throw bad_request(fmt::format("'stop[{}]' must be a string, got {}", i, json_type_name((*stop)[i])), "stop");
        o->stop.push_back((*stop)[i].get<std::string>());
      }
    } else {
      throw bad_request(fmt::format("'stop' must be a string or an array of strings, got {}", json_type_name(*stop)),
                        "stop");
    }
    std::erase_if(o->stop, [](const std::string& s) { return s.empty(); });
  }
  if (const auto* ids = r.get("stop_token_ids")) {
    if (!ids->is_array()) throw bad_request("'stop_token_ids' must be an array of integers", "stop_token_ids");
    o->stop_token_ids = token_ids(*ids, "stop_token_ids", vocab_size);
  }
  o->ignore_eos = r.boolean("ignore_eos").value_or(false);
  o->include_stop_str_in_output = r.boolean("include_stop_str_in_output").value_or(false);
  o->skip_special_tokens = r.boolean("skip_special_tokens").value_or(true);
  o->tokens_as_ids = r.boolean("return_tokens_as_token_ids").value_or(d->tokens_as_ids);
  r.boolean("spaces_between_special_tokens");  // no effect: Kimi's decode has no spaces to add
  r.boolean("add_special_tokens");             // no effect: Kimi's tokenizer adds no BOS/EOS
  r.string("user");
  o->priority = r.integer("priority", -(int64_t(1) << 53), int64_t(1) << 53).value_or(0);
  r.string("request_id");
  r.ignore({"metadata", "store", "service_tier", "length_penalty"});

  // Known options this server does not implement: accepted only at their neutral values.
  if (auto best_of = r.integer("best_of", 1, kMaxChoices); best_of && *best_of != o->n)
    throw bad_request("'best_of' different from 'n' is not supported", "best_of");
  if (r.boolean("use_beam_search").value_or(false))
    throw bad_request("beam search is not supported", "use_beam_search");
  o->constraint = read_output_constraint(r);
  o->tokens = read_token_controls(r, vocab_size);
  if (auto pl = r.integer("prompt_logprobs", 0, d ? std::min(d->max_logprobs, kMaxLogprobs) : kMaxLogprobs))
    o->prompt_logprobs = int(*pl);
  for (const char* k : {"truncate_prompt_tokens", "logits_processors"}) {
    if (r.has(k)) throw bad_request(fmt::format("'{}' is not supported", k), k);
  }
}

// --max-logprobs (the defaults' cap; kMaxLogprobs without defaults).
int64_t max_logprobs(const SamplingDefaults* d) { return d ? std::min(d->max_logprobs, kMaxLogprobs) : kMaxLogprobs; }

void check_max_tokens(const SamplingOptions& o, const char* field) {
  if (o.max_tokens && (*o.max_tokens < 1 || *o.max_tokens > kMaxTokensLimit))
    throw bad_request(fmt::format("'{}' must be between 1 and {}, got {}", field, kMaxTokensLimit, *o.max_tokens),
                      field);
}

PromptInput prompt_from(const json& v, const std::string& field, int vocab_size) {
  PromptInput p;
  if (v.is_string()) {
    p.text = v.get<std::string>();
    if (p.text.empty()) throw bad_request(fmt::format("'{}' is empty", field), "prompt");
  } else {
    p.is_text = false;
    p.ids = token_ids(v, field, vocab_size);
    if (p.ids.empty()) throw bad_request(fmt::format("'{}' is empty", field), "prompt");
  }
  return p;
}

void check_text_parts(const json& content, const std::string& where) {
  for (size_t j = 0; j < content.size(); ++j) {
    const auto& part = content[j];
    std::string at = fmt::format("{}.content[{}]", where, j);
    if (!part.is_object()) throw bad_request(fmt::format("'{}' must be an object", at), at);
    std::string type = string_field(part, "type", at + ".type").value_or("");
    if (type != "text")
      throw bad_request(fmt::format("'{}': content type '{}' is not supported (only 'text')", at, type), at + ".type");
    if (!string_field(part, "text", at + ".text"))
      throw bad_request(fmt::format("'{}.text' must be a string", at), at + ".text");
  }
}

json validate_messages(const json& msgs, const UnknownFieldPolicy* unknown) {
  if (!msgs.is_array()) throw bad_request("'messages' must be an array", "messages");
  if (msgs.empty()) throw bad_request("'messages' must not be empty", "messages");
  json out = json::array();
  for (size_t i = 0; i < msgs.size(); ++i) {
    std::string where = fmt::format("messages[{}]", i);
    const auto& m = msgs[i];
    if (!m.is_object()) throw bad_request(fmt::format("'{}' must be an object", where), where);
    FieldReader r(m, where + ".", unknown);
    auto role = r.string("role");
    if (!role) throw bad_request(fmt::format("'{}.role' is required", where), where + ".role");
    if (*role != "system" && *role != "developer" && *role != "user" && *role != "assistant" && *role != "tool")
      throw bad_request(
          fmt::format("'{}.role' must be one of system, developer, user, assistant, tool; got '{}'", where, *role),
          where + ".role");
    r.string("name");
    const auto* content = r.get("content");
    if (content && !content->is_string()) {
      if (!content->is_array())
        throw bad_request(fmt::format("'{}.content' must be a string or an array of content parts", where),
                          where + ".content");
      check_text_parts(*content, where);
    }
    bool has_calls = false;
    if (*role == "assistant") {
      if (const auto* calls = r.get("tool_calls")) {
        if (!calls->is_array()) throw bad_request(fmt::format("'{}.tool_calls' must be an array", where), where);
        for (size_t j = 0; j < calls->size(); ++j) {
          const auto& c = (*calls)[j];
          std::string at = fmt::format("{}.tool_calls[{}]", where, j);
          const json* fn = find_field(c, "function");
          if (!fn || !fn->is_object() || !string_field(*fn, "name", at + ".function.name"))
            throw bad_request(fmt::format("'{}' must have a function with a name", at), at + ".function");
          string_field(c, "id", at + ".id");
          string_field(c, "type", at + ".type");
          if (const json* args = find_field(*fn, "arguments"); args && !args->is_string() && !args->is_object())
            throw bad_request(fmt::format("'{}.function.arguments' must be a string (JSON text) or an object, got {}",
                                          at, json_type_name(*args)),
                              at + ".function.arguments");
          has_calls = true;
        }
      }
      r.ignore({"refusal", "audio", "reasoning_content", "reasoning"});
    }
    if (*role == "tool") {
      if (!r.string("tool_call_id"))
        throw bad_request(fmt::format("'{}.tool_call_id' is required for a tool message", where),
                          where + ".tool_call_id");
    }
    if (!content && !has_calls && *role != "assistant")
      throw bad_request(fmt::format("'{}.content' is required", where), where + ".content");
    r.reject_unknown();
    json copy = m;
    if (*role == "developer") copy["role"] = "system";  // the template knows system, not developer
    out.push_back(std::move(copy));
  }
  return out;
}

json validate_tools(const json& tools) {
  if (!tools.is_array()) throw bad_request("'tools' must be an array", "tools");
  for (size_t i = 0; i < tools.size(); ++i) {
    const auto& t = tools[i];
    std::string at = fmt::format("tools[{}]", i);
    const json* f = find_field(t, "function");
    if (!t.is_object() || string_field(t, "type", at + ".type") != "function" || !f || !f->is_object())
      throw bad_request(fmt::format("'{}' must be {{\"type\": \"function\", \"function\": {{...}}}}", at), at);
    if (string_field(*f, "name", at + ".function.name").value_or("").empty())
      throw bad_request(fmt::format("'{}.function.name' must be a non-empty string", at), at + ".function.name");
    string_field(*f, "description", at + ".function.description");
    if (const json* p = find_field(*f, "parameters"); p && !p->is_object())
      throw bad_request(fmt::format("'{}.function.parameters' must be an object", at), at + ".function.parameters");
  }
  return tools;
}

}  // namespace

CompletionRequest parse_completion_request(const json& body, int vocab_size, const UnknownFieldPolicy* unknown,
                                           const SamplingDefaults* defaults) {
  if (!body.is_object()) throw bad_request("the request body must be a JSON object");
  CompletionRequest req;
  FieldReader r(body, "", unknown);
  read_common(r, &req.opt, vocab_size, defaults);
  if (const json* e = r.get("echo"); e && e->is_boolean() && e->get<bool>() && req.opt.max_tokens == 0) {
    req.echo_only = true;  // (vLLM: echo without generation, a scoring request)
    req.opt.max_tokens = 1;
  }
  check_max_tokens(req.opt, "max_tokens");
  if (!req.opt.max_tokens) req.opt.max_tokens = 16;  // OpenAI's default for completions

  const auto* prompt = r.get("prompt");
  if (!prompt) throw bad_request("'prompt' is required", "prompt");
  if (prompt->is_string()) {
    req.prompts.push_back(prompt_from(*prompt, "prompt", vocab_size));
  } else if (prompt->is_array()) {
    if (prompt->empty()) throw bad_request("'prompt' must not be empty", "prompt");
    if ((*prompt)[0].is_number_integer()) {
      req.prompts.push_back(prompt_from(*prompt, "prompt", vocab_size));
    } else {
      for (size_t i = 0; i < prompt->size(); ++i) {
        const auto& p = (*prompt)[i];
        std::string at = fmt::format("prompt[{}]", i);
        if (!p.is_string() && !p.is_array())
          throw bad_request(
              fmt::format("'{}' must be a string or an array of token ids, got {}", at, json_type_name(p)), "prompt");
        if (p.is_string() != (*prompt)[0].is_string())  // as vLLM: a list of strings or a list of id lists
          throw bad_request(fmt::format("'prompt' mixes strings and token-id arrays ('prompt[0]' is {}, '{}' is {}); "
                                        "send a list of strings or a list of token-id arrays",
                                        json_type_name((*prompt)[0]), at, json_type_name(p)),
                            "prompt");
        req.prompts.push_back(prompt_from(p, at, vocab_size));
      }
    }
  } else {
    throw bad_request(fmt::format("'prompt' must be a string, an array of strings, an array of token ids or an array "
                                  "of token-id arrays; got {}",
                                  json_type_name(*prompt)),
                      "prompt");
  }
  if (req.prompts.size() * size_t(req.opt.n) > size_t(kMaxChoices) * 8)
    throw bad_request(fmt::format("too many choices: {} prompts x n={}", req.prompts.size(), req.opt.n), "n");

  req.echo = r.boolean("echo").value_or(false);
  if (auto lp = r.integer("logprobs", 0, max_logprobs(defaults))) req.opt.sampling.num_logprobs = int(*lp);
  if (auto suffix = r.string("suffix"); suffix && !suffix->empty())
    throw bad_request("'suffix' is not supported", "suffix");
  if (r.has("prompt_embeds")) throw bad_request("'prompt_embeds' is not supported", "prompt_embeds");
  r.reject_unknown();
  return req;
}

ChatRequest parse_chat_request(const json& body, int vocab_size, const UnknownFieldPolicy* unknown,
                               const SamplingDefaults* defaults) {
  if (!body.is_object()) throw bad_request("the request body must be a JSON object");
  ChatRequest req;
  FieldReader r(body, "", unknown);
  read_common(r, &req.opt, vocab_size, defaults);
  check_max_tokens(req.opt, "max_tokens");
  if (auto m = r.integer("max_completion_tokens", INT64_MIN, INT64_MAX)) {
    req.opt.max_tokens = m;
    req.max_tokens_field = "max_completion_tokens";
    check_max_tokens(req.opt, "max_completion_tokens");
  }

  const auto* msgs = r.get("messages");
  if (!msgs) throw bad_request("'messages' is required", "messages");
  req.messages = validate_messages(*msgs, unknown);

  if (const auto* tools = r.get("tools")) req.tools = validate_tools(*tools);
  bool have_tools = req.tools.is_array() && !req.tools.empty();
  if (const auto* tc = r.get("tool_choice")) {
    if (tc->is_string()) {
      std::string s = tc->get<std::string>();
      if (s == "none")
        req.tool_choice = ToolChoice::None;
      else if (s == "auto")
        req.tool_choice = ToolChoice::Auto;
      else if (s == "required" || s == "any")  // "any": LangChain's and Anthropic's word for it
        req.tool_choice = ToolChoice::Required;
      else
        throw bad_request("'tool_choice' must be \"none\", \"auto\", \"required\" or a named function", "tool_choice");
    } else if (const json* fn = find_field(*tc, "function");
               fn && fn->is_object() && string_field(*fn, "name", "tool_choice.function.name")) {
      req.tool_choice = ToolChoice::Named;
      req.tool_choice_name = fn->find("name")->get<std::string>();
      bool found = false;
      for (const auto& t : req.tools) found |= t.at("function").at("name") == req.tool_choice_name;
      if (!found)
        throw bad_request(
            fmt::format("'tool_choice' names function '{}', which is not in 'tools'", req.tool_choice_name),
            "tool_choice");
    } else {
      throw bad_request("'tool_choice' must be \"none\", \"auto\", \"required\" or a named function", "tool_choice");
    }
    if (!have_tools && req.tool_choice != ToolChoice::None)
      throw bad_request("'tool_choice' is only allowed when 'tools' are given", "tool_choice");
  }
  const bool parallel = r.boolean("parallel_tool_calls").value_or(true);
  if (req.tool_choice == ToolChoice::Required || req.tool_choice == ToolChoice::Named)
    merge_tool_constraint(&req.opt.constraint, tool_call_constraint(req.tools, req.tool_choice_name, parallel));
  if (r.has("functions") || r.has("function_call"))
    throw bad_request("'functions'/'function_call' are deprecated and not supported; use 'tools'", "functions");

  bool logprobs = r.boolean("logprobs").value_or(false);
  auto top = r.integer("top_logprobs", 0, max_logprobs(defaults));
  if (top && !logprobs) throw bad_request("'top_logprobs' requires 'logprobs' to be true", "top_logprobs");
  if (logprobs) req.opt.sampling.num_logprobs = int(top.value_or(0));

  req.add_generation_prompt = r.boolean("add_generation_prompt").value_or(true);
  req.continue_final_message = r.boolean("continue_final_message").value_or(false);
  if (req.continue_final_message) {
    if (req.add_generation_prompt && body.contains("add_generation_prompt"))
      throw bad_request("'continue_final_message' and 'add_generation_prompt' cannot both be true",
                        "continue_final_message");
    req.add_generation_prompt = false;
    const json& last = req.messages.back();
    if (last.at("role") != "assistant")
      throw bad_request("'continue_final_message' needs an assistant message last", "continue_final_message");
    const json* content = find_field(last, "content");
    if (!content || (content->is_string() && content->get<std::string>().empty()) ||
        (content->is_array() && content->empty()))
      throw bad_request("'continue_final_message' needs the final assistant message to have content to continue",
                        "continue_final_message");
  }
  if (const auto* kw = r.get("chat_template_kwargs")) {
    if (!kw->is_object()) throw bad_request("'chat_template_kwargs' must be an object", "chat_template_kwargs");
    req.template_kwargs = *kw;
  }
  if (r.has("chat_template")) throw bad_request("a per-request 'chat_template' is not supported", "chat_template");
  if (r.has("documents")) throw bad_request("'documents' is not supported", "documents");
  req.echo = r.boolean("echo").value_or(false);
  if (const auto* mod = r.get("modalities"); mod && *mod != json::array({"text"}))
    throw bad_request("only the text modality is supported", "modalities");
  r.ignore({"reasoning_effort", "prediction", "web_search_options"});
  r.reject_unknown();
  return req;
}

}  // namespace ds::server
