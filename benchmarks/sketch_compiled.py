"""SketchWalk's sketch step (block scores, walk, selection) eager against compiled, side by side.

``sketch_kernel: auto`` compiles the step on CUDA, where its ~57 eager operators per layer are
as many kernel launches; this prints both, alternated call by call, per sequence length, as
wall time (synchronised on CUDA: the host's cost is what compiling removes), with the compile
time of each shape, and the median per-round ratio with a 95% bootstrap interval over rounds.
SmolLM2's heads (9 query, 3 key/value, 64 dimensions), the seed's defaults.

Usage:  .venv/bin/python benchmarks/sketch_compiled.py [--device cuda] [--lengths 4096,16384] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch
from scipy.stats import bootstrap

from knobscope.models.sketchwalk_attn import SketchWalkConfig, _compiled, sketch_projection, sketch_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--lengths", type=lambda text: [int(x) for x in text.split(",")], default=[4096, 16384])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    cfg = SketchWalkConfig()
    gen = torch.Generator().manual_seed(0)
    print(f"sketch step, {args.dtype} on {args.device}, B={cfg.block_size} k={cfg.sketch_dim} tau={cfg.top_k_blocks}, "
          f"torch threads {torch.get_num_threads()}")  # fmt: skip
    print(f"{'n':>7} {'compile s':>10} {'eager ms':>9} {'compiled ms':>12} {'eager/compiled, 95% interval':>29}")
    for n in args.lengths:
        q = torch.randn(1, 9, n, 64, generator=gen).to(args.device, getattr(torch, args.dtype))
        k = torch.randn(1, 3, n, 64, generator=gen).to(args.device, getattr(torch, args.dtype))
        proj = sketch_projection(64, cfg.sketch_dim, seed=cfg.hadamard_seed).to(args.device)
        walk, _, _ = sketch_step(q, k, None, proj, cfg)  # a previous layer's state: the usual case
        compiled = _compiled(sketch_step)
        start = time.perf_counter()
        compiled(q, k, walk, proj, cfg)
        sync()
        compile_s = time.perf_counter() - start
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.rounds + 1):  # the first round warms up
            for name, step in (("eager", sketch_step), ("compiled", compiled)):
                sync()
                start = time.perf_counter()
                step(q, k, walk, proj, cfg)
                sync()
                times[name].append((time.perf_counter() - start) * 1e3)
        eager, fused = (statistics.median(times[name][1:]) for name in ("eager", "compiled"))
        # per round, the two calls side by side: the ratio's interval over rounds (seeded bootstrap of the median)
        ratios = np.array(times["eager"][1:]) / np.array(times["compiled"][1:])
        ci = bootstrap((ratios,), np.median, confidence_level=0.95, random_state=0).confidence_interval
        print(f"{n:>7} {compile_s:>10.1f} {eager:>9.3f} {fused:>12.3f} {np.median(ratios):>8.2f} [{ci.low:.2f}, {ci.high:.2f}]")


if __name__ == "__main__":
    main()
