// vLLM's serve flags (issue 16): every row of docs/VLLM_FLAGS.md is parsed through the real
// registration and checked against the behaviour the row states (works / ignored / refused by
// name / another issue's flag); the YAML subset of --config; vLLM's -tp short form; GPU counting.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "apps/serve_args.h"
#include "apps/vllm_flags.h"
#include "apps/yaml_config.h"
#include "core/error.h"

namespace ds::cli {
namespace {

struct Outcome {
  std::string error;  // "" : accepted
  ServeArgs args;
  std::vector<std::string> ignored;
};

// `deltaserve serve m <args>` through the real option registration and checks.
Outcome serve(std::vector<std::string> args) {
  std::vector<std::string> argv = {"deltaserve", "serve"};
  if (args.empty() || args[0] != "--model") argv.push_back("m");  // the positional model (vLLM's form)
  argv.insert(argv.end(), args.begin(), args.end());
  CLI::App app;
  Outcome o;
  add_serve_options(app, o.args);
  try {
    argv = expand_serve_config(expand_vllm_short_flags(argv));  // as main() does
    std::vector<std::string> rev(argv.rbegin(), argv.rend() - 2);  // without "deltaserve serve"
    app.parse(rev);
    validate_serve_args(o.args);
    o.ignored = ignored_flag_messages(o.args.vllm);
  } catch (const CLI::ParseError& e) {
    o.error = std::string(e.what()).empty() ? "parse error" : e.what();
  } catch (const Error& e) {
    o.error = e.what();
  }
  return o;
}

struct EnvVar {
  std::string name;
  std::optional<std::string> old;
  EnvVar(const char* n, const char* v) : name(n) {
    if (const char* o = std::getenv(n)) old = o;
    ::setenv(n, v, 1);
  }
  ~EnvVar() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};

struct Row {
  std::vector<std::string> args;
  std::string behaviour, line;
};

std::vector<Row> doc_rows() {
  std::ifstream f(std::string(DS_SOURCE_DIR) + "/docs/VLLM_FLAGS.md");
  EXPECT_TRUE(bool(f)) << "docs/VLLM_FLAGS.md";
  std::vector<Row> rows;
  for (std::string line; std::getline(f, line);) {
    if (line.rfind("| `", 0) != 0) continue;
    auto end = line.find('`', 3);
    Row r;
    r.line = line;
    std::istringstream cmd(line.substr(3, end - 3));
    for (std::string t; cmd >> t;) r.args.push_back(t);
    auto b0 = line.find('|', end) + 1, b1 = line.find('|', b0);
    r.behaviour = line.substr(b0, b1 - b0);
    r.behaviour.erase(0, r.behaviour.find_first_not_of(' '));
    r.behaviour.erase(r.behaviour.find_last_not_of(' ') + 1);
    rows.push_back(r);
  }
  return rows;
}

TEST(VllmFlags, EveryDocumentedRowBehavesAsDocumented) {
  EnvVar gpus("CUDA_VISIBLE_DEVICES", "");  // no GPU: the -tp rows are decided the same everywhere
  const std::vector<Row> rows = doc_rows();
  ASSERT_GT(rows.size(), 90u);
  std::set<std::string> documented;
  for (const Row& r : rows) {
    SCOPED_TRACE(r.line);
    ASSERT_FALSE(r.args.empty());
    std::string flag = expand_vllm_short_flags({"x", r.args[0]})[1];
    if (flag.rfind("--", 0) != 0) {  // a one-letter alias (-O): errors and log lines use the long name
      CLI::App names;
      ServeArgs unused;
      add_serve_options(names, unused);
      if (const CLI::Option* opt = names.get_option_no_throw(flag); opt && !opt->get_lnames().empty())
        flag = "--" + opt->get_lnames()[0];
    }
    documented.insert(flag.substr(0, flag.find('=')));
    const Outcome o = serve(r.args);
    bool ignored = false;
    for (const auto& m : o.ignored) ignored |= m.find("ignoring vLLM flag " + flag) == 0;
    if (r.behaviour == "works") {
      EXPECT_EQ(o.error, "");
      EXPECT_FALSE(ignored) << "a working flag is logged as ignored";
    } else if (r.behaviour == "ignored") {
      EXPECT_EQ(o.error, "");
      EXPECT_TRUE(ignored) << "no 'ignoring' log line";
    } else if (r.behaviour == "refused") {
      EXPECT_NE(o.error, "") << "accepted";
      EXPECT_NE(o.error.find(flag), std::string::npos) << "the error does not name " << flag << ": " << o.error;
    } else if (r.behaviour.rfind("issue ", 0) == 0) {
      // Another change's flag: unknown until it lands, then implemented by it (never merely ignored here).
      if (o.error.empty()) EXPECT_FALSE(ignored);
      else EXPECT_NE(o.error.find("not expected"), std::string::npos) << o.error;
    } else {
      ADD_FAILURE() << "unknown behaviour '" << r.behaviour << "'";
    }
  }
  // Every vLLM-compatibility flag the parser registers has a row.
  CLI::App app;
  ServeArgs a;
  add_serve_options(app, a);
  for (const CLI::Option* opt : app.get_options()) {
    const std::string group = opt->get_group();
    if (group.rfind("vLLM", 0) != 0) continue;
    for (const std::string& n : opt->get_lnames())
      EXPECT_TRUE(documented.count("--" + n)) << "--" << n << " (group " << group << ") has no row in docs/VLLM_FLAGS.md";
  }
}

TEST(VllmFlags, WorkingFlagsReachTheOptions) {
  Outcome o = serve({"--revision", "v2", "--download-dir", "/tmp/x", "-tp", "1", "--disable-log-stats",
                     "--disable-log-requests", "--access-log", "--served-model-name", "kimi", "--uvicorn-log-level",
                     "debug", "--metrics-prefix", "vllm", "--log-format", "json"});
  ASSERT_EQ(o.error, "");
  EXPECT_EQ(o.args.model, "m");
  EXPECT_EQ(o.args.vllm.revision, "v2");
  EXPECT_EQ(o.args.vllm.download_dir, "/tmp/x");
  EXPECT_EQ(o.args.vllm.tensor_parallel, 1);
  EXPECT_TRUE(o.args.vllm.disable_log_stats);
  EXPECT_EQ(o.args.vllm.uvicorn_log_level, "debug");
  EXPECT_EQ(o.args.log_format, "json");
  server::ServerOptions so = server_options(o.args);
  EXPECT_FALSE(so.access_log);  // --disable-log-requests wins over --access-log
  EXPECT_EQ(so.metrics.prefix, "vllm:");
  EXPECT_EQ(so.metrics.model_name, "kimi");
  EXPECT_FALSE(so.protect_metrics);
  // A repo id is the served name by default, as in vLLM.
  Outcome repo = serve({});
  EXPECT_EQ(server_options(repo.args).model_names, std::vector<std::string>{"m"});
  EXPECT_NE(serve({"--protect-metrics"}).error.find("--protect-metrics needs --api-key"), std::string::npos);
  EXPECT_EQ(serve({"--protect-metrics", "--api-key", "k"}).error, "");
}

TEST(VllmFlags, TensorParallelAboveTheGpusIsAClearError) {
  {
    EnvVar none("CUDA_VISIBLE_DEVICES", "");
    EXPECT_EQ(visible_gpu_count(), 0);
    std::string e = serve({"-tp", "4", "--device", "cuda"}).error;
    EXPECT_NE(e.find("--tensor-parallel-size 4: only 0 GPU(s) visible"), std::string::npos) << e;
    // On the CPU the ranks are threads: any of 1, 2, 4, 8 is accepted here (the model is checked at load).
    EXPECT_EQ(serve({"-tp", "4"}).error, "");
    EXPECT_EQ(serve({"-tp", "2", "--enable-expert-parallel"}).error, "");
    e = serve({"-tp", "3"}).error;
    EXPECT_NE(e.find("--tensor-parallel-size 3: expected 1, 2, 4 or 8"), std::string::npos) << e;
  }
  {
    EnvVar four("CUDA_VISIBLE_DEVICES", "0,1,2,3");
    EXPECT_EQ(visible_gpu_count(), 4);
    EXPECT_EQ(serve({"-tp=4", "--device", "cuda"}).error, "");  // one rank per GPU
    EXPECT_EQ(serve({"-tp", "1", "--device", "cuda"}).error, "");
    std::string e = serve({"-tp", "8", "--device", "cuda"}).error;
    EXPECT_NE(e.find("--tensor-parallel-size 8: only 4 GPU(s) visible"), std::string::npos) << e;
    EXPECT_EQ(serve({"-tp", "2", "--enable-expert-parallel", "--device", "cuda"}).error, "");
    e = serve({"-pp", "2", "--device", "cuda"}).error;
    EXPECT_NE(e.find("multi-GPU serving (pipeline parallel) is not built yet"), std::string::npos) << e;
  }
  EXPECT_EQ(expand_vllm_short_flags({"deltaserve", "serve", "-tp", "2", "-pp=3", "-t", "-dp"}),
            (std::vector<std::string>{"deltaserve", "serve", "--tensor-parallel-size", "2", "--pipeline-parallel-size=3",
                                      "-t", "--data-parallel-size"}));
}

TEST(VllmFlags, IgnoredFlagsSayWhy) {
  Outcome o = serve({"--trust-remote-code", "--max-log-len", "7", "--swap-space", "4", "--seed", "7"});
  ASSERT_EQ(o.error, "");
  ASSERT_EQ(o.ignored.size(), 3u);  // --seed works (the seed sequence of unseeded requests)
  EXPECT_EQ(o.ignored[0].rfind("ignoring vLLM flag --trust-remote-code: Kimi-Linear is implemented natively", 0), 0u)
      << o.ignored[0];
  EXPECT_EQ(o.ignored[1].rfind("ignoring vLLM flag --swap-space 4: ", 0), 0u) << o.ignored[1];  // the table's order
  EXPECT_EQ(o.ignored[2].rfind("ignoring vLLM flag --max-log-len 7: ", 0), 0u) << o.ignored[2];
  EXPECT_EQ(o.args.vllm.seed, 7);
}

TEST(YamlConfig, FileFlagsApplyAndTheCommandLineWins) {
  const std::string file = std::string(DS_SOURCE_DIR) + "/tests/apps/fixtures/serve.yaml";
  Outcome o = serve({"--config", file, "--port", "8123"});
  ASSERT_EQ(o.error, "");
  EXPECT_EQ(o.args.max_model_len, 2048);
  EXPECT_EQ(o.args.max_num_seqs, 7);
  EXPECT_EQ(o.args.served_model_names, (std::vector<std::string>{"kimi-linear", "kimi two"}));
  EXPECT_EQ(o.args.api_key, "from # the file");
  EXPECT_EQ(o.args.port, 8123);  // the command line wins over the file's 9001
  ASSERT_EQ(o.ignored.size(), 1u);
  EXPECT_EQ(o.ignored[0].rfind("ignoring vLLM flag --trust-remote-code", 0), 0u);
}

// A fresh temporary file holding `text`, removed with the value.
struct TempYaml {
  char path[20] = "/tmp/ds-yaml-XXXXXX";
  explicit TempYaml(const std::string& text) {
    ::close(::mkstemp(path));
    std::ofstream(path) << text;
  }
  ~TempYaml() { std::remove(path); }
  TempYaml(const TempYaml&) = delete;
  TempYaml& operator=(const TempYaml&) = delete;
};

std::string config_error(const std::string& text) {
  const TempYaml f(text);
  return serve({"--config", f.path}).error;
}

TEST(YamlConfig, OutsideTheSubsetIsAnErrorNamingTheLine) {
  EXPECT_NE(config_error("port: 8000\nmodel-opts:\n  nested: 1\n").find("line 3: nested mappings"), std::string::npos);
  EXPECT_NE(config_error("port: &a 8000\n").find("line 1"), std::string::npos);
  EXPECT_NE(config_error("port: 1\nport: 2\n").find("'port' is given twice"), std::string::npos);
  EXPECT_NE(config_error("just text\n").find("line 1: expected 'flag-name: value'"), std::string::npos);
  EXPECT_NE(config_error("- a\n").find("line 1"), std::string::npos);
  EXPECT_NE(config_error("name: \"open\n").find("unterminated"), std::string::npos);
  EXPECT_NE(config_error("port: 1\n---\nhost: x\n").find("line 2: only one YAML document"), std::string::npos);
  EXPECT_NE(config_error("---\n---\n").find("only one YAML document"), std::string::npos);
  EXPECT_NE(config_error("port: 1\n\thost: x\n").find("line 2: tabs"), std::string::npos);
  EXPECT_NE(config_error("no-such-flag: 1\n").find("no-such-flag"), std::string::npos);  // unknown keys
  EXPECT_NE(config_error("max-model-len: -3\n").find("--max-model-len"), std::string::npos);  // ranges still apply
  EXPECT_NE(config_error("tensor-parallel-size: 3\n").find("--tensor-parallel-size 3"), std::string::npos);
}

TEST(YamlConfig, TheModelCanComeFromTheFile) {
  const TempYaml f("model: org/from-file\nenable-auto-tool-choice: true\ndisable-log-stats: false\n");
  const char* path = f.path;
  CLI::App app;
  ServeArgs a;
  add_serve_options(app, a);
  std::vector<std::string> argv = expand_serve_config({"deltaserve", "serve", "--config", path});
  std::vector<std::string> rev(argv.rbegin(), argv.rend() - 2);
  ASSERT_NO_THROW(app.parse(rev));
  EXPECT_EQ(a.model, "org/from-file");
  EXPECT_TRUE(a.vllm.auto_tool_choice);
  EXPECT_FALSE(a.vllm.disable_log_stats);
  // The command line's positional model wins over the file's.
  std::ofstream(path) << "model: org/from-file\n";
  EXPECT_EQ(expand_serve_config({"deltaserve", "serve", "org/cli", "--config", path}),
            (std::vector<std::string>{"deltaserve", "serve", "org/cli", "--config", path}));
  // Other commands are left alone.
  EXPECT_EQ(expand_serve_config({"deltaserve", "generate", "--config", path}),
            (std::vector<std::string>{"deltaserve", "generate", "--config", path}));
}

// `deltaserve run-batch` takes vLLM's run-batch line: -i / -o (both required), serve's flags, and --config with its
// own flags in the file too.
TEST(YamlConfig, RunBatchTakesItsFlagsAndServesFromTheFile) {
  const TempYaml f("max-num-seqs: 8\noutput-file: out.jsonl\n");
  CLI::App app;
  ServeArgs a;
  RunBatchArgs b;
  add_run_batch_options(app, b);
  add_serve_options(app, a);
  std::vector<std::string> argv =
      expand_serve_config({"deltaserve", "run-batch", "-i", "in.jsonl", "org/model", "--config", f.path});
  std::vector<std::string> rev(argv.rbegin(), argv.rend() - 2);
  ASSERT_NO_THROW(app.parse(rev));
  EXPECT_EQ(b.input, "in.jsonl");
  EXPECT_EQ(b.output, "out.jsonl");
  EXPECT_EQ(a.model, "org/model");
  EXPECT_EQ(a.max_num_seqs, 8);
  CLI::App missing;
  ServeArgs a2;
  RunBatchArgs b2;
  add_run_batch_options(missing, b2);
  add_serve_options(missing, a2);
  std::vector<std::string> no_output = {"m", "in.jsonl", "-i"};  // (reversed, as CLI11 takes them): no -o
  EXPECT_THROW(missing.parse(no_output), CLI::ParseError);
}

TEST(YamlConfig, BlockListsAndFlags) {
  std::istringstream in("served-model-name:\n  - a\n  - 'b c'\nenforce-eager: true\n# end\n");
  auto items = parse_yaml_subset(in);
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].name, "served-model-name");
  EXPECT_EQ(items[0].inputs, (std::vector<std::string>{"a", "b c"}));
  EXPECT_EQ(items[1].inputs, std::vector<std::string>{"true"});
  const std::string err = config_error("served-model-name:\n  - x\n  - y\ndisable-log-stats: false\n");
  EXPECT_EQ(err, "");
}

}  // namespace
}  // namespace ds::cli
