#include "cuda/device_weights.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/fp8.h"
#include "cuda/kernels/int4.h"
#include "cuda/weight_upload.h"
#include "cuda/stream.h"
#include "model/quant.h"
#include "model/shard_weights.h"
#include "model/quant_int4.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace ds::gpu {
namespace {

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

bool ends_with(const std::string& s, const char* suffix) {
  size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int log2_of(int v) {
  int s = 0;
  while ((1 << s) < v) ++s;
  return s;
}

// The conversions Uploader::upload performs: BF16/F16/F32 into BF16 or F32.
bool loadable_as(DType from, DType to) {
  return (from == DType::BF16 || from == DType::F16 || from == DType::F32) && (to == DType::BF16 || to == DType::F32);
}

void* mut(const WeightView& v) { return const_cast<void*>(v.ptr); }

}  // namespace

void WeightView::require(DType act, const std::string& what, bool fp8_ok) const {
  DS_CHECK(ptr != nullptr, "CUDA model: weight {} is missing", what);
  if ((fp8() || int4()) && fp8_ok && scale != nullptr && layout == WeightLayout::RowMajor) return;
  DS_CHECK(dtype == act && scale == nullptr && tail == nullptr && layout == WeightLayout::RowMajor,
           "CUDA model: weight {} is {}{} but the kernels need {} weights with {} activations here", what,
           dtype_name(dtype), scale ? " with scales" : "", dtype_name(act), dtype_name(act));
}

WeightView WeightView::at(int64_t elems) const {
  WeightView v = *this;
  if (int4()) {
    DS_CHECK(cols > 0 && elems % cols == 0, "WeightView::at: an INT4 view is split at whole rows only");
    v.ptr = static_cast<const char*>(ptr) + elems / 2;
    v.scale = scale + (elems / cols) * scale_ld;
    if (zero) v.zero = zero + (elems / cols) * scale_ld;
    return v;
  }
  v.ptr = static_cast<const char*>(ptr) + elems * int64_t(dtype_size(dtype));
  if (fp8()) {
    DS_CHECK(tail == nullptr && cols > 0 && elems % cols == 0 && (elems / cols) % (int64_t(1) << scale_row_shift) == 0,
             "WeightView::at: an FP8 view is split at whole scale blocks of rows only");
    v.scale = scale + ((elems / cols) >> scale_row_shift) * scale_ld;
  }
  return v;
}

int64_t kda_in_proj_rows(const ModelConfig& c) {
  int64_t HK = int64_t(c.kda.num_heads) * c.kda.head_dim;
  return (3 * HK + 2 * c.kda.head_dim + c.kda.num_heads + 7) / 8 * 8;
}

DeviceWeights load_device_weights(const ModelConfig& c, DType dt, const WeightLoadOptions& o,
                                  const DeviceContext& ctx) {
  const cudaStream_t s = ctx.stream;
  auto t0 = std::chrono::steady_clock::now();
  DeviceWeights w;
  const int64_t hid = c.hidden_size, V = c.vocab_size;
  Packer pk(w, dt);

  // ---- FP8 plan: which packed views are FP8 (every component must be) -------------------------------
  const QuantConfig& q = c.quant;
  const bool online = q.source == "online";
  std::optional<Checkpoint> ck;
  std::map<std::string, QuantizedTensor> fp8_ck;  // the checkpoint's FP8 tensors
  std::map<std::string, Int4Tensor> int4_ck;      // the checkpoint's INT4 tensors
  // tensor / expert parallelism: name -> (the whole tensor's shape, this rank's slice of it)
  std::map<std::string, std::pair<std::vector<int64_t>, ShardSlice>> slices;
  // an untied lm_head split by vocabulary rows over the tensor-parallel ranks (whose logits CudaModel
  // gathers in rows of 8-value multiples); a tied one is the whole embedding on every rank
  const bool split_head = o.full && o.shard.tp > 1 && !c.tie_word_embeddings && (V / o.shard.tp) % 8 == 0;
  if (o.full) {
    DS_CHECK(!q.fp8() && !q.int4(), "CUDA tensor/expert parallelism: quantized weights ({}) are not sharded yet",
             q.describe());
    ModelWeights<ShardSlice> sp = shard_plan(*o.full, o.shard);
    for_each_weight(*o.full, sp, [&](const TensorSpec& t, ShardSlice& x) {
      slices[t.name] = {t.shape, t.name == "lm_head.weight" && !split_head ? ShardSlice{} : x};
    });
  }
  // the shape of the rank's part of a tensor: its config's, except the shared expert's slice under expert
  // parallelism (the config keeps the routed experts' width; the shared expert is still split)
  auto rank_shape = [&slices](const TensorSpec& sp) {
    auto it = slices.find(sp.name);
    if (it == slices.end() || it->second.second.kind != ShardSlice::Kind::Part) return sp.shape;
    return sliced_shape(it->second.first, it->second.second);
  };
  if (!o.dummy) {
    ck.emplace(Checkpoint::open(o.model_dir));
    check_checkpoint(o.full ? *o.full : c, *ck);
    if (q.fp8() && !online) fp8_ck = find_quantized(c, *ck);
    if (q.int4()) int4_ck = find_int4(c, *ck);
  }
  std::map<std::string, TensorSpec> specs;
  for (auto& sp : weight_specs(c)) specs.emplace(sp.name, sp);
  const bool block = online || q.scales == Fp8Scales::Block;
  const Fp8Plan layout{true, block ? log2_of(q.block_n) : 0, block ? log2_of(q.block_k) : 31,
                       block && ctx.switches.fp8_cublas > 0};
  auto plan = [&](const std::vector<std::string>& names) {
    if (!q.fp8()) return Fp8Plan{};
    for (const auto& n : names) {
      const TensorSpec& sp = specs.at(n);
      if (sp.shape[1] % 16 != 0) return Fp8Plan{};
      if (online) {
        if (!online_fp8_candidate(c, sp)) return Fp8Plan{};
      } else {
        if (!fp8_on_device(sp) || (!o.dummy && !fp8_ck.count(n))) return Fp8Plan{};
        if (block && sp.shape[0] % q.block_n != 0) return Fp8Plan{};
      }
    }
    return layout;
  };
  // INT4 on the device: every component INT4 in the checkpoint (or dummy INT4) and rows of whole 32-weight
  // chunks; other INT4 tensors are dequantized at load
  auto int4_views = [&](int64_t cols, const std::vector<std::string>& names) {
    bool on = q.int4() && cols % 32 == 0 && (q.group_size == 32 || q.group_size == 128);
    for (const auto& n : names) on = on && (o.dummy || int4_ck.count(n));
    return on;
  };
  // a dense projection: FP8 (plan), INT4 with switches.int4_dense (the checkpoint's INT4 Linear weights, or every
  // one of dummy INT4 weights, as the W4A16 recipes quantize every Linear but lm_head and the routers; `tail_rows`
  // stay in the activation dtype), else the activation dtype
  auto take_mat = [&](WeightView& v, int64_t rows, int64_t cols, const std::vector<std::string>& names,
                      int64_t tail_rows = 0) {
    const Fp8Plan f = plan(names);
    if (f.on) pk.take_fp8(v, rows, cols, f, tail_rows);
    else if (ctx.switches.int4_dense && int4_views(cols, names)) {
      pk.take_int4(v, rows, cols, q.group_size, q.symmetric, tail_rows);
      ++w.int4_dense_matrices;
    }
    else pk.take(v, (rows + tail_rows) * cols);
  };
  // the experts' packed views: INT4 on the device whenever int4_views allows
  auto take_experts = [&](WeightView& v, int64_t rows, int64_t cols, const std::vector<std::string>& names) {
    if (int4_views(cols, names)) pk.take_int4(v, rows, cols, q.group_size, q.symmetric);
    else take_mat(v, rows, cols, names);
  };

  // ---- allocation ------------------------------------------------------------------------------
  pk.take(w.embed, V * hid);
  pk.take(w.final_norm, hid);
  pk.commit("embedding");
  w.lm_head_rows = V;
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    if (split_head) w.lm_head_rows = V / o.shard.tp;  // the rank's vocabulary rows
    pk.take(w.lm_head, w.lm_head_rows * hid);
    pk.commit("lm_head");
  }
  w.layers.resize(size_t(c.num_layers));
  const int64_t H = c.kda.num_heads, K = c.kda.head_dim, HK = H * K, W = c.kda.conv_kernel;
  const auto& m = c.mla;
  const int64_t Hm = m.num_heads, R = m.kv_lora_rank, dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim,
                dv = m.v_head_dim;
  const int64_t E = c.moe.num_experts, Ie = c.moe.intermediate_size;
  // expert parallelism: this rank's experts [e0, e0 + El) are packed as its experts 0..El-1, and the shared
  // expert's slice (split over the ranks) is a separate MLP of inter_sh columns
  const bool ep = o.full && o.shard.ep && o.shard.size > 1;
  const int64_t El = ep ? E / o.shard.size : E, e0 = ep ? o.shard.rank * El : 0;
  const int64_t inter_sh = int64_t(c.moe.intermediate_size) * c.moe.num_shared_experts / (ep ? o.shard.size : 1);
  for (int l = 0; l < c.num_layers; ++l) {
    auto& L = w.layers[size_t(l)];
    const std::string p = "model.layers." + std::to_string(l) + ".", a = p + "self_attn.";
    pk.take(L.input_norm, hid);
    pk.take(L.post_norm, hid);
    if (c.is_kda(l)) {
      auto& k = L.kda;
      const int64_t main_rows = 3 * HK + 2 * K;  // q | k | v | f_a | g_a; b and the padding stay high precision
      take_mat(k.in_proj, main_rows, hid,
               {a + "q_proj.weight", a + "k_proj.weight", a + "v_proj.weight", a + "f_a_proj.weight",
                a + "g_a_proj.weight"},
               kda_in_proj_rows(c) - main_rows);
      pk.take(k.conv, 3 * HK * W);
      pk.take(k.a_log, H);
      pk.take(k.dt_bias, HK);
      pk.take(k.f_b, HK * K);
      pk.take(k.g_b, HK * K);
      pk.take(k.o_norm, K);
      take_mat(k.o_proj, hid, HK, {a + "o_proj.weight"});
      pk.commit("KDA layer weights");
    } else {
      auto& x = L.mla;
      take_mat(x.in_proj, Hm * (dn + dr), hid, {a + "q_proj.weight"}, R + dr);  // kv_a_proj stays high precision
      pk.take(x.kv_a_norm, R);
      pk.take(x.kv_b, Hm * (dn + dv) * R);
      pk.take(x.w_uk_t, Hm * R * dn);
      take_mat(x.o_proj, hid, Hm * dv, {a + "o_proj.weight"});
      pk.commit("MLA layer weights");
    }
    auto& f = L.ffn;
    f.moe = c.is_moe(l);
    if (!f.moe) {
      f.inter = c.intermediate_size;
      const std::string mp = p + "mlp.";
      take_mat(f.gate_up, 2 * int64_t(f.inter), hid, {mp + "gate_proj.weight", mp + "up_proj.weight"});
      take_mat(f.down, hid, f.inter, {mp + "down_proj.weight"});
      pk.commit("MLP weights");
      continue;
    }
    const std::string b = p + "block_sparse_moe.", sh = b + "shared_experts.";
    f.shared_folded = c.moe.num_shared_experts == 1 && !ep;
    if (ep) {
      f.expert_begin = int(e0);
      f.local_experts = int(El);
    }
    int64_t groups = El + (f.shared_folded ? 1 : 0);
    pk.take(f.router, E * hid);
    pk.take(f.bias, E);
    if (c.moe.num_shared_experts > 0 && !f.shared_folded) {
      f.inter = int(inter_sh);
      take_mat(f.gate_up, 2 * int64_t(f.inter), hid, {sh + "gate_proj.weight", sh + "up_proj.weight"});
      take_mat(f.down, hid, f.inter, {sh + "down_proj.weight"});
      pk.commit("MoE router/shared weights");
    } else {
      pk.commit("MoE router weights");
    }
    std::vector<std::string> gu, dn_names;
    for (int64_t e = e0; e < e0 + El; ++e) {
      const std::string x = b + "experts." + std::to_string(e) + ".";
      gu.push_back(x + "w1.weight");
      gu.push_back(x + "w3.weight");
      dn_names.push_back(x + "w2.weight");
    }
    if (f.shared_folded) {
      gu.push_back(sh + "gate_proj.weight");
      gu.push_back(sh + "up_proj.weight");
      dn_names.push_back(sh + "down_proj.weight");
    }
    take_experts(f.experts_gate_up, groups * 2 * Ie, hid, gu);
    take_experts(f.experts_down, groups * hid, Ie, dn_names);
    pk.commit("MoE expert weights");
  }

  // the dequantization scratch of the large-batch path: the largest dense FP8 product (experts: the
  // shared expert's slice, which run_mlp multiplies densely)
  int64_t scratch = 0;
  auto need = [&](const WeightView& v, int64_t elems) {
    if (v.fp8() || v.int4()) scratch = std::max(scratch, elems);
  };
  for (int l = 0; l < c.num_layers; ++l) {
    const auto& L = w.layers[size_t(l)];
    need(L.kda.in_proj, int64_t(L.kda.in_proj.tail_row0) * hid);
    need(L.kda.o_proj, hid * HK);
    need(L.mla.in_proj, int64_t(L.mla.in_proj.tail_row0) * hid);
    need(L.mla.o_proj, hid * Hm * dv);
    need(L.ffn.gate_up, 2 * int64_t(L.ffn.inter) * hid);
    need(L.ffn.down, hid * L.ffn.inter);
    need(L.ffn.experts_gate_up, 2 * Ie * hid);
    need(L.ffn.experts_down, hid * Ie);
  }
  if (scratch > 0) {
    WeightView sv;
    pk.take(sv, scratch);
    pk.commit("FP8 dequantization scratch");
    w.dequant_scratch = mut(sv);
  }

  // ---- destinations of the checkpoint's tensors ----------------------------------------------------
  ModelWeights<Dest> d;
  for_each_weight(c, d, [](const TensorSpec&, Dest&) {});
  // each destination in its WeightView's dtype (fp32 vectors: F32); rows past a quantized view's tail_row0 (FP8 or
  // INT4) in its tail, in the activation dtype
  auto at = [dt](const WeightView& v, int64_t elem_off) {
    if (v.tail && elem_off / v.cols >= v.tail_row0) {
      const int64_t tail_elems = (elem_off / v.cols - v.tail_row0) * v.cols;
      return Dest{static_cast<char*>(const_cast<void*>(v.tail)) + tail_elems * int64_t(dtype_size(dt)), dt};
    }
    if (v.int4()) {  // whole rows of an INT4 view: nibbles, scales, zero points
      const WeightView x = v.at(elem_off);
      Dest d{mut(x), DType::U8, const_cast<float*>(x.scale), v.cols, v.scale_ld, 0, v.scale_k_shift};
      d.zero = const_cast<float*>(x.zero);
      return d;
    }
    if (!v.fp8()) return Dest{mut(v.at(elem_off)), v.dtype};
    const int64_t row = elem_off / v.cols;
    Dest x{static_cast<char*>(mut(v)) + elem_off, DType::F8_E4M3};
    x.scale = const_cast<float*>(v.scale) + (row >> v.scale_row_shift) * v.scale_ld;
    x.K = v.cols;
    x.ld = v.scale_ld;
    x.rs = v.scale_row_shift;
    x.ks = v.scale_k_shift;
    return x;
  };
  auto at32 = [](float* p, int64_t elem_off) { return Dest{p + elem_off, DType::F32}; };
  d.embed = at(w.embed, 0);
  d.final_norm = at(w.final_norm, 0);
  if (!c.tie_word_embeddings) d.lm_head = at(w.lm_head, 0);
  for (int l = 0; l < c.num_layers; ++l) {
    auto& L = w.layers[size_t(l)];
    auto& D = d.layers[size_t(l)];
    D.input_norm = at(L.input_norm, 0);
    D.post_norm = at(L.post_norm, 0);
    if (c.is_kda(l)) {
      auto& k = L.kda;
      auto& x = D.kda;
      x.q_proj = at(k.in_proj, 0);
      x.k_proj = at(k.in_proj, HK * hid);
      x.v_proj = at(k.in_proj, 2 * HK * hid);
      x.f_a_proj = at(k.in_proj, 3 * HK * hid);
      x.g_a_proj = at(k.in_proj, (3 * HK + K) * hid);
      x.b_proj = at(k.in_proj, (3 * HK + 2 * K) * hid);
      x.q_conv = at(k.conv, 0);
      x.k_conv = at(k.conv, HK * W);
      x.v_conv = at(k.conv, 2 * HK * W);
      x.a_log = at32(k.a_log, 0);
      x.dt_bias = at32(k.dt_bias, 0);
      x.f_b_proj = at(k.f_b, 0);
      x.g_b_proj = at(k.g_b, 0);
      x.o_norm = at(k.o_norm, 0);
      x.o_proj = at(k.o_proj, 0);
    } else {
      auto& a = L.mla;
      auto& x = D.mla;
      x.q_proj = at(a.in_proj, 0);
      x.kv_a_proj = at(a.in_proj, Hm * (dn + dr) * hid);
      x.kv_a_norm = at(a.kv_a_norm, 0);
      x.kv_b_proj = at(a.kv_b, 0);
      x.o_proj = at(a.o_proj, 0);
    }
    auto& f = L.ffn;
    if (!f.moe) {
      D.mlp.gate = at(f.gate_up, 0);
      D.mlp.up = at(f.gate_up, int64_t(f.inter) * hid);
      D.mlp.down = at(f.down, 0);
      continue;
    }
    D.moe.router = at(f.router, 0);
    D.moe.bias = at32(f.bias, 0);
    for (int64_t e = e0; e < e0 + El; ++e) {  // (another rank's experts keep no destination: skipped)
      auto& x = D.moe.experts[size_t(e)];
      const int64_t le = e - e0;
      x.gate = at(f.experts_gate_up, le * 2 * Ie * hid);
      x.up = at(f.experts_gate_up, (le * 2 + 1) * Ie * hid);
      x.down = at(f.experts_down, le * hid * Ie);
    }
    if (f.shared_folded) {
      D.moe.shared.gate = at(f.experts_gate_up, El * 2 * Ie * hid);
      D.moe.shared.up = at(f.experts_gate_up, (El * 2 + 1) * Ie * hid);
      D.moe.shared.down = at(f.experts_down, El * hid * Ie);
    } else if (c.moe.num_shared_experts > 0) {
      D.moe.shared.gate = at(f.gate_up, 0);
      D.moe.shared.up = at(f.gate_up, int64_t(f.inter) * hid);
      D.moe.shared.down = at(f.down, 0);
    }
  }
  w.format = std::string(dtype_name(dt));
  if (w.fp8_matrices > 0)
    w.format = fmt::format("{} ({} packed matrices, {:.2f} GiB + {:.1f} MiB scales) + {}", q.describe(), w.fp8_matrices,
                           w.fp8_bytes / 1073741824.0, w.scale_bytes / 1048576.0, dtype_name(dt));
  if (w.int4_matrices > 0)
    w.format = fmt::format("{} {} ({} packed matrices, {:.2f} GiB + {:.1f} MiB scales/zeros) + {}", q.describe(),
                           w.int4_dense_matrices > 0
                               ? fmt::format("experts and {} dense projections", w.int4_dense_matrices)
                               : std::string("experts"),
                           w.int4_matrices, w.int4_bytes / 1073741824.0, w.int4_scale_bytes / 1048576.0, dtype_name(dt));
  if (q.int4() && !int4_ck.empty())
    w.format += fmt::format(" (the checkpoint's other INT4 weights dequantized at load{})",
                            ctx.switches.int4_dense ? "" : "; DELTASERVE_CUDA_INT4_DENSE=1 keeps the dense ones in INT4");
  spdlog::info("CUDA weights: {:.2f} GiB on the device ({}, {})", w.bytes / 1073741824.0, w.format,
               o.dummy ? "dummy" : o.model_dir);

  // ---- fill ----------------------------------------------------------------------------------------
  for (auto& L : w.layers) {  // the padding rows of the KDA input projection stay zero
    const WeightView& v = L.kda.in_proj;
    if (!v) continue;
    if (v.tail)
      DS_CUDA_CHECK(cudaMemsetAsync(const_cast<void*>(v.tail), 0,
                                    size_t((kda_in_proj_rows(c) - v.tail_row0) * hid) * dtype_size(dt), s));
    else
      DS_CUDA_CHECK(cudaMemsetAsync(mut(v), 0, size_t(kda_in_proj_rows(c) * hid) * dtype_size(dt), s));
  }
  if (o.dummy) {
    Uploader small(ctx);
    uint64_t index = 0;
    for_each_weight(c, d, [&](const TensorSpec& sp, Dest& x) {
      const uint64_t seed = mix(o.seed ^ mix(++index));  // (counted for every tensor: the ranks' seeds agree)
      if (!x.ptr) return;                                  // another rank's expert (expert parallelism)
      const int64_t n = numel(rank_shape(sp));
      const std::string& name = sp.name;
      const float amp = 0.02f * std::sqrt(3.f);
      // a rank's part: the whole tensor's element indices (FillIndex)
      FillIndex ix;
      if (auto it = slices.find(name); it != slices.end()) {
        const ShardSlice& sl = it->second.second;
        if (sl.kind == ShardSlice::Kind::Part) {
          const std::vector<int64_t>& whole = it->second.first;
          int64_t inner = 1;
          for (size_t a = size_t(sl.axis) + 1; a < whole.size(); ++a) inner *= whole[a];
          ix = FillIndex{sl.count * inner, whole[size_t(sl.axis)] * inner, sl.begin * inner};
        }
      }
      if (x.dtype == DType::U8) {  // INT4 (dummy weights: symmetric)
        Int4Matrix im{static_cast<uint8_t*>(x.ptr), x.scale, nullptr, sp.shape[0], sp.shape[1], x.ld, x.ks};
        run_fill_int4(im, sp.shape[0] * x.ld, amp, seed, ctx);
        // (a checkpoint's config with zero points: the symmetric offset, not what the allocation held)
        if (x.zero) run_fill_value(x.zero, DType::F32, sp.shape[0] * x.ld, 8.f, ctx);
      } else if (x.dtype == DType::F8_E4M3) {
        Fp8Matrix fm{static_cast<uint8_t*>(x.ptr), x.scale, sp.shape[0], sp.shape[1], x.ld, x.rs, x.ks};
        run_fill_fp8(fm, ((sp.shape[0] + (int64_t(1) << x.rs) - 1) >> x.rs) * x.ld, amp, seed, ctx);
      } else if (ends_with(name, "norm.weight") || ends_with(name, "layernorm.weight")) {
        run_fill_value(x.ptr, x.dtype, n, 1.f, ctx);
      } else if (ends_with(name, "e_score_correction_bias")) {
        run_fill_value(x.ptr, x.dtype, n, 0.f, ctx);
      } else if (ends_with(name, "A_log") || ends_with(name, "dt_bias")) {
        std::vector<float> v(static_cast<size_t>(n));
        bool alog = ends_with(name, "A_log");
        for (int64_t i = 0; i < n; ++i) {
          float u = float(mix(seed + uint64_t(ix.whole(i))) >> 40) * (1.0f / 16777216.0f);
          v[size_t(i)] = alog ? std::log(1.f + 15.f * u) : -4.f + 2.f * u;
        }
        small.upload_host_f32(v, x);
      } else if (ends_with(name, "conv1d.weight")) {
        run_fill_uniform(x.ptr, x.dtype, n, -0.5f, 0.5f, seed, ctx, ix);
      } else {
        run_fill_uniform(x.ptr, x.dtype, n, -amp, amp, seed, ctx, ix);
      }
    });
  } else {
    Uploader up(ctx);
    size_t total = ck->total_bytes(), next_report = total / 10;
    for_each_weight(c, d, [&](const TensorSpec& sp, Dest& x) {
      if (!x.ptr) return;  // another rank's expert (expert parallelism)
      if (auto i4 = int4_ck.find(sp.name); i4 != int4_ck.end() && x.dtype == DType::U8) {  // INT4 on the device
        const Int4Tensor& t4 = i4->second;
        DS_CUDA_CHECK(cudaMemcpyAsync(x.ptr, t4.packed->data, t4.packed->nbytes, cudaMemcpyHostToDevice, s));
        DS_CUDA_CHECK(cudaStreamSynchronize(s));
        up.upload_host_f32(int4_scales_f32(t4), Dest{x.scale, DType::F32});
        if (x.zero) up.upload_host_f32(int4_zeros_f32(t4), Dest{x.zero, DType::F32});
        return;
      }
      if (auto i4 = int4_ck.find(sp.name); i4 != int4_ck.end()) {  // INT4 in the checkpoint: dequantized
        std::vector<float> v(size_t(i4->second.rows * i4->second.cols));
        dequantize_int4(i4->second, v.data());
        up.upload_host_f32(v, x);
        return;
      }
      const TensorInfo* tp = &ck->get(sp.name);
      TensorInfo part;              // this rank's slice of it (tensor / expert parallelism)
      std::vector<char> part_bytes;
      if (auto it = slices.find(sp.name); it != slices.end() && it->second.second.kind != ShardSlice::Kind::Whole) {
        const ShardSlice& sl = it->second.second;
        DS_CHECK(sl.kind == ShardSlice::Kind::Part, "CUDA weights: {}: another rank's expert has a destination",
                 sp.name);
        part = *tp;
        part.shape = sliced_shape(tp->shape, sl);
        DS_CHECK(part.shape == rank_shape(sp), "CUDA weights: {}: the rank's slice is {}, its config asks for {}",
                 sp.name, shape_str(part.shape), shape_str(rank_shape(sp)));
        part_bytes.resize(size_t(numel(part.shape)) * dtype_size(tp->dtype));
        copy_slice(tp->data, tp->shape, dtype_size(tp->dtype), sl, part_bytes.data());
        part.data = part_bytes.data();
        part.nbytes = part_bytes.size();
        tp = &part;
      }
      const TensorInfo& t = *tp;
      auto fq = fp8_ck.find(sp.name);
      if (x.dtype == DType::F8_E4M3 && fq != fp8_ck.end()) {  // FP8 in the checkpoint and on the device
        up.upload(t, Dest{x.ptr, DType::F8_E4M3});
        // (rows of x.ld: padded with Fp8Plan::pad4)
        const int64_t kb = x.ks >= 31 ? 1 : (x.K + (int64_t(1) << x.ks) - 1) >> x.ks;
        up.upload_host_f32(pad_scale_rows(fp8_scales_f32(q, fq->second), kb, x.ld), Dest{x.scale, DType::F32});
      } else if (x.dtype == DType::F8_E4M3) {  // online: quantized on the GPU
        up.upload_quantized(t, x);
      } else if (fq != fp8_ck.end()) {  // FP8 in the checkpoint, high precision on the device
        std::vector<float> v(size_t(t.numel()));
        dequantize_fp8(q, fq->second, v.data());
        up.upload_host_f32(v, x);
      } else {
        // per tensor: the checkpoint's dtype must convert to the dtype of the tensor's WeightView
        DS_CHECK(loadable_as(t.dtype, x.dtype), "CUDA weights: {} is {} in the checkpoint, which cannot be loaded as {}",
                 sp.name, dtype_name(t.dtype), dtype_name(x.dtype));
        up.upload(t, x);
      }
      if (up.bytes() >= next_report && total > (size_t(1) << 30)) {
        spdlog::info("CUDA weights: uploaded {:.1f} of {:.1f} GiB", up.bytes() / 1073741824.0, total / 1073741824.0);
        next_report += total / 10;
      }
    });
  }
  // derived tensors: W_UK^h transposed per head (rows [h(dn+dv), h(dn+dv)+dn) of kv_b)
  for (auto& L : w.layers)
    if (L.mla.kv_b)
      run_transpose(L.mla.kv_b.ptr, R, (dn + dv) * R, mut(L.mla.w_uk_t), dn, R * dn, int(dn), int(R), int(Hm), dt, ctx);
  DS_CUDA_CHECK(cudaStreamSynchronize(s));
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  spdlog::info("CUDA weights: ready in {:.2f} s", secs);
  return w;
}

}  // namespace ds::gpu
