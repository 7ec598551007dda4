"""Workload comparison and the illustrative cases of seed 001.

Runs of the same knob space on different workloads (QA and captioning, say) are matched by
configuration. A configuration that is Pareto-optimal on one workload and dominated on another
is listed with what using it there costs: the configuration that dominates it by the most
(largest worst-case improvement, each objective scaled by its observed range) and the
improvement on each objective. Each workload keeps its own objectives (VQA accuracy on one,
CIDEr on the other); they only have to share the knobs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from knobscope.analysis.objectives import Objective
from knobscope.analysis.pareto import pareto_front

__all__ = ["compare_workloads", "illustrative_cases"]


def _key(row: Mapping[str, Any], knobs: Sequence[str]) -> tuple:
    return tuple(row[k].item() if hasattr(row[k], "item") else row[k] for k in knobs)


def _dominators(front: pd.DataFrame, point: pd.Series, objectives: Sequence[Objective], span: np.ndarray) -> tuple[pd.Series, np.ndarray] | None:
    cols = [o.column for o in objectives]
    sign = np.array([1.0 if o.maximise else -1.0 for o in objectives])
    gains = (front[cols].to_numpy(dtype=float) - point[cols].to_numpy(dtype=float)) * sign  # > 0: better
    dominates = (gains >= 0).all(axis=1) & (gains > 0).any(axis=1)
    if not dominates.any():
        return None
    scaled = gains[dominates] / span
    best = int(np.argmax(scaled.min(axis=1)))
    return front[dominates].iloc[best], gains[dominates][best]


def compare_workloads(
    tables: Mapping[str, pd.DataFrame],
    knobs: Sequence[str],
    objectives: Mapping[str, Sequence[Objective]],
) -> dict[str, Any]:
    """Configurations optimal on one workload and dominated on another, with the cost there."""
    fronts = {w: pareto_front(t, objectives[w]) for w, t in tables.items()}
    status: dict[tuple, dict[str, bool]] = {}
    for w, front in fronts.items():
        for _, row in front.table.iterrows():
            status.setdefault(_key(row, knobs), {})[w] = bool(row["pareto"])
    names = list(tables)
    common = [k for k, s in status.items() if len(s) == len(names)]
    cases = []
    for key in common:
        optimal_on = [w for w in names if status[key][w]]
        dominated_on = [w for w in names if not status[key][w]]
        if not optimal_on or not dominated_on:
            continue
        costs = {}
        for w in dominated_on:
            front = fronts[w]
            objs = objectives[w]
            cols = [o.column for o in objs]
            row = front.table[[_key(r, knobs) == key for _, r in front.table.iterrows()]].iloc[0]
            values = front.values()
            span = values.max(axis=0) - values.min(axis=0)
            span[span == 0] = 1.0
            found = _dominators(front.frontier, row, objs, span)
            if found is None:  # dominated only by a tie-free point off the frontier: cannot happen, kept for safety
                continue
            better, gain = found
            costs[w] = {
                "dominated_by": _key(better, knobs),
                "dominated_by_config": dict(zip(knobs, _key(better, knobs))),
                "values": {c: float(row[c]) for c in cols},
                "dominator_values": {c: float(better[c]) for c in cols},
                "improvement": {c: float(g) for c, g in zip(cols, gain)},
                "relative_improvement": {c: float(g / abs(row[c])) if row[c] else None for c, g in zip(cols, gain)},
                "scaled_cost": float((gain / span).min()),
            }
        cases.append({
            "config": dict(zip(knobs, key)),
            "optimal_on": optimal_on,
            "dominated_on": dominated_on,
            "cost": costs,
            "worst_scaled_cost": max((c["scaled_cost"] for c in costs.values()), default=0.0),
        })  # fmt: skip
    cases.sort(key=lambda c: -c["worst_scaled_cost"])
    return {
        "workloads": names,
        "objectives": {w: [o.to_dict() for o in objs] for w, objs in objectives.items()},
        "common_configs": len(common),
        "frontier_sizes": {w: int(f.table["pareto"].sum()) for w, f in fronts.items()},
        "shared_optimal": [dict(zip(knobs, k)) for k in common if all(status[k].values())],
        "workload_dependent": cases,
    }


def illustrative_cases(
    *,
    knobs: Sequence[str],
    space_values: Mapping[str, Sequence[Any]],
    frontier: pd.DataFrame,
    policies: Mapping[str, Any] | None = None,
    comparison: Mapping[str, Any] | None = None,
    coupling: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Seed 001's case studies, each with a one-line text and the configurations behind it."""
    cases: list[dict[str, Any]] = []
    if comparison and comparison.get("workload_dependent"):
        c = comparison["workload_dependent"][0]
        w_bad = max(c["cost"], key=lambda w: c["cost"][w]["scaled_cost"])
        cost = c["cost"][w_bad]
        better = ", ".join(f"{k} {v:+.4g}" for k, v in cost["improvement"].items())
        cases.append({
            "kind": "workload_dependent",
            "text": (f"{c['config']} is Pareto-optimal for {', '.join(c['optimal_on'])} but dominated for {w_bad}: "
                     f"there {cost['dominated_by_config']} is better by {better}"),
            "config": c["config"], "workloads": {"optimal": c["optimal_on"], "dominated": [w_bad]},
        })  # fmt: skip
    if policies and policies.get("available") and policies.get("largest_gap"):
        g = policies["largest_gap"]
        b = policies["budgets"]
        if g["gap"] and g["gap"] > 0:
            cases.append({
                "kind": "single_knob_fails",
                "text": (f"within {b['cost']} {b['within']} {g['budget']:.4g}, moving one knob reaches {b['quality']} "
                         f"{g['single']:.4g}; moving several reaches {g['multi']:.4g} (gap {g['gap']:.4g})"),
                "budget": g["budget"],
            })  # fmt: skip
    if policies and policies.get("budgets_single_cannot_meet"):
        budgets = policies["budgets_single_cannot_meet"]
        cases.append({
            "kind": "single_knob_cannot_reach",
            "text": (f"no single-knob setting reaches {policies['budgets']['cost']} {policies['budgets']['within']} "
                     f"{_tightest(budgets, policies['budgets']['within']):.4g}; a multi-knob one does"),
            "budget": _tightest(budgets, policies["budgets"]["within"]),
        })  # fmt: skip
    interior = []
    # Only numeric knobs have extremes; the order of a categorical knob's values means nothing.
    ordinal = [k for k in knobs if len(space_values.get(k, ())) > 2
               and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in space_values[k])]  # fmt: skip
    for _, row in frontier.iterrows():
        inside = [k for k in ordinal if row[k] not in (space_values[k][0], space_values[k][-1])]
        if inside:
            interior.append((dict(zip(knobs, _key(row, knobs))), inside))
    if interior:
        config, inside = interior[0]
        cases.append({
            "kind": "not_at_extremes",
            "text": (f"{len(interior)} of {len(frontier)} Pareto-optimal configurations set a knob to an interior value, "
                     f"e.g. {config} ({', '.join(inside)} neither smallest nor largest)"),
            "config": config,
        })  # fmt: skip
    for pair in (coupling or {}).get("pairs", []):
        if pair["verdict"] != "coupled":
            continue
        a, b = pair["knobs"]
        by_a = pair.get(f"optimal_{b}_by_{a}", {})
        if len({tuple(v) for v in by_a.values()}) > 1:
            shown = "; ".join(f"{a}={k}: {b} in {v}" for k, v in list(by_a.items())[:4])
            cases.append({"kind": "coupling", "text": f"{a} and {b} are coupled: the optimal {b} depends on {a} ({shown})",
                          "knobs": [a, b]})  # fmt: skip
            break
    return cases


def _tightest(budgets: Sequence[float], within: str) -> float:
    return min(budgets) if within == "<=" else max(budgets)
