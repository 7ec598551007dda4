"""SketchWalk against dense causal SDPA on CPU, side by side in one run (issue 5's target).

1. Speed: one attention layer with SmolLM2's shape (9 query heads, 3 key/value heads, 64
   dimensions) at n = 4096, 8192, 16384 on random data, the two arms alternated call by call;
   printed beside the bound: query-key pairs dense causal attention computes, n(n+1)/2,
   divided by the causal pairs SketchWalk attends (its selected blocks; fewer for early blocks).
2. Quality: real post-RoPE Q/K/V captured from SmolLM2 on the shipped text at --real-n tokens;
   SketchWalk runs layer by layer from layer N with its walk state, and the cosine similarity
   of each layer's output against dense attention on the same Q/K/V is reported.

Usage:  .venv/bin/python benchmarks/sketchwalk_vs_sdpa.py [--rounds 5] [--real-n 4096] [--tau 16] [--heads shared]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from knobscope.models.sketchwalk_attn import SketchWalk, SketchWalkConfig, dense_causal_attention, selection_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--real-n", type=int, default=4096)
    parser.add_argument("--tau", type=int, default=16)
    parser.add_argument("--heads", choices=("shared", "per_kv_head"), default="shared")
    args = parser.parse_args()
    cfg = SketchWalkConfig(top_k_blocks=args.tau, head_selection=args.heads)  # B=64, k=64, s=8, N=2 by default
    print(f"config: B={cfg.block_size} k={cfg.sketch_dim} tau={cfg.top_k_blocks} s={cfg.sparsity_exponent} "
          f"N={cfg.skip_layers} heads={cfg.head_selection}; torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'n':>6} {'dense ms':>9} {'sketchwalk ms':>14} {'speedup':>8} {'bound':>6} {'share of bound':>15}")
    gen = torch.Generator().manual_seed(0)
    for n in (4096, 8192, 16384):
        q = torch.randn(1, 9, n, 64, generator=gen)
        k, v = torch.randn(1, 3, n, 64, generator=gen), torch.randn(1, 3, n, 64, generator=gen)
        walk = SketchWalk(SketchWalkConfig(**{**cfg.__dict__, "skip_layers": 0}), 64)
        dense_ms, sparse_ms = [], []
        with torch.inference_mode():
            for r in range(args.rounds + 1):  # the first round warms up
                start = time.perf_counter()
                dense_causal_attention(q, k, v)
                mid = time.perf_counter()
                walk.reset()
                walk.attend(0, q, k, v)
                end = time.perf_counter()
                if r:
                    dense_ms.append((mid - start) * 1e3)
                    sparse_ms.append((end - mid) * 1e3)
        indices, valid = walk.last_selection
        bound = n * (n + 1) / 2 / selection_pairs(indices, valid, n, cfg.block_size)[0]
        d, s = statistics.median(dense_ms), statistics.median(sparse_ms)
        print(f"{n:>6} {d:>9.0f} {s:>14.0f} {d / s:>8.2f} {bound:>6.2f} {d / s / bound:>15.2f}")

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
