"""How sure `frontier`'s model of an objective is about what its search has not measured (issue 16).

On a measured table (as ``search_efficiency.py`` reads it), ``frontier`` with ``monotone`` (and a
seeded random ``--prior-share`` of ``--prior`` as its prior run, if given) searches ``--seeds``
times. After the first n evaluations of each search (``--after``), the objective's model is fitted
afresh to them, as the search fits it, and its posterior 10%, 50% and 90% quantiles are drawn at
every configuration not yet measured (those whose true value sits at an end of the metric's
declared range, such as the cosine of 1.0 where attention is dense, are left out: a model of the
range's logit never reaches the end). Printed per n, over all seeds' unmeasured configurations: the
share of true values above the 90% quantile and below the 10% quantile (10% each for a calibrated
model), each with a 95% bootstrap interval over seeds, the median over seeds of the Spearman
correlation between the posterior median and the truth, and where the underrated ones lie: each knob's mean position (0 = its first value,
1 = its last) among the configurations above the 90% quantile against among all unmeasured ones.

Usage: python benchmarks/search_calibration.py [--table runs/search_table] [--spec ...]
       [--prior runs/search_table_2048 --prior-share 0.8] [--objective cosine] [--after 8,11,14] [--seeds 10]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from scipy.special import ndtri
from scipy.stats import spearmanr

from knobscope.frontier import Frontier
from search_efficiency import MONOTONE, Table, fail, partial_prior, run_knobscope


def share(hits: list[int], counts: list[int]) -> str:
    """The pooled share of ``hits`` among ``counts``, with a 95% bootstrap interval over seeds."""
    hits_, counts_ = np.array(hits), np.array(counts)
    rng = np.random.default_rng(0)
    draws = rng.integers(len(hits_), size=(2000, len(hits_)))
    low, high = np.percentile(hits_[draws].sum(1) / counts_[draws].sum(1), [2.5, 97.5])
    return f"{hits_.sum() / counts_.sum():4.0%} [{low:.0%}, {high:.0%}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=Path("runs/search_table"))
    parser.add_argument("--spec", type=Path, default=Path(__file__).with_name("search_table.yaml"))
    parser.add_argument("--prior", type=Path, default=None, help="an earlier run of the same space")
    parser.add_argument("--prior-share", type=float, default=1.0, help="each seed's share of the prior run")
    parser.add_argument("--objective", default="cosine")
    parser.add_argument("--after", default="8,11,14", help="comma-separated numbers of evaluations")
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()
    try:
        after = sorted({int(n) for n in args.after.split(",")})
    except ValueError:
        fail(f"--after: {args.after!r} is not a comma-separated list of whole numbers")
    if not after or after[0] < 2:
        fail(f"--after: {args.after!r}; allowed: numbers of evaluations of at least 2")
    if not 0 < args.prior_share <= 1:
        fail(f"--prior-share: {args.prior_share} is not a share; allowed: more than 0, at most 1")
    if args.prior is not None and not (args.prior / "results.db").is_file():
        fail(f"--prior: {args.prior} is not a knobscope run directory (no results.db)")
    table = Table(args.table, args.spec)
    columns = [o.column for o in table.goal.objectives]
    if args.objective not in columns:
        fail(f"--objective: {args.objective!r} is not an objective of {args.spec}; objectives: {', '.join(columns)}")
    j = columns.index(args.objective)
    sign = 1.0 if table.maximise[j] else -1.0

    model = Frontier(monotone=MONOTONE)  # a fresh one per fit: no warm start from another search
    goal = model.goal(table.spec.objectives).with_ranges(table.spec.workload.workload_class().metrics)
    configs, index, _ = model.grid(table.space)
    truth = np.array([table.values(c.canonical)[j] for c in configs])
    span = goal.objectives[j].range
    bounds = None if span is None else tuple(sorted(np.multiply(span, sign)))
    at_end = np.zeros(len(configs), dtype=bool) if span is None else np.min(np.abs(truth[:, None] - np.array(span)), 1) <= 1e-9
    z = ndtri(np.array([0.1, 0.5, 0.9]))[:, None]
    positions = index / np.maximum(np.array([len(k.values) - 1 for k in table.space.knobs]), 1)

    scratch = tempfile.TemporaryDirectory(prefix="search-calibration-")
    tallies = {n: {"above": [], "below": [], "rho": [], "where": [], "all": []} for n in after}
    for seed in range(args.seeds):
        print(f"seed {seed + 1}/{args.seeds}", end="\r", flush=True)
        options: dict = {"monotone": MONOTONE}
        if args.prior is not None:
            prior = args.prior if args.prior_share == 1 else partial_prior(args.prior, args.prior_share, seed,
                                                                           Path(scratch.name) / f"prior-{seed}")  # fmt: skip
            options["prior"] = [str(prior)]
        position = {c.canonical: i for i, c in enumerate(configs)}
        order = [position[c] for c in run_knobscope(table, "frontier", options, seed, after[-1])[0]]
        for n in after:
            rows = np.array(order[:n])
            open_ = np.ones(len(configs), dtype=bool)
            open_[rows] = False
            candidates = np.flatnonzero(open_ & ~at_end)
            fresh = Frontier(monotone=MONOTONE)
            fresh.grid(table.space)
            low, median, high = sign * fresh.posterior(args.objective, rows, sign * truth[rows], candidates, bounds, z)
            if sign < 0:
                low, high = high, low
            value = truth[candidates]
            above = value > high
            t = tallies[n]
            t["above"].append(above.sum())
            t["below"].append((value < low).sum())
            t["all"].append(len(candidates))
            t["rho"].append(spearmanr(median, value).statistic)
            t["where"].append((positions[candidates][above].sum(0), positions[candidates].sum(0)))
    print(" " * 20, end="\r")
    knobs = [k.name for k in table.space.knobs]
    print(f"{args.objective}'s model after n evaluations of frontier+monotone{'+prior' if args.prior else ''} "
          f"({args.seeds} seeds): the true value at the unmeasured configurations against its posterior")  # fmt: skip
    for n in after:
        t = tallies[n]
        total, above, below = sum(t["all"]), sum(t["above"]), sum(t["below"])
        where_above = sum(w[0] for w in t["where"]) / max(above, 1)
        where_all = sum(w[1] for w in t["where"]) / total
        print(f"n={n:3d}: above the 90% quantile {share(t['above'], t['all'])}, below the 10% "
              f"{share(t['below'], t['all'])}; Spearman r of the median {np.median(t['rho']):.2f}")  # fmt: skip
        print("       mean knob position, above the 90% quantile / all unmeasured: "
              + ", ".join(f"{k} {a:.2f}/{b:.2f}" for k, a, b in zip(knobs, where_above, where_all)))


if __name__ == "__main__":
    main()
