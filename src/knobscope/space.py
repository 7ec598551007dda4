"""Knobs, knob spaces, constraints, derived quantities, and configurations.

A :class:`Knob` is a named inference setting with a finite ordered list of values. A
:class:`Space` is the ordered knobs plus constants, derived quantities and constraints. A
:class:`Config` holds one value per knob; its canonical JSON is its identity.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from knobscope.errors import SpecError
from knobscope.expressions import FUNCTIONS, Expression

__all__ = ["Knob", "Space", "Config", "Value", "range_values", "canonical_json", "identity_hash"]

Value = int | float | str | bool


def canonical_json(obj: object) -> str:
    """JSON with sorted keys and no whitespace: equal objects give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def identity_hash(obj: object) -> str:
    """A short, stable hash of ``obj``'s canonical JSON (16 hex digits, 64 bits)."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def range_values(lo: float, hi: float, step: float) -> tuple[Value, ...]:
    """Values ``lo, lo+step, ..., <= hi``; integers stay integers, floats are rounded to 12 digits.

    Counting steps (rather than accumulating) avoids drift: ``range_values(0.1, 1.0, 0.1)`` ends
    at exactly 1.0.
    """
    if step <= 0:
        raise SpecError(f"range step must be positive, got {step}")
    if hi < lo:
        raise SpecError(f"range [{lo}, {hi}] is empty: the upper bound must be >= the lower bound")
    count = int(math.floor((hi - lo) / step + 1e-9)) + 1
    if all(isinstance(x, int) and not isinstance(x, bool) for x in (lo, hi, step)):
        return tuple(int(lo + i * step) for i in range(count))
    return tuple(round(lo + i * step, 12) for i in range(count))


# Columns of the results tables that are not measurements: a knob must not shadow them.
RESERVED_NAMES = frozenset({
    "trial_id", "workload", "status", "error", "attempts", "sample_id", "repeat", "stages", "peak_memory_mb",
    "num_records", "noisy", "noise_reason", "repeats", "target_met", "eval_order", "started_at", "finished_at",
})  # fmt: skip


@dataclass(frozen=True)
class Knob:
    """A named inference setting.

    Args:
        name: identifier used in specs, constraints and results.
        values: the ordered candidate values (strategies pick by position, so order matters).
        default: the baseline value (used by single-knob policies and as the resting value).
            When omitted, the middle value ``values[(len - 1) // 2]`` is the default.
    """

    name: str
    values: tuple[Value, ...]
    default: Value | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise SpecError(f"knob name {self.name!r} must be an identifier (letters, digits, _)")
        if self.name.endswith("_ms"):
            raise SpecError(
                f"knob name {self.name!r} ends in _ms, which knobscope keeps for measured times (a stage "
                f"{self.name[:-3]!r} is reported as {self.name!r}), so the knob would be mistaken for a measurement; "
                f"rename it, e.g. {self.name[:-3] + '_msec'!r}"
            )
        if self.name in RESERVED_NAMES:
            raise SpecError(f"knob name {self.name!r} is a column knobscope reports itself; reserved names: "
                            f"{', '.join(sorted(RESERVED_NAMES))}")  # fmt: skip
        if not self.values:
            raise SpecError(f"knob {self.name!r} has an empty value list; give at least one value")
        if len(set(map(canonical_json, self.values))) != len(self.values):
            raise SpecError(f"knob {self.name!r} lists a value twice: {list(self.values)}")
        if self.default is None:
            object.__setattr__(self, "default", self.values[(len(self.values) - 1) // 2])
        elif self.default not in self.values:
            raise SpecError(
                f"knob {self.name!r}: default {self.default!r} is not one of its values {list(self.values)}"
            )

    def with_values(self, values: Sequence[Value]) -> Knob:
        """The same knob over other values; the default is kept when it is still among them."""
        default = self.default if self.default in values else None
        return replace(self, values=tuple(values), default=default)


class Config(Mapping[str, Value]):
    """An immutable, hashable mapping knob name -> value, ordered as the space's knobs."""

    __slots__ = ("_items", "_key")

    def __init__(self, items: Mapping[str, Value] | Iterable[tuple[str, Value]]) -> None:
        self._items = dict(items)
        self._key = canonical_json(self._items)

    def __getitem__(self, name: str) -> Value:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._key == other._key

    def __repr__(self) -> str:
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in self._items.items()) + ")"

    def to_dict(self) -> dict[str, Value]:
        return dict(self._items)

    @property
    def canonical(self) -> str:
        return self._key


@dataclass(frozen=True)
class Space:
    """Ordered knobs plus the rules that decide which configurations may run.

    Args:
        knobs: the knobs, in order (the order of columns in every table).
        constants: fixed named numbers that expressions may use (e.g. ``seq_len: 4096``).
        derived: ``(name, expression)`` pairs evaluated in order; each may use knobs, constants
            and earlier derived names (e.g. ``num_blocks = ceil(seq_len / block_size)``).
        constraints: boolean expressions; a configuration violating any of them is never run.
    """

    knobs: tuple[Knob, ...]
    constants: tuple[tuple[str, Value], ...] = ()
    derived: tuple[tuple[str, Expression], ...] = ()
    constraints: tuple[Expression, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.knobs:
            raise SpecError("a space needs at least one knob")
        known: list[str] = []
        for name in [k.name for k in self.knobs] + [c for c, _ in self.constants]:
            if name in known or name in FUNCTIONS:
                raise SpecError(f"name {name!r} is defined twice (or shadows a function)")
            known.append(name)
        for name, expr in self.derived:
            self._check_names(expr, known, f"derived quantity {name!r}")
            if name in known:
                raise SpecError(f"derived quantity {name!r} reuses a knob or constant name")
            known.append(name)
        for expr in self.constraints:
            self._check_names(expr, known, "constraint")

    @staticmethod
    def _check_names(expr: Expression, known: list[str], what: str) -> None:
        unknown = sorted(expr.names - set(known))
        if unknown:
            raise SpecError(
                f"{what} {expr.source!r} uses unknown name {unknown[0]!r}; known names: {', '.join(known)}"
            )

    # -- basic views -------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [k.name for k in self.knobs]

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise SpecError(f"unknown knob {name!r}; the space has: {', '.join(self.names)}")

    @property
    def grid_size(self) -> int:
        """Number of configurations in the full grid, before constraints."""
        return math.prod(len(k.values) for k in self.knobs)

    def default_config(self) -> Config:
        return Config((k.name, k.default) for k in self.knobs)

    def with_values(self, overrides: Mapping[str, Sequence[Value]]) -> Space:
        """A copy with some knobs' value lists replaced (the CLI's ``--set knob=a,b,c``)."""
        for name in overrides:
            self.knob(name)  # raises on an unknown knob
        knobs = tuple(k.with_values(overrides[k.name]) if k.name in overrides else k for k in self.knobs)
        return replace(self, knobs=knobs)

    # -- configurations ----------------------------------------------------------------------

    def variables(self, config: Mapping[str, Value]) -> dict[str, Value]:
        """Knob values, constants and derived quantities for ``config``."""
        env: dict[str, Value] = dict(self.constants)
        env.update(config)
        for name, expr in self.derived:
            env[name] = expr.evaluate(env)  # type: ignore[assignment]
        return env

    def violated(self, config: Mapping[str, Value]) -> list[str]:
        """The source text of every constraint ``config`` violates (empty when feasible)."""
        if not self.constraints:
            return []
        env = self.variables(config)
        return [c.source for c in self.constraints if not c.evaluate(env)]

    def is_feasible(self, config: Mapping[str, Value]) -> bool:
        return not self.violated(config)

    def product(self, value_lists: Sequence[Sequence[Value]] | None = None) -> list[Config]:
        """Feasible configurations of the Cartesian product of per-knob value lists.

        ``value_lists`` defaults to every knob's full list (the full grid). Order: the first
        knob varies slowest, as in ``itertools.product``.
        """
        lists = value_lists if value_lists is not None else [k.values for k in self.knobs]
        configs = (Config(zip(self.names, combo)) for combo in itertools.product(*lists))
        return [c for c in configs if self.is_feasible(c)]

    def config(self, values: Mapping[str, Value]) -> Config:
        """Validate a mapping as a configuration of this space (every knob, allowed values)."""
        missing = [n for n in self.names if n not in values]
        extra = [n for n in values if n not in self.names]
        if missing or extra:
            raise SpecError(f"configuration {dict(values)} must set exactly the knobs {self.names}")
        for k in self.knobs:
            if values[k.name] not in k.values:
                raise SpecError(f"knob {k.name!r}: {values[k.name]!r} is not one of {list(k.values)}")
        return Config((n, values[n]) for n in self.names)
