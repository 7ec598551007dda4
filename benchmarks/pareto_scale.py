"""Frontier and hypervolume of one million configurations with three objectives.

Times knobscope's array path (``pareto_mask`` + ``hypervolume``) and its table path
(``pareto_front`` on a DataFrame: NaN/failure filtering, directions, normalised volume) next to
moocore called directly on the same array (``is_nondominated`` + ``hypervolume`` of the
non-dominated points), alternating the arms round by round on this noisy machine. Goal: the
array path within 1.2x of moocore.

    .venv/bin/python benchmarks/pareto_scale.py [--n 1000000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import moocore
import numpy as np
import pandas as pd

from knobscope.analysis import Objective, hypervolume, pareto_front, pareto_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    # latency (min), quality (max), memory (min); a curved trade-off so the frontier is not tiny
    latency = rng.uniform(1, 100, args.n)
    quality = 1 - np.exp(-latency / 30) + rng.normal(0, 0.05, args.n)
    memory = rng.uniform(100, 1000, args.n)
    values = np.column_stack([latency, quality, memory])
    maximise = np.array([False, True, False])
    ref = np.where(maximise, values.min(axis=0), values.max(axis=0))
    table = pd.DataFrame({"status": "done", "latency": latency, "quality": quality, "memory": memory})
    objectives = [Objective("latency", "min"), Objective("quality", "max"), Objective("memory", "min")]

    def direct() -> tuple[int, float]:
        mask = moocore.is_nondominated(values, maximise=maximise, keep_weakly=True)
        return int(mask.sum()), float(moocore.hypervolume(values[mask], ref=ref, maximise=maximise))

    def ours_array() -> tuple[int, float]:
        mask = pareto_mask(values, maximise)
        return int(mask.sum()), hypervolume(values, maximise, ref, mask=mask)

    def ours_table() -> tuple[int, float]:
        res = pareto_front(table, objectives)
        return int(res.table["pareto"].sum()), res.hypervolume

    arms = {"moocore direct": direct, "knobscope arrays": ours_array, "knobscope table": ours_table}
    times: dict[str, list[float]] = {k: [] for k in arms}
    answers = {}
    for _ in range(args.rounds):
        for name, fn in arms.items():
            t0 = time.perf_counter()
            answers[name] = fn()
            times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["moocore direct"])
    print(f"{args.n:,} configurations x 3 objectives, median of {args.rounds} alternated rounds")
    for name in arms:
        med = statistics.median(times[name])
        size, hv = answers[name]
        print(f"  {name:18s} {med * 1e3:9.1f} ms  ratio {med / base:5.2f}x  frontier {size:,}  hypervolume {hv:.6g}")
    assert len({a for a in answers.values()}) == 1, f"arms disagree: {answers}"


if __name__ == "__main__":
    main()
