// --quantization and --kv-cache-dtype of `deltaserve serve` (issue 17): the values the engine supports
// reach the backend options; anything else is refused at parse time naming the flag.
// (--kv-cache-dtype: auto and fp8 / fp8_e4m3; fp8_e5m2 is named as unsupported.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "apps/serve_args.h"
#include "serve_parse.h"

namespace ds::cli {
namespace {

std::string parse_serve_flags(const std::vector<std::string>& extra, ServeArgs* out) {
  return test::parse_serve_line(extra, out);
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
}

TEST(QuantFlags, KvCacheDtypeFp8ReachesTheBackendAndE5m2IsAClearError) {
  ServeArgs d;
  ASSERT_EQ(parse_serve_flags({}, &d), "");
  EXPECT_EQ(engine_options(d).backend.kv_cache_dtype, KvCacheDtype::Auto);
  for (const char* fp8 : {"fp8", "fp8_e4m3"}) {
    ServeArgs e;
    ASSERT_EQ(parse_serve_flags({"--kv-cache-dtype", fp8}, &e), "") << fp8;
    EXPECT_EQ(engine_options(e).backend.kv_cache_dtype, KvCacheDtype::Fp8) << fp8;
  }
  ServeArgs f;
  const std::string e5 = parse_serve_flags({"--kv-cache-dtype", "fp8_e5m2"}, &f);
  EXPECT_NE(e5.find("--kv-cache-dtype"), std::string::npos) << e5;
  EXPECT_NE(e5.find("'fp8_e5m2' is not supported"), std::string::npos) << e5;
  for (const char* bad : {"int8", "", "bfloat16"}) {
    ServeArgs g;
    const std::string err = parse_serve_flags({"--kv-cache-dtype", bad}, &g);
    EXPECT_NE(err.find("--kv-cache-dtype"), std::string::npos) << bad << ": " << err;
  }
}

}  // namespace
}  // namespace ds::cli
