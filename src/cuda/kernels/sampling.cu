#include <climits>

#include "cuda/kernels/common.cuh"
#include "cuda/kernels/sampling.h"

namespace ds::gpu {
namespace {

constexpr int kThreads = 1024;

struct ArgBest {
  float v;
  int i;
};
// (v, i) comes before (w, j) in descending order: larger value, or equal value and lower index.
__device__ __forceinline__ bool before(float v, int i, float w, int j) { return v > w || (v == w && i < j); }

struct Shared {
  float red[32];
  double dred[32];
  ArgBest best[33];
  int cnt[kThreads];
  double hist[kThreads];
};

__device__ ArgBest block_first(float v, int i, Shared& sh) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, v, o);
    int oi = __shfl_xor_sync(0xffffffffu, i, o);
    if (before(ov, oi, v, i)) { v = ov; i = oi; }
  }
  __syncthreads();
  if (lane == 0) sh.best[warp] = {v, i};
  __syncthreads();
  if (warp == 0) {
    ArgBest b = lane < (blockDim.x >> 5) ? sh.best[lane] : ArgBest{-INFINITY, INT_MAX};
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      float ov = __shfl_xor_sync(0xffffffffu, b.v, o);
      int oi = __shfl_xor_sync(0xffffffffu, b.i, o);
      if (before(ov, oi, b.v, b.i)) { b.v = ov; b.i = oi; }
    }
    if (lane == 0) sh.best[32] = b;
  }
  __syncthreads();
  return sh.best[32];
}

__device__ double block_sum_d(double v, Shared& sh) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __syncthreads();
  if (lane == 0) sh.dred[warp] = v;
  __syncthreads();
  double t = lane < (blockDim.x >> 5) ? sh.dred[lane] : 0.0;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  return t;
}

// Kept tokens: bits(e) > tau, or bits(e) == tau and index <= lim.
struct Kept {
  uint32_t tau;
  int lim;
  __device__ bool has(uint32_t b, int i) const { return b > tau || (b == tau && i <= lim); }
};

// Mass (or count) of kept tokens with bits(e) >= t.
__device__ double kept_mass(const float* e, int V, Kept k, uint32_t t, bool count, Shared& sh) {
  double s = 0.0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    uint32_t b = __float_as_uint(e[i]);
    if (b >= t && k.has(b, i)) s += count ? 1.0 : double(e[i]);
  }
  return block_sum_d(s, sh);
}

// bisect's answer (below), found digit by digit: it is bits(1.0) or the bits of a kept token (f drops only
// there), so a radix select finds it (DeviceContext::switches.sampling_radix; over the 30 low bits of a
// float in [0, 1], 10 bits a pass): each pass adds the kept
// mass of the tokens whose higher digits equal the answer's so far into 1,024 buckets of the next digit,
// and a suffix scan over the buckets (descending) picks the largest digit that still passes. Four passes
// over the row instead of the ~31 of a bisection on the bits (each a full pass: 100 rows at T = 1,
// top-p 0.9 took 4.1 ms, PERF.md session 13).
template <bool Strict>
__device__ uint32_t radix_select(const float* e, int V, Kept k, bool count, double x, Shared& sh) {
  const uint32_t one = __float_as_uint(1.f);
  auto passes = [&](double f) { return Strict ? f > x : f >= x; };
  if (passes(kept_mass(e, V, k, one, count, sh))) return one;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  uint32_t prefix = 0;
  double above = 0.0;  // kept mass of the tokens above every candidate of this pass
  for (int shift = 20; shift >= 0; shift -= 10) {
    sh.hist[tid] = 0.0;
    __syncthreads();
    const uint32_t high = shift + 10 < 32 ? prefix >> (shift + 10) : 0u;
    for (int i = tid; i < V; i += kThreads) {
      const uint32_t b = __float_as_uint(e[i]);
      if ((b >> (shift + 10)) == high && k.has(b, i)) atomicAdd(&sh.hist[(b >> shift) & 1023u], count ? 1.0 : double(e[i]));
    }
    __syncthreads();
    // inclusive scan over j = 1023 - digit: v(j) = mass of digits >= 1023 - j
    double v = sh.hist[kThreads - 1 - tid];
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
      const double y = __shfl_up_sync(0xffffffffu, v, o);
      if (lane >= o) v += y;
    }
    if (lane == 31) sh.dred[warp] = v;
    __syncthreads();
    if (warp == 0) {
      double w = sh.dred[lane];
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const double y = __shfl_up_sync(0xffffffffu, w, o);
        if (lane >= o) w += y;
      }
      const double before_me = __shfl_up_sync(0xffffffffu, w, 1);
      sh.dred[lane] = lane > 0 ? before_me : 0.0;  // exclusive: the warps before
    }
    if (tid == 0) sh.cnt[0] = kThreads;
    __syncthreads();
    v += sh.dred[warp];
    sh.hist[tid] = v;  // (every read of the buckets came before the barrier above)
    // the largest passing digit = the smallest passing j (passing is monotone in j)
    if (passes(above + v)) atomicMin(&sh.cnt[0], tid);
    __syncthreads();
    const int j = sh.cnt[0];  // < kThreads: digit 0 passes (f at the prefix passed last pass)
    prefix |= uint32_t(kThreads - 1 - j) << shift;
    above += j > 0 ? sh.hist[j - 1] : 0.0;
    __syncthreads();  // (hist and cnt are reused)
  }
  return prefix;
}

// Largest t in [0, bits(1.0)] with f(t) >= x (strict: > x); f(t) = kept_mass(t), non-increasing. f(0) must
// pass. By bisection on the bits, or by the radix select above.
template <bool Strict>
__device__ uint32_t bisect(const float* e, int V, Kept k, bool count, double x, Shared& sh, bool radix) {
  if (radix) return radix_select<Strict>(e, V, k, count, x, sh);
  uint32_t lo = 0, hi = __float_as_uint(1.f);
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo + 1) / 2;
    double f = kept_mass(e, V, k, mid, count, sh);
    if (Strict ? f > x : f >= x) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Index of the n-th (1-based) kept token with bits(e) == t, in index order; -1 if fewer.
__device__ int nth_tie(const float* e, int V, Kept k, uint32_t t, int n, Shared& sh) {
  int seg = (V + kThreads - 1) / kThreads;
  int b0 = threadIdx.x * seg, b1 = min(V, b0 + seg);
  int c = 0;
  for (int i = b0; i < b1; ++i) {
    uint32_t b = __float_as_uint(e[i]);
    c += (b == t && k.has(b, i)) ? 1 : 0;
  }
  __syncthreads();
  sh.cnt[threadIdx.x] = c;
  __syncthreads();
  if (threadIdx.x == 0) {
    int run = 0;
    for (int i = 0; i < kThreads; ++i) {
      int v = sh.cnt[i];
      sh.cnt[i] = run;
      run += v;
    }
  }
  __syncthreads();
  int before_me = sh.cnt[threadIdx.x];
  int found = INT_MAX;
  if (n > before_me && n <= before_me + c) {
    int r = before_me;
    for (int i = b0; i < b1; ++i) {
      uint32_t b = __float_as_uint(e[i]);
      if (b == t && k.has(b, i) && ++r == n) {
        found = i;
        break;
      }
    }
  }
  ArgBest w = block_first(found == INT_MAX ? -1.f : 1.f, found, sh);
  return w.v > 0.f ? w.i : -1;
}

// The kept token where the cumulative mass in descending order first reaches x (strict: exceeds x).
// Returns it as a Kept bound (everything before it and it) and its cumulative mass.
template <bool Strict>
__device__ Kept crossing(const float* e, int V, Kept k, double x, double* cum, Shared& sh, bool radix) {
  uint32_t t = bisect<Strict>(e, V, k, false, x, sh, radix);
  double g = t < 0xffffffffu ? kept_mass(e, V, k, t + 1, false, sh) : 0.0;
  double v = double(__uint_as_float(t));
  double ties = 0.0;
  for (int i = threadIdx.x; i < V; i += kThreads) {
    uint32_t b = __float_as_uint(e[i]);
    ties += (b == t && k.has(b, i)) ? 1.0 : 0.0;
  }
  ties = block_sum_d(ties, sh);
  double need = Strict ? floor((x - g) / v) + 1.0 : ceil((x - g) / v);
  int n = int(fmin(fmax(need, 1.0), fmax(ties, 1.0)));
  int idx = nth_tie(e, V, k, t, n, sh);
  *cum = g + double(n) * v;
  return Kept{t, idx};
}

// Top-n logprobs of the raw logits of `row`: n passes, each the first pair after the previous one.
__device__ void top_logprobs(const SamplingParams& p, int row, const float* raw, int n, double log_z, Shared& sh) {
  float pv = INFINITY;
  int pi = -1;
  for (int q = 0; q < n; ++q) {
    ArgBest c{-INFINITY, INT_MAX};
    for (int i = threadIdx.x; i < p.vocab; i += kThreads) {
      float v = raw[i];
      if (before(pv, pi, v, i) && before(v, i, c.v, c.i)) c = {v, i};
    }
    ArgBest w = block_first(c.v, c.i, sh);
    if (threadIdx.x == 0) {
      p.out_top_ids[int64_t(row) * p.max_logprobs + q] = w.i;
      p.out_top_logprobs[int64_t(row) * p.max_logprobs + q] = float(double(w.v) - log_z);
    }
    pv = w.v;
    pi = w.i;
  }
}

// The row's token and its logprob; with logprobs asked, its rank (vLLM's: the raw logits >= its own, so the
// argmax is 1) and the top-n list.
__device__ void write_result(const SamplingParams& p, int row, const SampleRow& rp, const float* raw, int token,
                             double log_z, Shared& sh) {
  if (threadIdx.x == 0) {
    p.out_token[row] = token;
    p.out_logprob[row] = float(double(raw[token]) - log_z);
  }
  if (rp.num_logprobs < 0) return;
  const float t = raw[token];
  double n = 0.0;
  for (int i = threadIdx.x; i < p.vocab; i += kThreads) n += raw[i] >= t ? 1.0 : 0.0;
  n = block_sum_d(n, sh);
  if (threadIdx.x == 0) p.out_rank[row] = int32_t(n);
  top_logprobs(p, row, raw, min(rp.num_logprobs, p.max_logprobs), log_z, sh);
}

// Statistics of one slice of a row's raw logits (the prepass): max m, sum of exp(l - m), first argmax.
constexpr int kStatSplits = 64, kStatThreads = 256, kStatFloats = 8;
struct RowStat {
  double s;
  float m, bv;
  int bi, pad;
};
static_assert(sizeof(RowStat) <= kStatFloats * sizeof(float));

__device__ RowStat* row_stats(const SamplingParams& p, int row) {
  return reinterpret_cast<RowStat*>(p.work + int64_t(p.rows) * p.vocab) + int64_t(row) * kStatSplits;
}

__global__ void __launch_bounds__(kStatThreads) row_stats_kernel(SamplingParams p) {
  __shared__ float red[32];
  __shared__ double dred[32];
  __shared__ ArgBest best[32];
  const int row = blockIdx.y, V = p.vocab, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  pdl_trigger();
  pdl_wait();
  const int per = (V + kStatSplits - 1) / kStatSplits, b = blockIdx.x * per, e = min(V, b + per);
  const float* raw = p.logits + int64_t(row) * p.ld;
  float mx = -INFINITY;
  ArgBest a{-INFINITY, INT_MAX};
  for (int i = b + tid; i < e; i += kStatThreads) {
    const float v = raw[i];
    mx = fmaxf(mx, v);
    if (before(v, i, a.v, a.i)) a = {v, i};
  }
  mx = block_max(mx, red);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(0xffffffffu, a.v, o);
    int oi = __shfl_xor_sync(0xffffffffu, a.i, o);
    if (before(ov, oi, a.v, a.i)) { a.v = ov; a.i = oi; }
  }
  if (lane == 0) best[warp] = a;
  double se = 0.0;
  if (mx > -INFINITY)
    for (int i = b + tid; i < e; i += kStatThreads) se += double(expf(raw[i] - mx));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) se += __shfl_xor_sync(0xffffffffu, se, o);
  if (lane == 0) dred[warp] = se;
  __syncthreads();
  if (tid == 0) {
    RowStat r{0.0, mx, -INFINITY, INT_MAX, 0};
    for (int w = 0; w < kStatThreads / 32; ++w) {
      r.s += dred[w];
      if (before(best[w].v, best[w].i, r.bv, r.bi)) { r.bv = best[w].v; r.bi = best[w].i; }
    }
    row_stats(p, row)[blockIdx.x] = r;
  }
}

__global__ void __launch_bounds__(kThreads) sampling_kernel(SamplingParams p) {
  __shared__ Shared sh;
  pdl_trigger();
  pdl_wait();
  int row = blockIdx.x, tid = threadIdx.x, V = p.vocab;
  const SampleRow rp = p.row_params[row];
  const float* raw = p.logits + int64_t(row) * p.ld;
  float* x = p.work + int64_t(row) * V;

  // greedy without penalties: the prepass's statistics give the token and the normaliser
  const bool penalties = rp.pen_begin < rp.bias_begin &&
                         (rp.repetition_penalty != 1.f || rp.frequency_penalty != 0.f || rp.presence_penalty != 0.f);
  const bool biased = rp.bias_begin < rp.pen_end;
  const uint32_t* mask = rp.masked ? p.mask + int64_t(row) * p.mask_words : nullptr;
  if ((rp.temperature <= 0.f || rp.top_k == 1) && !penalties && !biased && !mask) {
    const RowStat* st = row_stats(p, row);
    RowStat r = tid < kStatSplits ? st[tid] : RowStat{0.0, -INFINITY, -INFINITY, INT_MAX, 0};
    const float M = block_max(r.m, sh.red);
    const double se = block_sum_d(r.m > -INFINITY ? r.s * exp(double(r.m) - double(M)) : 0.0, sh);
    const ArgBest top = block_first(r.bv, r.bi, sh);
    const int token = rp.forced >= 0 ? rp.forced : top.i < V ? top.i : 0;
    const double log_z = double(M) + log(se);
    write_result(p, row, rp, raw, token, log_z, sh);
    return;
  }

  // log-normaliser of the raw logits
  float mx = -INFINITY;
  for (int i = tid; i < V; i += kThreads) mx = fmaxf(mx, raw[i]);
  mx = block_max(mx, sh.red);
  double se = 0.0;
  for (int i = tid; i < V; i += kThreads) {
    float l = raw[i];
    se += exp(double(l) - double(mx));
    x[i] = l;
  }
  double log_z = double(mx) + log(block_sum_d(se, sh));
  __syncthreads();

  // penalties: each listed token once per row
  for (int j = rp.pen_begin + tid; j < rp.bias_begin; j += kThreads) {
    int tok = p.pen_tokens[j];
    if (tok < 0 || tok >= V) continue;
    float l = x[tok];
    if (rp.repetition_penalty != 1.f) l = l > 0.f ? l / rp.repetition_penalty : l * rp.repetition_penalty;
    int c = p.pen_counts[j];
    if (c > 0) l -= rp.frequency_penalty * float(c) + rp.presence_penalty;
    x[tok] = l;
  }
  __syncthreads();
  // logit_bias: each token once per row (the host lists distinct ids)
  for (int j = rp.bias_begin + tid; j < rp.pen_end; j += kThreads) {
    int tok = p.pen_tokens[j];
    if (tok >= 0 && tok < V) x[tok] += __int_as_float(p.pen_counts[j]);
  }
  __syncthreads();

  ArgBest b{-INFINITY, INT_MAX};
  for (int i = tid; i < V; i += kThreads) {
    if (mask && !((mask[i >> 5] >> (i & 31)) & 1u)) x[i] = -INFINITY;
    if (before(x[i], i, b.v, b.i)) b = {x[i], i};
  }
  ArgBest top = block_first(b.v, b.i, sh);
  int token = top.i < V ? top.i : 0;  // (NaN logits leave no first element)
  if (top.i < V && !(rp.temperature <= 0.f || rp.top_k == 1)) {
    // unnormalised probabilities relative to the most likely token (which gets 1)
    double inv_t = 1.0 / double(rp.temperature);
    for (int i = tid; i < V; i += kThreads) x[i] = float(exp(double(x[i] - top.v) * inv_t));
    __syncthreads();
    uint32_t tmin = max(__float_as_uint(fmaxf(rp.min_p, 0.f)), 1u);  // e > 0 and e >= min_p
    Kept k{tmin - 1, -1};
    if (rp.top_k > 0) {
      double have = kept_mass(x, V, k, 0, true, sh);
      if (double(rp.top_k) < have) {
        uint32_t t = bisect<false>(x, V, k, true, double(rp.top_k), sh, p.radix);
        double above = t < 0xffffffffu ? kept_mass(x, V, k, t + 1, true, sh) : 0.0;
        int idx = nth_tie(x, V, k, t, rp.top_k - int(above), sh);
        k = Kept{t, idx};
      }
    }
    double total = kept_mass(x, V, k, 0, false, sh);
    if (rp.top_p < 1.f) {
      double cum = 0.0;
      k = crossing<false>(x, V, k, double(fmaxf(rp.top_p, 0.f)) * total, &cum, sh, p.radix);
      total = cum;
    }
    double cum = 0.0;
    Kept d = crossing<true>(x, V, k, rp.u * total, &cum, sh, p.radix);
    token = d.lim >= 0 ? d.lim : top.i;
    (void)cum;
  }
  write_result(p, row, rp, raw, token, log_z, sh);
}

}  // namespace

size_t sampling_workspace_floats(int rows, int vocab) {
  return size_t(rows) * vocab + size_t(rows) * kStatSplits * kStatFloats;
}

void run_sampling(const SamplingParams& p0, const DeviceContext& ctx) {
  if (p0.rows == 0) return;
  SamplingParams p = p0;
  p.radix = ctx.switches.sampling_radix;
  DS_GPU_REQUIRE(kStatSplits <= kThreads, "sampling: too many statistics splits");
  launch_pdl(row_stats_kernel, dim3(kStatSplits, p.rows), kStatThreads, 0, ctx, p);
  launch_pdl(sampling_kernel, dim3(p.rows), kThreads, 0, ctx, p);
  DS_CUDA_CHECK_LAUNCH();
}

}  // namespace ds::gpu
