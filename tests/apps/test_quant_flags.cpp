// --quantization and --kv-cache-dtype of `deltaserve serve` (issue 17): the values the engine supports
// reach the backend options; anything else is refused at parse time naming the flag.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/serve_args.h"

namespace ds::cli {
namespace {

std::string parse_serve_flags(std::vector<std::string> extra, ServeArgs* out) {
  CLI::App app;
  add_serve_options(app, *out);
  std::vector<std::string> args = {"--model", "m"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::vector<std::string> rev(args.rbegin(), args.rend());
  try {
    app.parse(rev);
    return "";
  } catch (const CLI::ParseError& e) {
    return std::string(e.what()).empty() ? "parse error" : e.what();
  }
}

TEST(QuantFlags, Fp8ReachesTheBackendAndOthersAreRefused) {
  ServeArgs a;
  ASSERT_EQ(parse_serve_flags({}, &a), "");
  EXPECT_EQ(engine_options(a).backend.quantization, "none");
  ServeArgs b;
  ASSERT_EQ(parse_serve_flags({"--quantization", "fp8"}, &b), "");
  EXPECT_EQ(engine_options(b).backend.quantization, "fp8");
  for (const char* ok : {"int4", "compressed-tensors"}) {
    ServeArgs i;
    ASSERT_EQ(parse_serve_flags({"--quantization", ok}, &i), "") << ok;
    EXPECT_EQ(engine_options(i).backend.quantization, ok);
  }
  for (const char* bad : {"awq", "gptq", ""}) {
    ServeArgs c;
    const std::string err = parse_serve_flags({"--quantization", bad}, &c);
    EXPECT_NE(err.find("--quantization"), std::string::npos) << bad << ": " << err;
  }
  ServeArgs d;
  EXPECT_EQ(parse_serve_flags({"--kv-cache-dtype", "auto"}, &d), "");
  ServeArgs e;
  const std::string err = parse_serve_flags({"--kv-cache-dtype", "fp8"}, &e);
  EXPECT_NE(err.find("--kv-cache-dtype"), std::string::npos) << err;
}

}  // namespace
}  // namespace ds::cli
