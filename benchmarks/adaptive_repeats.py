"""Adaptive repeats against a fixed protocol, on SmolLM2: samples spent to reach the same frontier.

The same sweep (the ``lm`` workload on SmolLM2-135M, forced output length so every repeat does
the same work: active blocks x new tokens) is measured three ways in one run of this script:
``fixed``, 20 passes over the questions; ``auto``, ``repeats: auto`` (at least ``--min-repeats``,
then more until each configuration's ``--auto-target``, by default the frontier's own latency
objective ``total_ms_p95``, is known to +-``--target``, at most 20);
``race``, ``--min-repeats`` passes of every configuration, then ``knobscope refine-measurements``
(more passes only for configurations whose Pareto membership is uncertain, and their rivals)
until the frontier is decided. fixed and auto alternate configuration by configuration, so
machine drift hits both alike; race runs after them. Reported: samples each spent, the frontiers
over (total_ms_p95, accuracy), whether they hold the same configurations as fixed's, each front
point's P95 against fixed's (goal: within 2%), and the ratio of samples (goal: at most half).

    .venv/bin/python benchmarks/adaptive_repeats.py [--questions 16] [--target 0.02] [--min-repeats 3]
        [--auto-target total_ms_p95] [--threads N]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from pathlib import Path

import numpy as np

from knobscope.analysis import Objective, pareto_front
from knobscope.executors import run_local
from knobscope.refine import refine_measurements
from knobscope.results import load_run
from knobscope.spec import parse_spec


def workload(threads: int | None) -> dict:
    return {"name": "lm", "args": {"model": "smollm2", "ignore_eos": True, **({"threads": threads} if threads else {})}}


def spec(name: str, out: Path, config: dict, measure: dict, questions: int, threads: int | None) -> object:
    return parse_spec({
        "name": name,
        "workload": workload(threads),
        "knobs": {k: [v] for k, v in config.items()},
        "strategy": "full",
        "objectives": {"total_ms_p95": "min", "accuracy": "max"},
        "measure": {"warmup": 1, "num_samples": questions, **measure},
        "output": str(out),
    })  # fmt: skip


def half_difference(samples: object, repeats: int) -> dict[tuple[int, int], float]:
    """Per configuration, P95 of total_ms over the second half of the fixed protocol's passes
    relative to the first half's: how far the same measurement moves within one protocol."""
    out = {}
    for (blocks, tokens), group in samples.groupby(["num_active_blocks", "max_new_tokens"]):  # type: ignore[attr-defined]
        first = group[group["repeat"] < repeats // 2]["total_ms"]
        second = group[group["repeat"] >= repeats // 2]["total_ms"]
        out[(int(blocks), int(tokens))] = float(np.percentile(second, 95) / np.percentile(first, 95) - 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=16, help="questions per pass (a P95's upper bound needs 72 records)")
    parser.add_argument("--repeats", type=int, default=20, help="passes of the fixed protocol (and the adaptive cap)")
    parser.add_argument("--target", type=float, default=0.02)
    parser.add_argument("--min-repeats", type=int, default=3)
    parser.add_argument("--blocks", type=int, nargs="+", default=[10, 20, 30])
    parser.add_argument("--tokens", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--auto-target", default="total_ms_p95", help="the statistic repeats: auto makes precise (default: the frontier's latency objective)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the workload (default: torch's)")
    args = parser.parse_args()
    fixed = {"repeats": args.repeats}
    auto = {"repeats": "auto", "min_repeats": args.min_repeats, "max_repeats": args.repeats, "target_ci": args.target,
            "targets": [args.auto_target]}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"fixed": Path(tmp) / "fixed", "auto": Path(tmp) / "auto"}
        configs = [{"num_active_blocks": b, "max_new_tokens": t} for b, t in itertools.product(args.blocks, args.tokens)]
        for i, config in enumerate(configs):
            for arm in (("fixed", "auto") if i % 2 == 0 else ("auto", "fixed")):  # alternate which goes first
                run_local(spec(arm, dirs[arm], config, fixed if arm == "fixed" else auto, args.questions, args.threads))
        # race: every configuration in one run, then passes only where the frontier is undecided
        dirs["race"] = Path(tmp) / "race"
        race = parse_spec({
            "name": "race", "workload": workload(args.threads),
            "knobs": {"num_active_blocks": args.blocks, "max_new_tokens": args.tokens}, "strategy": "full",
            "objectives": {"total_ms_p95": "min", "accuracy": "max"},
            "measure": {"warmup": 1, "num_samples": args.questions, "repeats": args.min_repeats}, "output": str(dirs["race"]),
        })  # fmt: skip
        run_local(race)
        budget = len(configs) * args.questions * (args.repeats - args.min_repeats)
        refined = refine_measurements(dirs["race"], budget=budget)
        tables = {arm: load_run(d).table.sort_values(["num_active_blocks", "max_new_tokens"]).reset_index(drop=True)
                  for arm, d in dirs.items()}  # fmt: skip
        halves = half_difference(load_run(dirs["fixed"], with_samples=True).samples, args.repeats)
    objectives = [Objective("total_ms_p95", "min", "ms"), Objective("accuracy", "max")]
    fronts = {arm: pareto_front(t, objectives) for arm, t in tables.items()}
    spent = {arm: int(t["num_records"].sum()) for arm, t in tables.items()}
    print(f"{len(configs)} configurations x {args.questions} questions; fixed {args.repeats} passes vs auto "
          f"(min {args.min_repeats}, target +-{args.target:.0%} on {args.auto_target}, cap {args.repeats})")  # fmt: skip
    print(f"{'blocks':>6} {'tokens':>6} {'fixed P95 ms':>13} {'auto P95 ms':>12} {'diff':>7} {'auto passes':>11} {'target met':>10}")
    f, a, r_ = tables["fixed"], tables["auto"], tables["race"]
    for i in range(len(f)):
        diff = a.loc[i, "total_ms_p95"] / f.loc[i, "total_ms_p95"] - 1
        config = (int(f.loc[i, "num_active_blocks"]), int(f.loc[i, "max_new_tokens"]))
        print(f"{f.loc[i, 'num_active_blocks']:>6} {f.loc[i, 'max_new_tokens']:>6} {f.loc[i, 'total_ms_p95']:>13.1f} "
              f"{a.loc[i, 'total_ms_p95']:>12.1f} {diff:>+7.1%} {int(a.loc[i, 'repeats']):>11} {str(bool(a.loc[i, 'target_met'])):>10}"
              f"   race P95 {r_.loc[i, 'total_ms_p95']:>7.1f} ({r_.loc[i, 'total_ms_p95'] / f.loc[i, 'total_ms_p95'] - 1:+.1%}), "
              f"passes {int(r_.loc[i, 'num_records']) // args.questions}; fixed's halves {halves[config]:+.1%}")  # fmt: skip
    print(f"the fixed protocol against itself (P95 of passes 1-{args.repeats // 2} vs {args.repeats // 2 + 1}-{args.repeats}, "
          f"a minute apart): up to {max(abs(v) for v in halves.values()):.1%}, mean {np.mean([abs(v) for v in halves.values()]):.1%}: "
          "the floor under any comparison of P95s measured at different moments on this machine")  # fmt: skip
    key = lambda t: {(int(r.num_active_blocks), int(r.max_new_tokens)) for r in t.itertuples()}  # noqa: E731
    print(f"race: {'decided' if refined.decided else 'not decided'} after {refined.rounds} round(s) of refinement")
    for arm in ("auto", "race"):
        t = tables[arm]
        same = key(fronts["fixed"].frontier) == key(fronts[arm].frontier)
        diffs = []
        for r in fronts["fixed"].frontier.itertuples():
            match = t[(t.num_active_blocks == r.num_active_blocks) & (t.max_new_tokens == r.max_new_tokens)]
            diffs.append(abs(float(match["total_ms_p95"].iloc[0]) / r.total_ms_p95 - 1))
        print(f"{arm}: frontier {sorted(key(fronts[arm].frontier))} vs fixed {sorted(key(fronts['fixed'].frontier))}: same "
              f"configurations {same}; front points' P95 differ by up to {max(diffs):.1%} (goal <= 2%); samples {spent[arm]} "
              f"vs {spent['fixed']}: ratio {spent[arm] / spent['fixed']:.2f} (goal <= 0.5); mean |P95 diff| over all "
              f"configurations {np.mean(np.abs(t['total_ms_p95'] / f['total_ms_p95'] - 1)):.1%}")  # fmt: skip


if __name__ == "__main__":
    main()
