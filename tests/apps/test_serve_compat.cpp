// vLLM serve flags added after a user audit, beyond their docs/VLLM_FLAGS.md rows (test_vllm_flags.cpp):
// --max-model-len's human-readable forms and -1/auto, where the new flags land in the server's options,
// --hf-token, and the error for a model directory without config.json or tokenizer files.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "apps/serve_args.h"
#include "core/error.h"
#include "serve_parse.h"

namespace ds::cli {
namespace {

namespace fs = std::filesystem;

// Parses `serve --model m <extra>` into *out, validated; "" on success, else the error.
std::string parse_serve(const std::vector<std::string>& extra, ServeArgs* out) {
  return test::parse_serve_line(extra, out, /*validate=*/true);
}

std::optional<int64_t> max_model_len(const std::string& value, std::string* err = nullptr) {
  ServeArgs a;
  std::string e = parse_serve({"--max-model-len", value}, &a);
  if (err) *err = e;
  if (!e.empty()) return std::nullopt;
  return a.max_model_len;
}

TEST(ServeCompat, MaxModelLenTakesVllmsHumanReadableForms) {
  EXPECT_EQ(max_model_len("4096"), 4096);
  EXPECT_EQ(max_model_len("4k"), 4000);
  EXPECT_EQ(max_model_len("4K"), 4096);
  EXPECT_EQ(max_model_len("128K"), 131072);
  EXPECT_EQ(max_model_len("25.6k"), 25600);
  EXPECT_EQ(max_model_len("1m"), 1000000);
  EXPECT_EQ(max_model_len("1M"), 1048576);
  EXPECT_EQ(max_model_len("0.5m"), 500000);
  EXPECT_EQ(max_model_len("1G"), 1073741824);
  EXPECT_EQ(max_model_len("2G"), std::nullopt);  // 2^31 tokens: beyond the int32 range
  // -1 and auto: the model's own, lowered to what fits (0, as without the flag).
  EXPECT_EQ(max_model_len("-1"), 0);
  EXPECT_EQ(max_model_len("auto"), 0);
  EXPECT_EQ(max_model_len("AUTO"), 0);
  std::string err;
  EXPECT_EQ(max_model_len("1.5K", &err), std::nullopt);
  EXPECT_NE(err.find("--max-model-len"), std::string::npos) << err;
  EXPECT_NE(err.find("1.5k"), std::string::npos) << err;
  for (const char* bad : {"-2", "4kb", "k", "1e9", "3000000000", "3g", "1t"}) {
    EXPECT_EQ(max_model_len(bad, &err), std::nullopt) << bad;
    EXPECT_NE(err.find("--max-model-len"), std::string::npos) << bad << ": " << err;
  }
}

TEST(ServeCompat, NewVllmFlagsReachTheServerOptions) {
  ServeArgs a;
  ASSERT_EQ(parse_serve({"--enable-log-requests", "--max-logprobs", "5", "-q", "fp8", "--chat-template-content-format",
                         "string", "--response-role", "bot", "--enable-force-include-usage", "--allowed-methods",
                         "[\"GET\", \"POST\"]", "--allowed-headers", "Authorization", "--allow-credentials",
                         "--enable-request-id-headers"},
                        &a),
            "");
  EXPECT_EQ(a.quantization, "fp8");
  EXPECT_EQ(a.vllm.max_logprobs, 5);
  server::ServerOptions so = server_options(a);
  EXPECT_TRUE(so.access_log);
  EXPECT_EQ(so.response_role, "bot");
  EXPECT_TRUE(so.force_include_usage);
  EXPECT_TRUE(so.content_parts_as_string);
  EXPECT_EQ(so.allowed_methods, (std::vector<std::string>{"GET", "POST"}));
  EXPECT_EQ(so.allowed_headers, (std::vector<std::string>{"Authorization"}));
  EXPECT_TRUE(so.allow_credentials);
  EXPECT_TRUE(so.request_id_headers);
  // The defaults: vLLM's.
  ServeArgs d;
  ASSERT_EQ(parse_serve({}, &d), "");
  so = server_options(d);
  EXPECT_FALSE(so.access_log);
  EXPECT_EQ(so.response_role, "assistant");
  EXPECT_FALSE(so.force_include_usage || so.content_parts_as_string || so.allow_credentials || so.request_id_headers);
  EXPECT_EQ(so.allowed_methods, (std::vector<std::string>{"*"}));
  EXPECT_EQ(d.vllm.max_logprobs, 20);
  // --disable-log-requests wins over --enable-log-requests.
  ServeArgs both;
  ASSERT_EQ(parse_serve({"--enable-log-requests", "--disable-log-requests"}, &both), "");
  EXPECT_FALSE(server_options(both).access_log);
  // --max-logprobs above what the sampler returns is refused by name.
  ServeArgs many;
  std::string err = parse_serve({"--max-logprobs", "21"}, &many);
  EXPECT_NE(err.find("--max-logprobs 21"), std::string::npos) << err;
}

struct EnvVar {
  std::string name;
  std::optional<std::string> old;
  EnvVar(const char* n, const char* v) : name(n) {
    if (const char* o = std::getenv(n)) old = o;
    if (v) ::setenv(n, v, 1);
    else ::unsetenv(n);
  }
  ~EnvVar() {
    if (old) ::setenv(name.c_str(), old->c_str(), 1);
    else ::unsetenv(name.c_str());
  }
};

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("ds_serve_compat_" + std::to_string(::getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

TEST(ServeCompat, HfTokenFlag) {
  EnvVar env_token("HF_TOKEN", "from-env");
  EnvVar legacy("HUGGING_FACE_HUB_TOKEN", nullptr);
  ServeArgs a;
  ASSERT_EQ(parse_serve({"--hf-token", "hf_flag"}, &a), "");
  EXPECT_EQ(hub_env(a).token, "hf_flag");
  ServeArgs none;
  ASSERT_EQ(parse_serve({}, &none), "");
  EXPECT_EQ(hub_env(none).token, "from-env");
  // The flag alone: $HF_TOKEN, else the stored login token, else an error.
  ServeArgs bare;
  ASSERT_EQ(parse_serve({"--hf-token"}, &bare), "");
  ASSERT_TRUE(bare.vllm.hf_token.has_value());
  EXPECT_EQ(hub_env(bare).token, "from-env");
  EnvVar unset("HF_TOKEN", nullptr);
  const fs::path dir = temp_dir("token");
  EnvVar path("HF_TOKEN_PATH", (dir / "token").c_str());
  EXPECT_THROW(hub_env(bare), Error);
  std::ofstream(dir / "token") << "hf_stored\n";
  EXPECT_EQ(hub_env(bare).token, "hf_stored");
  EXPECT_EQ(hub_env(none).token, "") << "without the flag the stored token is not sent";
  fs::remove_all(dir);
}

TEST(ServeCompat, ModelDirectoryErrorsNameEveryMissingPiece) {
  const std::string tiny = DS_SOURCE_DIR "/tests/fixtures/tiny";
  EXPECT_EQ(check_model_dirs(tiny + "/model", tiny + "/tokenizer"), tiny + "/tokenizer");
  // The folder above the model and the tokenizer: both missing, and the command line that was meant.
  try {
    check_model_dirs(tiny, "");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("no config.json"), std::string::npos) << m;
    EXPECT_NE(m.find("tiktoken.model"), std::string::npos) << m;
    EXPECT_NE(m.find("deltaserve serve " + tiny + "/model --tokenizer " + tiny + "/tokenizer"), std::string::npos) << m;
  }
  // A model without tokenizer files: as before.
  try {
    check_model_dirs(tiny + "/model", "");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("pass --tokenizer DIR"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("no config.json"), std::string::npos) << e.what();
  }
  // Neither, and no sub-folder to suggest.
  const fs::path empty = temp_dir("empty");
  try {
    check_model_dirs(empty.string(), "");
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("no config.json and no tokenizer files"), std::string::npos) << m;
    EXPECT_EQ(m.find("did you mean"), std::string::npos) << m;
  }
  EXPECT_THROW(check_model_dirs(tiny + "/model", empty.string()), Error);  // --tokenizer without tiktoken.model
  fs::remove_all(empty);
}

}  // namespace
}  // namespace ds::cli
