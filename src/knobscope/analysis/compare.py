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
from knobscope.plain import plain_key

__all__ = ["compare_workloads", "illustrative_cases"]


_key = plain_key


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
    *,
    statuses: Mapping[str, Mapping[str, str] | None] | None = None,
) -> dict[str, Any]:
    """Configurations optimal on one workload and dominated on another, with the cost there.

    ``statuses`` (per workload, trial id -> optimal / uncertain / dominated from
    :func:`knobscope.analysis.uncertainty.frontier_uncertainty`) decide whether each case holds
    beyond noise: not dominated beyond noise where it is optimal, dominated beyond noise where
    it is not (``beyond_noise``: True, False, or None when a workload has no noise estimate).
    """
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
            "beyond_noise": _beyond_noise(key, knobs, fronts, optimal_on, dominated_on, statuses),
        })  # fmt: skip
    cases.sort(key=lambda c: (c["beyond_noise"] is not True, -c["worst_scaled_cost"]))
    return {
        "workloads": names,
        "objectives": {w: [o.to_dict() for o in objs] for w, objs in objectives.items()},
        "common_configs": len(common),
        "frontier_sizes": {w: int(f.table["pareto"].sum()) for w, f in fronts.items()},
        "shared_optimal": [dict(zip(knobs, k)) for k in common if all(status[k].values())],
        "workload_dependent": cases,
    }


def _beyond_noise(key: tuple, knobs: Sequence[str], fronts: Mapping[str, Any], optimal_on: Sequence[str],
                  dominated_on: Sequence[str], statuses: Mapping[str, Mapping[str, str] | None] | None) -> bool | None:  # fmt: skip
    if not statuses:
        return None
    found = []
    for w in [*optimal_on, *dominated_on]:
        status = statuses.get(w)
        if status is None:
            return None
        rows = fronts[w].table
        ids = [str(r["trial_id"]) for _, r in rows.iterrows() if _key(r, knobs) == key]
        if not ids:
            return None
        found.append((w, status.get(ids[0], "dominated")))
    return all(s != "dominated" for w, s in found if w in optimal_on) and all(s == "dominated" for w, s in found if w in dominated_on)


def _separated(table: pd.DataFrame | None, better: Any, worse: Any, objective_column: str, maximise: bool) -> bool | None:
    """Whether ``better``'s value beats ``worse``'s beyond both 95% intervals (None: no intervals)."""
    lo, hi = f"{objective_column}_ci_low", f"{objective_column}_ci_high"
    if table is None or lo not in table.columns or "trial_id" not in table.columns:
        return None
    rows = table.set_index(table["trial_id"].astype(str))
    if str(better) not in rows.index or str(worse) not in rows.index:
        return None
    b, w = rows.loc[str(better)], rows.loc[str(worse)]
    if any(pd.isna(v) for v in (b[lo], b[hi], w[lo], w[hi])):
        return None
    return bool(b[lo] > w[hi]) if maximise else bool(b[hi] < w[lo])


def illustrative_cases(
    *,
    knobs: Sequence[str],
    space_values: Mapping[str, Sequence[Any]],
    frontier: pd.DataFrame,
    policies: Mapping[str, Any] | None = None,
    comparison: Mapping[str, Any] | None = None,
    coupling: Mapping[str, Any] | None = None,
    status: Mapping[str, str] | None = None,
    table: pd.DataFrame | None = None,
) -> list[dict[str, Any]]:
    """Seed 001's case studies, each with a one-line text and the configurations behind it.

    A case the intervals cannot support is kept but says so ("within noise: ..."), with
    ``supported`` False; ``supported`` is None where no interval was measured. ``status`` is the
    frontier's optimal / uncertain / dominated per trial id, ``table`` the run's table (for the
    ``*_ci_low`` / ``*_ci_high`` columns).
    """
    cases: list[dict[str, Any]] = []
    if comparison and comparison.get("workload_dependent"):
        c = comparison["workload_dependent"][0]
        w_bad = max(c["cost"], key=lambda w: c["cost"][w]["scaled_cost"])
        cost = c["cost"][w_bad]
        better = ", ".join(f"{k} {v:+.4g}" for k, v in cost["improvement"].items())
        text = (f"{c['config']} is Pareto-optimal for {', '.join(c['optimal_on'])} but dominated for {w_bad}: "
                f"there {cost['dominated_by_config']} is better by {better}")  # fmt: skip
        supported = c.get("beyond_noise")
        cases.append({
            "kind": "workload_dependent", "supported": supported,
            "text": ("within noise: " + text + ", but the intervals do not separate them") if supported is False else text,
            "config": c["config"], "workloads": {"optimal": c["optimal_on"], "dominated": [w_bad]},
        })  # fmt: skip
    if policies and policies.get("available") and policies.get("largest_gap"):
        g = policies["largest_gap"]
        b = policies["budgets"]
        if g["gap"] and g["gap"] > 0:
            maximise = next(o["direction"] == "max" for o in policies["objectives"] if o["column"] == b["quality"])
            supported = _separated(table, g.get("multi_trial"), g.get("single_trial"), b["quality"], maximise)
            text = (f"within {b['cost']} {b['within']} {g['budget']:.4g}, moving one knob reaches {b['quality']} "
                    f"{g['single']:.4g}; moving several reaches {g['multi']:.4g} (gap {g['gap']:.4g})")  # fmt: skip
            cases.append({
                "kind": "single_knob_fails", "supported": supported,
                "text": f"within noise: {text}; the two {b['quality']} intervals overlap" if supported is False else text,
                "budget": g["budget"],
            })  # fmt: skip
    if policies and policies.get("budgets_single_cannot_meet"):
        budgets = policies["budgets_single_cannot_meet"]
        b = policies["budgets"]
        tight = _tightest(budgets, b["within"])
        multi = next((r.get("multi_trial") for r in b["rows"] if r["budget"] == tight), None)
        cheapest = (policies.get("cheapest_single") or {}).get("trial_id")
        cost_max = next(o["direction"] == "max" for o in policies["objectives"] if o["column"] == b["cost"])
        supported = _separated(table, multi, cheapest, b["cost"], cost_max)
        text = f"no single-knob setting reaches {b['cost']} {b['within']} {tight:.4g}; a multi-knob one does"
        cases.append({
            "kind": "single_knob_cannot_reach", "supported": supported,
            "text": (f"within noise: {text}, but its {b['cost']} interval overlaps the cheapest single-knob setting's"
                     if supported is False else text),
            "budget": tight,
        })  # fmt: skip
    interior = []
    # Only numeric knobs have extremes; the order of a categorical knob's values means nothing.
    ordinal = [k for k in knobs if len(space_values.get(k, ())) > 2
               and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in space_values[k])]  # fmt: skip
    decided = frontier
    if status is not None and "trial_id" in frontier.columns:
        decided = frontier[[status.get(str(t)) == "optimal" for t in frontier["trial_id"]]]
    for _, row in decided.iterrows():
        inside = [k for k in ordinal if row[k] not in (space_values[k][0], space_values[k][-1])]
        if inside:
            interior.append((dict(zip(knobs, _key(row, knobs))), inside))
    if interior:
        config, inside = interior[0]
        which = "Pareto-optimal beyond noise" if status is not None else "Pareto-optimal"
        cases.append({
            "kind": "not_at_extremes", "supported": True if status is not None else None,
            "text": (f"{len(interior)} of {len(decided)} configurations {which} set a knob to an interior value, "
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
                          "knobs": [a, b], "supported": True})  # fmt: skip
            break
    return cases


def _tightest(budgets: Sequence[float], within: str) -> float:
    return min(budgets) if within == "<=" else max(budgets)
