// What CudaModel does at start-up after its memory plan, so that nothing allocates device memory while
// serving:
// - the CUDA graphs, all captured: one per (decode batch bucket, block-table stride) key that forward()
//   can replay, so no graph is instantiated while serving. Each is captured on a padding-only layout
//   (the scratch state slot and the scratch MLA page, DeviceCaches::pad_slot/pad_block), so no real
//   state is touched; a warm-up run before each capture settles cuBLASLt plans and lazily loaded
//   kernels, and each graph is uploaded to the device right away (cudaGraphUpload), not at its first
//   replay;
// - eager prefill forwards on the scratch slot and page at chunk sizes 2, 3, 4, 6, 8, 12, ... up to
//   max_tokens and (MLA expansion) key counts up to the planned key rows and one beyond (a context
//   attended piece by piece: the gather and merge kernels), so the prefill kernels and the
//   cuBLASLt kernels of these shapes are loaded (CUDA loads kernels lazily, into device memory) before
//   serving.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_model.h"
#include "cuda/layers/layer_step.h"

namespace ds::gpu {

void CudaModel::capture_graphs() {
  if (!opt_.switches.graphs) {
    spdlog::info("  CUDA graphs: off (decode steps run eagerly)");
    return;
  }
  const WorkspaceLimits& lim = ws_->plan().lim;
  const int bs = caches_->block_size();
  // the buckets forward() replays: graph_bucket(n) for n <= max_graph_batch, within the token budget
  std::vector<int> buckets;
  for (int n = 1; n <= opt_.max_graph_batch; ++n) {
    const int b = graph_bucket(n);
    if (b > opt_.max_tokens) break;
    if (buckets.empty() || buckets.back() != b) buckets.push_back(b);
  }
  // the strides: every power of two (from 16) up to that of the longest context (max_model_len), or
  // of graph_max_context when it is smaller
  const int64_t ctx_bound =
      opt_.switches.graph_max_context > 0 ? std::min<int64_t>(opt_.switches.graph_max_context, lim.max_context) : lim.max_context;
  const int max_stride = graph_stride((ctx_bound + bs - 1) / bs);
  std::vector<int> strides;
  for (int s = 16; s <= max_stride; s *= 2) strides.push_back(s);

  size_t free0 = 0, free1 = 0, total = 0;
  stream_.sync();
  DS_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  const auto t0 = std::chrono::steady_clock::now();
  size_t nodes = 0;
  for (int b : buckets)
    for (int s : strides) nodes += capture_graph(b, s);
  stream_.sync();
  DS_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mib = (double(free0) - double(free1)) / 1048576.0;
  if (buckets.empty()) {
    spdlog::info("  CUDA graphs: none (no decode bucket fits {} tokens per step; decode steps run eagerly)",
                 opt_.max_tokens);
    return;
  }
  spdlog::info("  CUDA graphs: {} captured in {:.1f} s, {:.1f} MiB with the kernels they load ({} nodes): decode "
               "batches {}..{} ({} buckets) x block-table widths {}..{} ({} strides: contexts up to {} tokens); a "
               "decode step beyond them runs eagerly",
               graphs_.size(), secs, mib, nodes, buckets.front(), buckets.back(), buckets.size(), strides.front(),
               strides.back(), strides.size(), int64_t(strides.back()) * bs);
}

std::vector<int> CudaModel::graph_buckets() const {
  std::vector<int> out;
  for (const auto& [key, g] : graphs_)
    if (out.empty() || out.back() != key.first) out.push_back(key.first);
  return out;
}

// Eager prefills of one sequence on the scratch slot and page (its block table repeats the scratch
// page: the positions overwrite each other there, which nothing reads).
void CudaModel::warm_up_prefill() {
  if (opt_.switches.reference_attention) return;  // a cross-checking switch: its kernels load on first use
  LayoutLimits lim = layout_limits();
  lim.num_slots += 1;  // the scratch slot and page are valid here
  lim.num_blocks += 1;
  const int bs = caches_->block_size();
  auto run = [&](int tokens, int64_t context) {
    ForwardBatch b;
    b.add(caches_->pad_slot(), context, std::vector<int32_t>(size_t(tokens), 0),
          std::vector<int32_t>(size_t((context + tokens + bs - 1) / bs), caches_->pad_block()));
    const BatchLayout p = layout_batch(b, lim);
    check_fits(p);
    run_layout(p);
  };
  size_t free0 = 0, free1 = 0, total = 0;
  stream_.sync();
  DS_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  const auto t0 = std::chrono::steady_clock::now();
  // the longest chunk: the token budget, within max_model_len
  const bool expands = cfg_.num_mla_layers() > 0;
  const int keys = ws_->expansion().key_rows;
  const int64_t max_context = ws_->plan().lim.max_context;
  const int64_t longest = std::min<int64_t>(opt_.max_tokens, max_context);
  const int t_max = int(std::max<int64_t>(1, longest));
  // chunk sizes 2, 3, 4, 6, 8, 12, ... (2^k and 3 x 2^k) and t_max: cuBLASLt and the MoE kernels pick
  // their kernels by the number of rows
  std::vector<int> sizes;
  for (int64_t p = 2; p <= t_max; p *= 2) {
    sizes.push_back(int(p));
    if (3 * p / 2 <= t_max) sizes.push_back(int(3 * p / 2));
  }
  sizes.push_back(t_max);
  std::sort(sizes.begin(), sizes.end());
  sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
  int n = 0;
  for (int t : sizes) {
    run(t, 0);
    ++n;
  }
  // the MLA expansion's GEMMs over more key rows than one chunk has tokens: every shape
  // mla_expand_gemm_rows gives beyond t_max (2^k and 3 x 2^k, and the piece itself)
  const int chunk = std::min(16, t_max);
  if (expands && keys > t_max) {
    std::vector<int> ks{keys};
    for (int64_t p = 2; p < keys; p *= 2)
      for (int64_t k : {p, 3 * p / 2})
        if (k > t_max && k < keys) ks.push_back(int(k));
    std::sort(ks.begin(), ks.end());
    ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
    for (int k : ks) {
      run(chunk, k - chunk);
      ++n;
    }
  }
  // a context beyond one piece (within max_model_len): piece by piece, the merge kernel
  if (expands && int64_t(keys) + chunk <= max_context) {
    run(chunk, keys);
    ++n;
  }
  stream_.sync();
  DS_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
  spdlog::info("  warm-up: {} prefill forwards on the scratch slot (chunks of 2^k and 3 x 2^k up to {} tokens, up to "
               "{} key rows) in {:.1f} s, {:.1f} MiB (kernels loaded)",
               n, t_max, expands ? std::min<int64_t>(int64_t(keys) + chunk, max_context) : t_max,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
               (double(free0) - double(free1)) / 1048576.0);
}

// One graph on a layout of padding rows only; returns its node count.
size_t CudaModel::capture_graph(int bucket, int stride) {
  BatchLayout p;
  p.cu_seqlens.push_back(0);
  p.max_q_len = p.max_seq_len = 1;
  prepare_graph_step(p, bucket, stride);
  compute(*meta_);  // warm-up outside capture: cuBLASLt plans, lazy module loading (a rank: no collectives)
  Graph g;
  g.begin_capture(stream_);
  collectives_ = ranked_;  // a rank's graph holds its collectives (NCCL: recorded, run at each replay)
  try {
    compute(*meta_);
  } catch (...) {
    collectives_ = false;
    cudaGraph_t dummy = nullptr;
    cudaStreamEndCapture(stream_, &dummy);
    if (dummy) cudaGraphDestroy(dummy);
    throw;
  }
  collectives_ = false;
  g.end_capture(stream_);
  g.upload(stream_);
  const size_t n = g.num_nodes();
  spdlog::debug("CUDA graph captured for decode batch {} (block-table width {}): {} nodes", bucket, stride, n);
  graphs_.emplace(std::make_pair(bucket, stride), std::move(g));
  return n;
}

}  // namespace ds::gpu
