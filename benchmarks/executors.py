"""What each executor costs per trial, and what two workers gain over one, side by side.

The same sweep (``--configs`` configurations, default 50) runs through ``local`` (this
process), ``devices`` with two CPU worker processes, and ``ray`` with one and with two actors
(a local Ray instance the executor starts). The workload is ``tests/plugins.py:KnownStages``:
its samples sleep a known time, so a trial lasts ``--trial-s`` seconds (default 1) whatever
else the machine does, and two workers can truly run two trials at once on two cores. Its own
time (the sum of the stored ``total_ms`` of every record) is the reference.

Reported per arm:
- wall: the invocation, start-up included (Ray's start, the actors' set-up);
- start-up: from the invocation's start to the first trial's claim;
- overhead per trial: worker time not spent in the workload, over the steady state (first
  claim to last finish): ``(span x workers - workload time) / trials``, in ms and as a share of
  the workload's own time per trial;
- speedup: the local arm's wall over the arm's.
Goals (issue 12): Ray adds under 5% at trials of one second, and under 50 ms per trial.

    .venv/bin/python benchmarks/executors.py [--configs 50] [--trial-s 1.0] [--only local,ray2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from knobscope.executors import run
from knobscope.spec import parse_spec
from knobscope.store import Store

PLUGINS = Path(__file__).resolve().parent.parent / "tests" / "plugins.py"
SAMPLES = 4


def make_spec(out: Path, configs: int, trial_s: float) -> object:
    # a_sleep varies a little so every configuration is its own trial; b_sleep is 1 ms.
    per_sample_ms = trial_s * 1e3 / SAMPLES - 2.0  # b_sleep and the 1 ms untimed tail
    n_a = max(1, configs // 2)
    a_values = [round(per_sample_ms - 0.05 * (n_a - 1) + 0.1 * i, 3) for i in range(n_a)]
    return parse_spec({
        "name": "executors",
        "workload": {"name": f"{PLUGINS}:KnownStages", "args": {"num_samples": SAMPLES}},
        "knobs": {"a_sleep": a_values, "b_sleep": [1, 1.001][: 2 if configs > 1 else 1]},
        "strategy": "full",
        "measure": {"warmup": 0, "repeats": 1},
        "output": str(out),
    }, source="benchmarks/executors.py")  # fmt: skip


def arm(name: str, executor: str, workers: int, options: dict, root: Path, configs: int, trial_s: float) -> dict:
    out = root / name
    spec = make_spec(out, configs, trial_s)
    start = time.time()
    result = run(spec, executor, **options)
    wall = time.time() - start
    with Store.open(out) as store:
        trials = store.trials(status="done")
        work_s = sum(rec["total_ms"] for _, rec in store.samples()) / 1e3
    assert len(trials) == result.counts["done"] == len(spec.strategy().select(spec.space)), result.counts
    first = min(t.started for t in trials)
    span = max(t.finished for t in trials) - first
    n = len(trials)
    overhead_s = (span * workers - work_s) / n
    return {"arm": name, "workers": workers, "trials": n, "wall_s": wall, "startup_s": first - start,
            "work_per_trial_s": work_s / n, "overhead_ms": overhead_s * 1e3,
            "overhead_pct": 100 * overhead_s / (work_s / n)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", type=int, default=50)
    parser.add_argument("--trial-s", type=float, default=1.0)
    parser.add_argument("--only", default="local,devices2,ray1,ray2", help="arms to run, comma-separated")
    args = parser.parse_args()
    arms = {
        "local": ("local", 1, {}),
        "devices2": ("devices", 2, {"devices": ["cpu", "cpu"]}),
        "ray1": ("ray", 1, {"workers": 1, "cpus_per_trial": 1}),
        "ray2": ("ray", 2, {"workers": 2, "cpus_per_trial": 1}),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            executor, workers, options = arms[name]
            print(f"{name}: {args.configs} configurations of {args.trial_s:g} s ...", flush=True)
            rows.append(arm(name, executor, workers, options, Path(tmp), args.configs, args.trial_s))
    base = next((r["wall_s"] for r in rows if r["arm"] == "local"), None)
    print(f"\n{'arm':<9} {'workers':>7} {'trials':>6} {'wall s':>8} {'start-up s':>10} {'work/trial s':>12} "
          f"{'overhead/trial':>15} {'share':>7} {'speedup':>8}")  # fmt: skip
    for r in rows:
        speedup = f"{base / r['wall_s']:.2f}x" if base else "-"
        print(f"{r['arm']:<9} {r['workers']:>7} {r['trials']:>6} {r['wall_s']:>8.1f} {r['startup_s']:>10.2f} "
              f"{r['work_per_trial_s']:>12.3f} {r['overhead_ms']:>12.1f} ms {r['overhead_pct']:>6.2f}% {speedup:>8}")  # fmt: skip
    for r in rows:
        if r["arm"].startswith("ray"):
            ok = r["overhead_pct"] < 5 and r["overhead_ms"] < 50
            print(f"goal for {r['arm']} (under 5% and under 50 ms per trial): {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
