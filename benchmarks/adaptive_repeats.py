"""Adaptive repeats against a fixed protocol, on a real workload: samples spent to reach the same frontier.

The same sweep is measured three ways in one run of this script. ``--workload lm`` (default): the
``lm`` workload on SmolLM2-135M, forced output length so every repeat does the same work, active
blocks x new tokens, objectives (total_ms_p95, accuracy). ``--workload sketchwalk``: SketchWalk
on seed 004's synthetic Q/K/V, block size x top-k blocks, objectives (sketchwalk_ms_p95, cosine);
a sample is one draw, so a pass is ``--questions`` draws. The three ways:
``fixed``, 20 passes over the questions; ``auto``, ``repeats: auto`` (at least ``--min-repeats``,
then more until each configuration's ``--auto-target``, by default the frontier's own latency
objective, ``total_ms_p95`` or ``sketchwalk_ms_p95``, is known to +-``--target``, at most 20);
``race``, ``--min-repeats`` passes of every configuration, then ``knobscope refine-measurements``
(more passes only for configurations whose Pareto membership is uncertain, and their rivals)
until the frontier is decided. fixed and auto alternate configuration by configuration, so
machine drift hits both alike; race runs after them. Reported: samples each spent, the frontiers
over the two objectives, whether they hold the same configurations as fixed's, each front point's
P95 against fixed's (goal: within 2%), the ratio of samples (goal: at most half), and the fixed
protocol against itself (the P95 of its first half of passes against its second): the floor under
any comparison of P95s measured at different moments on this machine.

    .venv/bin/python benchmarks/adaptive_repeats.py [--workload lm|sketchwalk] [--device auto|cpu|cuda]
        [--questions 16] [--target 0.02] [--min-repeats 3] [--auto-target COLUMN] [--threads N]
        [--model smollm2] [--seq-len 2048] [--dtype float32] [--kernel batched|flex] [--sketch eager|compiled]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knobscope.analysis import Objective, pareto_front
from knobscope.executors import run_local
from knobscope.refine import refine_measurements
from knobscope.results import load_run
from knobscope.spec import parse_spec


@dataclass(frozen=True)
class Sweep:
    """What is measured: the workload, its two knobs and the frontier's two objectives."""

    workload: dict
    knobs: tuple[str, str]
    values: tuple[list[int], list[int]]
    latency: str  # the per-sample stage whose P95 is the latency objective
    quality: str
    fixed: dict  # knobs held at one value

    @property
    def objectives(self) -> dict[str, str]:
        return {f"{self.latency}_p95": "min", self.quality: "max"}

    def configs(self) -> list[dict[str, list]]:
        """Each configuration as a spec's knobs (one value each)."""
        return [{**{k: [v] for k, v in zip(self.knobs, c)}, **self.fixed} for c in itertools.product(*self.values)]

    def grid(self) -> dict[str, list]:
        return {**dict(zip(self.knobs, self.values)), **self.fixed}

    def key(self, row: object) -> tuple[int, int]:
        return tuple(int(getattr(row, k)) for k in self.knobs)  # type: ignore[return-value]


def sweep(args: argparse.Namespace) -> Sweep:
    extra = {"threads": args.threads} if args.threads else {}
    if args.workload == "lm":
        return Sweep({"name": "lm", "args": {"model": args.model, "ignore_eos": True, **extra}},
                     ("num_active_blocks", "max_new_tokens"), (args.blocks, args.tokens), "total_ms", "accuracy",
                     {"dtype": [args.dtype]} if args.dtype != "float32" else {})  # fmt: skip
    draws = {"data": "synthetic", "seq_len": args.seq_len, "windows": args.questions, "edge_cases": False,
             "dtype": args.dtype, **extra}  # fmt: skip
    # By default the batched kernel and the eager sketch: the question is the measurement's
    # statistics, not SketchWalk's speed, and nothing then waits on a compiler. On a GPU those
    # launch hundreds of kernels per layer, so their P95 is the host's jitter (an H200 run: the
    # fixed protocol differed from itself by up to 78%); --kernel flex --sketch compiled there.
    return Sweep({"name": "sketchwalk", "args": draws}, ("block_size", "top_k_blocks"), (args.block_sizes, args.top_k),
                 "sketchwalk_ms", "cosine", {"sparse_kernel": [args.kernel], "sketch_kernel": [args.sketch]})  # fmt: skip


def spec(name: str, out: Path, the: Sweep, knobs: dict, measure: dict, questions: int, device: str) -> object:
    return parse_spec({
        "name": name,
        "workload": the.workload,
        "knobs": knobs,
        "strategy": "full",
        "objectives": the.objectives,
        "measure": {"warmup": 1, "device": device, "num_samples": questions, **measure},
        "output": str(out),
    })  # fmt: skip


def half_difference(samples: object, the: Sweep, repeats: int) -> dict[tuple[int, int], float]:
    """Per configuration, P95 of the latency over the second half of the fixed protocol's passes
    relative to the first half's: how far the same measurement moves within one protocol."""
    out = {}
    for config, group in samples.groupby(list(the.knobs)):  # type: ignore[attr-defined]
        first = group[group["repeat"] < repeats // 2][the.latency]
        second = group[group["repeat"] >= repeats // 2][the.latency]
        out[tuple(int(v) for v in config)] = float(np.percentile(second, 95) / np.percentile(first, 95) - 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["lm", "sketchwalk"], default="lm")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--questions", type=int, default=16, help="samples per pass: questions (lm) or synthetic draws "
                        "(sketchwalk); a P95's upper bound needs 72 records")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=20, help="passes of the fixed protocol (and the adaptive cap)")
    parser.add_argument("--target", type=float, default=0.02)
    parser.add_argument("--min-repeats", type=int, default=3)
    parser.add_argument("--model", default="smollm2", help="lm: the model (a name or a local checkpoint)")
    parser.add_argument("--blocks", type=int, nargs="+", default=[10, 20, 30], help="lm: active blocks")
    parser.add_argument("--tokens", type=int, nargs="+", default=[4, 8], help="lm: new tokens")
    parser.add_argument("--block-sizes", type=int, nargs="+", default=[32, 64, 128], help="sketchwalk: block sizes")
    parser.add_argument("--top-k", type=int, nargs="+", default=[4, 8], help="sketchwalk: top-k blocks")
    parser.add_argument("--seq-len", type=int, default=2048, help="sketchwalk: tokens per draw")
    parser.add_argument("--kernel", choices=["batched", "flex"], default="batched", help="sketchwalk: sparse_kernel")
    parser.add_argument("--sketch", choices=["eager", "compiled"], default="eager", help="sketchwalk: sketch_kernel")
    parser.add_argument("--dtype", default="float32", help="dtype of Q/K/V (sketchwalk) or of the weights (lm)")
    parser.add_argument("--auto-target", default=None, help="the statistic repeats: auto makes precise (default: the "
                        "frontier's latency objective)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the workload (default: torch's)")
    args = parser.parse_args()
    the = sweep(args)
    latency = f"{the.latency}_p95"
    auto_target = args.auto_target or latency
    fixed = {"repeats": args.repeats}
    auto = {"repeats": "auto", "min_repeats": args.min_repeats, "max_repeats": args.repeats, "target_ci": args.target,
            "targets": [auto_target]}  # fmt: skip
    configs = the.configs()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {"fixed": Path(tmp) / "fixed", "auto": Path(tmp) / "auto"}
        for i, config in enumerate(configs):
            for arm in (("fixed", "auto") if i % 2 == 0 else ("auto", "fixed")):  # alternate which goes first
                run_local(spec(arm, dirs[arm], the, config, fixed if arm == "fixed" else auto, args.questions, args.device))
        # race: every configuration in one run, then passes only where the frontier is undecided
        dirs["race"] = Path(tmp) / "race"
        run_local(spec("race", dirs["race"], the, the.grid(), {"repeats": args.min_repeats}, args.questions, args.device))
        budget = len(configs) * args.questions * (args.repeats - args.min_repeats)
        refined = refine_measurements(dirs["race"], budget=budget)
        tables = {arm: load_run(d).table.sort_values(list(the.knobs)).reset_index(drop=True) for arm, d in dirs.items()}
        halves = half_difference(load_run(dirs["fixed"], with_samples=True).samples, the, args.repeats)
    objectives = [Objective(latency, "min", "ms"), Objective(the.quality, "max")]
    fronts = {arm: pareto_front(t, objectives) for arm, t in tables.items()}
    spent = {arm: int(t["num_records"].sum()) for arm, t in tables.items()}
    print(f"{the.workload['name']}: {len(configs)} configurations x {args.questions} samples; fixed {args.repeats} passes vs "
          f"auto (min {args.min_repeats}, target +-{args.target:.0%} on {auto_target}, cap {args.repeats})")  # fmt: skip
    w = max(len(k) for k in the.knobs)
    print(f"{the.knobs[0]:>{w}} {the.knobs[1]:>{w}} {'fixed P95 ms':>13} {'auto P95 ms':>12} {'diff':>7} {'auto passes':>11} {'target met':>10}")
    f, a, r_ = tables["fixed"], tables["auto"], tables["race"]
    for i in range(len(f)):
        diff = a.loc[i, latency] / f.loc[i, latency] - 1
        config = tuple(int(f.loc[i, k]) for k in the.knobs)
        print(f"{config[0]:>{w}} {config[1]:>{w}} {f.loc[i, latency]:>13.2f} {a.loc[i, latency]:>12.2f} {diff:>+7.1%} "
              f"{int(a.loc[i, 'repeats']):>11} {str(bool(a.loc[i, 'target_met'])):>10}   race P95 {r_.loc[i, latency]:>7.2f} "
              f"({r_.loc[i, latency] / f.loc[i, latency] - 1:+.1%}), passes {int(r_.loc[i, 'num_records']) // args.questions}; "
              f"fixed's halves {halves[config]:+.1%}")  # fmt: skip
    print(f"the fixed protocol against itself (P95 of passes 1-{args.repeats // 2} vs {args.repeats // 2 + 1}-{args.repeats}): "
          f"up to {max(abs(v) for v in halves.values()):.1%}, mean {np.mean([abs(v) for v in halves.values()]):.1%}: "
          "the floor under any comparison of P95s measured at different moments on this machine")  # fmt: skip
    print(f"race: {'decided' if refined.decided else 'not decided'} after {refined.rounds} round(s) of refinement")
    for arm in ("auto", "race"):
        t = tables[arm]
        keys = {arm_: {the.key(r) for r in fronts[arm_].frontier.itertuples()} for arm_ in ("fixed", arm)}
        diffs = []
        for r in fronts["fixed"].frontier.itertuples():
            match = t[(t[the.knobs[0]] == getattr(r, the.knobs[0])) & (t[the.knobs[1]] == getattr(r, the.knobs[1]))]
            diffs.append(abs(float(match[latency].iloc[0]) / getattr(r, latency) - 1))
        print(f"{arm}: frontier {sorted(keys[arm])} vs fixed {sorted(keys['fixed'])}: same configurations "
              f"{keys[arm] == keys['fixed']}; front points' P95 differ by up to {max(diffs):.1%} (goal <= 2%); samples "
              f"{spent[arm]} vs {spent['fixed']}: ratio {spent[arm] / spent['fixed']:.2f} (goal <= 0.5); mean |P95 diff| "
              f"over all configurations {np.mean(np.abs(t[latency] / f[latency] - 1)):.1%}")  # fmt: skip

if __name__ == "__main__":
    main()
