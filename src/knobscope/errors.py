"""Exception types. Each message names the bad value, what is allowed, and how to fix it.

The CLI turns any :class:`KnobscopeError` into one line on stderr and exit status 2.
"""

from __future__ import annotations

__all__ = [
    "KnobscopeError",
    "SpecError",
    "ExpressionError",
    "RegistryError",
    "StoreError",
    "WorkloadError",
    "AnalysisError",
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
