"""Exception types. Each message names the bad value, what is allowed, and how to fix it.

The CLI turns any :class:`KnobscopeError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "KnobscopeError",
    "SpecError",
    "ExpressionError",
    "RegistryError",
    "StoreError",
    "WorkloadError",
    "AnalysisError",
    "FieldProblem",
    "field_problem",
]


class KnobscopeError(Exception):
    """Base class for every error caused by user input (spec, CLI arguments, store, plugin)."""


class SpecError(KnobscopeError):
    """An experiment spec (or a command-line override of it) is invalid."""


class ExpressionError(SpecError):
    """A constraint or derived-quantity expression is malformed or uses a forbidden construct."""


class RegistryError(KnobscopeError):
    """A name is unknown to a registry, or registered twice."""


class StoreError(KnobscopeError):
    """A run directory or its ``results.db`` is missing, corrupt, or of an unknown schema."""


class WorkloadError(KnobscopeError):
    """A workload cannot be loaded or does not support a requested knob."""


class AnalysisError(KnobscopeError):
    """An analysis request that the results cannot answer: unknown metric, unknown direction."""


_SCALAR_TAGS = {"int", "float", "str", "bool", "none"}


@dataclass(frozen=True)
class FieldProblem:
    """The first problem of a pydantic ``ValidationError``, ready for a one-line message.

    ``where`` is the dotted key path with pydantic's union-member tags (``int``, ``list[...]``,
    ``_RangeKnob``) dropped; ``loc`` is the raw path.
    """

    where: str
    message: str
    got: Any
    unknown_key: bool
    loc: tuple[Any, ...]


def field_problem(exc: Any) -> FieldProblem:
    """The first error of a pydantic ``ValidationError`` (the one place that reads its format)."""
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"]
             if not (isinstance(p, str) and (p in _SCALAR_TAGS or "[" in p or p.startswith("_")))]  # fmt: skip
    return FieldProblem(".".join(parts), err["msg"], err.get("input"), err["type"] == "extra_forbidden", tuple(err["loc"]))
