#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/common/math.h"
#include "kernels/conv1d/op.h"

namespace ds::kernels {

void run_causal_conv1d_cpu(const CausalConv1dParams& p) {
  if (p.num_seqs == 0) return;
  DS_CHECK(p.x && p.w && p.y && (p.tails || p.W == 1) && p.cu_seqlens && p.slots && p.C > 0 && p.W >= 1,
           "causal conv1d: bad parameters (C {}, W {})", p.C, p.W);
  const int64_t C = p.C, W = p.W, P = W - 1;
  const int64_t ldx = p.ldx ? p.ldx : C, ldy = p.ldy ? p.ldy : C, ldt = p.ld_tail ? p.ld_tail : C;
  const int64_t slot_stride = p.tail_slot_stride ? p.tail_slot_stride : P * ldt;
  constexpr int64_t kCB = 64;  // channels per task
  const int64_t cblocks = (C + kCB - 1) / kCB;
  // Small steps (decode) run inline: a task should carry at least ~64K multiply-adds.
  const int64_t T = p.cu_seqlens[p.num_seqs] - p.cu_seqlens[0];
  const int64_t per_task = std::max<int64_t>(1, T * kCB * W / std::max<int64_t>(1, p.num_seqs));
  const size_t grain = size_t(std::max<int64_t>(1, (int64_t(1) << 16) / per_task));
  parallel_for(size_t(cblocks * p.num_seqs), [&](size_t b, size_t e) {
    std::vector<float> old(size_t(P * kCB));
    for (size_t task = b; task < e; ++task) {
      const int64_t s = int64_t(task) / cblocks, c0 = (int64_t(task) % cblocks) * kCB;
      const int64_t nc = std::min(kCB, C - c0);
      const int64_t t0 = p.cu_seqlens[s], n = p.cu_seqlens[s + 1] - t0;
      float* tail = P > 0 ? p.tails + int64_t(p.slots[s]) * slot_stride + c0 : nullptr;
      for (int64_t r = 0; r < P; ++r)
        for (int64_t c = 0; c < nc; ++c) old[r * kCB + c] = tail[r * ldt + c];
      // Input at chunk-relative time tau (< 0: from the old tail).
      auto in = [&](int64_t tau, int64_t c) {
        return tau >= 0 ? p.x[(t0 + tau) * ldx + c0 + c] : old[(P + tau) * kCB + c];
      };
      for (int64_t t = 0; t < n; ++t) {
        float* y = p.y + (t0 + t) * ldy + c0;
        for (int64_t c = 0; c < nc; ++c) {
          const float* wc = p.w + (c0 + c) * W;
          float acc = 0.0f;
          for (int64_t j = 0; j < W; ++j) acc += wc[j] * in(t - P + j, c);
          y[c] = p.silu ? silu(acc) : acc;
        }
      }
      for (int64_t r = 0; r < P; ++r)
        for (int64_t c = 0; c < nc; ++c) tail[r * ldt + c] = in(n - P + r, c);
    }
  }, grain);
}

}  // namespace ds::kernels
