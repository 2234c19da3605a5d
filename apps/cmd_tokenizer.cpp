// `deltaserve tokenize` (strings → ids, or an encode-throughput benchmark) and
// `deltaserve chat-template` (render a request's messages with the model's template).
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/commands.h"
#include "apps/flag_checks.h"
#include "core/error.h"
#include "core/parallel.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/encode_bench.h"
#include "tokenizer/tokenizer.h"

namespace ds::cli {
namespace {

std::string read_text(const std::string& path) {
  if (path == "-") {
    std::ostringstream ss;
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream f(path, std::ios::binary);
  DS_CHECK(f.good(), "cannot open {}", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void write_text(const std::string& path, const std::string& text) {
  if (path.empty() || path == "-") {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  std::ofstream f(path, std::ios::binary);
  DS_CHECK(f.good(), "cannot write {}", path);
  f << text;
}

struct TokenizeArgs {
  std::string tokenizer, in, out;
  bool plain = false, bench = false;
  double bench_mb = 4.0;
  int repeats = 3;
};

void print_bench(const char* label, const EncodeBench& r) {
  std::printf("%-32s %5.2f MB %8zu tokens | serial %6.2f MB/s (%6.2f MB per CPU-s) | parallel(%d threads) "
              "%6.2f MB/s | %s\n",
              label, r.megabytes, r.tokens, r.serial_mb_per_s, r.serial_mb_per_cpu_s, num_threads(),
              r.parallel_mb_per_s, r.parallel_matches ? "parallel==serial" : "PARALLEL MISMATCH");
}

void run_tokenize(const TokenizeArgs& a) {
  if (a.bench) {
    std::string text = make_bench_text(size_t(a.bench_mb * 1e6));
    if (!a.tokenizer.empty()) {
      auto tok = Tokenizer::from_dir(a.tokenizer);
      print_bench(fmt::format("vocab {} ({})", tok->vocab_size(), a.tokenizer).c_str(),
                  run_encode_bench(*tok, text, a.repeats));
    }
    std::string corpus = make_bench_text(size_t(2e6), 7);  // a different sample than the one timed
    Tokenizer big(synthetic_vocab(corpus, 163584), nlohmann::json::object());
    print_bench("synthetic vocab 163,584 ranks", run_encode_bench(big, text, a.repeats));
    return;
  }
  DS_CHECK(!a.tokenizer.empty(), "--tokenizer is required");
  DS_CHECK(!a.in.empty(), "--in is required (a JSON array of strings)");
  auto tok = Tokenizer::from_dir(a.tokenizer);
  nlohmann::json strings;
  try {
    strings = nlohmann::json::parse(read_text(a.in));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", a.in, e.what());
  }
  DS_CHECK(strings.is_array(), "{}: expected a JSON array of strings", a.in);
  nlohmann::json out = nlohmann::json::array();
  for (const auto& s : strings) {
    DS_CHECK(s.is_string(), "{}: every element must be a string", a.in);
    out.push_back(tok->encode(s.get<std::string>(), !a.plain));
  }
  write_text(a.out, out.dump() + "\n");
}

struct TemplateArgs {
  std::string tokenizer, in, out, template_file;
};

void run_chat_template(const TemplateArgs& a) {
  DS_CHECK(!a.in.empty(), "--in is required (a JSON object with messages)");
  nlohmann::ordered_json req;
  try {
    req = nlohmann::ordered_json::parse(read_text(a.in));
  } catch (const nlohmann::json::exception& e) {
    fail("{}: {}", a.in, e.what());
  }
  DS_CHECK(req.is_object() && req.contains("messages"), "{}: expected an object with \"messages\"", a.in);
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  for (const auto& [k, v] : req.items())
    if (k != "messages" && k != "tools" && k != "add_generation_prompt") extra[k] = v;
  if (req.contains("chat_template_kwargs") && req["chat_template_kwargs"].is_object())
    for (const auto& [k, v] : req["chat_template_kwargs"].items()) extra[k] = v;
  const nlohmann::ordered_json tools = req.value("tools", nlohmann::ordered_json());
  const bool gen = req.value("add_generation_prompt", true);
  std::string prompt;
  if (!a.template_file.empty()) {
    nlohmann::ordered_json ctx = extra;
    if (!a.tokenizer.empty()) {
      auto tok = Tokenizer::from_dir(a.tokenizer);
      for (const char* k : {"bos_token", "eos_token"}) {
        int32_t id = std::string(k) == "bos_token" ? tok->bos_id() : tok->eos_id();
        if (id >= 0 && !ctx.contains(k)) ctx[k] = tok->token_bytes(id);
      }
    }
    ctx["messages"] = req["messages"];
    ctx["tools"] = tools;
    ctx["add_generation_prompt"] = gen;
    prompt = ChatTemplate(read_text(a.template_file)).render(ctx);
  } else {
    DS_CHECK(!a.tokenizer.empty(), "--tokenizer (or --template) is required");
    prompt = Tokenizer::from_dir(a.tokenizer)->apply_chat_template(req["messages"], tools, gen, extra);
  }
  write_text(a.out, prompt);
}

}  // namespace

void register_tokenizer_commands(CLI::App& app) {
  auto targs = std::make_shared<TokenizeArgs>();
  CLI::App* tok = app.add_subcommand("tokenize", "Encode strings with a model's tokenizer (or benchmark encoding)");
  tok->add_option("--tokenizer", targs->tokenizer, "directory with tiktoken.model and tokenizer_config.json");
  tok->add_option("--in", targs->in, "JSON array of strings ('-' = stdin)");
  tok->add_option("--out", targs->out, "JSON array of id arrays (default: stdout)");
  tok->add_flag("--plain", targs->plain, "treat special-token text as plain text");
  tok->add_flag("--bench", targs->bench, "measure encode throughput on generated mixed text");
  tok->add_option("--bench-mb", targs->bench_mb, "benchmark text size in MB")
      ->capture_default_str()
      ->check(in_range(0.001, 4096.0));
  tok->add_option("--repeats", targs->repeats, "benchmark repetitions (best is reported)")
      ->capture_default_str()
      ->check(in_range(1, 1000));
  tok->callback([targs] { run_tokenize(*targs); });

  auto cargs = std::make_shared<TemplateArgs>();
  CLI::App* ct = app.add_subcommand("chat-template", "Render a chat request with the model's chat template");
  ct->add_option("--tokenizer", cargs->tokenizer, "tokenizer directory (its chat template, or the built-in Kimi one)");
  ct->add_option("--in", cargs->in, "JSON object: messages, optional tools, add_generation_prompt (default true), "
                                    "other keys passed to the template")->required();
  ct->add_option("--template", cargs->template_file, "render with this template file instead");
  ct->add_option("--out", cargs->out, "output file (default: stdout)");
  ct->callback([cargs] { run_chat_template(*cargs); });
}

}  // namespace ds::cli
