"""Adaptive repeats against a fixed protocol, on SmolLM2: samples spent to reach the same frontier.

The same sweep (the ``lm`` workload on SmolLM2-135M, forced output length so every repeat does
the same work: active blocks x new tokens) is measured twice in one run of this script: with a
fixed 20 passes over the questions, and with ``repeats: auto`` (at least ``--min-repeats``, then
more until each configuration's mean latency is known to +-``--target``, at most 20). The arms
alternate configuration by configuration (each configuration measured by both before the next),
so machine drift hits both alike. Reported: samples each spent, both frontiers over (total_ms_p95,
accuracy), whether they hold the same configurations, and each front point's P95 in both (goal:
within 2%), and the ratio of samples (goal: adaptive at most half of fixed).

    .venv/bin/python benchmarks/adaptive_repeats.py [--questions 8] [--target 0.02] [--min-repeats 3]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np

from knobscope.analysis import Objective, pareto_front
from knobscope.executors import run_local
from knobscope.results import load_run
from knobscope.spec import parse_spec


def spec(name: str, out: Path, config: dict, measure: dict, questions: int) -> object:
    return parse_spec({
        "name": name,
        "workload": {"name": "lm", "args": {"model": "smollm2", "ignore_eos": True}},
        "knobs": {k: [v] for k, v in config.items()},
        "strategy": "full",
        "objectives": {"total_ms_p95": "min", "accuracy": "max"},
        "measure": {"warmup": 1, "num_samples": questions, **measure},
        "output": str(out),
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=20, help="passes of the fixed protocol (and the adaptive cap)")
    parser.add_argument("--target", type=float, default=0.02)
    parser.add_argument("--min-repeats", type=int, default=3)
    parser.add_argument("--blocks", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--tokens", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    fixed = {"repeats": args.repeats}
    auto = {"repeats": "auto", "min_repeats": args.min_repeats, "max_repeats": args.repeats, "target_ci": args.target,
            "targets": ["total_ms_mean"]}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"fixed": Path(tmp) / "fixed", "auto": Path(tmp) / "auto"}
        configs = [{"num_active_blocks": b, "max_new_tokens": t} for b, t in itertools.product(args.blocks, args.tokens)]
        for i, config in enumerate(configs):
            for arm in (("fixed", "auto") if i % 2 == 0 else ("auto", "fixed")):  # alternate which goes first
                run_local(spec(arm, dirs[arm], config, fixed if arm == "fixed" else auto, args.questions), progress=False)
        tables = {arm: load_run(d).table.sort_values(["num_active_blocks", "max_new_tokens"]).reset_index(drop=True)
                  for arm, d in dirs.items()}  # fmt: skip
    objectives = [Objective("total_ms_p95", "min", "ms"), Objective("accuracy", "max")]
    fronts = {arm: pareto_front(t, objectives) for arm, t in tables.items()}
    spent = {arm: int(t["num_records"].sum()) for arm, t in tables.items()}
    print(f"{len(configs)} configurations x {args.questions} questions; fixed {args.repeats} passes vs auto "
          f"(min {args.min_repeats}, target +-{args.target:.0%} on the mean latency, cap {args.repeats})")  # fmt: skip
    print(f"{'blocks':>6} {'tokens':>6} {'fixed P95 ms':>13} {'auto P95 ms':>12} {'diff':>7} {'auto passes':>11} {'target met':>10}")
    f, a = tables["fixed"], tables["auto"]
    for i in range(len(f)):
        diff = a.loc[i, "total_ms_p95"] / f.loc[i, "total_ms_p95"] - 1
        print(f"{f.loc[i, 'num_active_blocks']:>6} {f.loc[i, 'max_new_tokens']:>6} {f.loc[i, 'total_ms_p95']:>13.1f} "
              f"{a.loc[i, 'total_ms_p95']:>12.1f} {diff:>+7.1%} {int(a.loc[i, 'repeats']):>11} {str(bool(a.loc[i, 'target_met'])):>10}")  # fmt: skip
    key = lambda t: {(int(r.num_active_blocks), int(r.max_new_tokens)) for r in t.itertuples()}  # noqa: E731
    same = key(fronts["fixed"].frontier) == key(fronts["auto"].frontier)
    front_rows = fronts["fixed"].frontier
    diffs = []
    for r in front_rows.itertuples():
        match = a[(a.num_active_blocks == r.num_active_blocks) & (a.max_new_tokens == r.max_new_tokens)]
        diffs.append(abs(float(match["total_ms_p95"].iloc[0]) / r.total_ms_p95 - 1))
    print(f"frontier (fixed): {sorted(key(fronts['fixed'].frontier))}; (auto): {sorted(key(fronts['auto'].frontier))}; "
          f"same configurations: {same}")  # fmt: skip
    print(f"front points' P95, auto vs fixed: largest difference {max(diffs):.1%} (goal <= 2%)")
    print(f"samples spent: fixed {spent['fixed']}, auto {spent['auto']}: ratio {spent['auto'] / spent['fixed']:.2f} (goal <= 0.5)")
    print(f"front reached with <= 2% P95 differences: {same and max(diffs) <= 0.02}; mean |diff| over all configurations "
          f"{np.mean(np.abs(a['total_ms_p95'] / f['total_ms_p95'] - 1)):.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
