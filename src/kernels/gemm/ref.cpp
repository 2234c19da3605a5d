#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/parallel.h"
#include "kernels/gemm/op.h"

// Register-tiled dot products. Each output keeps 8 lane accumulators over k (lane l sums k ≡ l mod 8
// in increasing k), reduced in a fixed order, then the k tail is added in order: the same arithmetic
// for every tile shape, so results never depend on the blocking. On x86-64 the block routine is
// compiled twice (AVX2 and baseline) and picked at load time; no FMA, so both give identical bits.
#if defined(__x86_64__) && defined(__GNUC__)
#define DS_GEMM_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DS_GEMM_CLONES
#endif

namespace ds::kernels {
namespace {

typedef float v8f __attribute__((vector_size(32)));

constexpr int kMR = 4;        // rows of x per register tile
constexpr int kNR = 2;        // rows of W per register tile
constexpr int64_t kMB = 32;   // rows of x per task
constexpr int64_t kNB = 64;   // rows of W per task

[[gnu::always_inline]] inline float hsum(v8f v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// always_inline: the tiles must be compiled inside each clone of gemm_block, with its instruction set.
template <int MR, int NR>
[[gnu::always_inline]] inline void tile(const float* x, int64_t ldx, const float* w, int64_t ldw, float* y, int64_t ldy,
                 int64_t K, bool accumulate) {
  v8f s[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) s[i][j] = v8f{};
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    v8f xv[MR], wv[NR];
    for (int i = 0; i < MR; ++i) std::memcpy(&xv[i], x + i * ldx + k, sizeof(v8f));
    for (int j = 0; j < NR; ++j) std::memcpy(&wv[j], w + j * ldw + k, sizeof(v8f));
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) s[i][j] += xv[i] * wv[j];
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      float r = hsum(s[i][j]);
      for (int64_t kk = k; kk < K; ++kk) r += x[i * ldx + kk] * w[j * ldw + kk];
      float* out = y + i * ldy + j;
      *out = accumulate ? *out + r : r;
    }
}

template <int NR>
[[gnu::always_inline]] inline void tile_rows(int mr, const float* x, int64_t ldx, const float* w, int64_t ldw, float* y,
                      int64_t ldy, int64_t K, bool acc) {
  switch (mr) {
    case 4: tile<4, NR>(x, ldx, w, ldw, y, ldy, K, acc); break;
    case 3: tile<3, NR>(x, ldx, w, ldw, y, ldy, K, acc); break;
    case 2: tile<2, NR>(x, ldx, w, ldw, y, ldy, K, acc); break;
    default: tile<1, NR>(x, ldx, w, ldw, y, ldy, K, acc); break;
  }
}

struct Dims {
  const float* x;
  const float* w;
  float* y;
  int64_t K, ldx, ldw, ldy;
  bool acc;
};

DS_GEMM_CLONES
void gemm_block(const Dims& d, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; n += kNR) {
    const int nr = int(std::min<int64_t>(kNR, n1 - n));
    for (int64_t m = m0; m < m1; m += kMR) {
      const int mr = int(std::min<int64_t>(kMR, m1 - m));
      const float* x = d.x + m * d.ldx;
      const float* w = d.w + n * d.ldw;
      float* y = d.y + m * d.ldy + n;
      if (nr == 2) tile_rows<2>(mr, x, d.ldx, w, d.ldw, y, d.ldy, d.K, d.acc);
      else tile_rows<1>(mr, x, d.ldx, w, d.ldw, y, d.ldy, d.K, d.acc);
    }
  }
}

}  // namespace

void run_gemm_cpu(const GemmParams& p) {
  DS_CHECK(p.M >= 0 && p.N >= 0 && p.K >= 0, "gemm: negative size M={} N={} K={}", p.M, p.N, p.K);
  if (p.M == 0 || p.N == 0) return;
  DS_CHECK(p.x && p.w && p.y, "gemm: null pointer (M={} N={} K={})", p.M, p.N, p.K);
  Dims d{p.x, p.w, p.y, p.K, p.ldx ? p.ldx : p.K, p.ldw ? p.ldw : p.K, p.ldy ? p.ldy : p.N,
         p.accumulate};
  DS_CHECK(d.ldx >= p.K && d.ldw >= p.K && d.ldy >= p.N, "gemm: a row stride is smaller than the row");
  const int64_t mblocks = (p.M + kMB - 1) / kMB, nblocks = (p.N + kNB - 1) / kNB;
  auto run = [&](size_t b, size_t e) {
    for (size_t t = b; t < e; ++t) {
      int64_t mb = int64_t(t) / nblocks, nb = int64_t(t) % nblocks;
      gemm_block(d, mb * kMB, std::min(p.M, (mb + 1) * kMB), nb * kNB, std::min(p.N, (nb + 1) * kNB));
    }
  };
  const int64_t work = p.M * p.N * std::max<int64_t>(p.K, 1);
  if (work < (int64_t(1) << 16)) run(0, size_t(mblocks * nblocks));
  else parallel_for(size_t(mblocks * nblocks), run);
}

}  // namespace ds::kernels
