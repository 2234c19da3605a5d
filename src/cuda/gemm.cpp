#include "cuda/gemm.h"

#include <algorithm>

#include "core/error.h"
#include "cuda/cuda_check.h"

namespace ds::gpu {
namespace {

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::F8_E4M3: return CUDA_R_8F_E4M3;
    default: fail("GEMM: unsupported dtype {}", dtype_name(t));
  }
}

}  // namespace

struct Gemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

int gemm_bucket_rows(int M) {
  if (M <= 2) return std::max(M, 1);
  int p = 2;
  while (p < M) {
    if (3 * p / 2 >= M) return 3 * p / 2;
    p *= 2;
  }
  return p;
}

Gemm::Gemm(size_t workspace_bytes, bool bucket_algorithms)
    : bucket_algorithms_(bucket_algorithms), workspace_(workspace_bytes, "cuBLASLt workspace") {
  DS_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

Gemm::~Gemm() {
  plans_.clear();
  if (handle_) cublasLtDestroy(handle_);
}

// Row-major y = x . w^T is column-major y^T (N x M) = op_T(w^T stored K x N) . x^T (K x M): "TN".
// With w stored [K, N] (w_kn) the column-major view of w is already N x K: "NN". The descriptors of g's
// problem with M rows.
void Gemm::describe(const GemmArgs& g, int M, Plan& p) const {
  const cudaDataType_t tin = cuda_type(g.x_dtype), tout = cuda_type(g.y_dtype);
  DS_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t ta = g.w_kn ? CUBLAS_OP_N : CUBLAS_OP_T, tb = CUBLAS_OP_N;
  DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)));
  DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)));
  if (g.x_dtype == DType::F8_E4M3) {  // block scales: w's per 128 x 128 (A), x's per row and 128 columns (B)
    const int32_t am = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F, bm = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
    DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &am, sizeof(am)));
    DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &bm, sizeof(bm)));
    // The heuristic finds no algorithm while the scale pointers are unset (session 28: "no algorithm" for every
    // shape); an aligned placeholder until run() sets each call's own.
    const void* placeholder = workspace_.data();
    DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &placeholder,
                                                   sizeof(placeholder)));
    DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &placeholder,
                                                   sizeof(placeholder)));
  }
  if (g.w_kn) DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, tin, g.N, g.K, g.ldw));
  else DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, tin, g.K, g.N, g.ldw));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, tin, g.K, M, g.ldx));
  DS_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, tout, g.N, M, g.ldy));
  if (g.batch > 1) {
    int32_t bc = g.batch;
    auto set_batch = [&](cublasLtMatrixLayout_t l, int64_t stride) {
      DS_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &bc, sizeof(bc)));
      DS_CUBLAS_CHECK(
          cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
    };
    set_batch(p.a, g.stride_w);
    set_batch(p.b, g.stride_x);
    set_batch(p.c, g.stride_y);
  }
}

// The heuristic's first choice for p's descriptors, within the workspace.
bool Gemm::heuristic(const Plan& p, cublasLtMatmulAlgo_t& algo) {
  cublasLtMatmulPreference_t pref = nullptr;
  DS_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  size_t ws = workspace_.bytes();
  DS_CUBLAS_CHECK(
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &res, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) return false;
  algo = res.algo;
  return true;
}

Gemm::Key Gemm::key_of(const GemmArgs& g) {
  return Key{g.M, g.N, g.K, g.ldx, g.ldw, g.ldy, int(g.x_dtype), int(g.y_dtype), g.beta != 0.f, g.batch,
             g.stride_x, g.stride_w, g.stride_y, g.w_kn};
}

bool Gemm::supports(const GemmArgs& g) {
  const Key key = key_of(g);
  if (plans_.count(key)) return true;
  if (unsupported_.count(key)) return false;
  try {
    plan_for(g);
    return true;
  } catch (const Error&) {
    unsupported_.insert(key);
    return false;
  }
}

Gemm::Plan& Gemm::plan_for(const GemmArgs& g) {
  DS_CHECK(g.w_dtype == g.x_dtype, "GEMM: weights in {} with {} inputs are not supported", dtype_name(g.w_dtype),
           dtype_name(g.x_dtype));
  DS_CHECK(g.x_dtype != DType::F8_E4M3 || (g.w_scale && g.x_scale && g.batch == 1 && !g.w_kn && g.K % 128 == 0 &&
                                            g.y_dtype == DType::BF16),
           "GEMM: FP8 inputs need block scales, one matrix [N, K] with K a multiple of 128 and a bf16 output");
  const Key key = key_of(g);
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  auto p = std::make_unique<Plan>();
  describe(g, g.M, *p);
  // The bucket's algorithm when it runs M rows (single GEMMs: a strided batch keeps its own), else M's.
  const int mb = gemm_bucket_rows(g.M);
  bool have = false;
  if (bucket_algorithms_ && g.batch == 1 && mb != g.M) {
    Plan q;
    describe(g, mb, q);
    if (heuristic(q, p->algo)) {
      cublasLtMatmulHeuristicResult_t chk{};
      have = cublasLtMatmulAlgoCheck(handle_, p->op, p->a, p->b, p->c, p->c, &p->algo, &chk) == CUBLAS_STATUS_SUCCESS &&
             chk.workspaceSize <= workspace_.bytes();
    }
  }
  if (!have && !heuristic(*p, p->algo))
    fail("cuBLASLt has no algorithm for GEMM M={} N={} K={} in={} out={} batch={}", g.M, g.N, g.K,
         dtype_name(g.x_dtype), dtype_name(g.y_dtype), g.batch);
  auto& ref = *p;
  plans_.emplace(key, std::move(p));
  return ref;
}

void Gemm::run(const GemmArgs& g, cudaStream_t s) {
  if (g.M == 0 || g.N == 0) return;
  DS_CHECK(g.K > 0, "GEMM with K = 0");
  Plan& p = plan_for(g);
  float alpha = 1.f, beta = g.beta;
  if (g.x_dtype == DType::F8_E4M3) {  // the scale pointers of this call (the plan is per shape)
    DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &g.w_scale,
                                                   sizeof(g.w_scale)));
    DS_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &g.x_scale,
                                                   sizeof(g.x_scale)));
  }
  DS_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, g.w, p.a, g.x, p.b, &beta, g.y, p.c, g.y, p.c, &p.algo,
                                 workspace_.data(), workspace_.bytes(), s));
}

}  // namespace ds::gpu
