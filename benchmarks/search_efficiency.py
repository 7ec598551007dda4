"""How many evaluations each search needs to find a real Pareto front (issue 16).

A full grid measured once with a real workload (``benchmarks/search_table.yaml``: 384 SketchWalk
configurations on SmolLM2's Q/K/V; ``knobscope run benchmarks/search_table.yaml --out
runs/search_table``) is the ground truth. Every knobscope adaptive strategy (driven through its
``propose``, as the runner does) and Optuna's TPE, GP, NSGA-II, random and QMC samplers (called
directly, ask-and-tell) search that table by lookup, ``--seeds`` independent seeds each. A
search's progress is the hypervolume of the configurations it has evaluated, with the objectives
scaled to [0, 1] from the grid's worst to its best value and the reference point at the grid's
worst; a proposal already evaluated costs no evaluation (Optuna's samplers do repeat on a finite
grid: those asks are counted and timed, not evaluated). Printed per search, median over seeds
[min, max]: distinct evaluations to 90/95/99% of the grid's hypervolume, and milliseconds per
proposal; then every knobscope search against the best Optuna sampler: evaluations to 99% (ratio
of the medians, Mann-Whitney U test) and time per proposal (median of per-seed ratios: the searches
of one seed run one after another, so the machine's drift falls on all alike), each with a 95%
bootstrap interval over seeds, and which of the goals (<= 0.5, <= 2x) it meets. ``--known
cosine`` adds ``frontier+mono[known:cosine]`` (and ``+prior``): the same search given the table's
true cosine in place of its model's posterior, to count the evaluations that model costs.

Usage: python benchmarks/search_efficiency.py [--table runs/search_table] [--seeds 10]
       [--first-seed 0] [--budget 120] [--only frontier,optuna-gp] [--prior runs/search_table_2048 [--prior-share 0.8]]
       [--prior-wobble 1e-9] [--known cosine [--known speedup_bound ...]] [--json out.json]
       python benchmarks/search_efficiency.py --merge a.json b.json [--plot progress.png]   # split invocations
       (a search in several files, run over different seeds with --first-seed: its seeds pooled)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from scipy.stats import bootstrap, mannwhitneyu

from knobscope.analysis.pareto import hypervolume
from knobscope.frontier import Frontier
from knobscope.search import Goal, Observation
from knobscope.spec import load_spec
from knobscope.space import Config, Space
from knobscope.strategies import get_strategy
from knobscope.trials import search_history

LEVELS = (0.90, 0.95, 0.99)
FALLBACKS: dict[str, list[float]] = {}  # per Optuna-based knobscope search: share of trials the sampler did not choose


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2."""
    print(f"{Path(sys.argv[0]).name}: {message}", file=sys.stderr)  # this script, or one that imports it
    raise SystemExit(2)


class Table:
    """The measured grid: a lookup by configuration, and the hypervolume bookkeeping."""

    def __init__(self, run_dir: Path, spec_path: Path) -> None:
        from knobscope.errors import KnobscopeError
        from knobscope.store import Store

        try:  # a missing or bad spec or store: one line, exit status 2
            self.spec = load_spec(spec_path)
            self.space: Space = self.spec.space
            self.goal = Goal(objectives=tuple(self.spec.objectives))
            with Store.open(run_dir) as store:
                history = [o for o in search_history(store, self.spec) if o.status == "done"]
        except KnobscopeError as e:
            fail(str(e))
        self.rows = {o.config.canonical: o for o in history}
        missing = self.space.grid_size - len(self.rows)
        if missing:
            fail(f"{run_dir}: {missing} of {self.space.grid_size} configurations are not measured; "
                             f"run 'knobscope run {spec_path} --out {run_dir}' to finish the table")  # fmt: skip
        values = np.array([self.goal.values(o) for o in self.rows.values()])
        self.maximise = np.array([o.maximise for o in self.goal.objectives])
        worst = np.where(self.maximise, values.min(0), values.max(0))
        best = np.where(self.maximise, values.max(0), values.min(0))
        self._scale = lambda v: np.where(self.maximise, (v - worst) / (best - worst), (worst - v) / (worst - best))
        self.full_hv = self.hv(list(self.rows))

    def values(self, canonical: str) -> list[float]:
        return self.goal.values(self.rows[canonical])  # type: ignore[return-value]

    def hv(self, canonicals: list[str]) -> float:
        points = self._scale(np.array([self.values(c) for c in canonicals]))
        return hypervolume(points, True, reference=np.zeros(points.shape[1]))

    def progress(self, order: list[str]) -> np.ndarray:
        """The fraction of the grid's hypervolume after each distinct evaluation."""
        points = self._scale(np.array([self.values(c) for c in order]))
        return np.array([hypervolume(points[: i + 1], True, reference=np.zeros(points.shape[1])) / self.full_hv
                         for i in range(len(order))])  # fmt: skip


class KnownFrontier(Frontier):
    """``frontier`` given the table's true values of some objectives in place of their models'
    posteriors (``--known``): how many evaluations each objective's model costs."""

    def __init__(self, table: Table, known: tuple[str, ...], **options: Any) -> None:
        super().__init__(**options)
        self.known, self.space = known, table.space
        columns = [o.column for o in table.goal.objectives]
        self.truth = {c: table.values(c) for c in table.rows}
        self.column = {name: (columns.index(name), table.maximise[columns.index(name)]) for name in known}

    def posterior(self, name: str, rows: np.ndarray, target: np.ndarray, candidates: np.ndarray,
                  bounds: tuple[float, float] | None, z: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
        if name not in self.known:
            return super().posterior(name, rows, target, candidates, bounds, z)
        j, maximise = self.column[name]
        configs = self.grid(self.space)[0]  # the search's grid: kept from its first proposal
        truth = np.array([self.truth[configs[i].canonical][j] for i in candidates]) * (1.0 if maximise else -1.0)
        return np.broadcast_to(truth, (self.options.samples if z is None else len(z), len(truth)))  # certain: every quantile alike


def run_knobscope(table: Table, name: str, options: dict, seed: int, budget: int) -> tuple[list[str], list[float]]:
    search = name + str(options)  # the same for every seed: FALLBACKS pools the seeds of one search
    options = {**options, "n_trials": budget, "seed": seed}
    known = options.pop("known", ())
    strategy = KnownFrontier(table, known, **options) if known else get_strategy(name, options)
    # as `knobscope run` has it: a bounded metric (the cosine) brings its declared range
    goal = strategy.goal(table.spec.objectives).with_ranges(table.spec.workload.workload_class().metrics)
    history: list[Observation] = []
    times = []
    while len(history) < budget:
        t0 = time.perf_counter()
        config = strategy.propose(table.space, history, goal)
        times.append(time.perf_counter() - t0)
        if config is None:
            break
        history.append(table.rows[config.canonical])
    if hasattr(strategy, "fallbacks"):
        FALLBACKS.setdefault(search, []).append(strategy.fallbacks / max(len(history), 1))
    return [o.config.canonical for o in history], times


def run_optuna(table: Table, sampler: Callable[[int], object], seed: int, budget: int) -> tuple[list[str], list[float]]:
    import optuna
    from optuna.distributions import IntDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    knobs = table.space.knobs
    dists = {k.name: IntDistribution(0, len(k.values) - 1) for k in knobs}
    study = optuna.create_study(directions=table.goal.directions, sampler=sampler(seed))
    order: list[str] = []
    seen: set[str] = set()
    times = []
    for _ in range(20 * budget):  # asks, repeats included
        if len(order) >= budget:
            break
        t0 = time.perf_counter()
        trial = study.ask(dists)
        times.append(time.perf_counter() - t0)
        config = Config((k.name, k.values[trial.params[k.name]]) for k in knobs)
        study.tell(trial, table.values(config.canonical))
        if config.canonical not in seen:
            seen.add(config.canonical)
            order.append(config.canonical)
    return order, times


def optuna_samplers(table: Table) -> dict[str, Callable[[int], object]]:
    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # QMCSampler's, once per seed
    return {
        "optuna-tpe": lambda s: optuna.samplers.TPESampler(seed=s, multivariate=True),
        "optuna-gp": lambda s: optuna.samplers.GPSampler(seed=s),
        "optuna-nsga2": lambda s: optuna.samplers.NSGAIISampler(seed=s),
        "optuna-random": lambda s: optuna.samplers.RandomSampler(seed=s),
        "optuna-qmc": lambda s: optuna.samplers.QMCSampler(seed=s, scramble=True),
    }


# What a SketchWalk user knows before measuring anything: attending more pairs (more or larger
# blocks) lowers the speedup bound and does not lower the cosine; the bound counts pairs, so the
# sketch does not change it. frontier checks these against the table as it goes.
MONOTONE = {
    "speedup_bound": {"block_size": "decreasing", "top_k_blocks": "decreasing", "sketch_dim": "none",
                      "sparsity_exponent": "none"},
    "cosine": {"block_size": "increasing", "top_k_blocks": "increasing"},
}  # fmt: skip


def partial_prior(run_dir: Path, share: float, seed: int, into: Path, *, wobble: float = 0.0,
                  metrics: tuple[str, ...] = ()) -> Path:  # fmt: skip
    """A copy of prior run ``run_dir`` in ``into`` that keeps a seeded random ``share`` of its
    finished configurations: a prior run that measured part of the space. With the whole prior
    every seed of a search from it makes the same search (its first design is the prior's front
    and the expected improvement is deterministic), so its evaluations would come from one search,
    however many seeds; a different part of the prior per seed shows how much they depend on
    which configurations the earlier run happened to have. ``wobble``: each kept configuration's
    mean of each of ``metrics`` multiplied by a seeded factor in 1 +- wobble (``--prior-wobble``)."""
    import sqlite3
    from contextlib import closing

    into.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(run_dir / "results.db")) as source, closing(sqlite3.connect(into / "results.db")) as copy:
        source.backup(copy)
        done = [row[0] for row in copy.execute("SELECT trial_id FROM trials WHERE status = 'done' ORDER BY seq")]
        rng = np.random.default_rng([seed, 16])
        kept = max(1, round(share * len(done)))  # a prior with nothing in it is no prior
        dropped = [(done[i],) for i in rng.permutation(len(done))[kept:]]
        with copy:
            copy.executemany("DELETE FROM samples WHERE trial_id = ?", dropped)
            copy.executemany("DELETE FROM trials WHERE trial_id = ?", dropped)
        if wobble:
            moved = []
            for trial_id, text in copy.execute("SELECT trial_id, summary FROM trials WHERE status = 'done' ORDER BY seq"):
                summary = json.loads(text)
                for name in metrics:
                    factor = 1 + wobble * rng.uniform(-1, 1)
                    # the configuration's value (what a goal reads) and the samples' mean alike
                    for entry, key in ((summary.get("values", {}).get(name), "value"),
                                       (summary.get("metrics", {}).get(name), "mean")):  # fmt: skip
                        if isinstance(entry, dict) and isinstance(entry.get(key), float) and math.isfinite(entry[key]):
                            entry[key] *= factor
                moved.append((json.dumps(summary), trial_id))
            with copy:
                copy.executemany("UPDATE trials SET summary = ? WHERE trial_id = ?", moved)
    return into


def knobscope_searches(prior: Path | None, known: list[tuple[str, ...]]) -> dict[str, tuple[str, dict]]:
    out = {
        "frontier": ("frontier", {}),
        "frontier+mono": ("frontier", {"monotone": MONOTONE}),
        "bayesian-gp": ("bayesian", {"sampler": "gp"}),
        "bayesian-tpe": ("bayesian", {"sampler": "tpe"}),
        "nsga2": ("nsga2", {}),
        "refine": ("refine", {}),
    }
    if prior is not None:
        out["frontier+prior"] = ("frontier", {"prior": [str(prior)]})
        out["frontier+mono+prior"] = ("frontier", {"monotone": MONOTONE, "prior": [str(prior)]})
    for names in known:
        tag = f"[known:{'+'.join(names)}]"
        out["frontier+mono" + tag] = ("frontier", {"monotone": MONOTONE, "known": names})
        if prior is not None:
            out["frontier+mono+prior" + tag] = ("frontier", {"monotone": MONOTONE, "prior": [str(prior)], "known": names})
    return out


def header(width: int) -> str:
    return f"{'search':{width}s} " + " ".join(f"{'to ' + format(level, '.0%'):>18s}" for level in LEVELS) + f" {'ms/proposal':>12s}"


def print_table(results: dict[str, dict]) -> None:
    width = max([20, *map(len, results)])
    print(header(width))
    for label, result in results.items():
        print(row(label, result, width))


def row(label: str, result: dict, width: int = 20) -> str:
    cells = []
    for level in LEVELS:
        r = np.array(result["reach"][str(level)], dtype=float)
        cells.append(f"{np.median(r):6.1f} [{r.min():.0f}, {r.max():.0f}]".replace("inf", ">" + str(result.get("budget", "budget"))))
    return f"{label:{width}s} " + " ".join(f"{c:>18s}" for c in cells) + f" {np.median(result['ms']):12.1f}"


def compare(results: dict[str, dict]) -> None:
    """Every knobscope search against the best Optuna sampler: evaluations to 99% (ratio of the
    medians) and time per proposal (median of the per-seed ratios), each with a 95% percentile
    bootstrap interval over seeds, a Mann-Whitney U test, and whether both goals are met (and
    which only by the median, with the interval reaching beyond the goal)."""

    def median99(label: str) -> float:
        return float(np.median(results[label]["reach"]["0.99"]))

    ours = [k for k in results if not k.startswith("optuna-")]
    theirs = [k for k in results if k.startswith("optuna-")]
    if not (ours and theirs):
        return
    b = min(theirs, key=median99)
    budget = results[b].get("budget", "the budget")
    print(f"\nagainst the best Optuna sampler, {b}: {median99(b):.1f} evaluations to 99% (median); goals: at most 0.5 "
          "of its evaluations at no more than 2x its time per proposal [95% bootstrap intervals over seeds]")  # fmt: skip
    width = max([22, *map(len, ours)])
    print(f"{'search':<{width}} {'evaluations':>20} {'p (fewer)':>10} {'time per proposal':>20}  goals")
    with warnings.catch_warnings():
        # A search whose seeds do not all reach 99% has infinite medians in some resamples: its
        # interval's end is then inf or undefined, and numpy's and scipy's warnings say no more.
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*BCa confidence interval cannot be calculated.*")
        for a in sorted(ours, key=median99):
            _compare_one(results, a, b, median99, budget, width)


def _compare_one(results: dict[str, dict], a: str, b: str, median99: Callable[[str], float], budget: object,
                 width: int = 22) -> None:  # fmt: skip
    """One line of :func:`compare`: search ``a`` against Optuna sampler ``b``."""
    test = mannwhitneyu(results[a]["reach"]["0.99"], results[b]["reach"]["0.99"], alternative="less")
    ratio: float
    ratio_high = math.inf  # the interval's far end: a goal met by the median alone may be noise
    if not np.isfinite(median99(a)):  # this search's median never got there
        ratio, evaluations = math.inf, f"> {budget} evaluations"
    elif np.isfinite(median99(b)):
        # each search's seeds resampled apart
        interval = bootstrap((results[a]["reach"]["0.99"], results[b]["reach"]["0.99"]),
                             lambda x, y: np.median(x) / np.median(y), vectorized=False, method="percentile",
                             n_resamples=2000, random_state=0).confidence_interval  # fmt: skip
        ratio = median99(a) / median99(b)
        ratio_high = math.inf if math.isnan(interval.high) else float(interval.high)
        ends = ", ".join("?" if math.isnan(e) else f"{e:.2f}" for e in (interval.low, interval.high))
        evaluations = f"{ratio:.2f} [{ends}]"  # ?: too many resamples beyond the budget
    else:  # the median Optuna search never got there: only a bound
        ratio = ratio_high = median99(a) / budget  # type: ignore[operator]  # already an upper bound
        evaluations = f"< {ratio:.2f}"
    # The searches of one seed ran side by side: the median of the per-seed ratios.
    ms_a, ms_b = np.array(results[a]["ms"]), np.array(results[b]["ms"])
    paired = len(ms_a) == len(ms_b)
    if "seeds" in results[a] and "seeds" in results[b]:  # merged files: pair the seeds both ran
        common = sorted(set(results[a]["seeds"]) & set(results[b]["seeds"]))
        ms_a = np.array([ms_a[results[a]["seeds"].index(s)] for s in common])
        ms_b = np.array([ms_b[results[b]["seeds"].index(s)] for s in common])
        paired = bool(common)
    if paired and len(ms_a) > 1:
        per_seed = ms_a / ms_b
        interval = bootstrap((per_seed,), np.median, method="percentile", n_resamples=2000,
                             random_state=0).confidence_interval  # fmt: skip
        slower = float(np.median(per_seed))
        slower_high = float(interval.high)
        time = f"{slower:.2f}x [{interval.low:.2f}, {interval.high:.2f}]"
    else:
        slower = float(np.median(results[a]["ms"]) / np.median(results[b]["ms"]))
        slower_high = math.inf
        time = f"{slower:.2f}x"
    goals = (("evaluations", ratio, ratio_high, 0.5), ("time", slower, slower_high, 2.0))
    missed = [name for name, value, _, goal in goals if not value <= goal]
    # met by the median, but the 95% interval reaches beyond the goal: not a finding
    unsure = [name for name, value, high, goal in goals if value <= goal < high]
    verdict = "both met" if not missed else "missed: " + ", ".join(missed)
    if unsure:
        verdict += f" ({' and '.join(unsure)} within noise of the goal)"
    if "[known:" in a:
        verdict += "; given the table's true values: an oracle, not a search one can run"
    print(f"{a:<{width}} {evaluations:>20} {test.pvalue:>10.2g} {time:>20}  {verdict}")


def plot(results: dict[str, dict], path: Path) -> None:
    """Median fraction of the grid's hypervolume after each evaluation, quartiles shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for label, result in results.items():
        longest = max(len(c) for c in result["curves"])
        curves = np.array([c + [c[-1]] * (longest - len(c)) for c in result["curves"]])
        x = np.arange(1, longest + 1)
        ours = not label.startswith("optuna-")
        line = ax.plot(x, np.median(curves, 0), label=label, lw=2 if ours else 1.2, ls="-" if ours else "--")[0]
        ax.fill_between(x, *np.percentile(curves, [25, 75], axis=0), color=line.get_color(), alpha=0.12)
    for level in LEVELS:
        ax.axhline(level, color="grey", lw=0.6, ls=":")
    ax.set(xlabel="distinct evaluations", ylabel="fraction of the grid's hypervolume", ylim=(0.5, 1.005),
           title="Search progress on the measured table (median over seeds, quartiles shaded)")  # fmt: skip
    ax.legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=300)
    print(f"wrote {path}")


def merge_results(paths: list[Path]) -> dict[str, dict]:
    """The searches of several ``--json`` files as one: a search found in more than one file (say,
    seeds 0-29 and, with ``--first-seed 30``, seeds 30-59) has its seeds pooled, in seed order;
    the same seed twice, or a file written before the seeds were recorded, is an error."""
    merged: dict[str, dict] = {}
    origin: dict[str, Path] = {}
    for path in paths:
        try:
            results = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            fail(f"--merge: {path} is not a --json file of this script ({e})")
        for label, result in results.items():
            if label not in merged:
                merged[label], origin[label] = result, path
                continue
            kept = merged[label]
            if "seeds" not in kept or "seeds" not in result:
                fail(f"--merge: search {label!r} is in {origin[label]} and {path}, and one of them does not record "
                     "its seeds (written before they were); merge files with different searches only")  # fmt: skip
            twice = sorted(set(kept["seeds"]) & set(result["seeds"]))
            if twice:
                fail(f"--merge: search {label!r} has seed {twice[0]} in both {origin[label]} and {path}; allowed: "
                     "the same search over different seeds (--first-seed)")  # fmt: skip
            if kept.get("budget") != result.get("budget"):
                fail(f"--merge: search {label!r} has budget {kept.get('budget')} in {origin[label]} and "
                     f"{result.get('budget')} in {path}; allowed: the same --budget")  # fmt: skip
            merged[label] = {
                "reach": {level: kept["reach"][level] + result["reach"][level] for level in kept["reach"]},
                **{key: kept[key] + result[key] for key in ("ms", "curves", "seeds")},
                "budget": kept.get("budget"),
            }
    for result in merged.values():  # seed order, so that per-seed pairs line up
        if "seeds" in result:
            order = np.argsort(result["seeds"], kind="stable")
            result["reach"] = {level: [reach[i] for i in order] for level, reach in result["reach"].items()}
            for key in ("ms", "curves", "seeds"):
                result[key] = [result[key][i] for i in order]
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", type=Path, default=Path("runs/search_table"))
    parser.add_argument("--spec", type=Path, default=Path(__file__).with_name("search_table.yaml"))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0, metavar="N",
                        help="seeds N to N + seeds - 1 (fresh seeds, to check a choice made on others)")
    parser.add_argument("--budget", type=int, default=120, help="distinct evaluations per search at most")
    parser.add_argument("--only", default="", help="comma-separated searches to run (default: all)")
    parser.add_argument("--prior", type=Path, default=None, help="an earlier run of the same space (frontier+prior)")
    parser.add_argument("--prior-share", type=float, default=1.0,
                        help="each seed's prior: a seeded random share of the prior run's configurations (default: all "
                        "of them, which makes every seed of a search from it the same search)")  # fmt: skip
    parser.add_argument("--prior-wobble", type=float, default=0.0, metavar="REL",
                        help="multiply each prior value of an objective by a seeded factor in 1 +- REL (1e-9: far "
                        "below any measurement's precision), to see whether the searches from a prior depend on its "
                        "last digits")  # fmt: skip
    parser.add_argument("--known", action="append", default=[], metavar="OBJECTIVE[,OBJECTIVE]",
                        help="also run frontier+mono (and +prior) given the table's true values of these objectives "
                        "in place of their models' posteriors: how many evaluations each model costs (repeatable)")
    parser.add_argument("--json", type=Path, default=None, help="write every search's progress here")
    parser.add_argument("--plot", type=Path, default=None, help="draw every search's progress to this PNG")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="print the table and the test of --json files written by earlier invocations (a search in "
                        "several, over different seeds: its seeds pooled); run nothing")
    args = parser.parse_args()
    if args.merge:
        merged = merge_results(args.merge)
        print_table(merged)
        compare(merged)
        if args.plot:
            plot(merged, args.plot)
        return

    if args.seeds < 1 or args.first_seed < 0:
        fail(f"--seeds {args.seeds} --first-seed {args.first_seed}; allowed: at least 1 seed, from seed 0 on")
    if not 0 < args.prior_share <= 1:
        fail(f"--prior-share: {args.prior_share} is not a share; allowed: more than 0, at most 1")
    if args.prior is not None and not (args.prior / "results.db").is_file():
        fail(f"--prior: {args.prior} is not a knobscope run directory (no results.db)")
    if args.prior_share != 1 and args.prior is None:
        fail("--prior-share: there is no prior run to take a share of; give --prior as well")
    if not 0 <= args.prior_wobble < 0.5:
        fail(f"--prior-wobble: {args.prior_wobble} is not a relative change; allowed: at least 0, below 0.5")
    if args.prior_wobble and args.prior is None:
        fail("--prior-wobble: there is no prior run to move; give --prior as well")
    table = Table(args.table, args.spec)
    columns = [o.column for o in table.goal.objectives]
    known = [tuple(args_known.split(",")) for args_known in args.known]
    for name in (n for names in known for n in names):
        if name not in columns:
            fail(f"--known: {name!r} is not an objective of {args.spec}; objectives: {', '.join(columns)}")
    values = np.array([table.values(c) for c in table.rows])
    from knobscope.analysis.pareto import pareto_mask

    print(f"table: {len(table.rows)} configurations of {args.table}, objectives {table.goal.description}, "
          f"{int(pareto_mask(values, list(table.maximise)).sum())} Pareto-optimal")  # fmt: skip
    scratch = tempfile.TemporaryDirectory(prefix="search-efficiency-")

    def with_prior(options: dict, seed: int) -> dict:
        if "prior" not in options or (args.prior_share == 1 and not args.prior_wobble):
            return options
        part = Path(scratch.name) / f"prior-{seed}"
        if not part.exists():
            partial_prior(args.prior, args.prior_share, seed, part, wobble=args.prior_wobble, metrics=tuple(columns))
        return {**options, "prior": [str(part)]}

    searches: dict[str, Callable[[int], tuple[list[str], list[float]]]] = {}
    for label, (name, options) in knobscope_searches(args.prior, known).items():
        searches[label] = lambda s, name=name, options=options: run_knobscope(table, name, with_prior(options, s), s,
                                                                              args.budget)  # fmt: skip
    for label, sampler in optuna_samplers(table).items():
        searches[label] = lambda s, sampler=sampler: run_optuna(table, sampler, s, args.budget)
    if args.only:
        wanted = args.only.split(",")
        unknown = [w for w in wanted if w not in searches]
        if unknown:
            fail(f"--only: unknown search {unknown[0]!r}; searches: {', '.join(searches)}")
        searches = {k: v for k, v in searches.items() if k in wanted}

    # Seeds outermost: every search runs its seed s side by side with the others, so the machine's
    # drift (its speed moves by tens of percent within minutes here) falls on all of them alike.
    results = {label: {"reach": {str(level): [] for level in LEVELS}, "ms": [], "curves": [], "seeds": [],
                       "budget": args.budget} for label in searches}  # fmt: skip
    for n, seed in enumerate(range(args.first_seed, args.first_seed + args.seeds)):
        print(f"seed {n + 1}/{args.seeds}", end="\r", flush=True)
        for label, search in searches.items():
            order, times = search(seed)
            curve = table.progress(order)
            result = results[label]
            result["curves"].append(curve.tolist())
            result["ms"].append(1000 * float(np.mean(times)))
            result["seeds"].append(seed)
            for level in LEVELS:
                hit = np.flatnonzero(curve >= level - 1e-12)
                result["reach"][str(level)].append(int(hit[0]) + 1 if len(hit) else np.inf)  # not within the budget
    print(" " * 20, end="\r")  # clear the progress line
    print_table(results)

    for key, shares in FALLBACKS.items():
        print(f"{key}: {np.median(shares):.0%} of its trials (median over seeds) were the nearest unmeasured "
              "configuration after the sampler asked for measured or infeasible ones three times")  # fmt: skip

    if args.prior is not None and args.prior_share == 1 and any(k.endswith("+prior") for k in results):
        print("(the searches from the whole prior run are one search each, the same for every seed: their intervals "
              "below vary only the Optuna sampler; --prior-share 0.8 gives each seed a different part of the prior)")
    compare(results)
    if args.plot:
        plot(results, args.plot)
    if args.json:
        args.json.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
