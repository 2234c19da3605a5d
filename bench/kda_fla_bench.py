#!/usr/bin/env python3
"""Times flash-linear-attention's Triton KDA kernels on the shapes of bench/kda_bench.cu, for comparison
in the same run on the same GPU: chunk_kda (prefill) and fused_recurrent_kda (decode), bf16 q/k/v, fp32
g/beta and fp32 initial state, q/k L2-normalised in the kernel, final state returned (what deltaserve's
kernels do). fla is NOT a dependency of deltaserve: it is imported only when a checkout is on
PYTHONPATH (e.g. .peers/fla); otherwise this script prints a note and exits 0.
Timings: triton.testing.do_bench medians (CUDA events, after warm-up)."""
import sys

try:
    import torch
    import triton
    from fla.ops.kda import chunk_kda, fused_recurrent_kda
except Exception as e:  # noqa: BLE001
    print(f"fla not available ({type(e).__name__}: {e}); skipped")
    sys.exit(0)

D = 128
dev = "cuda"
rows = []


def ms_of(fn):
    return triton.testing.do_bench(fn, warmup=50, rep=300, return_mode="median")


def inputs(n, t, h):
    total = n * t
    q = torch.rand(1, total, h, D, device=dev, dtype=torch.bfloat16) * 2 - 1
    k = torch.rand(1, total, h, D, device=dev, dtype=torch.bfloat16) * 2 - 1
    v = torch.rand(1, total, h, D, device=dev, dtype=torch.bfloat16) * 2 - 1
    g = -(torch.rand(1, total, h, D, device=dev, dtype=torch.float32) * 0.99 + 0.01)
    beta = torch.rand(1, total, h, device=dev, dtype=torch.float32) * 0.9 + 0.05
    h0 = (torch.rand(n, h, D, D, device=dev, dtype=torch.float32) * 2 - 1) * 0.1
    cu = torch.arange(0, n + 1, device=dev, dtype=torch.long) * t
    return q, k, v, g, beta, h0, cu


def bench_chunk(n, t, h):
    q, k, v, g, beta, h0, cu = inputs(n, t, h)

    def fn():
        return chunk_kda(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                         use_qk_l2norm_in_kernel=True, cu_seqlens=cu if n > 1 else None)

    with torch.inference_mode():
        ms = ms_of(fn)
    rows.append(("fla chunk_kda", f"bf16 N={n} x T={t} H={h}", ms))
    print(f"fla chunk_kda          bf16 N={n} x T={t} H={h}  {ms:.4f} ms", flush=True)


def bench_recurrent(n, h):
    q = torch.rand(n, 1, h, D, device=dev, dtype=torch.bfloat16) * 2 - 1
    k = torch.rand(n, 1, h, D, device=dev, dtype=torch.bfloat16) * 2 - 1
    v = torch.rand(n, 1, h, D, device=dev, dtype=torch.bfloat16) * 2 - 1
    g = -(torch.rand(n, 1, h, D, device=dev, dtype=torch.float32) * 0.99 + 0.01)
    beta = torch.rand(n, 1, h, device=dev, dtype=torch.float32) * 0.9 + 0.05
    h0 = (torch.rand(n, h, D, D, device=dev, dtype=torch.float32) * 2 - 1) * 0.1

    def fn():
        return fused_recurrent_kda(q, k, v, g, beta, initial_state=h0, output_final_state=True,
                                   use_qk_l2norm_in_kernel=True)

    with torch.inference_mode():
        ms = ms_of(fn)
    rows.append(("fla fused_recurrent_kda", f"bf16 N={n} H={h}", ms))
    print(f"fla fused_recurrent    bf16 N={n} H={h}  {ms:.4f} ms", flush=True)


def main():
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}")
    quick = "--quick" in sys.argv
    bench_chunk(1, 8192, 32)
    bench_chunk(4, 2048, 32)
    if not quick:
        bench_chunk(8, 1024, 32)
        bench_chunk(1, 32768, 32)
    for n in (1, 16, 64, 256):
        bench_recurrent(n, 32)
    print("\n| kernel | shape | median ms |\n|---|---|---:|")
    for name, shape, ms in rows:
        print(f"| {name} | {shape} | {ms:.4f} |")


if __name__ == "__main__":
    main()
