#include "model/dense_mlp.h"

#include <vector>

#include "kernels/activation/op.h"
#include "kernels/gemm/op.h"

namespace ds {

DenseMlp::DenseMlp(const MlpWeights<HostTensor>& w, int64_t hidden)
    : w_(&w), hidden_(hidden), inter_(w.gate.shape.at(0)) {}

void DenseMlp::forward(int64_t T, const float* x, float* y, bool accumulate) const {
  using namespace kernels;
  std::vector<float> g(size_t(T * inter_)), u(size_t(T * inter_));
  run_gemm_cpu({.x = x, .w = w_->gate.ptr(), .y = g.data(), .M = T, .N = inter_, .K = hidden_});
  run_gemm_cpu({.x = x, .w = w_->up.ptr(), .y = u.data(), .M = T, .N = inter_, .K = hidden_});
  run_silu_mul_cpu({.gate = g.data(), .up = u.data(), .y = g.data(), .rows = T, .dim = inter_});
  run_gemm_cpu({.x = g.data(), .w = w_->down.ptr(), .y = y, .M = T, .N = hidden_, .K = inter_,
                .accumulate = accumulate});
}

}  // namespace ds
