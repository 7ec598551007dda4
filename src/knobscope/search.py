"""Adaptive strategies: the next configuration depends on the results so far.

==========  ==============================================================================
``bayesian``  Bayesian optimisation with Optuna's ask-and-tell interface (seed 004 §3.3, with
              Optuna in place of scikit-optimize): ``sampler: gp`` (Gaussian process, default)
              or ``tpe``. One objective, or a composite ``score`` expression to maximise
              (seed 004's ``cosine + 0.5*log(1/time) + 0.3*sparsity``), or several objectives
              (multi-objective GP/TPE).
``nsga2``     Multi-objective search with Optuna's NSGA-II (seed 004 §3.4): a population
              evolves towards the Pareto front of the spec's objectives.
``refine``    Dense sampling around the frontier (seed 001): an initial fixed design
              (``initial: lhs`` by default, 2 x (knobs + 1) configurations, measured in a seeded
              random order), then, round after round, the unmeasured neighbours (one value step
              along one knob, ``radius`` steps at most) of the current Pareto-optimal
              configurations, largest hypervolume contribution first; when none is left, unmeasured configurations drawn at random
              until ``n_trials`` is reached (each may move the front and reopen refinement).
==========  ==============================================================================

The sweep drives them through :class:`knobscope.trials.AdaptiveTrials`: before each trial it asks the
strategy for one configuration given every finished trial in the run directory, adds it to the
store, measures it, and asks again. Every measurement lives in the store, so an interrupted
search resumes from its results (they are told to a new study), several processes can share
one search (a configuration another process is measuring is never proposed twice), and the
results feed ``knobscope analyze`` like any other run. Results already in the run directory
for the same workload and knobs (e.g. from a grid run) warm-start the search and count
towards ``n_trials``.

Knobs map to Optuna parameters by position in their ordered value list (an integer
parameter, so ``{32, 64, 128}`` is ordinal) when their values are numbers, and to categorical
parameters otherwise. A proposal that breaks a constraint is told to the study as failed and
another is asked for; a proposal already measured is told its stored result. When the sampler
keeps proposing such configurations (three times in a row; typical near convergence on a
finite grid), the unmeasured feasible configuration nearest to its last proposal is run
instead, so the budget is always spent on new measurements.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from knobscope.errors import SpecError
from knobscope.expressions import Expression
from knobscope.goals import Goal, Objective
from knobscope.space import Config, Space, Value
from knobscope.strategies import STRATEGIES, Strategy, get_strategy

__all__ = ["AdaptiveStrategy", "Observation", "Goal", "Bayesian", "NSGA2", "Refine"]  # Goal: knobscope.goals

log = logging.getLogger("knobscope")
INFEASIBLE = "knobscope_infeasible"  # user attribute of a trial asked for a configuration a constraint forbids
_CONSTRAINTS = "constraints"  # where Optuna's samplers keep a trial's constraint values (what constraints_func writes)
MAX_ASKS = 3  # proposals per trial before moving to the nearest unmeasured configuration


@dataclass(frozen=True)
class Observation:
    """One configuration of the search and what is known of it.

    ``row`` holds the trial's flattened results (empty while unfinished); ``status`` is the
    store's (pending, running, done, failed)."""

    config: Config
    status: str
    row: Mapping[str, Any] = field(default_factory=dict)
    trial_id: str = ""


class _AdaptiveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    n_trials: int = Field(30, ge=1, description="configurations to measure in all (results already in the run count)")
    seed: int = Field(42, description="seed of the sampler and of the fallback draws")
    objectives: dict[str, Literal["min", "max"]] | None = Field(
        None, description="what to optimise (default: the spec's objectives)"
    )


class AdaptiveStrategy(Strategy):
    """A strategy that proposes one configuration at a time from the results so far."""

    adaptive: ClassVar[bool] = True
    Options = _AdaptiveOptions

    def select(self, space: Space) -> list[Config]:
        raise SpecError(
            f"strategy {self.name!r} is adaptive: it picks each configuration from the results so far, so it "
            "cannot list them in advance; 'knobscope run' drives it"
        )

    def budget(self, space: Space) -> int:
        return self.options.n_trials  # type: ignore[attr-defined]

    def goal(self, spec_objectives: Sequence[Objective] | Mapping[str, str]) -> Goal:
        """The objectives from the strategy's options or the spec; raises if there are none."""
        own = self.options.objectives  # type: ignore[attr-defined]
        objectives = [Objective(str(c), d) for c, d in own.items()] if own else list(_objectives(spec_objectives))
        if not objectives:
            raise SpecError(
                f"strategy {self.name!r} needs something to optimise: give the spec 'objectives' (e.g. "
                "{cosine: max, sketchwalk_ms: min}) or the strategy option 'objectives'"
            )
        return Goal(objectives=tuple(objectives))

    def check(self, space: Space) -> None:
        """Refuse options that do not fit ``space``; called before anything is created."""

    def propose(self, space: Space, history: Sequence[Observation], goal: Goal) -> Config | None:
        """The next configuration to measure (not in ``history``), or None when the search is over."""
        raise NotImplementedError


def _objectives(given: Sequence[Objective] | Mapping[str, str]) -> list[Objective]:
    if isinstance(given, Mapping):
        return [Objective(str(c), d) for c, d in given.items()]  # type: ignore[arg-type]
    return list(given)


def proposal_seed(seed: int, strategy: str, n_known: int) -> int:
    """The seed of one proposal: the study is rebuilt from the store before every proposal, so
    its sampler is seeded anew each time. Hashing (seed, strategy, trials so far) keeps seeds
    independent: ``seed + n`` would make seed s+1 replay seed s's run shifted by one trial, and
    every strategy with the same seed start on the same configurations."""
    entropy = [seed & 0xFFFFFFFF, zlib.crc32(strategy.encode()), n_known]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def _ordinal(values: Sequence[Value]) -> bool:
    """Numbers are searched by their position in the ordered list; anything else is categorical."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _nearest_unmeasured(space: Space, near: Config | None, taken: set[str], rng: np.random.Generator) -> Config | None:
    """The feasible configuration not in ``taken`` closest to ``near`` (value positions scaled
    to [0, 1] per knob, a categorical difference counts 1); ties drawn at random."""
    spare = [c for c in space.product() if c.canonical not in taken]
    if not spare:
        return None
    if near is None:
        return spare[int(rng.integers(len(spare)))]

    def position(knob: Any, value: Value) -> float:
        return knob.values.index(value) / max(len(knob.values) - 1, 1)

    def distance(c: Config) -> float:
        return sum(abs(position(k, c[k.name]) - position(k, near[k.name])) if _ordinal(k.values)
                   else float(c[k.name] != near[k.name]) for k in space.knobs)  # fmt: skip

    d = np.array([distance(c) for c in spare])
    ties = np.flatnonzero(d <= d.min() + 1e-12)
    return spare[int(ties[rng.integers(len(ties))])]


def _infeasibility(trial: Any) -> tuple[float]:
    """Optuna's constraints_func: positive for a configuration a constraint of the space forbids."""
    return (1.0 if trial.user_attrs.get(INFEASIBLE) else 0.0,)


class _OptunaOptions(_AdaptiveOptions):
    n_startup_trials: int = Field(10, ge=1, description="random proposals before the model guides the search")


class _OptunaStrategy(AdaptiveStrategy):
    """Ask-and-tell with an Optuna sampler on a study kept across proposals (see :meth:`_study`)."""

    Options = _OptunaOptions
    keep_study: ClassVar[bool] = True  # False: rebuild the study from the history before every proposal

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.asks = 0  # proposals asked of the sampler
        self.fallbacks = 0  # trials measured at the nearest unmeasured configuration instead
        # The kept study (see _study): what it was built for, the results told to it, the trials
        # asked for configurations not yet measured, and what an infeasible proposal is told.
        self._study_for: tuple[Space, Goal] | None = None
        self._optuna_study: Any = None
        self._told: dict[str, list[float] | None] = {}
        self._asked: dict[str, int] = {}
        self._constrained = False
        self._worst: list[float] = []

    def sampler(self, goal: Goal, seed: int, constraints_func: Any) -> Any:
        raise NotImplementedError

    @property
    def seed_key(self) -> str:
        """Names the sampler in its proposal seeds, so different samplers draw differently."""
        return self.name

    @staticmethod
    def distributions(space: Space) -> dict[str, Any]:
        from optuna.distributions import CategoricalDistribution, IntDistribution

        return {k.name: IntDistribution(0, len(k.values) - 1) if _ordinal(k.values) else CategoricalDistribution(k.values)
                for k in space.knobs}  # fmt: skip

    @staticmethod
    def _params(space: Space, config: Mapping[str, Value]) -> dict[str, Any]:
        return {k.name: k.values.index(config[k.name]) if _ordinal(k.values) else config[k.name] for k in space.knobs}

    @staticmethod
    def _config(space: Space, params: Mapping[str, Any]) -> Config:
        return Config((k.name, k.values[params[k.name]] if _ordinal(k.values) else params[k.name]) for k in space.knobs)

    def propose(self, space: Space, history: Sequence[Observation], goal: Goal) -> Config | None:
        from optuna.trial import TrialState

        dists = self.distributions(space)
        known = {o.config.canonical: o for o in history}
        study = self._study(space, history, goal, dists)
        config = None
        for _ in range(MAX_ASKS):
            self.asks += 1
            trial = study.ask(dists)
            config = self._config(space, trial.params)
            obs = known.get(config.canonical)
            if not space.is_feasible(config):
                # Told as a result that breaks a constraint (Optuna's constraints_func): the
                # sampler learns where the infeasible region is instead of ignoring a failure.
                trial.set_user_attr(INFEASIBLE, True)
                study.tell(trial, self._worst)
            elif obs is None:
                self._asked[config.canonical] = trial.number  # told when its result arrives
                return config
            elif (values := goal.values(obs)) is not None:
                study.tell(trial, values)  # measured already: the sampler learns, nothing runs
            else:
                study.tell(trial, state=TrialState.FAIL)  # failed, or another process is measuring it
        # The sampler insists on known ground (typical near convergence on a finite grid):
        # measure the unmeasured feasible configuration nearest to its last proposal.
        seed = proposal_seed(self.options.seed, self.seed_key, len(history))
        nearest = _nearest_unmeasured(space, config, set(known), np.random.default_rng(seed))
        if nearest is not None:
            self.fallbacks += 1
            log.info("%s proposed only measured or infeasible configurations %d times; measuring the nearest new one, %s",
                     self.name, MAX_ASKS, dict(nearest))  # fmt: skip
        return nearest

    def _study(self, space: Space, history: Sequence[Observation], goal: Goal, dists: dict[str, Any]) -> Any:
        """The Optuna study, kept across proposals as Optuna's own ask-and-tell keeps it: results
        that arrived since the last proposal are told to the trials that asked for them (or added).
        Rebuilt from the history, with a sampler seeded by the seed and the trials so far, on the
        first proposal, after a resume, or when a told result changed (re-measured, or another
        search's history)."""
        import optuna
        from optuna.trial import TrialState, create_trial

        finished = {o.config.canonical: (o, goal.values(o)) for o in history if o.status in ("done", "failed")}
        built_for = self._study_for is not None and self._study_for[0] is space and self._study_for[1] == goal
        if not (self.keep_study and built_for) or any(k not in finished or finished[k][1] != v for k, v in self._told.items()):
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            seed = proposal_seed(self.options.seed, self.seed_key, len(history))
            # A constrained space gives every trial a constraint value (0: feasible), as the
            # samplers' constraints_func records it.
            self._constrained = bool(space.constraints)
            with warnings.catch_warnings():  # constraints_func is deprecated in Optuna 5 for Trial.set_constraint,
                warnings.simplefilter("ignore", FutureWarning)  # which add_trials and Optuna 4 lack
                sampler = self.sampler(goal, seed, _infeasibility if self._constrained else None)
            self._optuna_study = optuna.create_study(directions=goal.directions, sampler=sampler)
            self._study_for, self._told, self._asked = (space, goal), {}, {}
        study, told = self._optuna_study, self._told
        new = []
        for canonical, (obs, values) in finished.items():
            if canonical in told:
                continue
            told[canonical] = values
            state = TrialState.COMPLETE if values is not None else TrialState.FAIL
            number = self._asked.pop(canonical, None)
            if number is not None:
                study.tell(number, values, state=state)
            else:
                attrs = {_CONSTRAINTS: [0.0]} if self._constrained and values is not None else {}
                new.append(create_trial(params=self._params(space, obs.config), distributions=dists,
                                        values=values, state=state, system_attrs=attrs))  # fmt: skip
        scored = [v for v in told.values() if v is not None]
        # What an infeasible configuration is told: the worst result so far on every objective.
        self._worst = [(min if d == "maximize" else max)(v[j] for v in scored) if scored else 0.0
                       for j, d in enumerate(goal.directions)]  # fmt: skip
        if new:
            self.annotate(new, start=len(study.trials))
            study.add_trials(new)
        return study

    def annotate(self, trials: list[Any], start: int) -> None:
        """Hook for samplers that keep bookkeeping in trial attributes (``start``: the number of
        trials the study holds before these)."""


class _BayesianOptions(_OptunaOptions):
    sampler: Literal["gp", "tpe"] = Field("gp", description="Optuna's GPSampler or TPESampler")
    score: str | None = Field(None, description="expression to maximise instead of the objectives (a composite score)")


class Bayesian(_OptunaStrategy):
    name = "bayesian"
    summary = "Bayesian optimisation (Optuna GP or TPE, ask-and-tell) of the objectives or a score; run only"
    Options = _BayesianOptions

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if self.options.score is not None:
            try:
                self._score = Expression.parse(self.options.score)
            except Exception as exc:  # noqa: BLE001 - report the parse error as a spec error
                raise SpecError(f"strategy 'bayesian' option 'score': {exc}") from None

    def goal(self, spec_objectives: Sequence[Objective] | Mapping[str, str]) -> Goal:
        if self.options.score is not None:
            return Goal(score=self._score)
        return super().goal(spec_objectives)

    @property
    def seed_key(self) -> str:
        return f"{self.name}-{self.options.sampler}"

    def sampler(self, goal: Goal, seed: int, constraints_func: Any) -> Any:
        import optuna

        startup = min(self.options.n_startup_trials, self.options.n_trials)
        if self.options.sampler == "gp":
            return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup, deterministic_objective=False,
                                             constraints_func=constraints_func)  # fmt: skip
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True,
                                          constraints_func=constraints_func)  # fmt: skip


class _NSGA2Options(_AdaptiveOptions):
    n_trials: int = Field(40, ge=1, description="configurations to measure in all (results already in the run count)")
    population_size: int = Field(10, ge=2, description="individuals per generation")


class NSGA2(_OptunaStrategy):
    name = "nsga2"
    summary = "multi-objective evolutionary search (Optuna NSGA-II) towards the Pareto front; run only"
    Options = _NSGA2Options
    # On a finite grid the sampler often asks for measured configurations; told to a kept study,
    # those repeats would fill its generations. Rebuilt from the history, a generation holds
    # population_size distinct measured configurations.
    keep_study = False

    def goal(self, spec_objectives: Sequence[Objective] | Mapping[str, str]) -> Goal:
        goal = super().goal(spec_objectives)
        if len(goal.objectives) < 2:
            raise SpecError(f"strategy 'nsga2' needs at least two objectives, got {goal.description}; use 'bayesian' for one")
        return goal

    def sampler(self, goal: Goal, seed: int, constraints_func: Any) -> Any:
        import optuna

        self._sampler = optuna.samplers.NSGAIISampler(population_size=self.options.population_size, seed=seed,
                                                      constraints_func=constraints_func)  # fmt: skip
        return self._sampler

    def annotate(self, trials: list[Any], start: int) -> None:
        # NSGA-II keeps each trial's generation in its system attributes; added trials get the
        # generation they had when measured in order (population_size per generation).
        key = getattr(self._sampler, "_get_generation_key", None)
        if key is None:
            return
        for i, t in enumerate(trials, start):
            t.system_attrs[key()] = i // self.options.population_size


def _contributions(values: np.ndarray) -> np.ndarray:
    """Each row's exclusive hypervolume contribution (every column maximised; objectives scaled
    by their range, the reference 1% beyond the worst)."""
    import moocore

    lo, hi = values.min(0), values.max(0)
    scaled = (values - lo) / np.where(hi > lo, hi - lo, 1.0)
    return np.asarray(moocore.hv_contributions(scaled, ref=np.full(values.shape[1], -0.01), maximise=True))


class _RefineOptions(_AdaptiveOptions):
    initial: str = Field("lhs", description="fixed strategy of the first design")
    initial_size: int | None = Field(
        None, ge=1, description="its size (lhs/random; default: 2 x (knobs + 1), at most a quarter of the grid)"
    )
    radius: int = Field(1, ge=1, description="value steps along one knob that count as a neighbour")


class Refine(AdaptiveStrategy):
    """Seed 001's refinement: an initial design, then the front's neighbours, then exploration.

    The initial design is computed once per space and measured in a seeded random order (the
    fixed strategies list configurations in grid order, which would let machine drift pose as
    a knob effect). When every neighbour of the front is measured the front is *refined*
    (``refined_after`` records when); the rest of the budget goes to unmeasured feasible
    configurations drawn at random, each of which may move the front and reopen refinement.
    A proposal costs the front's neighbours plus a few draws, whatever the size of the grid."""

    name = "refine"
    summary = "an initial design, then the unmeasured neighbours of the current Pareto front (seed 001); run only"
    Options = _RefineOptions
    DRAWS = 64  # random draws per exploration before listing what is left of the grid

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        cls = STRATEGIES.load(self.options.initial)
        if cls.adaptive:
            raise SpecError(f"strategy 'refine' option 'initial': {self.options.initial!r} is adaptive; use a fixed strategy")
        self._sized = self.options.initial in ("lhs", "latin_hypercube", "random")
        self._design: tuple[Space, list[Config]] | None = None
        self.refined_after: int | None = None  # configurations known when the front's neighbourhood was first exhausted

    def initial_design(self, space: Space) -> list[Config]:
        """The first design, in a seeded random order; computed once per space."""
        if self._design is None or self._design[0] is not space:
            options: dict[str, Any] = {}
            if self._sized:
                size = self.options.initial_size or min(2 * (len(space.knobs) + 1), max(1, space.grid_size // 4))
                options = {"size": size, "seed": self.options.seed}
            design = get_strategy(self.options.initial, options).select(space)
            order = np.random.default_rng(proposal_seed(self.options.seed, "refine-order", 0)).permutation(len(design))
            self._design = (space, [design[i] for i in order])
        return self._design[1]

    def propose(self, space: Space, history: Sequence[Observation], goal: Goal) -> Config | None:
        from knobscope.analysis.pareto import pareto_mask

        taken = {o.config.canonical for o in history}
        for config in self.initial_design(space):
            if config.canonical not in taken:
                return config
        scored = [(o, v) for o in history if (v := goal.values(o)) is not None]
        if scored:
            values = np.array([v for _, v in scored])
            maximise = [d == "maximize" for d in goal.directions]
            on_front = np.flatnonzero(pareto_mask(values, maximise))
            # Largest exclusive hypervolume contribution first, so the most promising region is
            # refined first and ties (several configurations with the same values, which add
            # nothing) last; ordering by the first objective spent whole budgets on such ties.
            order = np.argsort(-_contributions(values[on_front] * np.where(maximise, 1.0, -1.0)), kind="stable")
            for obs in (scored[on_front[i]][0] for i in order):
                for candidate in self._neighbours(space, obs.config):
                    if candidate.canonical not in taken and space.is_feasible(candidate):
                        return candidate
            if self.refined_after is None:
                self.refined_after = len(history)
                log.info("refine: every neighbour of the front is measured after %d configurations; exploring the rest "
                         "of the budget at random", len(history))  # fmt: skip
        return self._explore(space, taken, np.random.default_rng(proposal_seed(self.options.seed, self.name, len(history))))

    def _explore(self, space: Space, taken: set[str], rng: np.random.Generator) -> Config | None:
        """An unmeasured feasible configuration drawn uniformly; None only when none is left."""
        for _ in range(self.DRAWS):
            config = Config((k.name, k.values[int(rng.integers(len(k.values)))]) for k in space.knobs)
            if config.canonical not in taken and space.is_feasible(config):
                return config
        # Draws keep hitting measured or infeasible ground: list what is left (rare, near the end).
        spare = [c for c in space.product() if c.canonical not in taken]
        return spare[int(rng.integers(len(spare)))] if spare else None

    def _neighbours(self, space: Space, config: Config) -> list[Config]:
        out = []
        for step in range(1, self.options.radius + 1):
            for knob in space.knobs:
                i = knob.values.index(config[knob.name])
                for j in (i - step, i + step):
                    if 0 <= j < len(knob.values):
                        out.append(Config((k.name, knob.values[j] if k.name == knob.name else config[k.name]) for k in space.knobs))
        return out
