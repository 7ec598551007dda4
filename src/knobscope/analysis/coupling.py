"""Knob coupling (seed 001): does fixing one knob change the best settings of the others?

Two views, both written to ``coupling_analysis.json``:

* **Fixed-knob frontiers** (the seed's method). For each knob K and each of its values v, the
  Pareto frontier over the other knobs with K = v: its hypervolume (all on one normalised scale,
  so values of v compare) and the set of optimal settings of the other knobs. Frontiers for two
  values of K are compared only on the settings of the other knobs measured at both, so a sparse
  design cannot fake a change.
* **Pair verdicts.** Knobs A and B are *coupled* when the A x B interaction is material on at
  least one objective: it explains at least ``min_share`` of the variance that A, B and A x B
  explain together and, where the design leaves residual degrees of freedom, is significant at
  ``alpha`` (see :mod:`knobscope.analysis.effects`). The evidence lists, per objective, the
  interaction's share and p-value, and whether fixing A changes which values of B are optimal.
  When the measured configurations cannot separate the interaction, the verdict is
  ``undetermined`` with the reason.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from knobscope.analysis.effects import knob_effects
from knobscope.analysis.objectives import Objective, objective_matrix
from knobscope.analysis.pareto import ideal_point, pareto_front, pareto_mask, reference_point

__all__ = ["coupling_analysis", "fixed_knob_frontiers"]


def _settings(rows: pd.DataFrame, knobs: Sequence[str]) -> list[tuple]:
    return [tuple(_py(v) for v in r) for r in rows[list(knobs)].itertuples(index=False)]


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def fixed_knob_frontiers(
    table: pd.DataFrame,
    knobs: Sequence[str],
    objectives: Sequence[Objective],
    *,
    reference: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Per knob and fixed value: frontier over the other knobs, its hypervolume, optimal settings."""
    values, kept, _ = objective_matrix(table, objectives)
    flags = np.array([o.maximise for o in objectives])
    out: dict[str, Any] = {}
    if len(values) == 0:
        return out
    whole = pareto_front(kept, objectives, reference=reference)
    box = (ideal_point(values, flags), whole.reference)
    for knob in knobs:
        others = [k for k in knobs if k != knob]
        per_value: dict[str, Any] = {}
        optimal: dict[Any, set[tuple]] = {}
        measured: dict[Any, set[tuple]] = {}
        for value, rows in kept.groupby(knob, sort=True):
            front = pareto_front(rows, objectives, reference=dict(zip([o.column for o in objectives], whole.reference)), box=box)
            optimal[_py(value)] = set(_settings(front.frontier, others))
            measured[_py(value)] = set(_settings(rows, others))
            per_value[str(_py(value))] = {
                "value": _py(value),
                "n": int(len(rows)),
                "hypervolume": front.hypervolume,
                "hypervolume_normalized": front.hypervolume_normalized,
                "frontier": [dict(zip(others, s)) for s in _settings(front.frontier, others)],
                "frontier_trials": front.frontier["trial_id"].tolist() if "trial_id" in front.frontier else [],
            }
        comparisons = []
        for a, b in itertools.combinations(sorted(optimal, key=_order), 2):
            common = measured[a] & measured[b]
            if len(common) < 2:
                comparisons.append({"values": [a, b], "common_settings": len(common), "same_optimum": None})
                continue
            opt_a = _optimal_within(kept, knob, a, others, common, objectives)
            opt_b = _optimal_within(kept, knob, b, others, common, objectives)
            union = opt_a | opt_b
            comparisons.append({
                "values": [a, b],
                "common_settings": len(common),
                "same_optimum": opt_a == opt_b,
                "jaccard": len(opt_a & opt_b) / len(union) if union else 1.0,
                "only_at_first": [dict(zip(others, s)) for s in sorted(opt_a - opt_b, key=str)],
                "only_at_second": [dict(zip(others, s)) for s in sorted(opt_b - opt_a, key=str)],
            })  # fmt: skip
        hvs = [v["hypervolume_normalized"] for v in per_value.values()]
        compared = [c for c in comparisons if c["same_optimum"] is not None]
        out[knob] = {
            "other_knobs": others,
            "values": per_value,
            "hypervolume_range": [min(hvs), max(hvs)] if hvs else None,
            "hypervolume_spread": (max(hvs) - min(hvs)) / max(hvs) if hvs and max(hvs) > 0 else 0.0,
            "comparisons": comparisons,
            "optimal_settings_change": any(not c["same_optimum"] for c in compared) if compared else None,
            "mean_jaccard": float(np.mean([c["jaccard"] for c in compared])) if compared else None,
        }
    return out


def _order(value: Any) -> tuple:
    return (0, value, "") if isinstance(value, (int, float)) else (1, 0, str(value))


def _optimal_within(
    kept: pd.DataFrame, knob: str, value: Any, others: Sequence[str], common: set[tuple], objectives: Sequence[Objective]
) -> set[tuple]:
    rows = kept[kept[knob] == value]
    rows = rows[[s in common for s in _settings(rows, others)]]
    values = rows[[o.column for o in objectives]].to_numpy(dtype=float)
    mask = pareto_mask(values, [o.maximise for o in objectives])
    return set(_settings(rows[mask], others))


def _optimal_values_of(kept: pd.DataFrame, fixed: str, moving: str, others: Sequence[str], objectives: Sequence[Objective]) -> dict:
    """For each value of ``fixed``: which values of ``moving`` appear on the frontier over ``others``."""
    out = {}
    for value, rows in kept.groupby(fixed, sort=True):
        mask = pareto_mask(rows[[o.column for o in objectives]].to_numpy(dtype=float), [o.maximise for o in objectives])
        out[_py(value)] = sorted({_py(v) for v in rows.loc[mask, moving]}, key=_order)
    return out


def coupling_analysis(
    table: pd.DataFrame,
    knobs: Sequence[str],
    objectives: Sequence[Objective],
    *,
    reference: Mapping[str, float] | None = None,
    min_share: float = 0.05,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Fixed-knob frontiers and a coupled / not coupled / undetermined verdict per knob pair."""
    values, kept, excluded = objective_matrix(table, objectives)
    varying = [k for k in knobs if k in kept and kept[k].nunique() > 1]
    effects = {o.column: knob_effects(kept, varying, o) for o in objectives}
    pairs = []
    for a, b in itertools.combinations(varying, 2):
        evidence = []
        for o in objectives:
            eff = effects[o.column]
            inter = next(r for r in eff["interactions"] if r["knobs"] == [a, b])
            main_ss = (eff["main"][a]["share"] or 0.0) + (eff["main"][b]["share"] or 0.0)
            relative = None
            if inter["estimable"]:
                together = main_ss + inter["share"]
                relative = inter["share"] / together if together > 0 else 0.0
            testable = inter["p_value"] is not None
            material = relative is not None and relative >= min_share and (not testable or inter["p_value"] < alpha)
            evidence.append({
                "objective": o.column,
                "interaction_share": inter["share"],
                "share_of_pair_effect": relative,
                "p_value": inter["p_value"],
                "df": inter["df"],
                "residual_df": inter["residual_df"],
                "material": material,
            })  # fmt: skip
        others = [k for k in varying if k not in (a, b)]
        optimal_b = _optimal_values_of(kept, a, b, [b, *others], objectives)
        optimal_a = _optimal_values_of(kept, b, a, [a, *others], objectives)
        estimable = [e for e in evidence if e["share_of_pair_effect"] is not None]
        if not estimable:
            verdict = "undetermined"
            reason = (f"the measured configurations cannot separate {a} x {b} from the main effects; "
                      f"measure more combinations of {a} and {b} (e.g. strategy full or stratified)")  # fmt: skip
        elif any(e["material"] for e in evidence):
            verdict = "coupled"
            strongest = max((e for e in evidence if e["material"]), key=lambda e: e["share_of_pair_effect"])
            reason = (f"{a} x {b} explains {strongest['share_of_pair_effect']:.0%} of their joint effect on "
                      f"{strongest['objective']}" + _p_text(strongest["p_value"]))  # fmt: skip
        else:
            verdict = "not coupled"
            top = max(estimable, key=lambda e: e["share_of_pair_effect"])
            reason = (f"the largest {a} x {b} interaction ({top['objective']}) explains "
                      f"{top['share_of_pair_effect']:.1%} of their joint effect (threshold {min_share:.0%})"
                      + _p_text(top["p_value"]))  # fmt: skip
        no_residual = all(e["p_value"] is None for e in estimable) and estimable
        pairs.append({
            "knobs": [a, b],
            "verdict": verdict,
            "reason": reason + ("; no residual degrees of freedom, so judged by effect size alone" if no_residual else ""),
            "evidence": evidence,
            f"optimal_{b}_by_{a}": {str(k): v for k, v in optimal_b.items()},
            f"optimal_{a}_by_{b}": {str(k): v for k, v in optimal_a.items()},
            "optimal_values_change": len({tuple(v) for v in optimal_b.values()}) > 1
            or len({tuple(v) for v in optimal_a.values()}) > 1,
        })  # fmt: skip
    return {
        "objectives": [o.to_dict() for o in objectives],
        "n": int(len(kept)),
        "excluded": [{"trial_id": r.get("trial_id"), "reason": r["reason"]} for r in excluded.to_dict("records")],
        "thresholds": {"min_share": min_share, "alpha": alpha},
        "reference": reference_point(values, [o.maximise for o in objectives]).tolist() if len(values) else None,
        "knobs": fixed_knob_frontiers(kept, varying, objectives, reference=reference),
        "pairs": pairs,
        "effects": effects,
    }


def _p_text(p: float | None) -> str:
    if p is None:
        return ""
    return " (p < 1e-6)" if p < 1e-6 else f" (p = {p:.2g})"
