// The `deltaserve score` and `generate` commands, run as a separate process on the tiny checkpoint.
#include <gtest/gtest.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "model_test_util.h"

namespace ds::test {
namespace {

namespace fs = std::filesystem;

std::string binary() { return std::string(DS_BINARY_DIR) + "/deltaserve"; }

std::string join(const std::vector<int32_t>& ids) { return fmt::format("{}", fmt::join(ids, ",")); }

// Runs a command; returns its exit status and stdout.
int run(const std::string& cmd, std::string* out) {
  FILE* p = ::popen((cmd + " 2>/dev/null").c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) out->append(buf.data(), n);
  const int status = ::pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(Cli, ScoreWritesReferenceLogits) {
  ASSERT_TRUE(fs::exists(binary())) << "build the deltaserve target first: " << binary();
  const auto out = fs::temp_directory_path() / fmt::format("ds_score_{}.safetensors", ::getpid());
  const auto ids = reference().i32("len65.ids");
  for (const char* chunk : {"0", "17"}) {
    std::string stdout_text;
    const int rc = run(binary() + " --log-level warn score --model " + tiny_model_dir() + " --threads 2 --ids " +
                           join(ids) + " --prefill-chunk " + chunk + " --out " + out.string(),
                       &stdout_text);
    ASSERT_EQ(rc, 0) << stdout_text;
    SafetensorsFile f(out.string());
    const TensorInfo* t = f.find("logits");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->dtype, DType::F32);
    EXPECT_EQ(t->shape, (std::vector<int64_t>{65, 2048}));
    const auto ref = reference().f32("len65.logits");
    EXPECT_LT(rel_l2(static_cast<const float*>(t->data), ref.data(), ref.size()), 1e-5) << "chunk " << chunk;
  }
  fs::remove(out);
}

TEST(Cli, GenerateIsGreedyByDefault) {
  ASSERT_TRUE(fs::exists(binary())) << "build the deltaserve target first: " << binary();
  std::string text;
  const int rc = run(binary() + " --log-level warn generate --model " + tiny_model_dir() + " --ids " +
                         join(reference().i32("len5.ids")) + " --max-tokens 16 --prefill-chunk 2",
                     &text);
  ASSERT_EQ(rc, 0);
  EXPECT_EQ(text, fmt::format("[{}]\n", join(reference().i32("len5.greedy"))));
}

TEST(Cli, BadArgumentsFail) {
  ASSERT_TRUE(fs::exists(binary()));
  std::string text;
  EXPECT_NE(run(binary() + " score --model " + tiny_model_dir() + " --ids 1,x,3 --out /dev/null", &text), 0);
  EXPECT_NE(run(binary() + " score --model /nonexistent --ids 1 --out /dev/null", &text), 0);
}

}  // namespace
}  // namespace ds::test
