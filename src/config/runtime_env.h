// Developer switches read from the environment, in one place (the layout's rule: configuration is read
// and validated in src/config, not where it is used). They exist to cross-check and to measure, not for
// users: the server's flags are the user-facing configuration.
//   DELTASERVE_CUDA_ATTENTION=reference  simple attention kernels (attn_ref.h) instead of kda_* / mla_*
//   DELTASERVE_CUDA_GRAPHS=0             decode steps run eagerly, not replayed from CUDA graphs
//   DELTASERVE_CUDA_PDL=0                kernels launched without programmatic dependent launch
//   DELTASERVE_NCCL_LIBRARY=PATH         the NCCL library multi-GPU ranks load (default: libnccl.so.2 from the
//                                        loader's search path; cuda/nccl_comm.h)
//   DELTASERVE_CUDA_GRAPH_MAX_CONTEXT=N  decode graphs are captured at start-up for contexts up to N tokens
//                                        (rounded up to a power-of-two block-table width; default and 0:
//                                        max_model_len); longer decode steps run eagerly
//   DELTASERVE_CUDA_WGMMA=0..4           Hopper wgmma kernels for bf16 prefill (MLA attention, MoE grouped
//                                        GEMM) on sm_90: 0 the mma.sync kernels, 1 the wgmma kernels, 2 the same
//                                        with the MLA kernel's ping-pong schedule (its two consumer warpgroups
//                                        take turns on the tensor cores), 3 and 4: 1 and 2 with the MLA keys
//                                        and values loaded by TMA (default: 3; measured: MLA prefill 1x8192
//                                        causal 452 -> 582 TFLOP/s, the 1M prompt's TTFT 215 -> 184 s,
//                                        docs/PERF.md session 12)
//   DELTASERVE_CUDA_FP8_DENSE_TILE=0     FP8 projections at 9..160 rows dequantize + cuBLASLt instead of the
//                                        grouped GEMM's FP8 kernel over one matrix (layer_step.cpp; default 1)
//   DELTASERVE_CUDA_FP8_FRAG=0|1|8|16    FP8 tiles of decode batches: the fragment kernel (1: on, the default;
//                                        8 / 16: on with that token tile) or 0: the staged tile kernel
//   DELTASERVE_CUDA_FP8_XSPLIT=0|1       the fragment kernel on FP8 tensor cores with x split in e4m3 hi + lo
//                                        (1, the default) or on bf16 tensor cores (0)
//   DELTASERVE_CUDA_KDA_SKIP_PADDING=0|1 the KDA decode skipping graph padding rows (default 1)
//   DELTASERVE_CUDA_FP8_PREFILL_HI=0|1   FP8 experts' prefill tiles on x's e4m3 hi part only (default 1)
//   DELTASERVE_CUDA_NORM_SPLIT=0|1       the layer RMSNorm writing its output's x split for the FP8 launches (1)
//   DELTASERVE_CUDA_FP8_CUBLAS=0..3      FP8 dense projections on cuBLASLt's block-scaled FP8 GEMM: 1 beyond 160
//                                        rows (prefill; x's hi part), 2 also at 9..160 (hi + lo), 3 also at
//                                        9..160 (hi alone; the default since session 30, from 64 rows); 0 off
//   DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_N=N  with 2 or 3: at 9..160 rows only projections of N+ outputs (0: all)
//   DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_ROWS=R  with 2 or 3: decode batches of R+ rows only (0: all; default 64)
//   DELTASERVE_CUDA_FP8_TILE_MIN_ROWS=N  FP8 experts (and FP8 projections whose 64-row blocks fill the GPU) at
//                                        batches of N..8 tokens on the FP8 wgmma kernel too
//                                        (1..9; default 9: the GEMVs up to 8 tokens)
//   DELTASERVE_CUDA_FP8_SPLIT_K=0|1      split-K for the FP8 wgmma kernel's narrow dense launches (default 1)
//   DELTASERVE_CUDA_FP8_MMA_GEMV=0|1|2   FP8 GEMVs at one row per group on the tensor cores (default 0; 2: only
//                                        the launches that won alone: SiLU-mul, and N >= K)
//   DELTASERVE_CUDA_NARROW_GEMV_ROWS=N   projections in the activation dtype with at most 1,024 output rows (the
//                                        MoE router, MLA kv_a_proj) on the GEMV up to N rows (8..64; default 8:
//                                        cuBLASLt above 8 rows, whose tiles leave most SMs idle at N = 256)
//   DELTASERVE_CUDA_PREFILL_VEC=0|1      vectorised prefill conv / gate / norm / SiLU-mul kernels (default 1)
//   DELTASERVE_CUDA_SAMPLING_RADIX=0|1   sampling thresholds by radix select (default 1)
//   DELTASERVE_CUDA_MOE_ALIGN_MULTI=0|1  the MoE counting sort over several CTAs from 4,096 pairs (default 1)
//   DELTASERVE_CUDA_MLA_DECODE_PIPE=0|1  the Hopper MLA decode's pipelined form (default: by the split's length)
//   DELTASERVE_CUDA_MLA_DECODE_F8MMA=0|1  the Hopper MLA decode over the FP8 cache on FP8 tensor cores (default 1)
//   DELTASERVE_CUDA_ROUTE_WARPS=0|1      MoE routing of 2..64 tokens with a warp per token (default 1; 0: 8 warps)
//   DELTASERVE_CUDA_FP8_WGMMA_STAGES=3|4 pipeline stages of the FP8 wgmma kernel (default 3)
//   DELTASERVE_CUDA_INT4_TILES=0|1       INT4 experts above 8 tokens (decode batches and prefill) on the FP8
//                                        wgmma kernel (1, the default) or the INT4 GEMVs (0)
//   DELTASERVE_CUDA_DOWN_COMBINE_STAGED=0|1  the batch-1 MoE down + combine (bf16, FP8 or INT4 experts) in one wave
//                                        of blocks staging their columns' rows in shared memory (default 0 until measured)
//   DELTASERVE_CUDA_GATE_UP_STAGED=0|1   the batch-1 MoE gate/up (bf16, FP8 or INT4 experts) through a shared-memory
//                                        ring, one block an SM (default 0 until measured)
//   DELTASERVE_CUDA_INT4_SUBNORMAL=0|1   that kernel's nibbles taken as e4m3 subnormals (n x 2^-9, two masks and
//                                        two byte permutes a word) with the zero point applied per block (1, the
//                                        default since session 30) or converted through f16 (0)
//   DELTASERVE_CUDA_FP8_PREFILL_TILES=0|1  FP8 experts of steps of 512+ tokens on the FP8 wgmma kernel's
//                                        64-token tiles (1, the default: prefill 34K -> 47K tok/s, PERF.md
//                                        session 11) or the 64-token mma.sync tiles (0)
//   DELTASERVE_CUDA_MOE_TMA=0|1          the bf16 wgmma MoE prefill kernel's weight tiles by TMA (default 1)
//   DELTASERVE_CUDA_FP8_TMA=0|1          the FP8 wgmma kernel's weight rows by TMA (default 0 until measured)
//   DELTASERVE_CUDA_MLA_DECODE_WARPS=8|16  warps of the MLA decode attention CTA (bf16; default 8)
//   DELTASERVE_CUDA_MLA_DECODE_CTAS=1|2  MLA decode attention CTAs an SM (bf16 activations; 2: 32-position
//                                        tiles, one stage, each CTA's phases overlapping the other's; default:
//                                        2 with --kv-cache-dtype fp8, 1 with the bf16 cache)
//   DELTASERVE_CUDA_TP_COMM=nccl|inprocess|host  collectives of tensor-parallel ranks on distinct GPUs (default
//                                        nccl); host: through the host group (cuda/host_comm.h: slow, eager; any
//                                        ranks, also processes sharing one GPU, which NCCL refuses)
//   DELTASERVE_CUDA_TP_ALLREDUCE=nccl|peer  small all-reduces (up to 4 MiB) of the ranks of one process: NCCL's
//                                        (default) or the one-shot kernel over peer memory (cuda/peer_comm.h)
//   DELTASERVE_CUDA_XSPLIT_PREFILL_TILE=16|64  token tile of that kernel for steps of 512+ tokens (default 64,
//                                        for weight groups of 128 columns or more; 32-column INT4 groups: 16)
#pragma once
#include <string>

namespace ds {

struct CudaEnv {
  bool reference_attention = false;
  bool graphs = true;
  bool pdl = true;
  int wgmma = 3;  // Hopper wgmma prefill kernels where supported: 0 off, 1 on, 2 on with the MLA ping-pong,
                 // 3 / 4: 1 / 2 with the MLA kernel's keys and values loaded by TMA (3: the default)
  bool fp8_dense_tile = true;       // FP8 projections at 9..160 rows: the FP8 tile kernel (false: dequantize)
  // FP8 grouped/dense GEMMs of decode-sized token tiles: the fragment kernel (moe_gemm_frag.h). 0 off (the
  // staged tile kernel), 1 on (the default: 16-token tiles; measured faster than the staged kernel at B=16
  // and 64, docs/PERF.md session 9), 8 or 16 on with that token tile.
  int fp8_frag = 1;
  // With the fragment kernel: x split into e4m3 hi + lo parts before the launch and multiplied on the FP8
  // tensor cores (moe_gemm_frag.h); 0: x in bf16 and the weights converted to bf16 in the kernel.
  bool fp8_xsplit = true;
  // The KDA decode skips a graph bucket's padding rows (BatchLayout::fresh 2: zeros out, no state or conv
  // traffic; DELTASERVE_CUDA_KDA_SKIP_PADDING). A batch of 100 replays the 112-row graph: 12 rows x 32 heads of
  // 64 KiB state writes a layer. On since session 24 (FP8 batch-100 step -0.5%, batch 97 -1.3%).
  bool kda_skip_padding = true;
  // With it, at 9..160 tokens and quantized weights, the layer's RMSNorm also writes the split of its output
  // (RmsNormParams::split), which the FP8 tile launches reading it take (KDA / MLA in_proj, MoE and shared
  // gate/up) instead of a split launch each (DELTASERVE_CUDA_NORM_SPLIT; session 23).
  bool norm_split = true;
  // INT4 experts above 8 tokens on that kernel (nibbles converted to e4m3 in shared memory; measured 2.6x
  // faster than the INT4 GEMVs at 16 tokens, docs/PERF.md session 10), prefill steps included (16-token tiles,
  // each CTA walking its expert's tiles); off: the INT4 GEMVs at every size.
  bool int4_tiles = true;
  // On that kernel, each INT4 nibble n taken as the e4m3 byte n itself (the subnormal / smallest normal of value
  // n x 2^-9; the FP8 tensor cores keep subnormals, session 21's probe): a word of 8 nibbles becomes 8 e4m3 bytes
  // in k order by two masks, a shift and two byte permutes (the f16 route: ~14 instructions), and the zero point
  // comes off per partial sum as 2^9 t - zero x S, S the tokens' sums of x over the partial's columns, which the x
  // split writes beside its scales (session 31; a wgmma of e4m3 ones before: -2% at batch 16, H100) (docs/
  // QUANTIZATION.md). Off: the f16 route. On since session 30: the INT4 batch-16 step 8.74 -> 8.30 ms (bench_model,
  // H200), its tests passing in both forms.
  bool int4_subnormal = true;
  // INT4 checkpoints' (and dummy INT4 weights') dense projections kept in INT4 on the device too (KDA and MLA
  // in_proj main rows, o_proj, dense and unfolded shared MLPs), as the experts are: the INT4 GEMVs up to 8 rows
  // (their fused norms), the INT4 tiles of the FP8 wgmma kernel up to 160 rows, dequantize + cuBLASLt beyond.
  // Off: dequantized into the activation dtype at load (4x the bytes; session 31's trace: the bf16 in_proj and
  // o_proj took ~0.8 ms of the INT4 batch-1 step). Off until measured.
  bool int4_dense = false;
  // The batch-1 MoE down projection + combine of bf16, FP8 or INT4 experts in one wave: a block per ceil(D / SMs)
  // columns copies the activation rows and its columns' rows of all pairs into shared memory with cp.async, in
  // rounds of columns two in flight (moe_down_combine_staged.cu), where the per-pair kernels run ~3 waves of
  // 2-column blocks, one of whose warps takes two pairs in turn. Off until measured (session 31's trace: the per-pair launches ~23 us against
  // 3-6 us of bytes).
  bool down_combine_staged = false;
  // The batch-1 MoE gate/up (SiLU-mul) of bf16, FP8 or INT4 experts with its (group, row) units split evenly over one
  // block an SM, each block keeping 4 buffers of its units' gate and up rows in flight through shared memory
  // (moe_gate_up_staged.cu), where the per-row-pair GEMVs run ~2 waves of small blocks. Off until measured
  // (session 31's trace: FP8 ~25 us against 12.7 us of bytes, INT4 ~27 against 6.7, H100).
  bool gate_up_staged = false;
  // FP8 experts of steps of 512 or more tokens on that kernel as well, with xsplit_prefill_tile-token tiles
  // (off: the 64-token mma.sync tiles, which convert e4m3 to f16; measured: the 48B prefill 34K -> 47K tok/s).
  bool fp8_prefill_tiles = true;
  // Token tile of the FP8 wgmma kernel at steps of 512+ tokens: 64 (a weight tile staged once serves 64 tokens;
  // scale groups of 128+ columns) or 16 (every group size; the weights staged once per 16 tokens).
  int xsplit_prefill_tile = 64;
  // Those prefill tiles multiplying x's e4m3 hi part only (MoeGemmParams::x_hi_only: x rounded to e4m3 per token
  // and 128 columns, as FP8 W8A8 serving does; half the MMAs; DELTASERVE_CUDA_FP8_PREFILL_HI). Off: hi and lo, the
  // bf16 product. On since session 24 (FP8 prefill 4 x 2,048 +16%; logits rel L2 0.034 against the CPU's bf16
  // inputs on the tiny model's 600-token prefill, 0.012 with hi + lo; docs/QUANTIZATION.md).
  bool fp8_prefill_hi = true;
  // FP8 dense projections (128 x 128 block scales) on cuBLASLt's block-scaled FP8 GEMM (gemm.h; x quantized per
  // row and 128 columns by run_quantize_act_fp8, a power-of-two scale as the x split's; DELTASERVE_CUDA_FP8_CUBLAS):
  // 1: beyond kFp8TileMaxRows rows (prefill steps; x's e4m3 hi part, W8A8 as fp8_prefill_hi), where the default
  // dequantizes each weight matrix into a bf16 scratch for the bf16 GEMM; 2: also at 9..kFp8TileMaxRows rows
  // (decode batches; hi and lo, two GEMMs, the second accumulating: the dense tiles' numerics), where the default is
  // the FP8 wgmma tile kernel (1.5-7 us of work taking 11-30 us, docs/PERF.md session 20); 3: decode batches too,
  // with x's hi part alone (one GEMM; W8A8 with per-token-block activation scales, as FP8-dynamic and block-128
  // checkpoints define their activations). 0: off. The weights'
  // block-scale rows are padded to cuBLASLt's layout (a multiple of 4) when on. 3 (with decode batches from 64
  // rows, below) since session 30: the FP8 batch-100 step 16.99 -> 16.25 ms, FP8 serving at c=100 5,343 tok/s and
  // c=1 TTFT 26.5 ms (H200, docs/PERF.md). Applies to block-scaled FP8 weights only (the online FP8 and block-128
  // checkpoints); per-channel FP8 keeps the tile kernels.
  int fp8_cublas = 3;
  // With fp8_cublas 2: at 9..kFp8TileMaxRows rows only projections of at least this many outputs take cuBLASLt (its
  // tiles spread a narrow one, such as o_proj's 2,304 outputs, over few SMs); 0: every one
  // (DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_N).
  int fp8_cublas_decode_min_n = 0;
  // With fp8_cublas 2 or 3: decode batches of fewer rows than this stay on the tile kernel (at 16 rows cuBLASLt's
  // GEMM plus its own x quantization measured 2% slower a step, at 100 rows 4.4% faster: session 28); 0 or 9:
  // every decode batch of 9..kFp8TileMaxRows rows (DELTASERVE_CUDA_FP8_CUBLAS_DECODE_MIN_ROWS). 64 since session 30.
  int fp8_cublas_decode_min_rows = 64;
  // FP8 experts from this many tokens on (1..9) run on that kernel too; below 9 the layer's RMSNorm then runs
  // as a kernel of its own (the GEMVs fuse it). 9: the GEMVs up to 8 tokens (the default until measured).
  int fp8_tile_min_rows = 9;
  // Dense launches of that kernel with fewer 64-row blocks than SMs (o_proj at decode batches: 36 blocks) split
  // K over more CTAs, the last of a tile adding the partials (measured: FP8 step at 16 tokens 4% faster).
  bool fp8_split_k = true;
  // FP8 GEMVs at one row per group (batch-1 projections, experts, down + combine) on the tensor cores
  // (DELTASERVE_CUDA_FP8_MMA_GEMV: mma.sync e4m3 with x split hi/lo in shared memory, gemv_fp8_mma.cu) instead
  // of CUDA-core conversions (25-40% of the bandwidth, ncu session 20). 0 (the default): off, measured slower in
  // the batch-1 step (session 21: TPOT 2.93 vs 2.67 ms); 1: every launch it takes; 2: only those that were faster
  // alone (session 21's bench_fp8: SiLU-mul gate/up, and projections with N >= K such as KDA in_proj, not o_proj
  // or the MoE down + combine); session 22: no gain in the step either (TPOT 2.631 / 2.640 vs 2.635 / 2.631 ms).
  int fp8_mma_gemv = 0;
  // FP8 dense projections (LayerStep::linear, 9..160 rows) on the x-split wgmma kernel: 64-token tiles from
  // this many rows on (DELTASERVE_CUDA_FP8_DENSE_TILE64_ROWS; 0: never), 16-token tiles below. At 100 rows the
  // 16-token tiles read each weight tile 7 times (KDA in_proj 43.6 us a layer against 6.7 us of bytes, ncu,
  // docs/PERF.md session 18; 33: batch-100 FP8 step -3.3%).
  int fp8_dense_tile64_rows = 33;
  // MoE routing of 2..64 tokens: a warp per token (up to 16) instead of 8 warps in turn. On since session 19:
  // FP8 batch-16 step 7.53 -> 7.38 ms, batch 1 and 100 unchanged; FP8 serving at c=16 1,959 -> 1,996 tok/s
  // (docs/PERF.md).
  bool route_warps = true;
  // Prefill elementwise kernels 8-16 bytes a thread (KDA short convolution with its window in registers, KDA
  // gate, KDA output norm, SiLU-mul; the conv alone took 1.08 ms of a 4 x 2,048-token step, PERF.md session
  // 14); on: 4 x 2,048-token prefill 57,381 -> 66,012 tok/s, 131K TTFT 4.88 -> 4.48 s (PERF.md session 15).
  bool prefill_vec = true;
  // The MoE counting sort over several CTAs from 4,096 pairs (DELTASERVE_CUDA_MOE_ALIGN_MULTI: count, scan,
  // place; one CTA took 99 us a layer at 8,192 tokens). On since session 19: 4 x 2,048-token prefill
  // 62.0K -> 65.0K tok/s (median of 3, one machine; docs/PERF.md).
  bool moe_align_multi = true;
  // GPU sampling thresholds (top-k, top-p, the draw) by a 4-pass radix select instead of a ~31-pass bisection
  // (100 rows at T = 1, top-p 0.9: 4.11 -> 1.18 ms, PERF.md session 15); on (tests GpuOps.Sampling*).
  bool sampling_radix = true;
  // The bf16 wgmma MoE prefill kernel (moe_gemm_wgmma.cu): its weight tiles by TMA tensor maps, one producer
  // thread issuing them, instead of 16 cp.async a producer thread and stage (the MLA prefill kernel gained 25%
  // from the same change, docs/PERF.md session 12). On: 8,192-token MoE 2.74 -> 2.30 ms (PERF.md session 13).
  bool moe_tma = true;
  // The FP8 wgmma kernel (moe_gemm_fp8_wgmma.cu, decode batches and FP8 prefill): its weight rows by TMA, one
  // thread issuing a stage's boxes, instead of 8 cp.async a thread and stage; off until measured.
  bool fp8_tma = false;
  // Narrow projections (N <= 1,024, weights in the activation dtype) on the GEMV up to this many rows; 8 (the
  // GEMV limit of every projection) until measured.
  int narrow_gemv_rows = 8;
  // Pipeline stages of the FP8 wgmma kernel: 3 (61 KB a CTA: 3 CTAs per SM; measured 2-3% faster steps at
  // 16 and 100 tokens than 4, docs/PERF.md session 10) or 4.
  int fp8_wgmma_stages = 3;
  // Warps of the MLA decode attention CTA with bf16 activations: 8 or 16 (the same shared memory; the
  // kernel is latency-bound at 8, docs/PERF.md session 11); 8 until measured.
  int mla_decode_warps = 8;
  // MLA decode attention CTAs an SM with bf16 activations: 1, or 2 (half the shared memory each: 32-position
  // tiles, one stage; 128 registers a thread, Q fragments reloaded from shared memory), so that one CTA's
  // softmax and barriers overlap the other's MMAs (one CTA's phases run one after another). 0 (the default):
  // 2 for the FP8 latent cache without the Hopper kernel below, else 1 (CudaModel resolves it; measured,
  // PERF.md session 13).
  int mla_decode_ctas = 0;
  // The Hopper MLA decode attention (bf16 activations on sm_90, both cache types; cuda/kernels/mla_decode_wgmma.h):
  // wgmma over the transposed products from a producer warpgroup's tiles, the FP8 cache converted to f16.
  // -1 (unset, the default): on for the FP8 latent cache, where it is the fastest form at every measured shape
  // (1M: 0.483 vs 0.553 ms a layer; 100 rows x 1K: 0.074 vs 0.100 ms), off for the bf16 cache, where the
  // mma.sync kernel is faster (1M: 0.467 vs 0.589 ms; docs/PERF.md, session 17); CudaModel resolves it.
  // 0 / 1 (DELTASERVE_CUDA_MLA_DECODE_WGMMA): off / on for both. When on, mla_decode_ctas is 1 unless set.
  int mla_decode_wgmma = -1;
  // The Hopper MLA decode's pipelined form (DELTASERVE_CUDA_MLA_DECODE_PIPE; MlaDecodeParams::wgmma_pipe): one
  // consumer warpgroup the scores of all 32 heads, the other their output a tile behind. -1 (unset, the
  // default): on when a split covers kMlaDecodePipeMinPositions positions or more (mla_decode.h; session 19:
  // faster at ~8K positions a split, 1M: 0.466 vs 0.496 ms a layer; slower at ~1K: 131K batch 1 0.098 vs
  // 0.088); 0 / 1: off / on at every length.
  int mla_decode_pipe = -1;
  // The Hopper MLA decode over the FP8 latent cache on FP8 tensor cores (DELTASERVE_CUDA_MLA_DECODE_F8MMA;
  // MlaDecodeParams::f8_mma, cuda/kernels/mla_decode_f8.h): the cache bytes as e4m3 MMA operands, the query and
  // softmax weights split into e4m3 hi + lo, the heads as the instructions' M. On: the fastest form over the FP8
  // cache at every measured shape (session 22: 1M 0.410 vs 0.459 ms a layer, 100 rows x 1K 0.065 vs 0.074;
  // docs/PERF.md); 0 runs mla_decode_wgmma.cu's f16 forms.
  bool mla_decode_f8mma = true;
  // cuBLASLt: a GEMM of M rows runs the algorithm of M's bucket (2^k or 3 x 2^k, the row counts the start-up
  // warm-up runs) when it supports M, so no kernel is first loaded while serving (cuda/gemm.h). On since
  // session 17: with it, device memory stayed at its start-up figure through a 1M prompt with 8 chats beside
  // it (without: +4 MiB, session 15, kernels first loaded at odd row counts).
  bool gemm_buckets = true;
  // The collectives of tensor-parallel ranks on distinct GPUs: "nccl" (the default; graphs hold them),
  // "inprocess" (peer copies and host barriers; eager steps; ranks sharing a GPU in one process always use it)
  // or "host" (through the host group, cuda/host_comm.h; the multi-node path's check on one GPU).
  std::string tp_comm = "nccl";
  std::string tp_allreduce = "nccl";  // "peer": small all-reduces through cuda/peer_comm.h (not yet measured)
  long long graph_max_context = 0;  // tokens; 0: max_model_len
  std::string nccl_library;         // empty: libnccl.so.2 from the loader's search path
  // Parses the current environment; an unrecognised value is an error that names the variable.
  static CudaEnv parse();
};

// The process's switches, parsed on first use (the environment is read once).
const CudaEnv& cuda_env();

}  // namespace ds
