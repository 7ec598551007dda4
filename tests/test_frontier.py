"""The ``frontier`` strategy: its parts (GP, hypervolume improvement, monotone bounds and their
check) on known functions, its search, and the runner driving it with a prior run."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import moocore
import numpy as np
import pytest

from conftest import PLUGINS, cli, write_spec
from knobscope.analysis.pareto import pareto_mask
from knobscope.errors import SpecError
from knobscope.expressions import Expression
from knobscope.frontier import (
    GaussianProcess,
    MonotoneModel,
    expected_hypervolume_improvement,
    hypervolume_improvement,
)
from knobscope.search import Goal
from knobscope.space import Config, Knob, Space
from knobscope.store import Store
from knobscope.strategies import get_strategy
from test_search import SPACE, _front_hv, drive

GOAL = Goal(objectives=(("quality", "max"), ("cost", "min")))
# Monotone in every knob: quality and cost both rise with each of a, b, c.
MONO = Space(knobs=(Knob("a", (1, 2, 3, 4, 5, 6)), Knob("b", (1, 2, 3, 4, 5, 6)), Knob("c", (1, 2, 3))))
DECLARED = {k: {"a": "increasing", "b": "increasing", "c": "increasing"} for k in ("quality", "cost")}


def mono_rows(c) -> dict[str, float]:
    return {"quality": math.log(c["a"] * c["b"]) + 0.1 * c["c"], "cost": float(c["a"] + 2 * c["b"] + c["c"])}


def true_front(space: Space, rows) -> set[str]:
    configs = space.product()
    values = np.array([[rows(c)["quality"], rows(c)["cost"]] for c in configs])
    return {configs[i].canonical for i in np.flatnonzero(pareto_mask(values, [True, False]))}


def test_gaussian_process_fits_a_smooth_function_and_knows_where_it_is_unsure() -> None:
    rng = np.random.default_rng(0)
    f = lambda x: np.sin(3 * x[:, 0]) + x[:, 1] ** 2  # noqa: E731
    x = rng.random((30, 2))
    gp = GaussianProcess().fit(x, f(x))
    test = rng.random((200, 2))
    mean, std = gp.predict(test)
    assert np.sqrt(np.mean((mean - f(test)) ** 2)) < 0.1 * np.std(f(test))
    _, at_data = gp.predict(x)
    _, far = gp.predict(np.array([[3.0, 3.0]]))  # well outside the data
    assert at_data.max() < far[0]


def test_the_warp_is_scipys_yeo_johnson_and_inverts() -> None:
    from scipy.stats import yeojohnson

    from knobscope.frontier import _yeojohnson, _yeojohnson_inverse, _yeojohnson_lambda

    x = np.random.default_rng(1).standard_normal(50) ** 3  # skewed both ways
    expected, lmbda = yeojohnson(x)
    assert _yeojohnson_lambda(x) == pytest.approx(lmbda, abs=1e-2)
    assert np.allclose(_yeojohnson(x, lmbda), expected)
    assert np.allclose(_yeojohnson_inverse(_yeojohnson(x, lmbda), lmbda), x)


def test_a_bounded_objective_is_modelled_inside_its_range() -> None:
    # A cosine climbing towards 1: a model of the raw values extrapolates past 1, one of the
    # logit of the declared range (-1, 1) cannot, and still fits the data.
    x = np.linspace(0, 0.6, 8)[:, None]
    y = 1 - 0.2 * np.exp(-6 * x[:, 0])
    z = np.linspace(-2, 2, 9)[:, None]  # posterior quantiles
    far = np.array([[1.0], [1.4]])
    raw = GaussianProcess().fit(x, y).draw(far, z)
    bounded = GaussianProcess().fit(x, y, bounds=(-1.0, 1.0)).draw(far, z)
    assert raw.max() > 1 and bounded.max() < 1 and bounded.min() > -1
    at_data = GaussianProcess().fit(x, y, bounds=(-1.0, 1.0)).draw(x, np.zeros((1, 1)))[0]
    assert np.abs(at_data - y).max() < 0.01 * np.ptp(y)


def test_a_goal_takes_each_objective_range_from_its_metric_declaration() -> None:
    from knobscope.workloads.base import Metric

    metrics = {"cosine": Metric(True, range=(-1.0, 1.0)), "accuracy": {"higher_is_better": True, "range": [0, 1]},
               "total_ms": Metric(False, "ms")}  # fmt: skip
    goal = Goal(objectives=(("cosine", "max"), ("accuracy_p50", "max"), ("cosine_std", "min"), ("total_ms_p95", "min"),
                            ("other", "max"))).with_ranges(metrics)  # fmt: skip
    assert [o.range for o in goal.objectives] == [(-1.0, 1.0), (0.0, 1.0), None, None, None]
    with pytest.raises(ValueError, match="low end must be below"):
        Metric(True, range=(1.0, 0.0))


def test_the_runner_hands_a_search_the_declared_range_of_its_objectives(tmp_path: Path) -> None:
    from knobscope.spec import load_spec
    from knobscope.trials import trial_source

    spec = write_spec(tmp_path / "s.yaml", workload={"name": "sketchwalk", "args": {"data": "synthetic"}},
                      knobs={"block_size": [32, 64]}, strategy={"name": "frontier"},
                      objectives={"cosine_mean": "max", "speedup_bound": "max"}, output=str(tmp_path / "out"))  # fmt: skip
    goal = trial_source(load_spec(spec)).goal  # type: ignore[attr-defined]
    assert [o.range for o in goal.objectives] == [(-1.0, 1.0), None]


@pytest.mark.parametrize("m", [2, 3])
def test_hypervolume_improvement_matches_moocore(m: int) -> None:
    rng = np.random.default_rng(m)
    front, points, ref = rng.random((5, m)), rng.random((40, m)) - 0.05, np.zeros(m)
    base = moocore.hypervolume(front, ref=ref, maximise=True)
    expected = []
    for p in points:
        union = np.vstack([front, p])
        union = union[(union > ref).all(1)]
        expected.append(moocore.hypervolume(union, ref=ref, maximise=True) - base)
    assert np.allclose(hypervolume_improvement(points, front, ref), expected, atol=1e-12)
    assert np.allclose(hypervolume_improvement(points[:3], np.empty((0, m)), ref),
                       [np.prod(np.clip(p, 0, None)) for p in points[:3]])  # fmt: skip


def test_expected_improvement_is_the_mean_over_every_pair_of_quantiles() -> None:
    # Two independent objectives given as K values each: the factorised sum over the staircase
    # equals the exact improvement averaged over all K x K combinations.
    rng = np.random.default_rng(3)
    front, ref = rng.random((6, 2)), np.array([-0.01, -0.01])
    nodes = np.sort(rng.normal(0.6, 0.3, size=(16, 25, 2)), axis=0)  # (K, n, m)
    pairs = np.stack(np.broadcast_arrays(nodes[:, None, :, 0], nodes[None, :, :, 1]), -1)  # (K, K, n, 2)
    brute = hypervolume_improvement(pairs.reshape(-1, 2), front, ref).reshape(16, 16, 25).mean((0, 1))
    assert np.allclose(expected_hypervolume_improvement(nodes, front, ref, rng), brute, atol=1e-12)
    one = expected_hypervolume_improvement(nodes[:, :, :1], front[:, :1], ref[:1], rng)
    assert np.allclose(one, np.clip(nodes[:, :, 0] - front[:, 0].max(), 0, None).mean(0))
    # Three objectives: random pairings of the quantiles, each exact; close to the brute mean.
    nodes3 = np.sort(rng.normal(0.6, 0.3, size=(64, 4, 3)), axis=0)
    front3 = rng.random((5, 3))
    grid = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)[::7]
    brute3 = np.mean([hypervolume_improvement(nodes3[g, :, [0, 1, 2]].T, front3, np.zeros(3)) for g in grid], 0)
    ehvi3 = expected_hypervolume_improvement(nodes3, front3, np.zeros(3), rng)
    assert np.allclose(ehvi3, brute3, atol=0.2 * brute3.max())


def test_gaussian_process_gradient_matches_finite_differences() -> None:
    rng = np.random.default_rng(4)
    x = rng.random((12, 3))
    y = np.sin(4 * x[:, 0]) + x[:, 1]
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).reshape(-1, x.shape[1])
    theta = np.r_[np.log([0.3, 0.7, 2.0]), 0.2, math.log(1e-2)]
    gp = GaussianProcess()
    _, grad = gp._nll(theta, sq, y)
    step = 1e-6
    numeric = [(gp._nll(theta + step * e, sq, y)[0] - gp._nll(theta - step * e, sq, y)[0]) / (2 * step)
               for e in np.eye(len(theta))]  # fmt: skip
    assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-6)


def test_frontier_finds_the_front_of_a_peaked_function_with_few_evaluations() -> None:
    full = _front_hv(SPACE.product())
    found = {seed: drive(get_strategy("frontier", {"n_trials": 30, "seed": seed}), GOAL) for seed in range(3)}
    hv = [_front_hv([o.config for o in run]) for run in found.values()]
    random_hv = [_front_hv(get_strategy("random", {"size": 30, "seed": s}).select(SPACE)) for s in range(3)]
    assert np.median(hv) >= 0.99 * full > np.median(random_hv)  # 30 of 512 configurations


def test_frontier_finds_the_peak_of_one_objective() -> None:
    from test_search import quality

    found = drive(get_strategy("frontier", {"n_trials": 30, "seed": 3}), Goal(objectives=(("quality", "max"),)))
    assert max(quality(o.config) for o in found) == max(quality(c) for c in SPACE.product())


def test_frontier_respects_constraints_and_never_proposes_twice() -> None:
    space = Space(knobs=SPACE.knobs, constraints=(Expression.parse("a + b <= 9"),))
    found = drive(get_strategy("frontier", {"n_trials": 25}), GOAL, space)  # drive asserts both
    assert len(found) == 25


def test_monotone_bounds_prune_and_decide_the_front_before_the_grid_is_spent() -> None:
    strategy = get_strategy("frontier", {"n_trials": 108, "monotone": DECLARED})
    found = drive(strategy, GOAL, MONO, mono_rows)
    measured = {o.config.canonical for o in found}
    assert strategy.decided_after == len(found) < 0.9 * MONO.grid_size  # stopped by itself: decided
    assert true_front(MONO, mono_rows) <= measured  # and nothing of the real front was missed


def test_a_declaration_the_data_contradict_is_dropped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    wrong = {"quality": {"a": "decreasing", "b": "increasing", "c": "none"}, "cost": DECLARED["cost"]}
    strategy = get_strategy("frontier", {"n_trials": 108, "monotone": wrong})
    with caplog.at_level(logging.WARNING, logger="knobscope"):
        found = drive(strategy, GOAL, MONO, mono_rows)
    assert "quality was declared to decrease with a" in caplog.text
    assert "quality was declared to stay the same with c" in caplog.text  # "none": it does depend on c
    assert strategy._monotone.dropped == {("quality", "a"), ("quality", "c")}
    assert true_front(MONO, mono_rows) <= {o.config.canonical for o in found}  # the wrong claim pruned nothing needed


def test_bounds_from_the_kept_relation_are_those_computed_afresh_and_follow_a_dropped_declaration() -> None:
    model = MonotoneModel(MONO, {"quality": {"a": "increasing", "b": "decreasing", "c": "none"}})
    grid = np.array([[MONO.knobs[j].values.index(c[k.name]) for j, k in enumerate(MONO.knobs)] for c in MONO.product()],
                    dtype=float)  # fmt: skip
    rng = np.random.default_rng(0)
    measured = rng.choice(len(grid), 12, replace=False)
    low = rng.normal(size=12)
    high = low + rng.uniform(0, 1, 12)

    def both() -> tuple[np.ndarray, ...]:
        kept = model.bounds("quality", measured, low, high, grid)
        model.CACHED_GRID = 0  # the path for grids too large to keep the relation of
        fresh = model.bounds("quality", measured, low, high, grid)
        del model.CACHED_GRID
        return (*kept, *fresh)

    lower, upper, fresh_lower, fresh_upper = both()
    assert np.array_equal(lower, fresh_lower) and np.array_equal(upper, fresh_upper)
    assert np.isfinite(lower).sum() > 12 and np.isfinite(upper).sum() > 12  # bounds beyond the measured ones
    model.dropped.add(("quality", "a"))  # a contradicted declaration: the kept relation must not outlive it
    lower2, upper2, fresh_lower2, fresh_upper2 = both()
    assert np.array_equal(lower2, fresh_lower2) and np.array_equal(upper2, fresh_upper2)
    assert np.isfinite(lower2).sum() < np.isfinite(lower).sum()


def test_an_objective_of_fewer_knobs_is_drawn_once_per_setting_with_the_same_search(monkeypatch: pytest.MonkeyPatch) -> None:
    # cost does not depend on c: its model sees (a, b) only, 36 settings for 108 configurations
    declared = {"quality": DECLARED["quality"], "cost": {"a": "increasing", "b": "increasing", "c": "none"}}
    rows = lambda c: {"quality": mono_rows(c)["quality"], "cost": float(c["a"] + 2 * c["b"])}  # noqa: E731
    drawn: list[int] = []
    draw = GaussianProcess.draw
    monkeypatch.setattr(GaussianProcess, "draw", lambda self, xs, z: drawn.append(len(xs)) or draw(self, xs, z))
    per_setting = drive(get_strategy("frontier", {"n_trials": 30, "monotone": declared, "seed": 3}), GOAL, MONO, rows)
    assert 36 in drawn  # the cost model drawn at its settings, not at each open configuration
    # Drawn at every open configuration instead: the same proposals.
    from knobscope.frontier import Frontier

    monkeypatch.setattr(Frontier, "_settings", lambda self, used: (self._grid[3][:, used], np.arange(len(self._grid[3]))))
    drawn.clear()
    everywhere = drive(get_strategy("frontier", {"n_trials": 30, "monotone": declared, "seed": 3}), GOAL, MONO, rows)
    assert 36 not in drawn
    assert [o.config.canonical for o in per_setting] == [o.config.canonical for o in everywhere]


def test_an_end_of_the_front_that_nothing_measured_reaches_still_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    # A first design at the cheap end only (as a prior run's front can be): with the reference
    # point from the measured values alone, the expensive end added no hypervolume and the
    # search never went there (best quality found 3.10 of 3.88, 13 of 20 front points).
    strategy = get_strategy("frontier", {"n_trials": 25, "seed": 0})
    configs, _, _ = strategy.grid(MONO)
    cheap = [i for i, c in enumerate(configs) if c["a"] <= 2 and c["b"] <= 2][:4]
    monkeypatch.setattr(strategy, "initial_design", lambda *args: cheap)
    found = drive(strategy, GOAL, MONO, mono_rows)
    assert max(mono_rows(o.config)["quality"] for o in found) == max(mono_rows(c)["quality"] for c in MONO.product())
    assert len(true_front(MONO, mono_rows) & {o.config.canonical for o in found}) >= 16  # of 20


def test_frontier_refuses_bad_options() -> None:
    with pytest.raises(SpecError, match="'speed', which is not an objective"):
        get_strategy("frontier", {"monotone": {"speed": {"a": "increasing"}}}).goal(GOAL.objectives)
    with pytest.raises(SpecError, match="quality.z is not a knob"):
        drive(get_strategy("frontier", {"monotone": {"quality": {"z": "increasing"}}}), GOAL)
    with pytest.raises(SpecError, match="max_grid"):
        get_strategy("frontier", {"max_grid": 100}).propose(SPACE, [], GOAL)


def _spec(tmp_path: Path, form: str, strategy: dict, out: str) -> Path:
    return write_spec(
        tmp_path / f"{out}.yaml",
        workload={"name": f"{PLUGINS}:KnownQualityWorkload", "args": {"num_samples": 1, "form": form}},
        knobs={"a": [1, 2, 4, 8], "b": [1, 4, 9, 16], "c": [0, 2, 4]},
        strategy=strategy,
        objectives={"quality": "max", "matmuls": "min"},
        output=str(tmp_path / out),
    )


def test_a_search_starts_from_the_front_of_a_prior_run(tmp_path: Path) -> None:
    cli("run", str(_spec(tmp_path, "separable", {"name": "full"}, "prior")), "--no-progress", check=True)
    spec = _spec(tmp_path, "interaction", {"name": "frontier", "n_trials": 10, "initial_size": 3,
                                           "prior": [str(tmp_path / "prior")]}, "search")  # fmt: skip
    assert "10 done" in cli("run", str(spec), "--no-progress", check=True).stdout
    with Store.open(tmp_path / "prior") as store:
        prior = {t.trial_id: t for t in store.trials()}
        configs = [t.config for t in prior.values()]
        values = np.array([[t.summary["metrics"]["quality"]["mean"], t.summary["metrics"]["matmuls"]["mean"]]
                           for t in prior.values()])  # fmt: skip
    front = [configs[i] for i in np.flatnonzero(pareto_mask(values, [True, False]))]
    with Store.open(tmp_path / "search") as store:
        first = [t.config for t in sorted(store.trials(), key=lambda t: t.started)[:3]]
    assert all(c in front for c in first)  # the first design is the prior's front
    bad = _spec(tmp_path, "interaction", {"name": "frontier", "prior": [str(tmp_path / "nowhere")]}, "bad")
    proc = cli("run", str(bad), "--no-progress")
    assert proc.returncode == 2 and "is not a knobscope run directory" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad" / "results.db").exists()


def test_a_prior_run_of_part_of_the_space_gives_the_front_of_what_it_measured(tmp_path: Path) -> None:
    cli("run", str(_spec(tmp_path, "separable", {"name": "lhs", "size": 12, "seed": 3}, "prior")), "--no-progress",
        check=True)  # fmt: skip
    strategy = get_strategy("frontier", {"prior": [str(tmp_path / "prior")], "initial_size": 48})
    space = Space(knobs=(Knob("a", (1, 2, 4, 8)), Knob("b", (1, 4, 9, 16)), Knob("c", (0, 2, 4))))
    goal = Goal(objectives=(("quality", "max"), ("matmuls", "min")))
    configs, index, _ = strategy.grid(space)
    design = [configs[i] for i in strategy.initial_design(space, goal, configs, index)]
    with Store.open(tmp_path / "prior") as store:
        measured = [t for t in store.trials() if t.status == "done"]
    values = np.array([[t.summary["metrics"]["quality"]["mean"], t.summary["metrics"]["matmuls"]["mean"]]
                       for t in measured])  # fmt: skip
    front = [measured[i].config for i in np.flatnonzero(pareto_mask(values, [True, False]))]
    # the whole front of the 12 measured, however large the design asked for, and nothing it did
    # not measure (an unmeasured configuration's value would be a guess)
    assert len(measured) == 12 and sorted(c.canonical for c in design) == sorted(Config(c).canonical for c in front)


def test_a_tie_in_the_prior_run_is_broken_by_the_seed_not_by_rounding(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # Settings that give the same result but for rounding (SketchWalk's sketch settings that pick
    # the same blocks): which of them starts the search must not be decided by the last digits,
    # the same way for every seed.
    space = Space(knobs=(Knob("fast", (0, 1)), Knob("setting", (1, 2, 3, 4))))
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    (tmp_path / "results.db").touch()  # the prior's values come from load() below

    def design(seed: int, wobble: float) -> list[Config]:
        strategy = get_strategy("frontier", {"prior": [str(tmp_path)], "initial_size": 2, "seed": seed})
        configs, index, _ = strategy.grid(space)
        where = {c.canonical: i for i, c in enumerate(configs)}

        def load(space: Space, names: list[str]) -> dict[str, list[tuple[int, float]]]:
            rows = [(where[Config({"fast": f, "setting": s}).canonical], f, s) for f in (0, 1) for s in (1, 2, 3, 4)]
            return {"quality": [(i, 0.9 - 0.4 * f + wobble * s * 1e-12) for i, f, s in rows],
                    "cost": [(i, 2.0 - f) for i, f, s in rows]}  # fmt: skip

        monkeypatch.setattr(strategy, "_load_priors", load)
        return [configs[i] for i in strategy.initial_design(space, goal, configs, index)]

    # one configuration of each end of the front, whichever way the rounding falls
    assert all(design(0, w) == design(0, 1.0) for w in (-1.0, 0.5, 3.0))
    assert {c["fast"] for c in design(0, 1.0)} == {0, 1}
    picks = {tuple(design(seed, 1.0)) for seed in range(12)}
    assert len(picks) > 1  # the seeds share no hidden choice


def test_a_bad_monotone_declaration_stops_the_run_before_anything_is_created(tmp_path: Path) -> None:
    spec = _spec(tmp_path, "separable", {"name": "frontier", "monotone": {"quality": {"z": "increasing"}}}, "bad")
    proc = cli("run", str(spec), "--no-progress")
    assert proc.returncode == 2 and "quality.z is not a knob" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "bad").exists()


def test_given_true_values_the_search_measures_only_the_front_after_its_first_design() -> None:
    # With certain posteriors the expected improvement is the hypervolume a configuration adds,
    # and a dominated one never adds more than what dominates it: every proposal after the first
    # design is on the true front until the front is found (a check of the improvement's scaling
    # and reference point, and of the posterior() seam that benchmarks/search_efficiency.py's
    # --known uses).
    from knobscope.frontier import Frontier

    class Known(Frontier):
        def posterior(self, name, rows, target, candidates, bounds):
            configs = self.grid(MONO)[0]
            sign = 1.0 if name == "quality" else -1.0
            truth = np.array([mono_rows(configs[i])[name] for i in candidates]) * sign
            return np.broadcast_to(truth, (self.options.samples, len(truth)))

    strategy = Known(n_trials=60, seed=1)
    found = drive(strategy, GOAL, MONO, mono_rows)
    design = len(strategy.initial_design(MONO, GOAL, *strategy.grid(MONO)[:2]))
    # (two front configurations share their values with two others: a front of 18 distinct points)
    point = lambda c: tuple(mono_rows(c).values())  # noqa: E731
    front = {point(c) for c in MONO.product() if c.canonical in true_front(MONO, mono_rows)}
    missing = front - {point(o.config) for o in found[:design]}
    after = [point(o.config) for o in found[design:design + len(missing)]]
    assert len(front) == 18 and len(missing) >= 10
    assert sorted(after) == sorted(missing)  # each missing front point once, and nothing else in between


def test_the_first_design_from_a_prior_is_two_larger_than_without(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # A prior's front costs nothing to choose and its later points reach the expensive end, so
    # the search measures knobs + 3 of them first; without a prior the design stays knobs + 1.
    space = Space(knobs=(Knob("x", tuple(range(8))), Knob("y", (0, 1)), Knob("z", (0, 1))))
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    (tmp_path / "results.db").touch()  # the prior's values come from load() below
    with_prior = get_strategy("frontier", {"prior": [str(tmp_path)], "seed": 1})
    configs, index, _ = with_prior.grid(space)

    def load(space: Space, names: list[str]) -> dict[str, list[tuple[int, float]]]:
        # every x of y = z = 0 is Pareto-optimal (quality and cost both rise with x); y or z cost more
        return {"quality": [(i, float(c["x"])) for i, c in enumerate(configs)],
                "cost": [(i, c["x"] + 10.0 * (c["y"] + c["z"])) for i, c in enumerate(configs)]}  # fmt: skip

    monkeypatch.setattr(with_prior, "_load_priors", load)
    design = [configs[i] for i in with_prior.initial_design(space, goal, configs, index)]
    assert len(design) == 3 + 3 and all(c["y"] == c["z"] == 0 for c in design)
    plain = get_strategy("frontier", {"seed": 1})
    assert len(plain.initial_design(space, goal, *plain.grid(space)[:2])) == 3 + 1
