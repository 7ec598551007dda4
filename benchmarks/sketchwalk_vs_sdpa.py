"""SketchWalk against dense causal SDPA, side by side in one run (issues 5 and 15).

1. Speed: one attention layer on random data at each of ``--lengths``, the arms alternated call
   by call; printed beside the bound: query-key pairs dense causal attention computes,
   n(n+1)/2, divided by the causal pairs SketchWalk attends (its selected blocks; fewer for
   early blocks). ``--shape smollm2``: 9 query heads, 3 key/value heads, 64 dimensions;
   ``--shape seed``: seed 004's 8 heads of 128. On CPU, wall-clock time against PyTorch's SDPA.
   On CUDA (``--device cuda``), CUDA-event time against each fused kernel PyTorch has there:
   its default choice, FlashAttention-2 and cuDNN (a kernel that refuses the shape or dtype is
   reported as such); ``--dtype bfloat16`` is what the fused kernels take, and
   ``--chunk`` is SketchWalk's ``query_chunk_blocks`` (more: fewer kernel launches, more memory),
   ``--kernel flex`` its FlexAttention path and ``--sketch`` its ``sketch_kernel`` (both
   compiled on CUDA by default; the first of ``--warmup`` untimed rounds compiles).
2. Quality: real post-RoPE Q/K/V captured from SmolLM2 on the shipped text at --real-n tokens;
   SketchWalk runs layer by layer from layer N with its walk state, and the cosine similarity
   of each layer's output against dense attention on the same Q/K/V is reported.

Usage:  .venv/bin/python benchmarks/sketchwalk_vs_sdpa.py [--rounds 5] [--real-n 4096] [--tau 16] [--block-size 64] [--heads shared]
            [--device cuda --dtype bfloat16 --lengths 4096,16384,65536,131072 --shape seed --chunk 256]
            [--kernel flex] [--sketch eager] [--skip-real] [--profile]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from collections.abc import Callable

import torch

from knobscope.models.sketchwalk_attn import (SketchWalk, SketchWalkConfig, dense_causal_attention, selection_pairs,
                                               sparse_kernel)

SHAPES = {"smollm2": (9, 3, 64), "seed": (8, 8, 128)}  # query heads, key/value heads, head dimension


def timed(device: str) -> Callable[[Callable[[], object]], float]:
    """Milliseconds of one call: CUDA events on a GPU (the device's time, not the host's)."""
    if device.startswith("cuda"):
        def cuda_ms(fn: Callable[[], object]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end)

        return cuda_ms

    def wall_ms(fn: Callable[[], object]) -> float:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    return wall_ms


def references(device: str) -> dict[str, Callable[[], contextlib.AbstractContextManager]]:
    """The dense kernels to compare with (a context each, made per use): PyTorch's own choice,
    and on CUDA each fused backend."""
    out: dict[str, Callable[[], contextlib.AbstractContextManager]] = {"sdpa": contextlib.nullcontext}
    if device.startswith("cuda"):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        out["flash2"] = lambda: sdpa_kernel(SDPBackend.FLASH_ATTENTION)
        if hasattr(SDPBackend, "CUDNN_ATTENTION"):
            out["cudnn"] = lambda: sdpa_kernel(SDPBackend.CUDNN_ATTENTION)
    return out


def speed(args: argparse.Namespace, cfg: SketchWalkConfig) -> None:
    heads, kv_heads, dim = SHAPES[args.shape]
    dtype, device = getattr(torch, args.dtype), args.device
    refs = references(device)
    clock = timed(device)
    print(f"speed: {heads} query / {kv_heads} key-value heads x {dim}, {args.dtype} on {device}, chunk {cfg.query_chunk_blocks}, "
          f"{'CUDA events' if device.startswith('cuda') else 'wall clock, torch threads ' + str(torch.get_num_threads())}")  # fmt: skip
    print(f"{'n':>7} {'reference':>9} {'dense ms':>9} {'sketchwalk ms':>14} {'speedup':>8} {'bound':>6} {'share of bound':>15}")
    gen = torch.Generator().manual_seed(0)
    profiles: list[tuple[int, str]] = []
    for n in args.lengths:
        q = torch.randn(1, heads, n, dim, generator=gen).to(device, dtype)
        k = torch.randn(1, kv_heads, n, dim, generator=gen).to(device, dtype)
        v = torch.randn(1, kv_heads, n, dim, generator=gen).to(device, dtype)
        walk = SketchWalk(SketchWalkConfig(**{**cfg.__dict__, "skip_layers": 0}), dim)

        def sparse() -> None:
            walk.reset()
            walk.attend(0, q, k, v)

        for name, backend in refs.items():
            dense_ms, sparse_ms = [], []

            def dense(backend: Callable[[], contextlib.AbstractContextManager] = backend) -> None:
                with backend():  # the reference's kernel only: the batched path's own masked SDPA is not FlashAttention's
                    dense_causal_attention(q, k, v)

            try:
                with torch.inference_mode():
                    for r in range(args.warmup + args.rounds):
                        d = clock(dense)
                        s = clock(sparse)
                        if r >= args.warmup:
                            dense_ms.append(d)
                            sparse_ms.append(s)
            except RuntimeError as exc:  # a backend that does not take this shape or dtype
                print(f"{n:>7} {name:>9} refused: {str(exc).splitlines()[0][:90]}")
                continue
            indices, valid = walk.last_selection
            bound = n * (n + 1) / 2 / selection_pairs(indices, valid, n, cfg.block_size)[0]
            d, s = statistics.median(dense_ms), statistics.median(sparse_ms)
            print(f"{n:>7} {name:>9} {d:>9.2f} {s:>14.2f} {d / s:>8.2f} {bound:>6.2f} {d / s / bound:>15.2f}")
        if args.profile:
            profiles.append((n, profile_layer(walk, q, k, v)))
        del q, k, v
    for n, text in profiles:
        print(f"\nprofile of one SketchWalk layer at n = {n} (after the timed rounds):\n{text}")


def profile_layer(walk: SketchWalk, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str:
    """Where one layer's time goes: per sub-stage (``sketch``: scores, walk, selection;
    ``sparse_attention``: block lists and the block-sparse product), wall time, the time the
    device was busy and kernel launches (on CPU: top-level operators), as the ``lm`` and
    ``sketchwalk`` workloads' profiled diagnostic sample measures them (a StageTimer whose stages
    synchronise and are annotated, read by knobscope.diagnose); then the operators or kernels
    that took the most time."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from knobscope.diagnose import SAMPLE, diagnostic_from_profile
    from knobscope.measure import StageTimer

    cuda = q.device.type == "cuda"
    timer = StageTimer(str(q.device))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.inference_mode(), profile(activities=activities) as prof:
        with timer.annotated(), record_function(SAMPLE), timer.sample():
            walk.reset()
            walk.attend(0, q, k, v, stage=timer.stage)
    d = diagnostic_from_profile(prof, str(q.device))
    assert d is not None
    lines = [f"{'stage':>17} {'wall ms':>8} {'device busy ms':>15} {'launches':>9}"]
    for name, a in d.stages.items():
        lines.append(f"{name:>17} {a.wall_ms:>8.3f} {a.busy_share * a.wall_ms:>15.3f} {a.launches:>9}")
    sort = "device_time_total" if cuda else "cpu_time_total"
    lines.append(prof.key_averages().table(sort_by=sort, row_limit=12, max_name_column_width=60))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed rounds per reference (the first compiles). With one, on an H200, SketchWalk's "
                             "median at 16K read 1.41 ms in the first reference's row and 0.81 in the next two")
    parser.add_argument("--real-n", type=int, default=4096)
    parser.add_argument("--tau", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=SketchWalkConfig.block_size,
                        help="B; with --tau halved as B doubles the pairs bound stays the same, so the share of the "
                             "bound says what the block size itself costs (FlexAttention's GPU tiles divide B)")
    parser.add_argument("--heads", choices=("shared", "per_kv_head"), default="shared")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--lengths", type=lambda text: [int(x) for x in text.split(",")], default=[4096, 8192, 16384])
    parser.add_argument("--shape", choices=tuple(SHAPES), default="smollm2")
    parser.add_argument("--chunk", type=int, default=SketchWalkConfig.query_chunk_blocks, help="query_chunk_blocks")
    parser.add_argument("--kernel", choices=("auto", "batched", "flex"), default="auto",
                        help="sparse_kernel (auto: flex on CUDA, batched elsewhere)")
    parser.add_argument("--sketch", choices=("auto", "eager", "compiled"), default="auto",
                        help="sketch_kernel (auto: compiled on CUDA)")
    parser.add_argument("--skip-real", action="store_true", help="speed only (no SmolLM2 quality pass)")
    parser.add_argument("--profile", action="store_true",
                        help="then profile one SketchWalk layer per length: each sub-stage's wall and device-busy time "
                             "and launches, and the costliest kernels (operators on CPU)")
    args = parser.parse_args()
    if args.rounds < 1 or args.warmup < 0:
        parser.error(f"--rounds {args.rounds} --warmup {args.warmup}: allowed: at least 1 timed round, at least 0 untimed")
    try:
        cfg = SketchWalkConfig(block_size=args.block_size, top_k_blocks=args.tau, head_selection=args.heads,
                               query_chunk_blocks=args.chunk,
                               sparse_kernel=args.kernel, sketch_kernel=args.sketch)  # B=64, k=64, s=8, N=2 by default
        cfg.check()
    except ValueError as exc:  # a value SketchWalk does not take: one line, exit status 2
        parser.error(str(exc))
    print(f"config: B={cfg.block_size} k={cfg.sketch_dim} tau={cfg.top_k_blocks} s={cfg.sparsity_exponent} "
          f"N={cfg.skip_layers} heads={cfg.head_selection} kernel={sparse_kernel(cfg, torch.device(args.device).type)} "
          f"sketch={cfg.sketch_kernel}")  # fmt: skip
    speed(args, cfg)
    if not args.skip_real:
        quality(args, cfg)


def quality(args: argparse.Namespace, cfg: SketchWalkConfig) -> None:
    from knobscope.datasets import load_text
    from knobscope.models.loading import load_causal_lm
    from knobscope.models.sketchwalk_hf import capture_qkv

    loaded = load_causal_lm("smollm2")
    ids = torch.tensor([loaded.tokenizer(load_text("builtin:text"))["input_ids"][: args.real_n]])
    captured = capture_qkv(loaded.model, ids)
    walk = SketchWalk(cfg, 64)
    walk.reset()
    cosines = []
    scale = 1 / math.sqrt(64)
    with torch.inference_mode():
        for layer in sorted(captured):
            q, k, v = captured[layer]
            out = walk.attend(layer, q, k, v, scale=scale)
            if layer >= cfg.skip_layers:
                ref = dense_causal_attention(q, k, v, scale=scale)
                cosines.append(float(torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0)))
    print(f"real SmolLM2 Q/K/V, {args.real_n} tokens, layers {cfg.skip_layers}..{max(captured)}: output cosine vs dense "
          f"mean {statistics.mean(cosines):.3f}, min {min(cosines):.3f}, max {max(cosines):.3f}   goal >= 0.95")  # fmt: skip


if __name__ == "__main__":
    main()
