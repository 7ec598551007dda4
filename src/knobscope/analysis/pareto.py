"""Pareto sets and hypervolume, with per-objective directions, on top of moocore.

Array functions take an ``(n, m)`` array in the objectives' own units and a ``maximise`` flag per
objective; moocore does the non-dominated filtering (O(n log n) for m <= 3) and the exact
hypervolume. Ties are kept: two configurations with identical objective values are both optimal.

The hypervolume's default reference point is the worst observed value of each objective. A
point equal to the reference on any objective adds no volume, so pass an explicit reference
(slightly beyond the worst) when the extremes themselves matter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import moocore
import numpy as np
import pandas as pd

from knobscope.analysis.objectives import Objective, objective_matrix
from knobscope.errors import AnalysisError

__all__ = [
    "pareto_mask",
    "reference_point",
    "ideal_point",
    "hypervolume",
    "ParetoResult",
    "pareto_front",
]


def _flags(maximise: bool | Sequence[bool], m: int) -> np.ndarray:
    flags = np.broadcast_to(np.asarray(maximise, dtype=bool), (m,))
    return np.ascontiguousarray(flags)


def pareto_mask(values: np.ndarray, maximise: bool | Sequence[bool] = False) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``values`` (ties all kept)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise AnalysisError(f"values must be a 2-D (configs, objectives) array, got shape {values.shape}")
    if len(values) == 0:
        return np.zeros(0, dtype=bool)
    if values.shape[1] == 1:  # one objective: the best value(s)
        col = values[:, 0]
        best = col.max() if _flags(maximise, 1)[0] else col.min()
        return col == best
    return moocore.is_nondominated(values, maximise=_flags(maximise, values.shape[1]), keep_weakly=True)


def reference_point(values: np.ndarray, maximise: bool | Sequence[bool] = False) -> np.ndarray:
    """The worst observed value of each objective (the default hypervolume reference)."""
    values = np.asarray(values, dtype=float)
    flags = _flags(maximise, values.shape[1])
    return np.where(flags, values.min(axis=0), values.max(axis=0))


def ideal_point(values: np.ndarray, maximise: bool | Sequence[bool] = False) -> np.ndarray:
    """The best observed value of each objective."""
    values = np.asarray(values, dtype=float)
    flags = _flags(maximise, values.shape[1])
    return np.where(flags, values.max(axis=0), values.min(axis=0))


def hypervolume(
    values: np.ndarray,
    maximise: bool | Sequence[bool] = False,
    reference: Sequence[float] | np.ndarray | None = None,
    *,
    mask: np.ndarray | None = None,
) -> float:
    """Volume dominated by ``values`` and bounded by ``reference`` (default: worst observed).

    ``mask`` (the non-dominated rows, if already known) lets moocore skip dominated points.
    """
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return 0.0
    flags = _flags(maximise, values.shape[1])
    ref = reference_point(values, flags) if reference is None else np.asarray(reference, dtype=float)
    if ref.shape != (values.shape[1],):
        raise AnalysisError(f"reference point has {ref.size} values; the objectives are {values.shape[1]}")
    points = values[mask] if mask is not None else values
    # Only points strictly better than the reference on every objective add volume.
    better = np.where(flags, points > ref, points < ref).all(axis=1)
    points = points[better]
    if len(points) == 0:
        return 0.0
    if values.shape[1] == 1:
        return float(np.abs(points[:, 0] - ref[0]).max())
    return float(moocore.hypervolume(points, ref=ref, maximise=flags))


@dataclass(frozen=True)
class ParetoResult:
    """The frontier of a table, with what was excluded and why.

    Attributes:
        objectives: what was optimised.
        table: the usable rows, with a boolean ``pareto`` column.
        excluded: rows left out (failed, unfinished, NaN objective) with a ``reason`` column.
        reference: hypervolume reference point, one value per objective (original units).
        hypervolume: volume dominated by the frontier up to ``reference`` (product of units).
        hypervolume_normalized: the same with each objective scaled so the box between the
            ideal point and the reference is 1; comparable across metrics of different units.
    """

    objectives: tuple[Objective, ...]
    table: pd.DataFrame
    excluded: pd.DataFrame
    reference: np.ndarray
    hypervolume: float
    hypervolume_normalized: float

    @property
    def frontier(self) -> pd.DataFrame:
        """Pareto-optimal rows, sorted by the first objective from best to worst."""
        front = self.table[self.table["pareto"]]
        first = self.objectives[0]
        return front.sort_values(first.column, ascending=not first.maximise, kind="stable")

    def values(self) -> np.ndarray:
        return self.table[[o.column for o in self.objectives]].to_numpy(dtype=float)


def pareto_front(
    table: pd.DataFrame,
    objectives: Sequence[Objective],
    *,
    reference: Mapping[str, float] | Sequence[float] | None = None,
    box: tuple[np.ndarray, np.ndarray] | None = None,
) -> ParetoResult:
    """Frontier and hypervolume of ``table`` over ``objectives``.

    ``reference`` maps objective columns to values (missing ones: worst observed). ``box`` is
    ``(ideal, reference)`` for normalisation, so several subsets (coupling, policies) can be
    compared on one scale; by default it comes from this table.
    """
    if not objectives:
        raise AnalysisError("no objectives given; name at least one METRIC:min|max")
    values, kept, excluded = objective_matrix(table, objectives)
    flags = np.array([o.maximise for o in objectives])
    if len(values) == 0:
        kept = kept.assign(pareto=pd.Series(dtype=bool))
        nan = np.full(len(objectives), np.nan)
        return ParetoResult(tuple(objectives), kept, excluded, nan, 0.0, 0.0)
    ref = _reference(values, flags, objectives, reference)
    mask = pareto_mask(values, flags)
    kept = kept.assign(pareto=mask)
    hv = hypervolume(values, flags, ref, mask=mask)
    ideal, box_ref = box if box is not None else (ideal_point(values, flags), ref)
    span = np.abs(np.asarray(box_ref) - np.asarray(ideal))
    span[span == 0] = 1.0  # a constant objective contributes a factor of 1
    return ParetoResult(tuple(objectives), kept, excluded, ref, hv, hv / float(np.prod(span)))


def _reference(
    values: np.ndarray,
    flags: np.ndarray,
    objectives: Sequence[Objective],
    reference: Mapping[str, float] | Sequence[float] | None,
) -> np.ndarray:
    ref = reference_point(values, flags)
    if reference is None:
        return ref
    if isinstance(reference, Mapping):
        unknown = sorted(set(reference) - {o.column for o in objectives})
        if unknown:
            allowed = ", ".join(o.column for o in objectives)
            raise AnalysisError(f"reference for {unknown[0]!r}, which is not an objective; objectives: {allowed}")
        return np.array([reference.get(o.column, r) for o, r in zip(objectives, ref)], dtype=float)
    return np.asarray(reference, dtype=float)
