"""Fixed sampling strategies: which configurations of a space to run.

Every strategy is defined by an exact rule, so the same space always gives the same
configurations. The product strategies pick a list of values per knob (by position in the
knob's ordered value list, ``n`` values, indices ``0..n-1``) and run the feasible Cartesian
product of those lists:

==============  ==========================================================================
``full``        every value of every knob.
``stratified``  min, middle, max: indices ``0, (n-1)//2, n-1``.
``boundary``    the *wide* knobs (option ``wide``; default: the knob(s) with the most values)
                get min, 1/4, middle, 3/4, max: indices ``0, (n-1)//4, (n-1)//2, 3(n-1)//4,
                n-1``; the others get min, middle, max.
``balanced``    ``m = ceil(n/2)`` values per knob, clamped to ``[min(n, 3), max_values]``
                (option ``max_values``, default 4), evenly spaced by index:
                ``i*(n-1)//(m-1)`` for ``i = 0..m-1`` (always includes min and max).
``custom_sparse`` every ``step``-th value (option ``step``, default 2): indices ``0, step,
                2*step, ...``; when the last one is not the max, it is moved to the max so
                both ends are covered.
==============  ==========================================================================

The sampling strategies draw ``size`` configurations (default: a quarter of the full grid,
rounded) with a seeded generator (option ``seed``, default 42):

==========  ==============================================================================
``lhs``     Latin hypercube (:class:`scipy.stats.qmc.LatinHypercube`) on value indices: each
            knob's range is cut into ``size`` strata, so every value of every knob appears
            ``floor`` or ``ceil`` of ``size/n`` times. Rows that repeat another row or break
            a constraint are repaired by swapping values within a column (which keeps every
            knob's value counts unchanged); any left after that are replaced by unused feasible
            configurations drawn at random.
``random``  ``size`` distinct feasible configurations drawn uniformly without replacement.
==========  ==============================================================================

``listed`` runs exactly the configurations of its option ``configs`` (a knob left out takes its
default). The adaptive strategies (``bayesian``, ``nsga2``, ``refine``) are in
:mod:`knobscope.search`.

Constraints always remove configurations before anything runs. On seed 000's Exp5 grid
(max_crops 2..12 step 2, top_k 4..32 step 4, num_active_blocks 8..16 step 2) these rules give
full 240, stratified 27, boundary 45, balanced 36, custom_sparse 36, lhs 60.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from knobscope.errors import SpecError, field_problem
from knobscope.registry import Registry
from knobscope.space import Config, Space, Value

__all__ = ["Strategy", "ProductStrategy", "STRATEGIES", "get_strategy", "describe_selection"]

STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


class _NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Strategy(ABC):
    """Chooses configurations from a space.

    Subclasses set ``name`` and ``summary``, may declare ``Options`` (a pydantic model with
    ``extra="forbid"``; its fields are the strategy's options in a spec) and implement
    :meth:`select`. Adaptive strategies (which look at results so far) set ``adaptive = True``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    adaptive: ClassVar[bool] = False
    Options: ClassVar[type[BaseModel]] = _NoOptions

    def __init__(self, **options: Any) -> None:
        try:
            self.options = self.Options(**options)
        except ValidationError as exc:
            problem = field_problem(exc)
            allowed = ", ".join(self.Options.model_fields) or "none"
            raise SpecError(
                f"strategy {self.name!r} option {problem.where or 'options'!r}: {problem.message} (got {problem.got!r}); "
                f"options it takes: {allowed}"
            ) from None

    @abstractmethod
    def select(self, space: Space) -> list[Config]:
        """The feasible configurations to run, in a stable order, without duplicates."""


class ProductStrategy(Strategy):
    """A strategy that picks a value list per knob and runs their Cartesian product."""

    @abstractmethod
    def indices(self, space: Space) -> list[list[int]]:
        """Per knob, the chosen positions in its value list (ascending, unique)."""

    def value_lists(self, space: Space) -> list[list[Value]]:
        return [[k.values[i] for i in idx] for k, idx in zip(space.knobs, self.indices(space))]

    def select(self, space: Space) -> list[Config]:
        return space.product(self.value_lists(space))


def _unique(indices: Sequence[int]) -> list[int]:
    return sorted(set(indices))


@STRATEGIES.register("full", aliases=("grid",))
class Full(ProductStrategy):
    name = "full"
    summary = "every value of every knob (the full grid)"

    def indices(self, space: Space) -> list[list[int]]:
        return [list(range(len(k.values))) for k in space.knobs]


@STRATEGIES.register("stratified")
class Stratified(ProductStrategy):
    name = "stratified"
    summary = "min, middle and max of each knob"

    def indices(self, space: Space) -> list[list[int]]:
        return [_unique([0, (n - 1) // 2, n - 1]) for n in (len(k.values) for k in space.knobs)]


class _BoundaryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    wide: list[str] | None = Field(None, description="knobs that get five points (default: those with the most values)")


@STRATEGIES.register("boundary")
class Boundary(ProductStrategy):
    name = "boundary"
    summary = "min, middle, max; the widest knob also gets its 1/4 and 3/4 points"
    Options = _BoundaryOptions

    def indices(self, space: Space) -> list[list[int]]:
        wide = self.options.wide
        if wide is None:
            most = max(len(k.values) for k in space.knobs)
            wide = [k.name for k in space.knobs if len(k.values) == most]
        for name in wide:
            space.knob(name)  # raises on an unknown knob
        out = []
        for k in space.knobs:
            n = len(k.values)
            if k.name in wide:
                out.append(_unique([0, (n - 1) // 4, (n - 1) // 2, 3 * (n - 1) // 4, n - 1]))
            else:
                out.append(_unique([0, (n - 1) // 2, n - 1]))
        return out


class _BalancedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_values: int = Field(4, ge=2, description="most values taken from one knob")


@STRATEGIES.register("balanced")
class Balanced(ProductStrategy):
    name = "balanced"
    summary = "about half of each knob's values (3 to max_values), evenly spaced, ends included"
    Options = _BalancedOptions

    def indices(self, space: Space) -> list[list[int]]:
        out = []
        for k in space.knobs:
            n = len(k.values)
            m = min(max(math.ceil(n / 2), min(n, 3)), self.options.max_values, n)
            out.append([0] if m == 1 else _unique([i * (n - 1) // (m - 1) for i in range(m)]))
        return out


class _CustomSparseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    step: int = Field(2, ge=1, description="take every step-th value")


@STRATEGIES.register("custom_sparse")
class CustomSparse(ProductStrategy):
    name = "custom_sparse"
    summary = "every step-th value of each knob, last one moved to the max"
    Options = _CustomSparseOptions

    def indices(self, space: Space) -> list[list[int]]:
        out = []
        for k in space.knobs:
            n = len(k.values)
            idx = list(range(0, n, self.options.step))
            if idx[-1] != n - 1:
                if len(idx) > 1:
                    idx[-1] = n - 1
                else:
                    idx.append(n - 1)
            out.append(idx)
        return out


class _SizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    size: int | None = Field(None, ge=1, description="configurations to draw (default: a quarter of the grid)")
    seed: int = Field(42, description="seed of the generator")


class _SizedStrategy(Strategy):
    Options = _SizeOptions

    def target_size(self, space: Space, feasible: int) -> int:
        size = self.options.size if self.options.size is not None else max(1, round(space.grid_size / 4))
        return min(size, feasible)


@STRATEGIES.register("random")
class RandomSample(_SizedStrategy):
    name = "random"
    summary = "distinct feasible configurations drawn uniformly at random"

    def select(self, space: Space) -> list[Config]:
        grid = space.product()
        size = self.target_size(space, len(grid))
        rng = np.random.default_rng(self.options.seed)
        picked = sorted(rng.choice(len(grid), size=size, replace=False).tolist())
        return [grid[i] for i in picked]


@STRATEGIES.register("lhs", aliases=("latin_hypercube",))
class LatinHypercube(_SizedStrategy):
    name = "lhs"
    summary = "Latin hypercube over value indices: every value of every knob covered evenly"

    def select(self, space: Space) -> list[Config]:
        grid = space.product()
        feasible = {c.canonical for c in grid}
        size = self.target_size(space, len(grid))
        if size == len(grid):
            return grid
        sizes = np.array([len(k.values) for k in space.knobs])
        from scipy.stats import qmc  # here: listing strategies must not import scipy

        unit = qmc.LatinHypercube(d=len(sizes), seed=self.options.seed).random(size)  # (size, d) in [0, 1)
        rows = np.minimum((unit * sizes).astype(int), sizes - 1)  # (size, d) value indices
        rng = np.random.default_rng(self.options.seed)

        def to_config(row: np.ndarray) -> Config:
            return Config((k.name, k.values[i]) for k, i in zip(space.knobs, row))

        def bad_rows(rows: np.ndarray) -> list[int]:
            seen: set[str] = set()
            bad = []
            for r, row in enumerate(rows):
                key = to_config(row).canonical
                if key in seen or key not in feasible:
                    bad.append(r)
                seen.add(key)
            return bad

        # Repair by swapping within a column: keeps each knob's value counts (the LHS property).
        bad = bad_rows(rows)
        for _ in range(200 * size):
            if not bad:
                break
            r, other, col = bad[0], int(rng.integers(size)), int(rng.integers(len(sizes)))
            rows[[r, other], col] = rows[[other, r], col]
            new_bad = bad_rows(rows)
            if len(new_bad) <= len(bad):
                bad = new_bad
            else:
                rows[[r, other], col] = rows[[other, r], col]  # undo

        chosen = [to_config(row) for i, row in enumerate(rows) if i not in set(bad)]
        if bad:  # repair gave up (tight constraints): fill with unused feasible configurations
            used = {c.canonical for c in chosen}
            spare = [c for c in grid if c.canonical not in used]
            for i in rng.choice(len(spare), size=len(bad), replace=False):
                chosen.append(spare[int(i)])
        order = {c.canonical: i for i, c in enumerate(grid)}
        return sorted(chosen, key=lambda c: order[c.canonical])


class _ListedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    configs: list[dict[str, Any]] = Field(min_length=1, description="the configurations, one mapping of knob -> value each")


@STRATEGIES.register("listed", aliases=("configs",))
class Listed(Strategy):
    name = "listed"
    summary = "exactly the configurations listed in option 'configs' (named scenarios, case studies)"
    Options = _ListedOptions

    def select(self, space: Space) -> list[Config]:
        out: list[Config] = []
        for i, given in enumerate(self.options.configs):
            unknown = sorted(set(given) - set(space.names))
            if unknown:
                raise SpecError(f"strategy 'listed' configs[{i}] names {unknown[0]!r}, which is not a knob; knobs: {', '.join(space.names)}")
            values = {k.name: given.get(k.name, k.default) for k in space.knobs}
            for knob in space.knobs:
                if values[knob.name] not in knob.values:
                    raise SpecError(f"strategy 'listed' configs[{i}]: {knob.name}={values[knob.name]!r} is not one of the "
                                    f"knob's values {list(knob.values)}")  # fmt: skip
            config = Config((k.name, values[k.name]) for k in space.knobs)
            broken = space.violated(config)
            if broken:
                raise SpecError(f"strategy 'listed' configs[{i}] {dict(config)} breaks the constraint {broken[0]!r}")
            if config not in out:
                out.append(config)
        return out


def get_strategy(name: str, options: Mapping[str, Any] | None = None) -> Strategy:
    """Instantiate a registered strategy by name (raises with the valid names if unknown)."""
    return STRATEGIES.load(name)(**dict(options or {}))


def describe_selection(space: Space, configs: Sequence[Config]) -> dict[str, Any]:
    """Per knob, the values a selection uses and how many of the knob's values that covers."""
    per_knob = {}
    for k in space.knobs:
        used = [v for v in k.values if any(c[k.name] == v for c in configs)]
        counts = [sum(1 for c in configs if c[k.name] == v) for v in k.values]
        per_knob[k.name] = {"values": used, "covered": len(used), "of": len(k.values), "counts": counts}
    return {"combinations": len(configs), "knobs": per_knob}


# The adaptive strategies, by import path: Optuna is imported when one of them is used.
STRATEGIES.add("bayesian", "knobscope.search:Bayesian", aliases=("bo",))
STRATEGIES.add("nsga2", "knobscope.search:NSGA2", aliases=("nsga-ii",))
STRATEGIES.add("refine", "knobscope.search:Refine")
STRATEGIES.add("frontier", "knobscope.frontier:Frontier")
