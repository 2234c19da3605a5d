// The developer switches of config/runtime_env.h: defaults, accepted values, and a clear error for the rest.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

#include "config/runtime_env.h"
#include "core/error.h"

namespace ds {
namespace {

struct EnvGuard {
  ~EnvGuard() {
    unsetenv("DELTASERVE_CUDA_ATTENTION");
    unsetenv("DELTASERVE_CUDA_GRAPHS");
    unsetenv("DELTASERVE_CUDA_PDL");
  }
};

TEST(CudaEnv, DefaultsAndValues) {
  EnvGuard g;
  unsetenv("DELTASERVE_CUDA_ATTENTION");
  unsetenv("DELTASERVE_CUDA_GRAPHS");
  unsetenv("DELTASERVE_CUDA_PDL");
  CudaEnv d = CudaEnv::parse();
  EXPECT_FALSE(d.reference_attention);
  EXPECT_TRUE(d.graphs);
  EXPECT_TRUE(d.pdl);
  setenv("DELTASERVE_CUDA_ATTENTION", "reference", 1);
  setenv("DELTASERVE_CUDA_GRAPHS", "0", 1);
  setenv("DELTASERVE_CUDA_PDL", "0", 1);
  CudaEnv e = CudaEnv::parse();
  EXPECT_TRUE(e.reference_attention);
  EXPECT_FALSE(e.graphs);
  EXPECT_FALSE(e.pdl);
  setenv("DELTASERVE_CUDA_ATTENTION", "fast", 1);
  EXPECT_FALSE(CudaEnv::parse().reference_attention);
}

TEST(CudaEnv, BadValuesNameTheVariable) {
  EnvGuard g;
  setenv("DELTASERVE_CUDA_GRAPHS", "off", 1);
  try {
    CudaEnv::parse();
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("DELTASERVE_CUDA_GRAPHS"), std::string::npos) << e.what();
  }
  unsetenv("DELTASERVE_CUDA_GRAPHS");
  setenv("DELTASERVE_CUDA_ATTENTION", "slow", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
}

}  // namespace
}  // namespace ds
