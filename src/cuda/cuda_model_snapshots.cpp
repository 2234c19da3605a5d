// CudaModel's side of prefix caching: the snapshot pool's size from the memory plan, and every
// snapshot save followed by its finiteness check (kernels/nonfinite.h), whose flags the backend reads
// after the step (StepResult::nonfinite_snapshots). A batch may hold saves alone (a finished request's
// state, ForwardBatch::saves_before): then nothing else runs.
#include <algorithm>

#include "core/error.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_model.h"

namespace ds::gpu {
namespace {

constexpr double kSnapshotShare = 0.2;  // of the cache budget, by default

}  // namespace

void CudaModel::allocate_save_flags() {
  // a step saves at most one snapshot per slice and one per slot before it: two per state slot
  if (caches_->shape().num_snapshots == 0) return;
  const size_t cap = size_t(2 * opt_.max_num_seqs + 2) * sizeof(int32_t);
  save_flags_ = DeviceBuffer(cap, "snapshot check flags");
  save_flags_host_ = PinnedBuffer(cap);
}

int CudaModel::snapshots_in_budget(double cache_budget, size_t per_snapshot) const {
  if (per_snapshot == 0 || cache_budget <= 0) return 0;
  const double gib = double(size_t(1) << 30);
  double bytes = opt_.snapshot_memory_gib > 0 ? opt_.snapshot_memory_gib * gib : kSnapshotShare * cache_budget;
  bytes = std::min(bytes, 0.9 * cache_budget);  // the MLA pages need room too
  return int(std::min(bytes / double(per_snapshot), 1e6));
}

void CudaModel::begin_saves(const ForwardBatch& b) {
  saved_.clear();
  size_t n = b.saves_before.size();
  for (const SeqSlice& s : b.seqs) n += s.save_snapshot >= 0;
  if (n == 0) return;
  const size_t bytes = n * sizeof(int32_t);
  DS_CHECK(bytes <= save_flags_.bytes(), "CUDA model: {} snapshot saves in one step (at most {})", n,
           save_flags_.bytes() / sizeof(int32_t));
  DS_CUDA_CHECK(cudaMemsetAsync(save_flags_.data(), 0, bytes, stream_));
}

void CudaModel::save_checked(int slot, int snapshot) {
  caches_->save_snapshot(slot, snapshot, ctx_);
  caches_->flag_nonfinite_snapshot(snapshot, save_flags_.as<int32_t>() + saved_.size(), ctx_);
  saved_.push_back(snapshot);
}

void CudaModel::forward_saves_only(const ForwardBatch& b) {
  fwd_start_.record(stream_);
  rows_ = 0;
  begin_saves(b);
  for (const SlotSave& v : b.saves_before) save_checked(v.slot, v.snapshot);
  fwd_end_.record(stream_);
}

float* CudaModel::debug_kda_state(int kda_layer, int slot) const {
  DS_CHECK(kda_layer >= 0 && kda_layer < cfg_.num_kda_layers() && slot >= 0 && slot < caches_->num_slots(),
           "debug_kda_state: layer {} / slot {} out of range", kda_layer, slot);
  return caches_->kda_state(kda_layer, slot);
}

std::vector<int32_t> CudaModel::take_nonfinite_snapshots() {
  std::vector<int32_t> bad;
  if (saved_.empty()) return bad;
  const size_t bytes = saved_.size() * sizeof(int32_t);
  DS_CUDA_CHECK(cudaMemcpyAsync(save_flags_host_.data(), save_flags_.data(), bytes, cudaMemcpyDeviceToHost, stream_));
  DS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  const auto* flags = static_cast<const int32_t*>(save_flags_host_.data());
  for (size_t i = 0; i < saved_.size(); ++i)
    if (flags[i]) bad.push_back(saved_[i]);
  saved_.clear();
  return bad;
}

}  // namespace ds::gpu
