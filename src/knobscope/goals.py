"""What to optimise, one notion for the spec, the adaptive search and the analysis.

An :class:`Objective` is a result column and a direction. A :class:`Goal` is what a search or a
recommendation optimises:

==============  ==============================================================================
``objectives``  one or more objectives (several: a Pareto search), e.g. the spec's ``objectives``
``maximize``    the highest value of one column (``--maximize accuracy``)
``minimize``    the lowest value of one column
``score``       the highest value of an expression over result columns and knobs (seed 004's
                ``cosine + 0.5*log(1/total_ms_mean) + 0.3*sparsity``)
``weights``     the highest weighted sum of columns each scaled to [0, 1] from worst to best
                observed (needs the observed range: recommendations only, not a search)
==============  ==============================================================================

The spec's ``analysis`` section, its scenarios and the CLI's ``--maximize / --minimize /
--score / --weight`` all become a Goal through :func:`goal_from`, so they accept and refuse the
same things. A bare metric name means its mean column (:func:`column_for`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from knobscope.errors import SpecError
from knobscope.expressions import Expression

__all__ = ["Objective", "Goal", "goal_from", "column_for", "GOAL_KEYS", "LOCATION_STATS"]

GOAL_KEYS = ("maximize", "minimize", "score", "weights")
# Statistics that keep their metric's direction and range (``accuracy_mean``, ``cosine_p50``).
LOCATION_STATS = ("mean", "min", "max", "p50", "p90", "p95", "p99")


def column_for(name: str, columns: Iterable[str]) -> str | None:
    """The result column a metric name stands for: the name itself, else its mean (``accuracy``
    -> ``accuracy_mean`` where only per-sample statistics exist); None when neither exists.
    The one place this rule is written: the spec, the search, the analysis and the CLI use it."""
    present = columns if isinstance(columns, (Mapping, set, frozenset)) else set(columns)
    if name in present:
        return name
    return f"{name}_mean" if f"{name}_mean" in present else None


@dataclass(frozen=True)
class Objective:
    """A result column and whether lower (``min``) or higher (``max``) is better; ``range``: the
    values it can take where its metric declares them (a cosine's (-1, 1))."""

    column: str
    direction: Literal["min", "max"]
    unit: str = ""
    range: tuple[float, float] | None = None

    @property
    def maximise(self) -> bool:
        return self.direction == "max"

    @property
    def label(self) -> str:
        unit = f" ({self.unit})" if self.unit else ""
        arrow = "higher is better" if self.maximise else "lower is better"
        return f"{self.column}{unit}, {arrow}"

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` is strictly better than ``b``."""
        return a > b if self.maximise else a < b

    def to_dict(self) -> dict[str, str]:
        return {"column": self.column, "direction": self.direction, "unit": self.unit}

    to_json = to_dict


@dataclass(frozen=True)
class Goal:
    """What to optimise (see the module docstring for the kinds).

    ``Goal("maximize", "accuracy")``, ``Goal("score", "cosine + 0.5*log(1/total_ms_mean)")``,
    ``Goal("weights", weights={"accuracy": 1, "total_ms_p95": 0.5})``,
    ``Goal(objectives=(Objective("quality", "max"), Objective("cost", "min")))`` (pairs
    ``("quality", "max")`` are accepted), or ``Goal(score=Expression.parse(...))``.
    """

    kind: Literal["objectives", "maximize", "minimize", "score", "weights"] = "objectives"
    target: str = ""
    weights: Mapping[str, float] = field(default_factory=dict)
    objectives: tuple[Objective, ...] = ()
    score: Expression | None = None

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen
        set_("objectives", tuple(o if isinstance(o, Objective) else Objective(str(o[0]), o[1]) for o in self.objectives))
        if self.score is not None and self.kind == "objectives":
            set_("kind", "score")
        if self.kind == "score":
            if self.score is None:
                set_("score", Expression.parse(self.target))
            set_("target", self.score.source)  # type: ignore[union-attr]
        if self.kind in ("maximize", "minimize") and not self.objectives:
            set_("objectives", (Objective(self.target, "max" if self.kind == "maximize" else "min"),))

    def describe(self) -> str:
        if self.kind == "weights":
            return "maximize " + " + ".join(f"{w:g}*norm({m})" for m, w in self.weights.items())
        if self.kind == "score":
            return f"maximize {self.target}"
        if self.kind == "objectives":
            return ", ".join(f"{o.column} ({o.direction})" for o in self.objectives)
        return f"{self.kind} {self.target}"

    @property
    def description(self) -> str:
        return self.describe()

    def with_ranges(self, metrics: Mapping[str, Any]) -> Goal:
        """This goal with each objective's range from the declared metrics (``{name: Metric}``,
        or their ``asdict``): a metric's own column or a location statistic of it
        (``cosine_mean``, ``accuracy_p50``) takes the metric's ``range``."""

        def declared(column: str) -> tuple[float, float] | None:
            for name in (column, *(column[: -len(stat) - 1] for stat in LOCATION_STATS if column.endswith(f"_{stat}"))):
                if name in metrics:
                    m = metrics[name]
                    found = m.get("range") if isinstance(m, Mapping) else getattr(m, "range", None)
                    return (float(found[0]), float(found[1])) if found else None
            return None

        objectives = tuple(replace(o, range=o.range or declared(o.column)) for o in self.objectives)
        return replace(self, objectives=objectives)

    @property
    def directions(self) -> list[str]:
        """Optuna's study directions for this goal."""
        if self.kind == "weights":
            raise SpecError("a weighted goal needs the observed range of each metric, so a search cannot use it; "
                            "use objectives or a score expression")  # fmt: skip
        if self.kind == "score":
            return ["maximize"]
        return ["maximize" if o.maximise else "minimize" for o in self.objectives]

    def values(self, obs: Any) -> list[float] | None:
        """The goal's values for a finished trial (an object with ``status``, ``row`` of
        results and ``config``); None when it failed or a value is not finite."""
        if obs.status != "done":
            return None
        row = obs.row
        if self.kind == "score":
            assert self.score is not None
            missing = sorted(n for n in self.score.names if n not in row and n not in obs.config)
            if missing:
                raise SpecError(f"score {self.score.source!r} names {missing[0]!r}, which is not a result column or knob; "
                                f"columns: {', '.join(sorted(k for k in row if not k.endswith('_std')))}")  # fmt: skip
            try:
                value = float(self.score.evaluate({**obs.config, **row}))
            except (ValueError, ZeroDivisionError, TypeError, OverflowError):
                return None
            return [value] if math.isfinite(value) else None
        out = []
        for o in self.objectives:
            name = column_for(o.column, row)
            if name is None:
                raise SpecError(f"objective {o.column!r} is not a result column; columns: "
                                f"{', '.join(sorted(k for k in row if not k.endswith('_std')))}")  # fmt: skip
            value = row[name]
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return None
            out.append(float(value))
        return out


def goal_from(section: Mapping[str, Any], default: Goal | None = None, *, where: str = "analysis",
              keys: Mapping[str, str] | None = None) -> Goal | None:  # fmt: skip
    """The goal of a spec section (``analysis``, a scenario) or of the CLI's options: at most
    one of ``maximize``, ``minimize``, ``score``, ``weights``; ``default`` when none is set.
    ``keys`` names them as the user wrote them (``--maximize``) for the error message."""
    given = [k for k in GOAL_KEYS if section.get(k)]
    if len(given) > 1:
        if keys:  # the command line's own names
            raise SpecError(f"give one of {', '.join(keys[k] for k in GOAL_KEYS[:-1])} and {keys['weights']}, "
                            f"not {' and '.join(keys[k] for k in given)}")  # fmt: skip
        raise SpecError(f"{where} sets more than one of maximize, minimize and score (or weights): "
                        f"{' and '.join(given)}; keep one")  # fmt: skip
    if not given:
        return default
    kind = given[0]
    if kind == "weights":
        return Goal("weights", weights={str(k): float(v) for k, v in dict(section["weights"]).items()})
    try:
        return Goal(kind, str(section[kind]))  # type: ignore[arg-type]
    except SpecError as exc:
        raise SpecError(f"{where}.{kind}: {exc}") from None
