// The tiny model from the INT4 pack-quantized fixtures (tests/common/quant_int4_fixture.h) on the GPU against the
// CPU backend on the same checkpoint, the routing pinned (model_vs_cpu.h): the experts in INT4 on the device (the
// GEMVs, and the FP8 wgmma kernel's INT4 tiles for 128-wide experts), with DELTASERVE_CUDA_INT4_DENSE the dense
// projections too; the other INT4 weights dequantized at load; and dummy INT4 weights.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "../common/quant_int4_fixture.h"
#include "backend_with_env.h"
#include "cuda/cuda_backend.h"
#include "gpu_test_util.h"
#include "model_vs_cpu.h"

namespace ds::gpu::test {
namespace {

TEST(GpuInt4Model, PackQuantizedCheckpointsMatchCpu) {
  DS_REQUIRE_GPU();
  for (auto [g, sym] : {std::pair{32, true}, std::pair{128, false}}) {
    auto fx = ds::test::make_int4_fixture(kTinyModel, g, sym);
    const std::string what = "int4 g" + std::to_string(g) + (sym ? " sym" : " zp");
    expect_model_matches_cpu(fx->dir.string(), "", what.c_str());
    if (!sym) expect_model_matches_cpu(fx->dir.string(), "int4", what.c_str(), "bfloat16");
  }
}

// INT4 experts 128 wide (the tiny model's moe_intermediate_size 64 -> 128, those weights drawn) on the FP8
// wgmma kernel (DELTASERVE_CUDA_INT4_TILES, on by default: nibbles -> e4m3 in shared memory, as subnormals by
// default and through f16 with DELTASERVE_CUDA_INT4_SUBNORMAL=0), the 65-token
// prefill's 16-token tiles and a 600-token prefill's (T >= 512: every token's x split in the workspace);
// groups of 32 with zero points (a partial sum per k step) and of 128 symmetric; bf16 activations, GPU vs CPU
// within 2e-2.
TEST(GpuInt4Model, WideExpertsOnTheFp8TensorCores) {
  DS_REQUIRE_GPU();
  for (const auto& [group, sym] : {std::pair{32, false}, std::pair{128, true}}) {
    auto fx = ds::test::make_int4_fixture(kTinyModel, group, sym,
                                          [](nlohmann::json& c) { c["moe_intermediate_size"] = 128; });
    const std::string what = "int4 g" + std::to_string(group) + (sym ? " sym" : " zp") + ", 128-wide experts";
    expect_model_matches_cpu(fx->dir.string(), "int4", what.c_str(), "bfloat16");
    expect_model_matches_cpu(fx->dir.string(), "int4", (what + ", 600-token prefill").c_str(), "bfloat16", 600);
    const ScopedEnv f16("DELTASERVE_CUDA_INT4_SUBNORMAL", "0");  // the nibbles through f16 (the default: e4m3
    expect_model_matches_cpu(fx->dir.string(), "int4", (what + ", f16 nibbles").c_str(), "bfloat16");  // subnormals)
    expect_model_matches_cpu(fx->dir.string(), "int4", (what + ", f16 nibbles, 600-token prefill").c_str(),
                             "bfloat16", 600);
  }
}

// DELTASERVE_CUDA_INT4_DENSE=1: the fixtures' INT4 attention projections and dense MLP stay INT4 on the device
// too (the weight format says so): the INT4 GEMVs with their fused norms (decode steps, fp32 and bf16), the INT4
// tiles of the FP8 wgmma kernel (the 65-token prefill, bf16) and dequantize + GEMM (fp32; the 600-token
// prefill), GPU vs CPU within the usual bounds; groups of 32 with zero points and of 128 symmetric.
TEST(GpuInt4Model, DenseProjectionsInInt4MatchCpu) {
  DS_REQUIRE_GPU();
  for (const auto& [group, sym] : {std::pair{32, false}, std::pair{128, true}}) {
    auto fx = ds::test::make_int4_fixture(kTinyModel, group, sym);
    const std::string what = "int4 dense g" + std::to_string(group) + (sym ? " sym" : " zp");
    const BackendOptions o = cuda_test_options(fx->dir.string(), "bfloat16", 2);
    // the tiny model's 6 KDA and 2 MLA layers (in_proj, o_proj) and its dense MLP (gate/up, down): 18 INT4 views
    // beside the experts' with the switch, none without
    EXPECT_EQ(cuda_weight_format(*make_cuda_backend(o)).find("dense projections"), std::string::npos);
    const ScopedEnv dense("DELTASERVE_CUDA_INT4_DENSE", "1");
    const std::string f = cuda_weight_format(*make_cuda_backend(o));
    EXPECT_NE(f.find("experts and 18 dense projections"), std::string::npos) << f;
    expect_model_matches_cpu(fx->dir.string(), "", what.c_str());
    expect_model_matches_cpu(fx->dir.string(), "", what.c_str(), "bfloat16");
    expect_model_matches_cpu(fx->dir.string(), "", (what + ", 600-token prefill").c_str(), "bfloat16", 600);
  }
}

// --load-format dummy --quantization int4: INT4 experts (and with DELTASERVE_CUDA_INT4_DENSE every dense
// projection: 18 views) generated on the GPU; a prefill and decode steps give finite logits (the dummy
// generators of the CPU and GPU differ: nothing to compare with).
TEST(GpuInt4Model, DummyInt4WeightsRun) {
  DS_REQUIRE_GPU();
  BackendOptions go;
  go.model_dir = kTinyModel;
  go.device = "cuda";
  go.load_format = "dummy";
  go.quantization = "int4";
  go.dtype = "bfloat16";
  go.max_num_seqs = 2;
  go.block_size = 16;
  go.num_blocks = 64;
  for (const bool dense : {false, true}) {
    const ScopedEnv env("DELTASERVE_CUDA_INT4_DENSE", dense ? "1" : "0");
    auto gpu = make_cuda_backend(go);
    EXPECT_EQ(cuda_weight_format(*gpu).find("experts and 18 dense projections") != std::string::npos, dense)
        << cuda_weight_format(*gpu);
    std::vector<int32_t> ids(40);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7919 + 13) % 1790);
    ForwardBatch pre;
    pre.add(0, 0, ids, {0, 1, 2, 3}, true);
    const auto logits = forward_logits(*gpu, pre);
    ASSERT_FALSE(logits.empty());
    for (float v : logits) ASSERT_TRUE(std::isfinite(v)) << "dense " << dense;
    ForwardBatch d;
    d.add(0, 40, {5}, {0, 1, 2, 3}, false);
    for (float v : forward_logits(*gpu, d)) ASSERT_TRUE(std::isfinite(v)) << "dense " << dense;
  }
}

}  // namespace
}  // namespace ds::gpu::test
