// MLA attention: the expanded (prefill) and weight-absorbed (paged decode) forms against a
// double-precision causal attention, on scrambled pages and with two sequences in one absorbed call.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernel_test_util.h"
#include "kernels/mla/op.h"

namespace ds::test {
namespace {

constexpr int64_t H = 3, R = 64, dn = 16, dr = 8, dv = 12, L = R + dr, Dq = dn + dr;

struct Seq {
  int64_t Tk, Tq;                  // keys (positions 0..Tk−1); the last Tq positions are queries
  std::vector<float> lat;          // [Tk, L] latents [ĉ ; k_pe]
  std::vector<float> q;            // [Tq, H, Dq]
  std::vector<int32_t> table;      // pages
};

Seq make_seq(int64_t Tk, int64_t Tq, uint64_t seed) {
  return {Tk, Tq, randn(size_t(Tk * L), seed), randn(size_t(Tq * H * Dq), seed + 1), {}};
}

// out[t, h, :] in double, straight from the definition (spec §5 steps 4–6).
std::vector<double> naive(const Seq& s, const std::vector<float>& kvb, double scale) {
  std::vector<double> out(size_t(s.Tq * H * dv), 0.0);
  for (int64_t t = 0; t < s.Tq; ++t)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t pos = s.Tk - s.Tq + t;
      std::vector<double> sc(size_t(pos + 1)), vsum(size_t(dv), 0.0);
      for (int64_t j = 0; j <= pos; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < dn; ++i) {
          double k = 0;
          for (int64_t c = 0; c < R; ++c) k += double(kvb[(h * (dn + dv) + i) * R + c]) * s.lat[j * L + c];
          acc += s.q[(t * H + h) * Dq + i] * k;
        }
        for (int64_t i = 0; i < dr; ++i) acc += double(s.q[(t * H + h) * Dq + dn + i]) * s.lat[j * L + R + i];
        sc[j] = acc * scale;
      }
      const double mx = *std::max_element(sc.begin(), sc.end());
      double sum = 0;
      for (auto& x : sc) sum += (x = std::exp(x - mx));
      for (int64_t j = 0; j <= pos; ++j)
        for (int64_t e = 0; e < dv; ++e) {
          double v = 0;
          for (int64_t c = 0; c < R; ++c) v += double(kvb[(h * (dn + dv) + dn + e) * R + c]) * s.lat[j * L + c];
          out[size_t((t * H + h) * dv + e)] += sc[j] / sum * v;
        }
    }
  return out;
}

std::vector<float> expanded(const Seq& s, const std::vector<float>& kvb, float scale) {
  std::vector<float> k(size_t(s.Tk * H * Dq)), v(size_t(s.Tk * H * dv)), o(size_t(s.Tq * H * dv));
  for (int64_t j = 0; j < s.Tk; ++j)
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t i = 0; i < dn + dv; ++i) {
        float acc = 0;
        for (int64_t c = 0; c < R; ++c) acc += kvb[(h * (dn + dv) + i) * R + c] * s.lat[j * L + c];
        if (i < dn) k[(j * H + h) * Dq + i] = acc;
        else v[(j * H + h) * dv + i - dn] = acc;
      }
      std::copy_n(&s.lat[j * L + R], dr, &k[(j * H + h) * Dq + dn]);
    }
  kernels::run_mla_prefill_cpu({.q = s.q.data(), .k = k.data(), .v = v.data(), .o = o.data(), .Tq = s.Tq,
                                .Tk = s.Tk, .H = H, .Dqk = Dq, .Dv = dv, .q_pos0 = s.Tk - s.Tq, .scale = scale});
  return o;
}

TEST(Mla, ExpandedAndAbsorbedFormsMatchReference) {
  const float scale = float(1.0 / std::sqrt(double(Dq)));
  const auto kvb = randn(size_t(H * (dn + dv) * R), 99, 0.2f);
  std::vector<Seq> seqs = {make_seq(40, 10, 1), make_seq(23, 1, 2)};
  // Paged cache of block size 4 with scrambled page ids.
  const int64_t bs = 4, num_blocks = 20;
  std::vector<float> cache(size_t(num_blocks * bs * L), NAN);
  std::vector<int32_t> free_pages = {17, 3, 9, 0, 12, 5, 19, 1, 8, 14, 2, 6, 11, 4, 16, 7, 10, 13, 15, 18};
  for (auto& s : seqs) {
    for (int64_t p = 0; p < (s.Tk + bs - 1) / bs; ++p) {
      s.table.push_back(free_pages.back());
      free_pages.pop_back();
    }
    for (int64_t j = 0; j < s.Tk; ++j)
      std::copy_n(&s.lat[j * L], L, &cache[(s.table[j / bs] * bs + j % bs) * L]);
  }
  // Absorbed queries for both sequences in one varlen call.
  std::vector<float> qa;
  std::vector<int32_t> cu{0}, tables;
  std::vector<int64_t> start;
  const int64_t max_blocks = 10;
  for (const auto& s : seqs) {
    for (int64_t t = 0; t < s.Tq; ++t)
      for (int64_t h = 0; h < H; ++h) {
        for (int64_t c = 0; c < R; ++c) {
          float acc = 0;
          for (int64_t i = 0; i < dn; ++i) acc += kvb[(h * (dn + dv) + i) * R + c] * s.q[(t * H + h) * Dq + i];
          qa.push_back(acc);
        }
        for (int64_t i = 0; i < dr; ++i) qa.push_back(s.q[(t * H + h) * Dq + dn + i]);
      }
    cu.push_back(cu.back() + int32_t(s.Tq));
    start.push_back(s.Tk - s.Tq);
    auto t = s.table;
    t.resize(size_t(max_blocks), -1);
    tables.insert(tables.end(), t.begin(), t.end());
  }
  std::vector<float> ol(size_t(cu.back() * H * R));
  kernels::run_mla_absorbed_cpu({.q = qa.data(), .cache = cache.data(), .block_tables = tables.data(),
                                 .cu_seqlens = cu.data(), .start_pos = start.data(), .o = ol.data(), .num_seqs = 2,
                                 .H = H, .Dl = R, .Dr = dr, .block_size = bs, .max_blocks = max_blocks,
                                 .scale = scale});
  for (size_t si = 0; si < seqs.size(); ++si) {
    const auto& s = seqs[si];
    const auto ref = naive(s, kvb, scale);
    EXPECT_LT(rel_l2(expanded(s, kvb, scale), ref), 1e-5) << "expanded, seq " << si;
    std::vector<float> out(size_t(s.Tq * H * dv));
    for (int64_t t = 0; t < s.Tq; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t e = 0; e < dv; ++e) {
          float acc = 0;
          for (int64_t c = 0; c < R; ++c)
            acc += kvb[(h * (dn + dv) + dn + e) * R + c] * ol[((cu[si] + t) * H + h) * R + c];
          out[(t * H + h) * dv + e] = acc;
        }
    EXPECT_LT(rel_l2(out, ref), 1e-5) << "absorbed, seq " << si;
  }
}

}  // namespace
}  // namespace ds::test
