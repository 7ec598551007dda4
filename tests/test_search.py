"""Adaptive strategies (bayesian, nsga2, refine): the search logic on known functions, and the
runner driving them through the store (budget, resume, errors)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from conftest import PLUGINS, cli, write_spec
from knobscope.analysis.pareto import hypervolume, pareto_mask
from knobscope.expressions import Expression
from knobscope.search import Goal, Observation
from knobscope.space import Knob, Space
from knobscope.store import Store
from knobscope.strategies import get_strategy

VALUES = (1, 2, 3, 4, 5, 6, 7, 8)
SPACE = Space(knobs=tuple(Knob(n, VALUES) for n in ("a", "b", "c")))


def quality(c) -> float:
    """A peaked function of three knobs: best at a=6, b=3, c=8 (not at a corner); runner-up c=7."""
    return -((c["a"] - 6) ** 2) - 2 * (c["b"] - 3) ** 2 + math.log(c["c"])


def cost(c) -> float:
    return float(c["a"] + c["b"] + c["c"])


def drive(strategy, goal: Goal, space: Space = SPACE, rows=lambda c: {"quality": quality(c), "cost": cost(c)}):
    """Run a strategy's proposals against known functions, as the runner would."""
    history: list[Observation] = []
    while len(history) < strategy.budget(space):
        config = strategy.propose(space, history, goal)
        if config is None:
            break
        assert config.canonical not in {o.config.canonical for o in history}, "a configuration was proposed twice"
        assert space.is_feasible(config)
        history.append(Observation(config, "done", rows(config)))
    return history


@pytest.mark.parametrize("sampler", ["gp", "tpe"])
def test_bayesian_finds_the_peak_that_random_sampling_misses(sampler: str) -> None:
    goal = Goal(objectives=(("quality", "max"),))
    found = drive(get_strategy("bayesian", {"sampler": sampler, "n_trials": 40, "n_startup_trials": 10, "seed": 1}), goal)
    ranked = sorted({quality(c) for c in SPACE.product()}, reverse=True)  # 512 configurations
    assert len(found) == 40
    assert ranked.index(max(quality(o.config) for o in found)) <= 1  # the peak or the runner-up
    # The same budget drawn at random (seeded) does worse.
    randomly = get_strategy("random", {"size": 40, "seed": 1}).select(SPACE)
    assert ranked.index(max(quality(c) for c in randomly)) > 1


def test_bayesian_maximises_a_composite_score_and_respects_constraints() -> None:
    space = Space(knobs=SPACE.knobs, constraints=(Expression.parse("a + b <= 9"),))
    goal = get_strategy("bayesian", {"score": "quality - 0.1 * cost", "n_trials": 30, "n_startup_trials": 8}).goal({})
    assert goal.score is not None and goal.directions == ["maximize"]
    found = drive(get_strategy("bayesian", {"score": "quality - 0.1 * cost", "n_trials": 30, "n_startup_trials": 8}),
                  goal, space)  # fmt: skip
    assert all(o.config["a"] + o.config["b"] <= 9 for o in found)
    best = max(found, key=lambda o: goal.values(o)[0])
    feasible = [c for c in space.product()]
    optimum = max(quality(c) - 0.1 * cost(c) for c in feasible)
    assert goal.values(best)[0] >= optimum - 0.5  # within half a point of the best of 448 configurations


def _front_hv(configs) -> float:
    values = np.array([[quality(c), cost(c)] for c in configs])
    front = values[pareto_mask(values, [True, False])]
    return hypervolume(front, [True, False], reference=np.array([-100.0, 25.0]))


def test_nsga2_generations_move_towards_the_pareto_front() -> None:
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    found = drive(get_strategy("nsga2", {"n_trials": 120, "population_size": 12, "seed": 1}), goal)
    first, last = [o.config for o in found[:36]], [o.config for o in found[-36:]]
    assert _front_hv(last) > 1.1 * _front_hv(first)  # the last generations beat the random first ones
    assert _front_hv([o.config for o in found]) >= 0.9 * _front_hv(SPACE.product())


def test_multi_objective_tpe_finds_the_front_with_a_small_budget() -> None:
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    # Over five independent seeds (one seed is one draw: a lucky or unlucky run proves nothing).
    tpe_hv, random_hv = [], []
    for seed in range(5):
        found = drive(get_strategy("bayesian", {"sampler": "tpe", "n_trials": 60, "seed": seed}), goal)
        tpe_hv.append(_front_hv([o.config for o in found]))
        random_hv.append(_front_hv(get_strategy("random", {"size": 60, "seed": seed}).select(SPACE)))
    assert np.median(tpe_hv) >= 0.95 * _front_hv(SPACE.product()) and np.median(tpe_hv) > np.median(random_hv)


def test_the_optuna_study_is_kept_across_proposals_and_rebuilt_when_a_result_changes() -> None:
    from optuna.trial import TrialState

    goal = Goal(objectives=(("quality", "max"),))
    strategy = get_strategy("bayesian", {"sampler": "tpe", "n_trials": 20, "n_startup_trials": 5, "seed": 3})
    found = drive(strategy, goal)
    study = strategy._optuna_study
    strategy.propose(SPACE, found, goal)  # tells the last result
    assert strategy._optuna_study is study  # nothing changed: kept
    # Each measured configuration is in the kept study with its own result; the repeats the
    # sampler asked for are told too (it learns from them, as in Optuna's own loop).
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert {strategy._config(SPACE, t.params).canonical for t in complete} == {o.config.canonical for o in found}
    assert all(t.values == goal.values(next(o for o in found if o.config == strategy._config(SPACE, t.params)))
               for t in complete)  # fmt: skip
    changed = [Observation(found[0].config, "done", {"quality": -1.0, "cost": 0.0}), *found[1:]]
    strategy.propose(SPACE, changed, goal)
    assert strategy._optuna_study is not study  # a told result changed (re-measured): rebuilt


def test_the_sampler_is_told_where_constraints_forbid_and_stops_asking_there() -> None:
    from optuna.trial import TrialState

    space = Space(knobs=SPACE.knobs, constraints=(Expression.parse("a + b <= 6"),))  # 15 of 64 (a, b) feasible
    goal = Goal(objectives=(("quality", "max"),))
    shares = []
    for seed in range(3):
        strategy = get_strategy("bayesian", {"sampler": "tpe", "n_trials": 40, "n_startup_trials": 10, "seed": seed})
        found = drive(strategy, goal, space)
        assert len(found) == 40 and all(space.is_feasible(o.config) for o in found)
        complete = [t for t in strategy._optuna_study.trials if t.state == TrialState.COMPLETE]
        # Every trial carries a constraint value (Optuna's GP sampler needs all or none), positive
        # exactly where the configuration is infeasible.
        assert all((t.system_attrs["constraints"][0] > 0) == (not space.is_feasible(strategy._config(space, t.params)))
                   for t in complete)  # fmt: skip
        shares.append(strategy.fallbacks / len(found))
    # Told as failures, the infeasible asks taught TPE nothing: 79% of its trials were the
    # nearest-unmeasured fallback here; told as constraint violations, 27%.
    assert np.mean(shares) < 0.5


@pytest.mark.parametrize("strategy", [{"name": "bayesian", "sampler": "gp"}, {"name": "bayesian", "sampler": "tpe"},
                                      {"name": "nsga2"}, {"name": "refine"}])  # fmt: skip
def test_seeds_are_independent_and_a_seed_reproduces_its_search(strategy: dict) -> None:
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    name, options = strategy["name"], {k: v for k, v in strategy.items() if k != "name"}
    runs = {seed: [o.config.canonical for o in drive(get_strategy(name, {**options, "n_trials": 10, "seed": seed}), goal)]
            for seed in range(4)}  # fmt: skip
    assert len({run[0] for run in runs.values()}) == 4  # four seeds, four different first proposals
    # Seed s+1 is not seed s shifted by one trial (what reseeding with seed + trials did).
    assert all(runs[s + 1][:-1] != runs[s][1:] for s in range(3))
    assert len({c for run in runs.values() for c in run}) >= 30  # of 40 proposals; ~19 when seeds overlapped
    again = [o.config.canonical for o in drive(get_strategy(name, {**options, "n_trials": 10, "seed": 2}), goal)]
    assert again == runs[2]


def test_samplers_with_the_same_seed_start_differently() -> None:
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    first = [drive(get_strategy(name, {**options, "n_trials": 1, "seed": 7}), goal)[0].config.canonical
             for name, options in [("bayesian", {"sampler": "gp"}), ("bayesian", {"sampler": "tpe"}), ("nsga2", {})]]  # fmt: skip
    assert len(set(first)) == 3


def test_refine_refines_the_front_then_explores_until_the_budget_is_spent() -> None:
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    strategy = get_strategy("refine", {"n_trials": 200, "initial_size": 16})
    found = drive(strategy, goal)
    assert len(found) == 200  # never stops with budget and unmeasured configurations left
    refined = found[: strategy.refined_after]
    assert 16 < len(refined) < 200  # the front's neighbourhood was exhausted by itself, long before the budget
    measured = {o.config.canonical for o in refined}
    values = np.array([[quality(o.config), cost(o.config)] for o in refined])
    front = [refined[i].config for i in np.flatnonzero(pareto_mask(values, [True, False]))]
    for config in front:  # the stopping rule of refinement: no unmeasured neighbour of a frontier point
        assert all(n.canonical in measured for n in strategy._neighbours(SPACE, config))
    assert _front_hv([o.config for o in refined]) >= 0.97 * _front_hv(SPACE.product())


def test_refine_spends_a_small_budget_on_every_configuration_of_a_small_grid() -> None:
    space = Space(knobs=(Knob("a", (1, 2, 3)), Knob("b", (1, 2, 3))), constraints=(Expression.parse("a + b <= 5"),))
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    found = drive(get_strategy("refine", {"n_trials": 100}), goal, space,
                  rows=lambda c: {"quality": float(c["a"] * c["b"]), "cost": float(c["a"] + c["b"])})  # fmt: skip
    assert sorted(o.config.canonical for o in found) == sorted(c.canonical for c in space.product())  # all 8 feasible


def test_refine_measures_its_initial_design_in_a_seeded_random_order() -> None:
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    firsts = {}
    for seed in (1, 2):
        strategy = get_strategy("refine", {"n_trials": 12, "initial_size": 12, "seed": seed})
        order = [o.config for o in drive(strategy, goal)]
        design = get_strategy("lhs", {"size": 12, "seed": seed}).select(SPACE)  # in grid order
        assert sorted(c.canonical for c in order) == sorted(c.canonical for c in design)
        assert order != design  # not the grid order
        assert [o.config for o in drive(get_strategy("refine", {"n_trials": 12, "initial_size": 12, "seed": seed}), goal)] == order
        firsts[seed] = order[0]
    assert firsts[1] != firsts[2]


def test_a_refine_proposal_does_not_list_the_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    # Per-proposal work must not grow with the grid: the initial design lists it once, and
    # neither refinement nor exploration lists it again while random draws find new ground.
    big = Space(knobs=tuple(Knob(n, tuple(range(12))) for n in "abcde"))  # 248,832 configurations
    goal = Goal(objectives=(("quality", "max"), ("cost", "min")))
    calls = []
    product = Space.product
    monkeypatch.setattr(Space, "product", lambda self, *a: calls.append(1) or product(self, *a))
    rows = lambda c: {"quality": -sum((c[k] - 7) ** 2 for k in "abcde"), "cost": float(sum(c[k] for k in "abcde"))}  # noqa: E731
    strategy = get_strategy("refine", {"n_trials": 60, "initial_size": 8})
    found = drive(strategy, goal, big, rows)
    assert len(found) == 60 and len(calls) == 1


def test_adaptive_strategies_refuse_to_list_configurations_and_need_objectives() -> None:
    from knobscope.errors import SpecError

    with pytest.raises(SpecError, match="adaptive"):
        get_strategy("bayesian").select(SPACE)
    with pytest.raises(SpecError, match="needs something to optimise"):
        get_strategy("bayesian").goal({})
    with pytest.raises(SpecError, match="at least two objectives"):
        get_strategy("nsga2").goal({"quality": "max"})
    with pytest.raises(SpecError, match="is adaptive"):
        get_strategy("refine", {"initial": "bayesian"})


def _spec(tmp_path: Path, strategy: dict, **extra) -> Path:
    return write_spec(
        tmp_path / "spec.yaml",
        workload={"name": f"{PLUGINS}:KnownQualityWorkload", "args": {"num_samples": 1}},
        knobs={"a": [1, 2, 4, 8], "b": [1, 4, 9, 16], "c": [0, 2, 4]},
        strategy=strategy,
        objectives={"quality": "max", "work_ms": "min"},
        **extra,
    )


def test_run_drives_a_search_through_the_store_and_resumes_it(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"name": "bayesian", "n_trials": 5, "n_startup_trials": 3, "objectives": {"quality": "max"}})
    proc = cli("run", str(spec), "--no-progress", check=True)
    assert "5 done, 0 failed" in proc.stdout and "ran 5" in proc.stdout
    assert "ran 0" in cli("run", str(spec), "--no-progress", check=True).stdout  # budget met: nothing runs
    # A larger budget resumes the search: the 5 results are told to the sampler, not measured again.
    spec.write_text(spec.read_text().replace("n_trials: 5", "n_trials: 8"))
    proc = cli("run", str(spec), "--no-progress", check=True)
    assert "8 done" in proc.stdout and "ran 3" in proc.stdout
    with Store.open(tmp_path / "run") as store:
        trials = store.trials()
    assert len(trials) == 8 and len({t.trial_id for t in trials}) == 8
    log = (tmp_path / "run" / "knobscope.log").read_text()
    assert log.count("bayesian proposes") == 8
    # The search's trials are an ordinary run: analyze reads them.
    proc = cli("analyze", str(tmp_path / "run"), "--objective", "quality:max", "--objective", "work_ms:min", check=True)
    assert "Pareto" in proc.stdout or "frontier" in proc.stdout.lower()


def test_run_with_nsga2_and_refine(tmp_path: Path) -> None:
    spec = _spec(tmp_path, {"name": "nsga2", "n_trials": 6, "population_size": 3})
    assert "6 done" in cli("run", str(spec), "--no-progress", check=True).stdout
    spec = _spec(tmp_path, {"name": "refine", "n_trials": 7, "initial_size": 4}, output=str(tmp_path / "refine"))
    assert "7 done" in cli("run", str(spec), "--no-progress", check=True).stdout


@pytest.mark.parametrize(
    ("strategy", "args", "message"),
    [
        ({"name": "bayesian"}, ["sample"], "adaptive"),
        ({"name": "bayesian"}, ["run", "--shard", "0/2"], "--shard does not apply"),
        ({"name": "nsga2", "objectives": {"quality": "max"}}, ["run"], "at least two objectives"),
        ({"name": "bayesian", "sampler": "cma"}, ["run"], "sampler"),
        ({"name": "bayesian", "score": "quality +"}, ["run"], "score"),
    ],
)
def test_bad_adaptive_settings_exit_2_with_one_line(tmp_path: Path, strategy: dict, args: list, message: str) -> None:
    spec = _spec(tmp_path, strategy)
    verb, *rest = args
    proc = cli(verb, str(spec), *rest, "--no-progress" if verb == "run" else "--format=json")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "results.db").exists()


def test_a_proposal_left_pending_by_a_crash_is_measured_first(tmp_path: Path) -> None:
    from knobscope.runner import trial_id
    from knobscope.space import canonical_json
    from knobscope.spec import load_spec

    spec_path = _spec(tmp_path, {"name": "bayesian", "n_trials": 3, "n_startup_trials": 2, "objectives": {"quality": "max"}})
    spec = load_spec(spec_path)
    config = spec.space.product()[5]
    wl = spec.workload
    pending = trial_id(config, wl.name, wl.args)
    with Store.open(tmp_path / "run", create=True) as store:  # as if the process died right after proposing it
        store.add_trials([(pending, config.canonical, wl.name, canonical_json(dict(wl.args)))])
    proc = cli("run", str(spec_path), "--no-progress", check=True)
    assert "3 done" in proc.stdout and "ran 3" in proc.stdout
    with Store.open(tmp_path / "run") as store:
        trials = store.trials()
    assert len(trials) == 3 and trials[0].trial_id == pending and trials[0].status == "done"
