// End-to-end timings of the CUDA backend on the real 48B config with dummy weights (generated on the
// GPU): load time, memory, KV/state capacity, prefill throughput, decode TPOT at batch 1 (forward +
// greedy sample, CUDA graph) and the decode step time at batch 100.
//   bench_model [--config PATH] [--quick] [--ctx N] [--batch N] [--decode-only] [--no-prefill] [--profile-step] [--profile-batched] [--quantization fp8|int4]
//               [--kv-cache-dtype auto|fp8] [--decode-at N]
// --profile-prefill: after the prefill timing, one more 4 x 2048-token step inside the NVTX range
// "prefill_step" (`ncu --nvtx --nvtx-include prefill_step/`), and nothing else measured.
// --profile-step: after the batch-1 decode timing, one more decode step inside the NVTX range
// "decode_step" (for `ncu --nvtx --nvtx-include decode_step/`: the kernels of one graph replay).
// --profile-batched: the same after the batch-`batch` timing, NVTX range "decode_batch".
#include <nvtx3/nvToolsExt.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/stream.h"

using namespace ds;
using Clock = std::chrono::steady_clock;

namespace {

double secs_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

struct Seq {
  explicit Seq(int s) : slot(s) {}
  int slot;
  int64_t ctx = 0;
  std::vector<int32_t> pages;
};

// Pages for `n` more tokens from a simple bump allocator.
void grow(Seq& s, int64_t n, int bs, int* next_page) {
  while (int64_t(s.pages.size()) * bs < s.ctx + n) s.pages.push_back((*next_page)++);
}

struct DecodeTimes {
  double host_ms, device_ms;  // medians, the first 5 steps (graph capture, warm-up) left out
};

// `steps` greedy batch-1 decode steps of s from token `tok` (pages grown as needed), each timed on the host and
// on the device; `tok` and s advance.
DecodeTimes time_decode(ds::Backend& b, Seq& s, int32_t& tok, int steps, int bs, int* next_page,
                        const ds::SampleParams& greedy) {
  std::vector<double> t, gpu;
  for (int i = 0; i < steps; ++i) {
    grow(s, 1, bs, next_page);
    ds::ForwardBatch d;
    d.add(s.slot, s.ctx, {tok}, s.pages);
    auto t1 = Clock::now();
    tok = ds::forward_sample(b, d, {greedy})[0].token;
    t.push_back(secs_since(t1));
    gpu.push_back(ds::cuda_last_forward_ms(b));
    s.ctx += 1;
  }
  t.erase(t.begin(), t.begin() + 5);
  gpu.erase(gpu.begin(), gpu.begin() + 5);
  return {median(t) * 1e3, median(gpu)};
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = std::string(DS_SOURCE_DIR) + "/tests/fixtures/kimi-linear-48b-a3b.config.json";
  bool quick = false, prefill = true, batched = true, profile = false, profile_batched = false, profile_prefill = false;
  int ctx = 1000, batch = 100, decode_at = 0;
  std::string quantization, kv_cache_dtype = "auto";
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
    else if (!std::strcmp(argv[i], "--quick")) quick = true;
    else if (!std::strcmp(argv[i], "--ctx") && i + 1 < argc) ctx = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--batch") && i + 1 < argc) batch = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--decode-only")) prefill = batched = false;
    else if (!std::strcmp(argv[i], "--no-prefill")) prefill = false;
    else if (!std::strcmp(argv[i], "--profile-step")) profile = true;
    else if (!std::strcmp(argv[i], "--profile-prefill")) profile_prefill = true;
    else if (!std::strcmp(argv[i], "--profile-batched")) profile_batched = true;
    else if (!std::strcmp(argv[i], "--quantization") && i + 1 < argc) quantization = argv[++i];
    else if (!std::strcmp(argv[i], "--kv-cache-dtype") && i + 1 < argc) kv_cache_dtype = argv[++i];
    else if (!std::strcmp(argv[i], "--decode-at") && i + 1 < argc) decode_at = std::atoi(argv[++i]);
  }
  spdlog::set_level(spdlog::level::info);
  // a model directory holding only config.json
  auto dir = std::filesystem::temp_directory_path() / "ds_bench_model";
  std::filesystem::create_directories(dir);
  std::filesystem::copy_file(config, dir / "config.json", std::filesystem::copy_options::overwrite_existing);

  BackendOptions o;
  o.device = "cuda";
  o.model_dir = dir.string();
  o.load_format = "dummy";
  o.dtype = "bfloat16";
  o.quantization = quantization;
  o.kv_cache_dtype = parse_kv_cache_dtype(kv_cache_dtype);
  o.max_num_seqs = std::max(batch, 8);
  o.gpu_memory_utilization = 0.92;
  auto t0 = Clock::now();
  auto b = make_cuda_backend(o);
  double load_s = secs_since(t0);
  const auto geo = b->limits();
  const int bs = geo.block_size;
  size_t free_b = 0, total_b = 0;
  cudaMemGetInfo(&free_b, &total_b);
  std::printf("load: %.1f s; device memory in use %.1f GiB of %.1f GiB; %d state slots; %d pages x %d = %lld "
              "cache tokens\n",
              load_s, (total_b - free_b) / 1073741824.0, total_b / 1073741824.0, geo.num_state_slots, geo.num_blocks,
              bs, (long long)geo.num_blocks * bs);

  int next_page = 0;
  std::vector<int32_t> prompt(static_cast<size_t>(ctx));
  for (int i = 0; i < ctx; ++i) prompt[size_t(i)] = int32_t((i * 7919 + 13) % 150000);
  SampleParams greedy;
  greedy.temperature = 0.f;

  // ---- prefill throughput: one 8192-token step (4 prompts of 2048), then a 1 x ctx prompt (TTFT) -----
  double prefill_tps = 0, ttft_ms = 0;
  if (prefill) {
    std::vector<Seq> seqs;
    ForwardBatch fb;
    for (int i = 0; i < 4; ++i) {
      Seq s(i);
      grow(s, 2048, bs, &next_page);
      std::vector<int32_t> ids(static_cast<size_t>(2048));
      for (int j = 0; j < 2048; ++j) ids[size_t(j)] = int32_t((j * 31 + i * 1000) % 150000);
      fb.add(s.slot, 0, ids, s.pages);
      seqs.push_back(s);
    }
    std::vector<float> logits = forward_logits(*b, fb);  // warm-up (cuBLASLt plans, module loading)
    std::vector<double> t, dev, issue;
    for (int r = 0; r < (quick ? 2 : 3); ++r) {
      auto t1 = Clock::now();
      logits = forward_logits(*b, fb);
      t.push_back(secs_since(t1));
      dev.push_back(ds::cuda_last_forward_ms(*b));
      issue.push_back(ds::cuda_last_issue_ms(*b));
    }
    prefill_tps = 8192.0 / median(t);
    // Wall against the device's span (events before the first and after the last kernel) and the
    // host's queueing: wall - device is the step's host work outside the kernels (layout, logits
    // copy); a queueing time near the device span means the device waited on the launches.
    std::printf("prefill step: wall %.2f ms, device span %.2f ms, host queueing %.2f ms (medians)\n",
                median(t) * 1e3, median(dev), median(issue));
    if (profile_prefill) {
      nvtxRangePushA("prefill_step");
      logits = forward_logits(*b, fb);
      nvtxRangePop();
      std::printf("prefill: %.0f tokens/s (4 x 2048 tokens in one step); profiled step done\n", prefill_tps);
      return 0;
    }
    ForwardBatch one;
    Seq s(0);
    grow(s, ctx, bs, &next_page);
    one.add(s.slot, 0, prompt, s.pages);
    std::vector<double> tt;
    for (int r = 0; r < 3; ++r) {
      auto t1 = Clock::now();
      forward_sample(*b, one, {greedy});
      tt.push_back(secs_since(t1));
    }
    ttft_ms = median(tt) * 1e3;
  }
  std::printf("prefill: %.0f tokens/s (4 x 2048 tokens in one step); 1 x %d prompt + first token %.1f ms\n",
              prefill_tps, ctx, ttft_ms);

  // ---- decode at batch 1 -------------------------------------------------------------------------
  double tpot1 = 0, gpu1 = 0;
  {
    Seq s(0);
    grow(s, ctx, bs, &next_page);
    ForwardBatch fb;
    fb.add(s.slot, 0, prompt, s.pages);
    int32_t tok = forward_sample(*b, fb, {greedy})[0].token;
    s.ctx = ctx;
    const DecodeTimes dt = time_decode(*b, s, tok, quick ? 30 : 100, bs, &next_page, greedy);
    tpot1 = dt.host_ms;
    gpu1 = dt.device_ms;
    if (profile) {
      grow(s, 1, bs, &next_page);
      ForwardBatch d;
      d.add(s.slot, s.ctx, {tok}, s.pages);
      nvtxRangePushA("decode_step");
      tok = forward_sample(*b, d, {greedy})[0].token;
      nvtxRangePop();
      s.ctx += 1;
    }
  }
  std::printf("decode batch 1 (context %d): TPOT %.3f ms (%.0f tokens/s); forward on the device %.3f ms\n", ctx,
              tpot1, 1e3 / tpot1, gpu1);

  // ---- decode at batch 1 after a long context (--decode-at N): the sequence's pages hold N positions that
  // were never prefilled (fresh device memory: zeros), only the attention's cost matters here; the KDA
  // state is the one a 1-token prompt leaves. Issue 13's "TPOT after a 1M-token prompt" without the prefill.
  if (decode_at > 0) {
    Seq s(0);
    const int steps = quick ? 30 : 100;
    grow(s, int64_t(decode_at) + steps + 1, bs, &next_page);
    if (next_page > geo.num_blocks) {
      std::printf("decode batch 1 at context %d: skipped (%d pages needed, %d in the pool)\n", decode_at, next_page,
                  geo.num_blocks);
    } else {
      ForwardBatch fb;
      fb.add(s.slot, 0, {prompt[0]}, s.pages);
      int32_t tok = forward_sample(*b, fb, {greedy})[0].token;
      s.ctx = decode_at;
      const DecodeTimes dt = time_decode(*b, s, tok, steps, bs, &next_page, greedy);  // (pages already there)
      std::printf("decode batch 1 at context %d (kv cache %s): TPOT %.3f ms; forward on the device %.3f ms\n",
                  decode_at, kv_cache_dtype.c_str(), dt.host_ms, dt.device_ms);
    }
    next_page = 0;  // (the pages are free again for what follows)
  }

  // ---- decode at batch `batch` ---------------------------------------------------------------------
  double step_b = 0;
  int ctx_b = quick ? 256 : std::min(ctx, 1000);
  if (batched) {
    std::vector<Seq> seqs;
    std::vector<int32_t> toks(size_t(batch), 1);
    // prefill the batch's prompts a few sequences per step
    for (int i = 0; i < batch; i += 8) {
      ForwardBatch fb;
      for (int j = i; j < std::min(batch, i + 8); ++j) {
        Seq s(j);
        grow(s, ctx_b, bs, &next_page);
        std::vector<int32_t> ids(prompt.begin(), prompt.begin() + ctx_b);
        ids[0] = j;  // distinct prompts
        fb.add(s.slot, 0, ids, s.pages);
        s.ctx = ctx_b;
        seqs.push_back(s);
      }
      auto r = forward_sample(*b, fb, std::vector<SampleParams>(fb.seqs.size(), greedy));
      for (size_t j = 0; j < r.size(); ++j) toks[size_t(i) + j] = r[j].token;
    }
    std::vector<double> t;
    int steps = quick ? 12 : 40;
    for (int i = 0; i < steps; ++i) {
      ForwardBatch d;
      for (auto& s : seqs) {
        grow(s, 1, bs, &next_page);
        d.add(s.slot, s.ctx, {toks[size_t(s.slot)]}, s.pages);
      }
      auto t1 = Clock::now();
      auto r = forward_sample(*b, d, std::vector<SampleParams>(seqs.size(), greedy));
      t.push_back(secs_since(t1));
      for (auto& s : seqs) {
        toks[size_t(s.slot)] = r[size_t(s.slot)].token;
        s.ctx += 1;
      }
    }
    if (profile_batched) {
      ForwardBatch d;
      for (auto& s : seqs) {
        grow(s, 1, bs, &next_page);
        d.add(s.slot, s.ctx, {toks[size_t(s.slot)]}, s.pages);
      }
      nvtxRangePushA("decode_batch");
      forward_sample(*b, d, std::vector<SampleParams>(seqs.size(), greedy));
      nvtxRangePop();
    }
    t.erase(t.begin(), t.begin() + 3);
    step_b = median(t) * 1e3;
    // a sanity line for the numbers above: the logits of one more step (a NaN or a collapsed hidden state
    // would make routing degenerate and a step misleadingly fast)
    ForwardBatch d;
    for (auto& s : seqs) {
      grow(s, 1, bs, &next_page);
      d.add(s.slot, s.ctx, {toks[size_t(s.slot)]}, s.pages);
    }
    const std::vector<float> lg = forward_logits(*b, d);
    const size_t V = lg.size() / seqs.size();
    size_t bad = 0;
    double sum = 0, sq = 0;
    std::vector<int32_t> top(seqs.size());
    for (size_t r = 0; r < seqs.size(); ++r) {
      size_t best = 0;
      for (size_t v = 0; v < V; ++v) {
        const float x = lg[r * V + v];
        if (!std::isfinite(x)) { ++bad; continue; }
        sum += x, sq += double(x) * x;
        if (x > lg[r * V + best]) best = v;
      }
      top[r] = int32_t(best);
    }
    std::sort(top.begin(), top.end());
    const double n = double(lg.size() - bad), mean = sum / std::max(n, 1.0);
    std::printf("logits check (batch %d): %zu non-finite of %zu; mean %.4f, std %.4f; %lld distinct argmax\n", batch,
                bad, lg.size(), mean, std::sqrt(std::max(0.0, sq / std::max(n, 1.0) - mean * mean)),
                (long long)(std::unique(top.begin(), top.end()) - top.begin()));
  }
  std::printf("decode batch %d (context %d): step %.2f ms (%.0f tokens/s)\n", batch, ctx_b, step_b,
              batch * 1e3 / step_b);

  std::printf("\n| 48B dummy, %s, one H200 | value | roofline |\n|---|---|---|\n", quantization == "fp8"    ? "fp8 weights (online 128x128)"
                                                                  : quantization == "int4" ? "int4 experts (group 128)"
                                                                                           : "bf16");
  std::printf("| load (dummy weights generated on the GPU) | %.1f s | - |\n", load_s);
  std::printf("| KV cache capacity | %lld tokens, %d slots | - |\n", (long long)geo.num_blocks * bs,
              geo.num_state_slots);
  std::printf("| prefill 4 x 2048 | %.0f tok/s | ~145k tok/s (790 TFLOP/s, 5.46 GFLOP/tok) |\n", prefill_tps);
  std::printf("| TTFT 1 x %d | %.1f ms | - |\n", ctx, ttft_ms);
  std::printf("| TPOT batch 1 | %.3f ms | 1.47 ms (6.2 GB at 4.3 TB/s) |\n", tpot1);
  std::printf("| decode step batch %d | %.2f ms = %.0f tok/s | ~22 ms (all experts read) |\n", batch, step_b,
              batch * 1e3 / step_b);
  return 0;
}
