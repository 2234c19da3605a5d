#include "cuda/device_weights.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/stream.h"
#include "model/safetensors.h"
#include "model/weights.h"

namespace ds::gpu {
namespace {

struct Dest {
  void* ptr = nullptr;
  DType dtype = DType::BF16;
};

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

// Copies host tensors to the device through two pinned staging buffers, converting dtypes on the GPU.
class Uploader {
 public:
  explicit Uploader(const DeviceContext& ctx) : ctx_(ctx), s_(ctx.stream) {
    for (int i = 0; i < 2; ++i) {
      pinned_[i] = PinnedBuffer(kChunk);
      staging_[i] = DeviceBuffer(kChunk, "weight staging");
      DS_CUDA_CHECK(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming));
    }
  }
  ~Uploader() {
    cudaStreamSynchronize(s_);
    for (auto e : done_)
      if (e) cudaEventDestroy(e);
  }
  void upload(const TensorInfo& t, const Dest& d) {
    std::vector<float> tmp;
    const char* src = static_cast<const char*>(t.data);
    DType st = t.dtype;
    if (st != DType::BF16 && st != DType::F32) {  // F16 (rare): widen on the host
      tmp.resize(size_t(t.numel()));
      convert_to_f32(st, t.data, tmp.data(), tmp.size());
      src = reinterpret_cast<const char*>(tmp.data());
      st = DType::F32;
    }
    size_t es = dtype_size(st), ed = dtype_size(d.dtype);
    int64_t n = t.numel(), per = int64_t(kChunk / es);
    for (int64_t i = 0; i < n; i += per) {
      int64_t m = std::min(per, n - i);
      int b = next_++ & 1;
      DS_CUDA_CHECK(cudaEventSynchronize(done_[b]));
      std::memcpy(pinned_[b].data(), src + i * es, size_t(m) * es);
      char* dst = static_cast<char*>(d.ptr) + i * ed;
      if (st == d.dtype) {
        DS_CUDA_CHECK(cudaMemcpyAsync(dst, pinned_[b].data(), size_t(m) * es, cudaMemcpyHostToDevice, s_));
      } else {
        DS_CUDA_CHECK(cudaMemcpyAsync(staging_[b].data(), pinned_[b].data(), size_t(m) * es, cudaMemcpyHostToDevice, s_));
        run_convert(staging_[b].data(), st, dst, d.dtype, m, ctx_);
      }
      DS_CUDA_CHECK(cudaEventRecord(done_[b], s_));
    }
    bytes_ += t.nbytes;
  }
  void upload_host_f32(const std::vector<float>& v, const Dest& d) {
    TensorInfo t;
    t.dtype = DType::F32;
    t.shape = {int64_t(v.size())};
    t.data = v.data();
    t.nbytes = v.size() * 4;
    upload(t, d);
    DS_CUDA_CHECK(cudaStreamSynchronize(s_));  // `v` is a temporary of the caller
  }
  size_t bytes() const { return bytes_; }

 private:
  static constexpr size_t kChunk = size_t(64) << 20;
  DeviceContext ctx_;
  cudaStream_t s_;
  PinnedBuffer pinned_[2];
  DeviceBuffer staging_[2];
  cudaEvent_t done_[2] = {nullptr, nullptr};
  int next_ = 0;
  size_t bytes_ = 0;
};

// Carves the packed tensors out of a few large allocations: take() hands out offsets, commit()
// allocates the group and turns them into pointers.
class Packer {
 public:
  Packer(DeviceWeights& w, DType dt) : w_(w), dt_(dt) {}
  void take(WeightView& v, int64_t elems) {
    v.dtype = dt_;
    v.ptr = reserve(elems, dt_);
    pending_.push_back(&v.ptr);
  }
  void take(float*& p, int64_t elems) {
    p = static_cast<float*>(reserve(elems, DType::F32));
    pending_.push_back(static_cast<const void**>(static_cast<void*>(&p)));
  }
  void commit(const char* what) {
    w_.storage.emplace_back(group_bytes_, what);
    w_.bytes += group_bytes_;
    char* base = w_.storage.back().as<char>();
    for (const void** p : pending_) *p = base + reinterpret_cast<size_t>(*p);
    pending_.clear();
    group_bytes_ = 0;
  }

 private:
  void* reserve(int64_t elems, DType t) {
    size_t off = (group_bytes_ + 255) / 256 * 256;
    group_bytes_ = off + size_t(elems) * dtype_size(t);
    return reinterpret_cast<void*>(off);  // an offset until commit()
  }
  DeviceWeights& w_;
  DType dt_;
  size_t group_bytes_ = 0;
  std::vector<const void**> pending_;
};

// The conversions Uploader::upload performs: BF16/F16/F32 into BF16 or F32.
bool loadable_as(DType from, DType to) {
  return (from == DType::BF16 || from == DType::F16 || from == DType::F32) && (to == DType::BF16 || to == DType::F32);
}

void* mut(const WeightView& v) { return const_cast<void*>(v.ptr); }

}  // namespace

void WeightView::require(DType act, const std::string& what) const {
  DS_CHECK(ptr != nullptr, "CUDA model: weight {} is missing", what);
  DS_CHECK(dtype == act && scale == nullptr && layout == WeightLayout::RowMajor,
           "CUDA model: weight {} is {}{} but the kernels need {} weights with {} activations (other weight dtypes "
           "are not supported yet)",
           what, dtype_name(dtype), scale ? " with scales" : "", dtype_name(act), dtype_name(act));
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

  // ---- allocation ------------------------------------------------------------------------------
  pk.take(w.embed, V * hid);
  pk.take(w.final_norm, hid);
  pk.commit("embedding");
  if (c.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    pk.take(w.lm_head, V * hid);
    pk.commit("lm_head");
  }
  w.layers.resize(size_t(c.num_layers));
  const int64_t H = c.kda.num_heads, K = c.kda.head_dim, HK = H * K, W = c.kda.conv_kernel;
  const auto& m = c.mla;
  const int64_t Hm = m.num_heads, R = m.kv_lora_rank, dn = m.qk_nope_head_dim, dr = m.qk_rope_head_dim,
                dv = m.v_head_dim;
  const int64_t E = c.moe.num_experts, Ie = c.moe.intermediate_size;
  for (int l = 0; l < c.num_layers; ++l) {
    auto& L = w.layers[size_t(l)];
    pk.take(L.input_norm, hid);
    pk.take(L.post_norm, hid);
    if (c.is_kda(l)) {
      auto& k = L.kda;
      pk.take(k.in_proj, kda_in_proj_rows(c) * hid);
      pk.take(k.conv, 3 * HK * W);
      pk.take(k.a_log, H);
      pk.take(k.dt_bias, HK);
      pk.take(k.f_b, HK * K);
      pk.take(k.g_b, HK * K);
      pk.take(k.o_norm, K);
      pk.take(k.o_proj, hid * HK);
      pk.commit("KDA layer weights");
    } else {
      auto& a = L.mla;
      pk.take(a.in_proj, (Hm * (dn + dr) + R + dr) * hid);
      pk.take(a.kv_a_norm, R);
      pk.take(a.kv_b, Hm * (dn + dv) * R);
      pk.take(a.w_uk_t, Hm * R * dn);
      pk.take(a.o_proj, hid * Hm * dv);
      pk.commit("MLA layer weights");
    }
    auto& f = L.ffn;
    f.moe = c.is_moe(l);
    if (!f.moe) {
      f.inter = c.intermediate_size;
      pk.take(f.gate_up, 2 * int64_t(f.inter) * hid);
      pk.take(f.down, hid * f.inter);
      pk.commit("MLP weights");
      continue;
    }
    f.shared_folded = c.moe.num_shared_experts == 1;
    int64_t groups = E + (f.shared_folded ? 1 : 0);
    pk.take(f.router, E * hid);
    pk.take(f.bias, E);
    if (c.moe.num_shared_experts > 1) {
      f.inter = int(Ie * c.moe.num_shared_experts);
      pk.take(f.gate_up, 2 * int64_t(f.inter) * hid);
      pk.take(f.down, hid * f.inter);
      pk.commit("MoE router/shared weights");
    } else {
      pk.commit("MoE router weights");
    }
    pk.take(f.experts_gate_up, groups * 2 * Ie * hid);
    pk.take(f.experts_down, groups * hid * Ie);
    pk.commit("MoE expert weights");
  }

  // ---- destinations of the checkpoint's tensors ----------------------------------------------------
  ModelWeights<Dest> d;
  for_each_weight(c, d, [](const TensorSpec&, Dest&) {});
  // each destination in its WeightView's dtype (fp32 vectors: F32)
  auto at = [](const WeightView& v, int64_t elem_off) { return Dest{mut(v.at(elem_off)), v.dtype}; };
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
    for (int64_t e = 0; e < E; ++e) {
      auto& x = D.moe.experts[size_t(e)];
      x.gate = at(f.experts_gate_up, e * 2 * Ie * hid);
      x.up = at(f.experts_gate_up, (e * 2 + 1) * Ie * hid);
      x.down = at(f.experts_down, e * hid * Ie);
    }
    if (f.shared_folded) {
      D.moe.shared.gate = at(f.experts_gate_up, E * 2 * Ie * hid);
      D.moe.shared.up = at(f.experts_gate_up, (E * 2 + 1) * Ie * hid);
      D.moe.shared.down = at(f.experts_down, E * hid * Ie);
    } else if (c.moe.num_shared_experts > 1) {
      D.moe.shared.gate = at(f.gate_up, 0);
      D.moe.shared.up = at(f.gate_up, int64_t(f.inter) * hid);
      D.moe.shared.down = at(f.down, 0);
    }
  }
  spdlog::info("CUDA weights: {:.2f} GiB on the device ({}, {})", w.bytes / 1073741824.0, dtype_name(dt),
               o.dummy ? "dummy" : o.model_dir);

  // ---- fill ----------------------------------------------------------------------------------------
  if (o.dummy) {
    for (auto& L : w.layers)
      if (L.kda.in_proj) DS_CUDA_CHECK(cudaMemsetAsync(mut(L.kda.in_proj), 0, size_t(kda_in_proj_rows(c) * hid) * dtype_size(dt), s));
    Uploader small(ctx);
    uint64_t index = 0;
    for_each_weight(c, d, [&](const TensorSpec& sp, Dest& x) {
      const int64_t n = numel(sp.shape);
      const uint64_t seed = mix(o.seed ^ mix(++index));
      const std::string& name = sp.name;
      if (ends_with(name, "norm.weight") || ends_with(name, "layernorm.weight")) {
        run_fill_value(x.ptr, x.dtype, n, 1.f, ctx);
      } else if (ends_with(name, "e_score_correction_bias")) {
        run_fill_value(x.ptr, x.dtype, n, 0.f, ctx);
      } else if (ends_with(name, "A_log") || ends_with(name, "dt_bias")) {
        std::vector<float> v(static_cast<size_t>(n));
        bool alog = ends_with(name, "A_log");
        for (int64_t i = 0; i < n; ++i) {
          float u = float(mix(seed + uint64_t(i)) >> 40) * (1.0f / 16777216.0f);
          v[size_t(i)] = alog ? std::log(1.f + 15.f * u) : -4.f + 2.f * u;
        }
        small.upload_host_f32(v, x);
      } else if (ends_with(name, "conv1d.weight")) {
        run_fill_uniform(x.ptr, x.dtype, n, -0.5f, 0.5f, seed, ctx);
      } else {
        float a = 0.02f * std::sqrt(3.f);
        run_fill_uniform(x.ptr, x.dtype, n, -a, a, seed, ctx);
      }
    });
  } else {
    for (auto& L : w.layers)  // the padding rows of the KDA input projection stay zero
      if (L.kda.in_proj) DS_CUDA_CHECK(cudaMemsetAsync(mut(L.kda.in_proj), 0, size_t(kda_in_proj_rows(c) * hid) * dtype_size(dt), s));
    Checkpoint ck = Checkpoint::open(o.model_dir);
    check_checkpoint(c, ck);
    Uploader up(ctx);
    size_t total = ck.total_bytes(), next_report = total / 10;
    for_each_weight(c, d, [&](const TensorSpec& sp, Dest& x) {
      const TensorInfo& t = ck.get(sp.name);
      // per tensor: the checkpoint's dtype must convert to the dtype of the tensor's WeightView
      DS_CHECK(loadable_as(t.dtype, x.dtype), "CUDA weights: {} is {} in the checkpoint, which cannot be loaded as {}",
               sp.name, dtype_name(t.dtype), dtype_name(x.dtype));
      up.upload(t, x);
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
