"""The bootstrap analysis of a large table: 10,000 configurations with 20 samples each.

Builds a run's table and per-sample records (two objectives: a latency with one record per
sample, resampled by paired sample ids, and a latency measured twice per sample, resampled
within samples), then times :func:`resample_objectives` (the replicates) and
:func:`frontier_uncertainty` (probability of optimality, ties, hypervolume interval, band) over
several rounds. Goal: under 10 s for the whole bootstrap analysis with the default 400 replicates.

    .venv/bin/python benchmarks/uncertainty_scale.py [--configs 10000] [--samples 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from knobscope.analysis import Objective, pareto_front
from knobscope.analysis.uncertainty import RESAMPLES, frontier_uncertainty, resample_objectives


def tables(configs: int, samples: int, repeats: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    cost = rng.uniform(10, 100, configs)  # a trade-off: quality rises with cost, with scatter
    quality = np.log(cost) + rng.normal(0, 0.3, configs)
    trial = np.repeat(np.arange(configs), samples * repeats)
    sample = np.tile(np.repeat(np.arange(samples), repeats), configs)
    records = pd.DataFrame({
        "trial_id": [f"t{i}" for i in trial],
        "sample_id": sample,
        "total_ms": np.repeat(cost, samples * repeats) * rng.lognormal(0, 0.05, len(trial)),
        "quality": np.repeat(quality, samples * repeats) + rng.normal(0, 0.2, len(trial)),
    })  # fmt: skip
    by = records.groupby("trial_id", sort=False)
    table = pd.DataFrame({"trial_id": [f"t{i}" for i in range(configs)], "status": "done"})
    table["total_ms_p95"] = by["total_ms"].quantile(0.95).reindex(table["trial_id"]).to_numpy()
    table["quality"] = by["quality"].mean().reindex(table["trial_id"]).to_numpy()
    return table, records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=RESAMPLES)
    args = parser.parse_args()
    objectives = [Objective("total_ms_p95", "min", "ms"), Objective("quality", "max")]
    for repeats, how in ((1, "one record per sample: paired resampling of sample ids"),
                         (2, "two repeats per sample: latency resampled within samples")):  # fmt: skip
        table, records = tables(args.configs, args.samples, repeats)
        front = pareto_front(table, objectives)
        times = {"replicates": [], "frontier": []}
        for _ in range(args.rounds):
            start = time.perf_counter()
            rep = resample_objectives(front.table, records, objectives, resamples=args.resamples, seed=0)
            mid = time.perf_counter()
            unc = frontier_uncertainty(rep, reference=front.reference)
            end = time.perf_counter()
            times["replicates"].append(mid - start)
            times["frontier"].append(end - mid)
        r, f = statistics.median(times["replicates"]), statistics.median(times["frontier"])
        counts = {s: sum(v == s for v in unc.status.values()) for s in ("optimal", "uncertain", "dominated")}
        print(f"{args.configs} configurations x {args.samples} samples x {repeats} repeat(s) ({how}), {args.resamples} replicates:")
        print(f"  replicates {r:.2f} s + frontier uncertainty {f:.2f} s = {r + f:.2f} s (median of {args.rounds}; goal < 10 s)")
        print(f"  {counts['optimal']} optimal beyond noise, {counts['uncertain']} uncertain, {counts['dominated']} dominated; "
              f"estimated frontier {int(front.table['pareto'].sum())} configurations")  # fmt: skip


if __name__ == "__main__":
    main()
