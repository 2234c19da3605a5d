#include "cuda/weight_upload.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/kernels/elementwise.h"
#include "cuda/kernels/fp8.h"

namespace ds::gpu {

Uploader::Uploader(const DeviceContext& ctx) : ctx_(ctx), s_(ctx.stream) {
  for (int i = 0; i < 2; ++i) {
    pinned_[i] = PinnedBuffer(kChunk);
    staging_[i] = DeviceBuffer(kChunk, "weight staging");
    DS_CUDA_CHECK(cudaEventCreateWithFlags(&done_[i], cudaEventDisableTiming));
  }
}

Uploader::~Uploader() {
  cudaStreamSynchronize(s_);
  for (auto e : done_)
    if (e) cudaEventDestroy(e);
}

int Uploader::stage(const char* src, size_t bytes) {
  const int b = next_++ & 1;
  DS_CUDA_CHECK(cudaEventSynchronize(done_[b]));
  std::memcpy(pinned_[b].data(), src, bytes);
  return b;
}

void Uploader::upload(const TensorInfo& t, const Dest& d) {
  std::vector<float> tmp;
  const char* src = static_cast<const char*>(t.data);
  DType st = t.dtype;
  if (st != DType::BF16 && st != DType::F32 && st != d.dtype) {  // F16 (rare): widen on the host
    tmp.resize(size_t(t.numel()));
    convert_to_f32(st, t.data, tmp.data(), tmp.size());
    src = reinterpret_cast<const char*>(tmp.data());
    st = DType::F32;
  }
  const size_t es = dtype_size(st), ed = dtype_size(d.dtype);
  const int64_t n = t.numel(), per = int64_t(kChunk / es);
  for (int64_t i = 0; i < n; i += per) {
    const int64_t m = std::min(per, n - i);
    const int b = stage(src + i * es, size_t(m) * es);
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

void Uploader::upload_quantized(const TensorInfo& t, const Dest& d) {
  std::vector<float> tmp;
  const char* src = static_cast<const char*>(t.data);
  DType st = t.dtype;
  if (st != DType::BF16 && st != DType::F32) {
    tmp.resize(size_t(t.numel()));
    convert_to_f32(st, t.data, tmp.data(), tmp.size());
    src = reinterpret_cast<const char*>(tmp.data());
    st = DType::F32;
  }
  const size_t es = dtype_size(st);
  const int64_t K = d.K, rows = t.numel() / K, bn = int64_t(1) << d.rs;
  const int64_t chunk_rows = int64_t(kChunk / (size_t(K) * es)) / bn * bn;
  DS_CHECK(chunk_rows > 0, "CUDA weights: {} is too wide to quantize in {} MiB blocks", t.name, kChunk >> 20);
  for (int64_t r = 0; r < rows; r += chunk_rows) {
    const int64_t m = std::min(chunk_rows, rows - r);
    const size_t bytes = size_t(m * K) * es;
    const int b = stage(src + size_t(r * K) * es, bytes);
    DS_CUDA_CHECK(cudaMemcpyAsync(staging_[b].data(), pinned_[b].data(), bytes, cudaMemcpyHostToDevice, s_));
    Fp8Matrix fm;
    fm.q = static_cast<uint8_t*>(d.ptr) + r * K;
    fm.scale = d.scale + (r >> d.rs) * d.ld;
    fm.rows = m;
    fm.K = K;
    fm.ld = d.ld;
    fm.row_shift = d.rs;
    fm.k_shift = d.ks;
    run_quantize_fp8(staging_[b].data(), st, fm, ctx_);
    DS_CUDA_CHECK(cudaEventRecord(done_[b], s_));
  }
  bytes_ += t.nbytes;
}

void Uploader::upload_host_f32(const std::vector<float>& v, const Dest& d) {
  TensorInfo t;
  t.dtype = DType::F32;
  t.shape = {int64_t(v.size())};
  t.data = v.data();
  t.nbytes = v.size() * 4;
  upload(t, d);
  DS_CUDA_CHECK(cudaStreamSynchronize(s_));
}

void Packer::take(WeightView& v, int64_t elems) {
  v.dtype = dt_;
  v.ptr = reserve(elems, dt_);
  pend(&v.ptr);
}

void Packer::take(float*& p, int64_t elems) {
  p = static_cast<float*>(reserve(elems, DType::F32));
  pend(static_cast<const void**>(static_cast<void*>(&p)));
}

void Packer::take_fp8(WeightView& v, int64_t rows, int64_t cols, const Fp8Plan& f, int64_t tail_rows) {
  v.dtype = DType::F8_E4M3;
  v.cols = cols;
  v.scale_row_shift = f.rs;
  v.scale_k_shift = f.ks;
  v.scale_ld = f.ks >= 31 ? 1 : (cols + (int64_t(1) << f.ks) - 1) >> f.ks;
  if (f.pad4 && f.ks < 31) v.scale_ld = (v.scale_ld + 3) / 4 * 4;
  const int64_t scale_rows = (rows + (int64_t(1) << f.rs) - 1) >> f.rs;
  v.ptr = reserve(rows * cols, DType::F8_E4M3);
  pend(&v.ptr);
  v.scale = static_cast<const float*>(reserve(scale_rows * v.scale_ld, DType::F32));
  pend(static_cast<const void**>(static_cast<void*>(&v.scale)));
  w_.fp8_bytes += size_t(rows * cols);
  w_.scale_bytes += size_t(scale_rows * v.scale_ld) * 4;
  ++w_.fp8_matrices;
  take_tail(v, rows, cols, tail_rows);
}

void Packer::take_int4(WeightView& v, int64_t rows, int64_t cols, int group, bool symmetric, int64_t tail_rows) {
  v.dtype = DType::U8;
  v.packed_int4 = true;
  v.cols = cols;
  v.scale_row_shift = 0;
  v.scale_k_shift = 0;
  while ((1 << v.scale_k_shift) < group) ++v.scale_k_shift;
  v.scale_ld = (cols + group - 1) / group;
  v.ptr = reserve(rows * cols / 2, DType::U8);
  pend(&v.ptr);
  v.scale = static_cast<const float*>(reserve(rows * v.scale_ld, DType::F32));
  pend(static_cast<const void**>(static_cast<void*>(&v.scale)));
  if (!symmetric) {
    v.zero = static_cast<const float*>(reserve(rows * v.scale_ld, DType::F32));
    pend(static_cast<const void**>(static_cast<void*>(&v.zero)));
  }
  w_.int4_bytes += size_t(rows * cols / 2);
  w_.int4_scale_bytes += size_t(rows * v.scale_ld) * 4 * (symmetric ? 1 : 2);
  ++w_.int4_matrices;
  take_tail(v, rows, cols, tail_rows);
}

void Packer::take_tail(WeightView& v, int64_t rows, int64_t cols, int64_t tail_rows) {
  if (tail_rows <= 0) return;
  v.tail = reserve(tail_rows * cols, dt_);
  v.tail_row0 = int(rows);
  pend(&v.tail);
}

void Packer::commit(const char* what) {
  w_.storage.emplace_back(group_bytes_, what);
  w_.bytes += group_bytes_;
  char* base = w_.storage.back().as<char>();
  for (const void** p : pending_) *p = base + reinterpret_cast<size_t>(*p);
  pending_.clear();
  group_bytes_ = 0;
}

void* Packer::reserve(int64_t elems, DType t) {
  const size_t off = (group_bytes_ + 255) / 256 * 256;
  group_bytes_ = off + size_t(elems) * dtype_size(t);
  return reinterpret_cast<void*>(off);  // an offset until commit()
}

}  // namespace ds::gpu
