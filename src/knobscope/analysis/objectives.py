"""Objectives: which result columns to optimise, and in which direction.

A direction is never guessed. It comes from, in order: the request (``total_ms_p95:min``),
the metric's declaration (``Metric(higher_is_better=...)``, stored with every run), or the
rule that timings (``*_ms``, ``*_per_call_ms``) and ``peak_memory_mb`` are lower-is-better.
Statistics keep their metric's direction (``accuracy_mean`` is higher-is-better); spreads
and counts (``_std``, ``_n``) have no direction and must be given one explicitly.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from knobscope.errors import AnalysisError
from knobscope.goals import LOCATION_STATS, Objective, column_for

__all__ = [
    "Objective",
    "direction_of",
    "resolve_objective",
    "resolve_objectives",
    "default_objectives",
    "objective_matrix",
    "numeric_columns",
    "column_for",
]

DIRECTIONS = ("min", "max")
_STATS = LOCATION_STATS
_UNDIRECTED_STATS = ("std", "n")


def _base_and_stat(column: str) -> tuple[str, str | None]:
    for stat in (*_STATS, *_UNDIRECTED_STATS):
        if column.endswith(f"_{stat}"):
            return column[: -len(stat) - 1], stat
    return column, None


def direction_of(column: str, metrics: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, str]:
    """``(direction or None, unit)`` of a result column, from the declared metrics and timing rules."""
    if column in metrics:
        m = metrics[column]
        return ("max" if m.get("higher_is_better") else "min"), m.get("unit", "")
    if column == "peak_memory_mb":
        return "min", "MiB"
    base, stat = _base_and_stat(column)
    if stat in _UNDIRECTED_STATS:
        return None, ""
    if base.endswith("_ms"):
        return "min", "ms"
    if base in metrics:
        m = metrics[base]
        return ("max" if m.get("higher_is_better") else "min"), m.get("unit", "")
    return None, ""


def numeric_columns(table: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    skip = set(exclude) | {"trial_id", "workload", "status", "error", "attempts", "num_records"}
    return [c for c in table.columns if c not in skip and pd.api.types.is_numeric_dtype(table[c])]


def resolve_objective(
    text: str, table: pd.DataFrame, metrics: Mapping[str, Mapping[str, Any]], *, knobs: Sequence[str] = ()
) -> Objective:
    """``"column"`` or ``"column:min|max"`` -> :class:`Objective`; a bare metric name means its mean."""
    name, _, direction = text.partition(":")
    name, direction = name.strip(), direction.strip()
    if direction and direction not in DIRECTIONS:
        raise AnalysisError(f"objective {text!r}: direction {direction!r} is not valid; use {name}:min or {name}:max")
    column = column_for(name, table.columns) or name
    available = numeric_columns(table, exclude=knobs)
    if column not in table.columns:
        close = difflib.get_close_matches(name, available, n=3)
        bases = list(dict.fromkeys(_base_and_stat(c)[0] for c in available))
        hint = (f"; did you mean {', '.join(close)}?" if close
                else f"; available: {', '.join(bases)} (a name means its mean; add _p50, _p95, _p99, ... for others)")  # fmt: skip
        raise AnalysisError(f"objective {name!r} is not a result column{hint}")
    declared, unit = direction_of(column, metrics)
    if not direction:
        if declared is None:
            raise AnalysisError(
                f"objective {column!r} has no declared direction; write {column}:min or {column}:max"
            )
        direction = declared
    return Objective(column, direction, unit)  # type: ignore[arg-type]


def resolve_objectives(
    requested: Sequence[str] | Sequence[Objective] | Mapping[str, str],
    table: pd.DataFrame,
    metrics: Mapping[str, Mapping[str, Any]],
    *,
    knobs: Sequence[str] = (),
) -> list[Objective]:
    if isinstance(requested, Mapping):
        items = [f"{k}:{v}" for k, v in requested.items()]
    else:
        items = [f"{o.column}:{o.direction}" if isinstance(o, Objective) else o for o in requested]
    objectives = [resolve_objective(t, table, metrics, knobs=knobs) for t in items]
    seen = [o.column for o in objectives]
    duplicates = sorted({c for c in seen if seen.count(c) > 1})
    if duplicates:
        raise AnalysisError(f"objective {duplicates[0]!r} is given twice; name each objective once")
    return objectives


def default_objectives(
    table: pd.DataFrame,
    metrics: Mapping[str, Mapping[str, Any]],
    spec_objectives: Sequence[Objective] | Mapping[str, str] | None = None,
    *,
    knobs: Sequence[str] = (),
) -> list[Objective]:
    """The spec's objectives; otherwise P95 total latency (seed 001) and the first declared quality metric."""
    if spec_objectives:
        return resolve_objectives(spec_objectives, table, metrics, knobs=knobs)
    out: list[Objective] = []
    if "total_ms_p95" in table.columns:
        out.append(Objective("total_ms_p95", "min", "ms"))
    for name, m in metrics.items():
        if not m.get("higher_is_better"):
            continue
        for column in (name, f"{name}_mean"):
            if column in table.columns and table[column].notna().any():
                out.append(Objective(column, "max", m.get("unit", "")))
                break
        if len(out) == 2:
            break
    if not out:
        raise AnalysisError("no objectives: the spec names none and the run has no total_ms_p95; pass --objective METRIC:min|max")
    return out


def objective_matrix(table: pd.DataFrame, objectives: Sequence[Objective]) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame]:
    """Rows usable for optimisation, as an ``(n, m)`` float array in original units.

    Returns ``(values, kept, excluded)``: ``kept`` are the finished rows with every objective
    finite; ``excluded`` lists every other row with its reason (failed, unfinished, missing or
    NaN objective), so an analysis can say what it left out.
    """
    columns = [o.column for o in objectives]
    values = table[columns]
    if not all(pd.api.types.is_numeric_dtype(values[c]) for c in columns):
        values = values.apply(pd.to_numeric, errors="coerce")
    array = values.to_numpy(dtype=float)
    finite = np.isfinite(array)
    done = (table["status"] == "done").to_numpy() if "status" in table.columns else np.ones(len(table), dtype=bool)
    keep = done & finite.all(axis=1)
    if keep.all():  # the common case; skip building reasons
        return array, table, table.iloc[:0].assign(reason=pd.Series(dtype=object))
    reasons: list[str] = []
    errors = table["error"].tolist() if "error" in table.columns else [None] * len(table)
    statuses = table["status"].tolist() if "status" in table.columns else ["done"] * len(table)
    for i in np.flatnonzero(~keep):
        if not done[i]:
            e = errors[i]
            last = str(e).strip().splitlines()[-1] if isinstance(e, str) and e.strip() else "no reason stored"
            reasons.append(f"failed: {last}" if statuses[i] == "failed" else str(statuses[i]))
        else:
            reasons.append(f"{columns[int(np.argmin(finite[i]))]} is missing or not finite")
    excluded = table.loc[~keep].assign(reason=reasons)
    return array[keep], table.loc[keep], excluded
