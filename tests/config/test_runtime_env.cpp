// The developer switches of config/runtime_env.h: defaults, accepted values, and a clear error for the rest.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <utility>

#include "config/runtime_env.h"
#include "core/error.h"

namespace ds {
namespace {

struct EnvGuard {
  ~EnvGuard() {
    unsetenv("DELTASERVE_CUDA_ATTENTION");
    unsetenv("DELTASERVE_CUDA_GRAPHS");
    unsetenv("DELTASERVE_CUDA_PDL");
    unsetenv("DELTASERVE_CUDA_GRAPH_MAX_CONTEXT");
    unsetenv("DELTASERVE_CUDA_WGMMA");
    unsetenv("DELTASERVE_CUDA_FP8_FRAG");
    unsetenv("DELTASERVE_CUDA_FP8_XSPLIT");
    unsetenv("DELTASERVE_CUDA_NORM_SPLIT");
    unsetenv("DELTASERVE_CUDA_KDA_SKIP_PADDING");
    unsetenv("DELTASERVE_CUDA_FP8_PREFILL_HI");
    unsetenv("DELTASERVE_CUDA_FP8_DENSE_TILE");
    unsetenv("DELTASERVE_CUDA_INT4_TILES");
    unsetenv("DELTASERVE_CUDA_INT4_SUBNORMAL");
    unsetenv("DELTASERVE_CUDA_INT4_DENSE");
    unsetenv("DELTASERVE_CUDA_DOWN_COMBINE_STAGED");
    unsetenv("DELTASERVE_CUDA_GATE_UP_STAGED");
    unsetenv("DELTASERVE_CUDA_FP8_TILE_MIN_ROWS");
    unsetenv("DELTASERVE_CUDA_FP8_SPLIT_K");
    unsetenv("DELTASERVE_CUDA_FP8_MMA_GEMV");
    unsetenv("DELTASERVE_CUDA_FP8_CUBLAS");
    unsetenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_N");
    unsetenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_ROWS");
    unsetenv("DELTASERVE_CUDA_MLA_DECODE_F8MMA");
    unsetenv("DELTASERVE_CUDA_ROUTE_WARPS");
    unsetenv("DELTASERVE_CUDA_FP8_WGMMA_STAGES");
    unsetenv("DELTASERVE_CUDA_FP8_PREFILL_TILES");
    unsetenv("DELTASERVE_CUDA_XSPLIT_PREFILL_TILE");
    unsetenv("DELTASERVE_NCCL_LIBRARY");
    unsetenv("DELTASERVE_CUDA_NARROW_GEMV_ROWS");
    unsetenv("DELTASERVE_CUDA_MLA_DECODE_WARPS");
    unsetenv("DELTASERVE_CUDA_TP_COMM");
    unsetenv("DELTASERVE_CUDA_TP_ALLREDUCE");
    unsetenv("DELTASERVE_CUDA_MOE_TMA");
    unsetenv("DELTASERVE_CUDA_FP8_TMA");
    unsetenv("DELTASERVE_CUDA_MLA_DECODE_CTAS");
    unsetenv("DELTASERVE_CUDA_PREFILL_VEC");
    unsetenv("DELTASERVE_CUDA_SAMPLING_RADIX");
    unsetenv("DELTASERVE_CUDA_MLA_DECODE_WGMMA");
    unsetenv("DELTASERVE_CUDA_GEMM_BUCKETS");
    unsetenv("DELTASERVE_CUDA_FP8_DENSE_TILE64_ROWS");
    unsetenv("DELTASERVE_CUDA_MLA_DECODE_PIPE");
    unsetenv("DELTASERVE_CUDA_MOE_ALIGN_MULTI");
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

TEST(CudaEnv, Wgmma) {
  EnvGuard g;
  unsetenv("DELTASERVE_CUDA_WGMMA");
  EXPECT_EQ(CudaEnv::parse().wgmma, 3);  // on where supported (sm_90, bf16), MLA keys/values by TMA
  setenv("DELTASERVE_CUDA_WGMMA", "2", 1);
  EXPECT_EQ(CudaEnv::parse().wgmma, 2);
  setenv("DELTASERVE_CUDA_WGMMA", "4", 1);
  EXPECT_EQ(CudaEnv::parse().wgmma, 4);
  setenv("DELTASERVE_CUDA_WGMMA", "5", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  setenv("DELTASERVE_CUDA_WGMMA", "yes", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
}

TEST(CudaEnv, MoeTma) {
  EnvGuard g;
  unsetenv("DELTASERVE_CUDA_MOE_TMA");
  EXPECT_TRUE(CudaEnv::parse().moe_tma);  // on: measured faster (PERF.md session 13)
  setenv("DELTASERVE_CUDA_MOE_TMA", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().moe_tma);
  setenv("DELTASERVE_CUDA_MOE_TMA", "maybe", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_MOE_TMA");
  EXPECT_FALSE(CudaEnv::parse().fp8_tma);
  setenv("DELTASERVE_CUDA_FP8_TMA", "1", 1);
  EXPECT_TRUE(CudaEnv::parse().fp8_tma);
  EXPECT_EQ(CudaEnv::parse().mla_decode_ctas, 0);  // unset: the model chooses by cache dtype
  setenv("DELTASERVE_CUDA_MLA_DECODE_CTAS", "1", 1);
  EXPECT_EQ(CudaEnv::parse().mla_decode_ctas, 1);
  setenv("DELTASERVE_CUDA_MLA_DECODE_CTAS", "2", 1);
  EXPECT_EQ(CudaEnv::parse().mla_decode_ctas, 2);
  setenv("DELTASERVE_CUDA_MLA_DECODE_CTAS", "3", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
}

TEST(CudaEnv, NcclLibrary) {
  EnvGuard g;
  unsetenv("DELTASERVE_NCCL_LIBRARY");
  EXPECT_EQ(CudaEnv::parse().nccl_library, "");  // libnccl.so.2 from the loader's path
  setenv("DELTASERVE_NCCL_LIBRARY", "/opt/nccl/lib/libnccl.so.2", 1);
  EXPECT_EQ(CudaEnv::parse().nccl_library, "/opt/nccl/lib/libnccl.so.2");
}

// The FP8 kernel choices: defaults (the FP8 wgmma kernel with x split, the fragment kernel where it does not
// apply, the tile kernel for dense rows), each switch read, bad values named.
TEST(CudaEnv, Fp8Kernels) {
  EnvGuard g;
  const CudaEnv d = CudaEnv::parse();
  EXPECT_TRUE(d.fp8_xsplit);
  EXPECT_TRUE(d.norm_split);
  EXPECT_TRUE(d.kda_skip_padding);  // measured in session 24
  EXPECT_TRUE(d.fp8_prefill_hi);    // (the same)
  EXPECT_EQ(d.fp8_frag, 1);
  EXPECT_TRUE(d.fp8_dense_tile);
  EXPECT_TRUE(d.int4_tiles);
  EXPECT_TRUE(d.int4_subnormal);  // measured in session 30 (INT4 batch-16 step -5%)
  EXPECT_FALSE(d.int4_dense);     // written in session 32, not yet measured
  EXPECT_FALSE(d.down_combine_staged);  // written in session 31, not yet measured
  EXPECT_FALSE(d.gate_up_staged);     // written in session 31, not yet measured
  EXPECT_TRUE(d.fp8_prefill_tiles);
  EXPECT_EQ(d.xsplit_prefill_tile, 64);
  EXPECT_EQ(d.fp8_tile_min_rows, 9);
  EXPECT_TRUE(d.fp8_split_k);
  EXPECT_EQ(d.fp8_mma_gemv, 0);  // measured slower in the batch-1 step (session 21)
  EXPECT_EQ(d.fp8_cublas, 3);    // measured in session 30 (FP8 batch-100 step -4.4%, c=100 serving 5,343 tok/s)
  EXPECT_EQ(d.fp8_cublas_decode_min_n, 0);
  EXPECT_EQ(d.fp8_cublas_decode_min_rows, 64);  // (batch 16 measured +2% slower on cuBLASLt, session 28)
  EXPECT_TRUE(d.mla_decode_f8mma);  // the fastest form over the FP8 cache (session 22)
  EXPECT_TRUE(d.route_warps);      // on since session 19 (measured)
  EXPECT_TRUE(d.moe_align_multi);  // on since session 19 (measured)
  EXPECT_TRUE(d.prefill_vec);     // on since session 15 (measured)
  EXPECT_TRUE(d.sampling_radix);  // on since session 15 (measured)
  EXPECT_EQ(d.mla_decode_wgmma, -1);  // unset: the model chooses by cache dtype (on for FP8, session 17)
  EXPECT_TRUE(d.gemm_buckets);        // on since session 17 (measured: memory flat beside a 1M prompt)
  EXPECT_EQ(d.narrow_gemv_rows, 8);
  EXPECT_EQ(d.mla_decode_warps, 8);
  EXPECT_EQ(d.tp_comm, "nccl");
  EXPECT_EQ(d.fp8_wgmma_stages, 3);
  setenv("DELTASERVE_CUDA_FP8_WGMMA_STAGES", "4", 1);
  EXPECT_EQ(CudaEnv::parse().fp8_wgmma_stages, 4);
  setenv("DELTASERVE_CUDA_FP8_WGMMA_STAGES", "5", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_FP8_WGMMA_STAGES");
  setenv("DELTASERVE_CUDA_TP_COMM", "inprocess", 1);
  EXPECT_EQ(CudaEnv::parse().tp_comm, "inprocess");
  setenv("DELTASERVE_CUDA_TP_COMM", "host", 1);
  EXPECT_EQ(CudaEnv::parse().tp_comm, "host");
  setenv("DELTASERVE_CUDA_TP_COMM", "mpi", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_TP_COMM");
  EXPECT_EQ(CudaEnv::parse().tp_allreduce, "nccl");
  setenv("DELTASERVE_CUDA_TP_ALLREDUCE", "peer", 1);
  EXPECT_EQ(CudaEnv::parse().tp_allreduce, "peer");
  setenv("DELTASERVE_CUDA_TP_ALLREDUCE", "custom", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_TP_ALLREDUCE");
  setenv("DELTASERVE_CUDA_MLA_DECODE_WARPS", "16", 1);
  EXPECT_EQ(CudaEnv::parse().mla_decode_warps, 16);
  setenv("DELTASERVE_CUDA_MLA_DECODE_WARPS", "12", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_MLA_DECODE_WARPS");
  setenv("DELTASERVE_CUDA_NARROW_GEMV_ROWS", "32", 1);
  EXPECT_EQ(CudaEnv::parse().narrow_gemv_rows, 32);
  setenv("DELTASERVE_CUDA_NARROW_GEMV_ROWS", "65", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_NARROW_GEMV_ROWS");
  setenv("DELTASERVE_CUDA_ROUTE_WARPS", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().route_warps);
  setenv("DELTASERVE_CUDA_PREFILL_VEC", "0", 1);
  setenv("DELTASERVE_CUDA_SAMPLING_RADIX", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().prefill_vec);
  EXPECT_FALSE(CudaEnv::parse().sampling_radix);
  unsetenv("DELTASERVE_CUDA_PREFILL_VEC");
  unsetenv("DELTASERVE_CUDA_SAMPLING_RADIX");
  // the switches that the model resolves when unset (-1): the Hopper MLA decode by cache dtype, its pipelined
  // form (session 19) by the split's length
  const std::pair<const char*, int CudaEnv::*> resolved[] = {
      {"DELTASERVE_CUDA_MLA_DECODE_WGMMA", &CudaEnv::mla_decode_wgmma},
      {"DELTASERVE_CUDA_MLA_DECODE_PIPE", &CudaEnv::mla_decode_pipe}};
  for (const auto& [name, member] : resolved) {
    EXPECT_EQ(CudaEnv::parse().*member, -1) << name;
    setenv(name, "1", 1);
    EXPECT_EQ(CudaEnv::parse().*member, 1) << name;
    setenv(name, "0", 1);
    EXPECT_EQ(CudaEnv::parse().*member, 0) << name;
    setenv(name, "yes", 1);
    EXPECT_THROW(CudaEnv::parse(), Error) << name;
    unsetenv(name);
  }
  setenv("DELTASERVE_CUDA_GEMM_BUCKETS", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().gemm_buckets);
  unsetenv("DELTASERVE_CUDA_GEMM_BUCKETS");
  // session 18: the 64-token dense FP8 tiles from 33 rows (measured)
  EXPECT_EQ(CudaEnv::parse().fp8_dense_tile64_rows, 33);
  setenv("DELTASERVE_CUDA_FP8_DENSE_TILE64_ROWS", "0", 1);
  EXPECT_EQ(CudaEnv::parse().fp8_dense_tile64_rows, 0);
  setenv("DELTASERVE_CUDA_FP8_DENSE_TILE64_ROWS", "-1", 1);
  try {
    (void)CudaEnv::parse();
    ADD_FAILURE() << "a negative row count was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("DELTASERVE_CUDA_FP8_DENSE_TILE64_ROWS"), std::string::npos) << e.what();
  }
  unsetenv("DELTASERVE_CUDA_FP8_DENSE_TILE64_ROWS");
  setenv("DELTASERVE_CUDA_MOE_ALIGN_MULTI", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().moe_align_multi);
  setenv("DELTASERVE_CUDA_MOE_ALIGN_MULTI", "maybe", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_MOE_ALIGN_MULTI");
  unsetenv("DELTASERVE_CUDA_ROUTE_WARPS");
  setenv("DELTASERVE_CUDA_FP8_SPLIT_K", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().fp8_split_k);
  unsetenv("DELTASERVE_CUDA_FP8_SPLIT_K");
  setenv("DELTASERVE_CUDA_FP8_MMA_GEMV", "1", 1);
  EXPECT_EQ(CudaEnv::parse().fp8_mma_gemv, 1);
  setenv("DELTASERVE_CUDA_FP8_MMA_GEMV", "2", 1);
  EXPECT_EQ(CudaEnv::parse().fp8_mma_gemv, 2);
  setenv("DELTASERVE_CUDA_FP8_MMA_GEMV", "maybe", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_FP8_MMA_GEMV");
  setenv("DELTASERVE_CUDA_FP8_CUBLAS", "2", 1);
  EXPECT_EQ(CudaEnv::parse().fp8_cublas, 2);
  setenv("DELTASERVE_CUDA_FP8_CUBLAS", "3", 1);
  EXPECT_EQ(CudaEnv::parse().fp8_cublas, 3);
  setenv("DELTASERVE_CUDA_FP8_CUBLAS", "4", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_FP8_CUBLAS");
  setenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_N", "4096", 1);
  EXPECT_EQ(CudaEnv::parse().fp8_cublas_decode_min_n, 4096);
  setenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_N", "-1", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_N");
  setenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_ROWS", "64", 1);
  EXPECT_EQ(CudaEnv::parse().fp8_cublas_decode_min_rows, 64);
  setenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_ROWS", "many", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_ROWS");
  setenv("DELTASERVE_CUDA_MLA_DECODE_F8MMA", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().mla_decode_f8mma);
  unsetenv("DELTASERVE_CUDA_MLA_DECODE_F8MMA");
  setenv("DELTASERVE_CUDA_FP8_TILE_MIN_ROWS", "1", 1);
  EXPECT_EQ(CudaEnv::parse().fp8_tile_min_rows, 1);
  setenv("DELTASERVE_CUDA_FP8_TILE_MIN_ROWS", "0", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_FP8_TILE_MIN_ROWS");
  setenv("DELTASERVE_CUDA_INT4_TILES", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().int4_tiles);
  setenv("DELTASERVE_CUDA_INT4_SUBNORMAL", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().int4_subnormal);
  setenv("DELTASERVE_CUDA_INT4_SUBNORMAL", "yes", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_INT4_SUBNORMAL");
  setenv("DELTASERVE_CUDA_INT4_DENSE", "1", 1);
  EXPECT_TRUE(CudaEnv::parse().int4_dense);
  setenv("DELTASERVE_CUDA_INT4_DENSE", "on", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_INT4_DENSE");
  setenv("DELTASERVE_CUDA_DOWN_COMBINE_STAGED", "1", 1);
  EXPECT_TRUE(CudaEnv::parse().down_combine_staged);
  setenv("DELTASERVE_CUDA_DOWN_COMBINE_STAGED", "2", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_DOWN_COMBINE_STAGED");
  setenv("DELTASERVE_CUDA_GATE_UP_STAGED", "1", 1);
  EXPECT_TRUE(CudaEnv::parse().gate_up_staged);
  unsetenv("DELTASERVE_CUDA_GATE_UP_STAGED");
  setenv("DELTASERVE_CUDA_FP8_PREFILL_TILES", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().fp8_prefill_tiles);
  setenv("DELTASERVE_CUDA_FP8_PREFILL_TILES", "2", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_FP8_PREFILL_TILES");
  setenv("DELTASERVE_CUDA_XSPLIT_PREFILL_TILE", "16", 1);
  EXPECT_EQ(CudaEnv::parse().xsplit_prefill_tile, 16);
  setenv("DELTASERVE_CUDA_XSPLIT_PREFILL_TILE", "32", 1);
  EXPECT_THROW(CudaEnv::parse(), Error);
  unsetenv("DELTASERVE_CUDA_XSPLIT_PREFILL_TILE");
  setenv("DELTASERVE_CUDA_NORM_SPLIT", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().norm_split);
  unsetenv("DELTASERVE_CUDA_NORM_SPLIT");
  setenv("DELTASERVE_CUDA_KDA_SKIP_PADDING", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().kda_skip_padding);
  unsetenv("DELTASERVE_CUDA_KDA_SKIP_PADDING");
  setenv("DELTASERVE_CUDA_FP8_PREFILL_HI", "0", 1);
  EXPECT_FALSE(CudaEnv::parse().fp8_prefill_hi);
  unsetenv("DELTASERVE_CUDA_FP8_PREFILL_HI");
  setenv("DELTASERVE_CUDA_FP8_XSPLIT", "0", 1);
  setenv("DELTASERVE_CUDA_FP8_FRAG", "16", 1);
  setenv("DELTASERVE_CUDA_FP8_DENSE_TILE", "0", 1);
  const CudaEnv e = CudaEnv::parse();
  EXPECT_FALSE(e.fp8_xsplit);
  EXPECT_EQ(e.fp8_frag, 16);
  EXPECT_FALSE(e.fp8_dense_tile);
  setenv("DELTASERVE_CUDA_FP8_XSPLIT", "2", 1);
  try {
    CudaEnv::parse();
    ADD_FAILURE() << "accepted DELTASERVE_CUDA_FP8_XSPLIT=2";
  } catch (const Error& err) {
    EXPECT_NE(std::string(err.what()).find("DELTASERVE_CUDA_FP8_XSPLIT"), std::string::npos) << err.what();
  }
}

TEST(CudaEnv, GraphMaxContext) {
  EnvGuard g;
  unsetenv("DELTASERVE_CUDA_GRAPH_MAX_CONTEXT");
  EXPECT_EQ(CudaEnv::parse().graph_max_context, 0);  // max_model_len
  setenv("DELTASERVE_CUDA_GRAPH_MAX_CONTEXT", "131072", 1);
  EXPECT_EQ(CudaEnv::parse().graph_max_context, 131072);
  for (const char* bad : {"-1", "128k", "1e6", "99999999999999"}) {
    setenv("DELTASERVE_CUDA_GRAPH_MAX_CONTEXT", bad, 1);
    try {
      CudaEnv::parse();
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("DELTASERVE_CUDA_GRAPH_MAX_CONTEXT"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace ds
