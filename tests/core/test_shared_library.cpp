// core/shared_library.h: a library opened at run time stays mapped after its handle closes, so threads it
// started keep running (the NCCL unload that crashed bench_comm, session 28).
#include "core/shared_library.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

namespace ds {
namespace {

void wait_for(int (*state)(), int want) {
  for (int i = 0; i < 1000 && state() != want; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

TEST(SharedLibrary, CodeStaysMappedForThreadsThatOutliveTheHandle) {
  int (*state)() = nullptr;
  {
    SharedLibrary lib(DS_TEST_DSO);
    ASSERT_TRUE(lib.ok()) << lib.error();
    void (*start)(int) = nullptr;
    ASSERT_TRUE(lib.bind(start, "ds_test_dso_start")) << lib.error();
    ASSERT_TRUE(lib.bind(state, "ds_test_dso_state")) << lib.error();
    EXPECT_EQ(state(), 0);
    start(150);
    EXPECT_EQ(state(), 1);
  }  // the only handle closes while the library's thread runs
  EXPECT_TRUE(SharedLibrary::is_loaded(DS_TEST_DSO));
  wait_for(state, 2);  // an unmapped library would crash the process here
  EXPECT_EQ(state(), 2);
  // Opening it again finds the same library (its state kept).
  SharedLibrary again(DS_TEST_DSO);
  int (*state2)() = nullptr;
  ASSERT_TRUE(again.bind(state2, "ds_test_dso_state"));
  EXPECT_EQ(state2(), 2);
}

TEST(SharedLibrary, MissingLibraryOrSymbolIsAnErrorValue) {
  SharedLibrary none("libdeltaserve-no-such-library.so.7");
  EXPECT_FALSE(none.ok());
  EXPECT_NE(none.error().find("libdeltaserve-no-such-library.so.7"), std::string::npos) << none.error();
  void (*f)() = nullptr;
  EXPECT_FALSE(none.bind(f, "anything"));
  EXPECT_FALSE(SharedLibrary::is_loaded("libdeltaserve-no-such-library.so.7"));

  SharedLibrary lib(DS_TEST_DSO);
  ASSERT_TRUE(lib.ok()) << lib.error();
  EXPECT_FALSE(lib.bind(f, "ds_test_dso_no_such_symbol"));
  EXPECT_NE(lib.error().find("ds_test_dso_no_such_symbol"), std::string::npos) << lib.error();
}

// The case itself, where NCCL is installed (the CUDA toolkit's machines): ncclGetUniqueId starts NCCL's
// bootstrap root thread, which must survive the handle that called it (it needs no GPU).
TEST(SharedLibrary, NcclBootstrapThreadSurvivesTheHandle) {
  {
    SharedLibrary nccl("libnccl.so.2");
    if (!nccl.ok()) GTEST_SKIP() << "NCCL not installed here: " << nccl.error();
    struct RawId {
      char internal[128];
    } id{};
    int (*get_unique_id)(RawId*) = nullptr;
    ASSERT_TRUE(nccl.bind(get_unique_id, "ncclGetUniqueId")) << nccl.error();
    ASSERT_EQ(get_unique_id(&id), 0);
  }
  EXPECT_TRUE(SharedLibrary::is_loaded("libnccl.so.2"));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the root thread runs on
  SUCCEED();
}

}  // namespace
}  // namespace ds
