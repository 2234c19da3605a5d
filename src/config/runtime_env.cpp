#include "config/runtime_env.h"

#include <cstdlib>
#include <string>

#include "core/error.h"

namespace ds {
namespace {

// "0"/"1" (or absent: `dflt`) for on/off switches.
bool flag(const char* name, bool dflt) {
  const char* e = std::getenv(name);
  if (!e || !*e) return dflt;
  const std::string v(e);
  DS_CHECK(v == "0" || v == "1", "{} must be 0 or 1, got '{}'", name, v);
  return v == "1";
}

// "0"/"1" as 0/1, absent: -1 (the switch's user resolves it).
int tristate(const char* name) {
  const char* e = std::getenv(name);
  return e && *e ? (flag(name, false) ? 1 : 0) : -1;
}

}  // namespace

CudaEnv CudaEnv::parse() {
  CudaEnv c;
  if (const char* e = std::getenv("DELTASERVE_CUDA_ATTENTION"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "reference" || v == "fast", "DELTASERVE_CUDA_ATTENTION must be 'fast' or 'reference', got '{}'", v);
    c.reference_attention = v == "reference";
  }
  c.graphs = flag("DELTASERVE_CUDA_GRAPHS", true);
  c.pdl = flag("DELTASERVE_CUDA_PDL", true);
  c.fp8_dense_tile = flag("DELTASERVE_CUDA_FP8_DENSE_TILE", true);
  c.fp8_xsplit = flag("DELTASERVE_CUDA_FP8_XSPLIT", true);
  c.norm_split = flag("DELTASERVE_CUDA_NORM_SPLIT", true);
  c.kda_skip_padding = flag("DELTASERVE_CUDA_KDA_SKIP_PADDING", true);
  c.int4_tiles = flag("DELTASERVE_CUDA_INT4_TILES", true);
  c.int4_subnormal = flag("DELTASERVE_CUDA_INT4_SUBNORMAL", true);
  c.int4_dense = flag("DELTASERVE_CUDA_INT4_DENSE", false);
  c.down_combine_staged = flag("DELTASERVE_CUDA_DOWN_COMBINE_STAGED", false);
  c.gate_up_staged = flag("DELTASERVE_CUDA_GATE_UP_STAGED", false);
  c.fp8_prefill_tiles = flag("DELTASERVE_CUDA_FP8_PREFILL_TILES", true);
  c.fp8_prefill_hi = flag("DELTASERVE_CUDA_FP8_PREFILL_HI", true);
  c.fp8_split_k = flag("DELTASERVE_CUDA_FP8_SPLIT_K", true);
  c.route_warps = flag("DELTASERVE_CUDA_ROUTE_WARPS", true);
  c.prefill_vec = flag("DELTASERVE_CUDA_PREFILL_VEC", true);
  c.moe_align_multi = flag("DELTASERVE_CUDA_MOE_ALIGN_MULTI", true);
  c.sampling_radix = flag("DELTASERVE_CUDA_SAMPLING_RADIX", true);
  c.mla_decode_wgmma = tristate("DELTASERVE_CUDA_MLA_DECODE_WGMMA");  // (unset: by cache dtype)
  c.gemm_buckets = flag("DELTASERVE_CUDA_GEMM_BUCKETS", true);
  c.mla_decode_pipe = tristate("DELTASERVE_CUDA_MLA_DECODE_PIPE");  // (unset: by the split's length)
  c.mla_decode_f8mma = flag("DELTASERVE_CUDA_MLA_DECODE_F8MMA", true);
  c.moe_tma = flag("DELTASERVE_CUDA_MOE_TMA", true);
  c.fp8_tma = flag("DELTASERVE_CUDA_FP8_TMA", false);
  if (const char* e = std::getenv("DELTASERVE_CUDA_WGMMA"); e && *e) {
    const std::string v(e);
    DS_CHECK(v.size() == 1 && v[0] >= '0' && v[0] <= '4', "DELTASERVE_CUDA_WGMMA must be 0, 1, 2, 3 or 4, got '{}'", v);
    c.wgmma = v[0] - '0';
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_FP8_MMA_GEMV"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "0" || v == "1" || v == "2", "DELTASERVE_CUDA_FP8_MMA_GEMV must be 0, 1 or 2, got '{}'", v);
    c.fp8_mma_gemv = v[0] - '0';
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_FP8_CUBLAS"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "0" || v == "1" || v == "2" || v == "3", "DELTASERVE_CUDA_FP8_CUBLAS must be 0..3, got '{}'", v);
    c.fp8_cublas = v[0] - '0';
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_N"); e && *e) {
    const std::string v(e);
    DS_CHECK(v.size() <= 6 && v.find_first_not_of("0123456789") == std::string::npos,
             "DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_N must be 0..999999, got '{}'", v);
    c.fp8_cublas_decode_min_n = std::stoi(v);
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_ROWS"); e && *e) {
    const std::string v(e);
    DS_CHECK(v.size() <= 4 && v.find_first_not_of("0123456789") == std::string::npos,
             "DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_ROWS must be 0..9999, got '{}'", v);
    c.fp8_cublas_decode_min_rows = std::stoi(v);
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_FP8_FRAG"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "0" || v == "1" || v == "8" || v == "16", "DELTASERVE_CUDA_FP8_FRAG must be 0, 1, 8 or 16, got '{}'", v);
    c.fp8_frag = std::stoi(v);
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_FP8_TILE_MIN_ROWS"); e && *e) {
    const std::string v(e);
    DS_CHECK(v.size() == 1 && v[0] >= '1' && v[0] <= '9', "DELTASERVE_CUDA_FP8_TILE_MIN_ROWS must be 1..9, got '{}'", v);
    c.fp8_tile_min_rows = v[0] - '0';
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_NARROW_GEMV_ROWS"); e && *e) {
    const std::string v(e);
    DS_CHECK(v.size() <= 2 && v.find_first_not_of("0123456789") == std::string::npos && std::stoi(v) >= 8 &&
                 std::stoi(v) <= 64,
             "DELTASERVE_CUDA_NARROW_GEMV_ROWS must be 8..64, got '{}'", v);
    c.narrow_gemv_rows = std::stoi(v);
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_XSPLIT_PREFILL_TILE"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "16" || v == "64", "DELTASERVE_CUDA_XSPLIT_PREFILL_TILE must be 16 or 64, got '{}'", v);
    c.xsplit_prefill_tile = std::stoi(v);
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_FP8_WGMMA_STAGES"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "3" || v == "4", "DELTASERVE_CUDA_FP8_WGMMA_STAGES must be 3 or 4, got '{}'", v);
    c.fp8_wgmma_stages = v[0] - '0';
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_MLA_DECODE_WARPS"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "8" || v == "16", "DELTASERVE_CUDA_MLA_DECODE_WARPS must be 8 or 16, got '{}'", v);
    c.mla_decode_warps = std::stoi(v);
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_MLA_DECODE_CTAS"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "1" || v == "2", "DELTASERVE_CUDA_MLA_DECODE_CTAS must be 1 or 2, got '{}'", v);
    c.mla_decode_ctas = std::stoi(v);
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_FP8_DENSE_TILE64_ROWS"); e && *e) {
    const std::string v(e);
    DS_CHECK(v.size() <= 3 && v.find_first_not_of("0123456789") == std::string::npos,
             "DELTASERVE_CUDA_FP8_DENSE_TILE64_ROWS must be a row count (0: never), got '{}'", v);
    c.fp8_dense_tile64_rows = std::stoi(v);
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_TP_COMM"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "nccl" || v == "inprocess" || v == "host",
             "DELTASERVE_CUDA_TP_COMM must be nccl, inprocess or host, got '{}'", v);
    c.tp_comm = v;
  }
  if (const char* e = std::getenv("DELTASERVE_CUDA_TP_ALLREDUCE"); e && *e) {
    const std::string v(e);
    DS_CHECK(v == "nccl" || v == "peer", "DELTASERVE_CUDA_TP_ALLREDUCE must be nccl or peer, got '{}'", v);
    c.tp_allreduce = v;
  }
  if (const char* e = std::getenv("DELTASERVE_NCCL_LIBRARY"); e && *e) c.nccl_library = e;
  if (const char* e = std::getenv("DELTASERVE_CUDA_GRAPH_MAX_CONTEXT"); e && *e) {
    const std::string v(e);
    DS_CHECK(v.find_first_not_of("0123456789") == std::string::npos && v.size() <= 12,
             "DELTASERVE_CUDA_GRAPH_MAX_CONTEXT must be a number of tokens, got '{}'", v);
    c.graph_max_context = std::stoll(v);
  }
  return c;
}

const CudaEnv& cuda_env() {
  static const CudaEnv env = CudaEnv::parse();
  return env;
}

}  // namespace ds
