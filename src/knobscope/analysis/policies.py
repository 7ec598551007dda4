"""Single-knob against multi-knob policies (seed 001, question 4).

A *single-knob policy* moves one knob and leaves the others at their defaults; the best
single-knob policy may pick whichever knob suits each budget, so its reachable set is the union
of the single-knob sets. The *multi-knob policy* may set every knob. Compared on one reference
point: the hypervolume ratio (1.0 means one knob suffices), and at every latency budget (each
cost on the multi-knob frontier) the best quality each can reach within it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from knobscope.analysis.objectives import Objective, objective_matrix
from knobscope.analysis.pareto import ideal_point, pareto_front
from knobscope.plain import plain

__all__ = ["policy_comparison", "budget_curve"]


_py = plain


def _base(kept: pd.DataFrame, knobs: Sequence[str], defaults: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The configuration single-knob policies start from: the defaults if measured, else the
    measured configuration with the most one-knob neighbours (sparse designs rarely hold the defaults)."""
    if all(k in defaults for k in knobs):
        base = {k: defaults[k] for k in knobs}
        match = np.logical_and.reduce([kept[k] == v for k, v in base.items()]) if knobs else np.zeros(0, bool)
        if match.any():
            return base, "the knobs' defaults"
    if kept.empty:
        return {}, "none"
    settings = kept[list(knobs)].to_numpy(dtype=object)
    # neighbours[i] = configs differing from i in at most one knob
    same = (settings[:, None, :] == settings[None, :, :]).sum(axis=2)
    neighbours = (same >= len(knobs) - 1).sum(axis=1)
    best = int(np.argmax(neighbours))
    base = {k: _py(v) for k, v in zip(knobs, settings[best])}
    return base, "the measured configuration with the most one-knob neighbours (the defaults were not measured)"


def budget_curve(
    rows: pd.DataFrame, cost: Objective, quality: Objective, budgets: Sequence[float], *, with_trials: bool = False
) -> list[Any]:
    """Best ``quality`` among ``rows`` whose ``cost`` is within each budget (None: nothing fits);
    with ``with_trials``, ``(quality, trial_id)`` pairs."""
    c = rows[cost.column].to_numpy(dtype=float)
    q = rows[quality.column].to_numpy(dtype=float)
    ids = rows["trial_id"].tolist() if "trial_id" in rows else [None] * len(rows)
    out: list[Any] = []
    for b in budgets:
        fits = np.flatnonzero(c <= b if not cost.maximise else c >= b)
        if not len(fits):
            out.append((None, None) if with_trials else None)
            continue
        best = fits[int(np.argmax(q[fits]) if quality.maximise else np.argmin(q[fits]))]
        out.append((float(q[best]), ids[best]) if with_trials else float(q[best]))
    return out


def policy_comparison(
    table: pd.DataFrame,
    knobs: Sequence[str],
    defaults: Mapping[str, Any],
    objectives: Sequence[Objective],
    *,
    reference: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Frontiers, hypervolumes and per-budget quality gaps of single- vs multi-knob policies.

    The budget comparison takes a latency objective (``*_ms*``, lower is better) as the cost,
    else the first lower-is-better objective, and the next other objective as the quality; with
    one objective only the hypervolumes are compared.
    """
    values, kept, _ = objective_matrix(table, objectives)
    result: dict[str, Any] = {"objectives": [o.to_dict() for o in objectives]}
    if len(values) == 0:
        return {**result, "available": False, "reason": "no finished configuration has every objective"}
    flags = np.array([o.maximise for o in objectives])
    multi = pareto_front(kept, objectives, reference=reference)
    ref = dict(zip([o.column for o in objectives], multi.reference))
    box = (ideal_point(values, flags), multi.reference)
    base, base_source = _base(kept, knobs, defaults)
    result.update(base=base, base_source=base_source, multi={
        "n": int(len(kept)), "hypervolume": multi.hypervolume, "hypervolume_normalized": multi.hypervolume_normalized,
        "frontier_trials": multi.frontier["trial_id"].tolist() if "trial_id" in kept else [],
    })  # fmt: skip
    singles: dict[str, Any] = {}
    union_parts = []
    for knob in knobs:
        others = [k for k in knobs if k != knob]
        match = np.logical_and.reduce([kept[k] == base[k] for k in others]) if others else np.ones(len(kept), bool)
        rows = kept[match]
        entry: dict[str, Any] = {"n": int(len(rows)), "values": sorted({_py(v) for v in rows[knob]}, key=str)}
        if len(rows) < 2:
            entry.update(available=False, reason=(
                f"only {len(rows)} configuration(s) move {knob} alone from the base; "
                "measure the one-knob-at-a-time configurations (e.g. strategy full or boundary) to compare"))  # fmt: skip
        else:
            front = pareto_front(rows, objectives, reference=ref, box=box)
            entry.update(available=True, hypervolume=front.hypervolume, hypervolume_normalized=front.hypervolume_normalized,
                         hypervolume_ratio=front.hypervolume / multi.hypervolume if multi.hypervolume > 0 else None)  # fmt: skip
            union_parts.append(rows)
        singles[knob] = entry
    result["single"] = singles
    if not union_parts:
        result.update(available=False, reason="no knob has two or more configurations that move it alone; "
                      "measure one-knob-at-a-time configurations to compare policies")  # fmt: skip
        return result
    union = pd.concat(union_parts).drop_duplicates(subset=["trial_id"] if "trial_id" in kept else None)
    best_single = pareto_front(union, objectives, reference=ref, box=box)
    result["available"] = True
    result["best_single"] = {
        "n": int(len(union)),
        "hypervolume": best_single.hypervolume,
        "hypervolume_normalized": best_single.hypervolume_normalized,
        "frontier_trials": best_single.frontier["trial_id"].tolist() if "trial_id" in union else [],
    }
    result["hypervolume_ratio"] = best_single.hypervolume / multi.hypervolume if multi.hypervolume > 0 else None
    if len(objectives) >= 2:
        cost, quality = _cost_and_quality(objectives)
        budgets = sorted({float(v) for v in multi.frontier[cost.column]}, reverse=cost.maximise)
        q_multi = budget_curve(kept, cost, quality, budgets, with_trials=True)
        q_single = budget_curve(union, cost, quality, budgets, with_trials=True)
        sign = 1.0 if quality.maximise else -1.0
        rows = []
        for b, (qm, tm), (qs, ts) in zip(budgets, q_multi, q_single):
            gap = None if qm is None or qs is None else sign * (qm - qs)
            rows.append({"budget": b, "multi": qm, "single": qs, "gap": gap, "multi_trial": tm, "single_trial": ts})
        result["budgets"] = {"cost": cost.column, "within": ">=" if cost.maximise else "<=", "quality": quality.column, "rows": rows}
        gaps = [r for r in rows if r["gap"] is not None]
        unreachable = [r["budget"] for r in rows if r["single"] is None]
        worst = max(gaps, key=lambda r: r["gap"]) if gaps else None
        result["largest_gap"] = worst
        result["budgets_single_cannot_meet"] = unreachable
        cheapest = union.sort_values(cost.column, ascending=not cost.maximise).iloc[0]
        result["cheapest_single"] = {"trial_id": cheapest.get("trial_id"), "cost": float(cheapest[cost.column])}
        result["multi_knob_wins"] = bool(unreachable) or bool(worst and worst["gap"] > 0)
    return result


def _cost_and_quality(objectives: Sequence[Objective]) -> tuple[Objective, Objective]:
    lower = [o for o in objectives if not o.maximise]
    cost = next((o for o in lower if "_ms" in o.column), lower[0] if lower else objectives[0])
    quality = next(o for o in objectives if o is not cost)
    return cost, quality
