// INT4 W4A16 weight kernels on the H200 at the 48B config's decode shapes, against the bandwidth floor
// of the bytes they read (nibbles + fp32 group scales + fp32 zero points when asymmetric): the INT4 GEMV
// (dense projections at 1 and 8 rows; the MoE gate/up and down of one token's 9 experts out of 257, and
// the batch-1 down projection + combine) and the dequantizer of the large-batch path. Issue 17's target:
// >= 80% of the bandwidth on the big shapes (time <= 1.25 x floor).
//   bench_int4 [--quick]
#include <cstdio>
#include <cstring>
#include <tuple>
#include <vector>

#include "bench/gpu_bench_util.h"
#include "config/runtime_env.h"
#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/gemv.h"
#include "cuda/kernels/int4.h"
#include "cuda/stream.h"

using namespace ds;
using namespace ds::gpu;
using ds::bench::Row;

namespace {

struct Int4Weights {
  DeviceBuffer q, scale, zero;
  int64_t rows = 0, K = 0, ld = 1;
  int ks = 7;
  bool symmetric = true;
  double bytes() const { return double(rows) * K / 2 + double(rows) * ld * 4 * (symmetric ? 1 : 2); }
};

// [rows, K] random INT4 with groups of 2^ks (zero points all 8 when asymmetric: the same arithmetic).
Int4Weights make_int4(const DeviceContext& ctx, int64_t rows, int64_t K, int ks, bool symmetric, uint64_t seed) {
  Int4Weights w;
  w.rows = rows;
  w.K = K;
  w.ks = ks;
  w.symmetric = symmetric;
  w.ld = (K + (int64_t(1) << ks) - 1) >> ks;
  w.q = DeviceBuffer(size_t(rows * K / 2));
  w.scale = DeviceBuffer(size_t(rows * w.ld) * 4);
  Int4Matrix m{w.q.as<uint8_t>(), w.scale.as<float>(), nullptr, rows, K, w.ld, ks};
  run_fill_int4(m, rows * w.ld, 0.035f, seed, ctx);
  if (!symmetric) {
    w.zero = DeviceBuffer(size_t(rows * w.ld) * 4);
    run_fill_value(w.zero.data(), DType::F32, rows * w.ld, 8.f, ctx);
  }
  return w;
}

DeviceBuffer filled(const DeviceContext& ctx, int64_t n, DType t, uint64_t seed, float a = 0.05f) {
  DeviceBuffer b(size_t(n) * dtype_size(t));
  run_fill_uniform(b.data(), t, n, -a, a, seed, ctx);
  return b;
}

void set(GemvParams& p, const Int4Weights& w) {
  p.w = w.q.data();
  p.w_int4 = true;
  p.w_scale = w.scale.as<float>();
  p.w_zero = w.symmetric ? nullptr : w.zero.as<float>();
  p.scale_ld = w.ld;
  p.scale_row_shift = 0;
  p.scale_k_shift = w.ks;
}

struct Scheme {
  int ks;
  bool symmetric;
  const char* name;
};
const Scheme kSchemes[] = {{7, true, "g128"}, {5, true, "g32"}, {7, false, "g128 zp"}};

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  const int reps = quick ? 10 : 30;
  Stream st;
  const DeviceContext ctx = make_device_context(st, cuda_env());
  const DType bf = DType::BF16;
  std::vector<Row> rows;
  auto bw_floor = [](double bytes) { return bytes / ds::bench::kBandwidth * 1e3; };
  std::printf("device: %s\n", device_info().summary().c_str());

  // ---- dense projections (copies rotated so the weights come from HBM, not L2) ----------------------
  struct Dense {
    const char* name;
    int N, K, copies;
  };
  for (const Dense& d : {Dense{"KDA in_proj 12544x2304", 12544, 2304, 12}, Dense{"o_proj 2304x4096", 2304, 4096, 24},
                         Dense{"dense gate_up 18432x2304", 18432, 2304, 8}, Dense{"big 163840x2304", 163840, 2304, 2}})
    for (const Scheme& s : kSchemes)
      for (int M : {1, 8}) {
        std::vector<Int4Weights> ws;
        for (int c = 0; c < d.copies; ++c) ws.push_back(make_int4(ctx, d.N, d.K, s.ks, s.symmetric, 10 + c));
        auto x = filled(ctx, int64_t(M) * d.K, bf, 1, 1.f);
        DeviceBuffer y(size_t(M) * d.N * 2);
        int i = 0;
        const double ms = ds::bench::time_ms(ctx.stream, [&] {
          GemvParams p;
          p.x = x.data();
          p.ldx = d.K;
          set(p, ws[size_t(i++ % d.copies)]);
          p.y = y.data();
          p.ldy = d.N;
          p.N = d.N;
          p.K = d.K;
          p.M = M;
          run_gemv(p, bf, ctx);
        }, reps);
        char nm[128];
        std::snprintf(nm, sizeof nm, "int4 gemv %s M=%d %s", d.name, M, s.name);
        rows.push_back({nm, ms, bw_floor(ws[0].bytes()), ""});
      }

  // ---- MoE at batch 1: 9 of 257 experts (gate/up SiLU, then down; and down + combine) ----------------
  const int E = 257, D = 2304, I = 1024;
  for (const Scheme& s : kSchemes) {
    auto gu = make_int4(ctx, int64_t(E) * 2 * I, D, s.ks, s.symmetric, 50);
    auto dn = make_int4(ctx, int64_t(E) * D, I, s.ks, s.symmetric, 51);
    auto x = filled(ctx, D, bf, 2, 1.f);
    DeviceBuffer act(size_t(9) * I * 2), out(size_t(9) * D * 2), resid(size_t(D) * 2);
    const int variants = 16;
    std::vector<DeviceBuffer> ids;
    for (int v = 0; v < variants; ++v) {
      std::vector<int32_t> h(9);
      for (int j = 0; j < 8; ++j) h[size_t(j)] = (v * 37 + j * 31) % 256;
      h[8] = 256;
      DeviceBuffer b(9 * 4);
      DS_CUDA_CHECK(cudaMemcpy(b.data(), h.data(), 36, cudaMemcpyHostToDevice));
      ids.push_back(std::move(b));
    }
    std::vector<int32_t> pos_h = {0, 1, 2, 3, 4, 5, 6, 7, 8};
    std::vector<float> wt_h(9, 0.1f);
    DeviceBuffer pos(36), wt(36);
    DS_CUDA_CHECK(cudaMemcpy(pos.data(), pos_h.data(), 36, cudaMemcpyHostToDevice));
    DS_CUDA_CHECK(cudaMemcpy(wt.data(), wt_h.data(), 36, cudaMemcpyHostToDevice));
    int i = 0;
    GemvParams g;
    g.x = x.data();
    g.ldx = D;
    set(g, gu);
    g.w_matrix_stride = int64_t(2) * I * D;
    g.scale_matrix_stride = int64_t(2) * I * gu.ld;
    g.y = act.data();
    g.ldy = I;
    g.y_group_stride = I;
    g.N = I;
    g.K = D;
    g.M = 1;
    g.num_groups = 9;
    g.epi = GemvEpilogue::SiluMul;
    GemvParams d = moe_down_gemv_params(g, dn.q.data(), out.data(), D);
    set(d, dn);
    d.x_group_stride = I;
    d.y_group_stride = D;
    d.scale_matrix_stride = int64_t(D) * dn.ld;
    const double ms_gu = ds::bench::time_ms(ctx.stream, [&] {
      g.group_weight = ids[size_t(i++ % variants)].as<int32_t>();
      run_gemv(g, bf, ctx);
    }, reps);
    const double ms_dn = ds::bench::time_ms(ctx.stream, [&] {
      d.group_weight = ids[size_t(i++ % variants)].as<int32_t>();
      run_gemv(d, bf, ctx);
    }, reps);
    MoeDownCombineParams c;
    c.act = act.data();
    c.pair_pos = pos.as<int32_t>();
    c.weights = wt.as<float>();
    c.w = dn.q.data();
    c.residual = resid.data();
    c.D = D;
    c.I = I;
    c.k = 9;
    c.w_int4 = true;
    c.w_scale = dn.scale.as<float>();
    c.w_zero = s.symmetric ? nullptr : dn.zero.as<float>();
    c.scale_ld = dn.ld;
    c.scale_k_shift = s.ks;
    c.scale_matrix_stride = int64_t(D) * dn.ld;
    DS_CUDA_CHECK(cudaMemset(resid.data(), 0, resid.bytes()));
    const double ms_dc = ds::bench::time_ms(ctx.stream, [&] {
      c.ids = ids[size_t(i++ % variants)].as<int32_t>();
      run_moe_down_combine(c, bf, ctx);
    }, reps);
    const double per_w = 0.5 + 4.0 * (s.symmetric ? 1 : 2) / double(1 << s.ks);  // bytes per weight
    char nm[128];
    std::snprintf(nm, sizeof nm, "int4 MoE B=1 gate/up 9x2048x2304 %s", s.name);
    rows.push_back({nm, ms_gu, bw_floor(9.0 * (2 * I * double(D)) * per_w), ""});
    std::snprintf(nm, sizeof nm, "int4 MoE B=1 down 9x2304x1024 %s", s.name);
    rows.push_back({nm, ms_dn, bw_floor(9.0 * (double(D) * I) * per_w), ""});
    std::snprintf(nm, sizeof nm, "int4 MoE B=1 down+combine 9x2304x1024 %s", s.name);
    rows.push_back({nm, ms_dc, bw_floor(9.0 * (double(D) * I) * per_w), ""});
  }

  // ---- dequantization of one dense-sized matrix to bf16 (the large-batch path's weights) --------------
  {
    auto w = make_int4(ctx, 18432, 2304, 7, true, 3);
    DeviceBuffer out(size_t(18432) * 2304 * 2);
    Int4Matrix m{w.q.as<uint8_t>(), w.scale.as<float>(), nullptr, 18432, 2304, w.ld, 7};
    const double ms = ds::bench::time_ms(ctx.stream, [&] { run_dequantize_int4(m, out.data(), bf, 2304, ctx); }, reps);
    rows.push_back({"dequantize 18432x2304 int4 g128 -> bf16", ms, bw_floor(w.bytes() + 18432.0 * 2304 * 2), ""});
  }
  ds::bench::print_table("INT4 W4A16 kernel timings (H200 roofline: 4.3 TB/s; floor = nibbles + scale/zero bytes)", rows);
  return 0;
}
