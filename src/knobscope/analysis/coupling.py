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

No verdict is drawn from noise. With bootstrap replicates of the objectives
(:mod:`knobscope.analysis.uncertainty`), each share gets a 95% interval: *coupled* needs the
interval's lower end at or above ``min_share``, *not coupled* its upper end below it; an
interval across the threshold is ``undetermined: within noise``, with an estimate of how many
records per configuration would decide it if the effect is as estimated. An objective measured
once per configuration has no measure of its noise, so it cannot make a pair coupled.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from knobscope.analysis.effects import knob_effects, pair_effect_shares
from knobscope.analysis.objectives import Objective, objective_matrix
from knobscope.analysis.pareto import ideal_point, pareto_front, pareto_mask, reference_point
from knobscope.analysis.uncertainty import Replicates
from knobscope.intervals import CONFIDENCE
from knobscope.plain import plain

__all__ = ["coupling_analysis", "fixed_knob_frontiers"]


def _settings(rows: pd.DataFrame, knobs: Sequence[str]) -> list[tuple]:
    return [tuple(_py(v) for v in r) for r in rows[list(knobs)].itertuples(index=False)]


_py = plain


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


NoiseState = tuple[np.ndarray | None, np.ndarray | None, str]


def _noise_state(replicates: Replicates | None, kept: pd.DataFrame, k: int) -> NoiseState:
    """Replicates of objective ``k`` aligned with ``kept`` ``(C, B)``, its estimates ``(C,)``,
    and whether its noise is known (known, single: one record per configuration, exact, unknown)."""
    if replicates is None:
        return None, None, "unknown"
    column = replicates.objectives[k].column
    if "taken as exact" in replicates.sources.get(column, "taken as exact"):
        return None, None, "exact"
    rows = {t: i for i, t in enumerate(replicates.trial_ids)}
    order = [rows.get(str(t)) for t in kept["trial_id"]] if "trial_id" in kept else []
    if any(i is None for i in order) or len(order) != len(kept):
        return None, None, "unknown"
    y = replicates.values[:, order, k].T  # (C, B)
    point = replicates.point[order, k]
    return y, point, "single" if replicates.records_per_config < 2 else "known"


def _against_noise(kept: pd.DataFrame, varying: list[str], a: str, b: str, state: NoiseState,
                   relative: float, material: bool, min_share: float, alpha: float) -> dict[str, Any]:  # fmt: skip
    """Judge one objective's ``a x b`` share against its measurement noise.

    The replicates' deviations from their own mean are draws of the noise in the configurations'
    estimates (paired where the samples are shared), so the interaction sum of squares they give
    is the interaction that noise alone produces: the observed one is significant when fewer than
    ``alpha`` of them reach it. The share's percentile interval (biased upwards: a share is never
    negative) can only say *not coupled*, when even its upper end is below ``min_share``.
    """
    y, point, how = state
    if how == "single":
        return {"beyond_noise": "unknown"}
    if how == "exact" or y is None or point is None:  # no per-sample records: the values are taken as exact
        if material or relative < min_share:
            return {"beyond_noise": "material" if material else "negligible"}
        # large, but not beyond what the design's other interactions leave unexplained
        return {"beyond_noise": "undetermined", "exact": True}
    tail = (1 - CONFIDENCE) / 2 * 100
    shares, _, _ = pair_effect_shares(kept, varying, a, b, y)
    finite = shares[np.isfinite(shares)]
    _, _, observed = pair_effect_shares(kept, varying, a, b, point[:, None])
    _, _, null = pair_effect_shares(kept, varying, a, b, y - y.mean(axis=1, keepdims=True))
    p_noise = float((1 + (null >= observed[0] - 1e-12 * max(observed[0], 1.0)).sum()) / (1 + len(null)))
    out: dict[str, Any] = {"p_noise": p_noise}
    lo, hi = (float(v) for v in np.percentile(finite, [tail, 100 - tail])) if finite.size else (relative, relative)
    out["share_interval"] = [min(lo, relative), max(hi, relative)]
    if not np.any(null > 0):  # the replicates do not vary: nothing but the values themselves
        out["beyond_noise"] = "material" if material else "negligible"
    elif material and p_noise < alpha:
        out["beyond_noise"] = "material"
    elif out["share_interval"][1] < min_share:
        out["beyond_noise"] = "negligible"
    else:
        out["beyond_noise"] = "undetermined"
        signal = observed[0] - float(null.mean())  # the interaction beyond what noise adds on average
        critical = float(np.percentile(null, 100 * (1 - alpha)))
        if relative >= min_share and signal > 0:
            # the noise's sum of squares shrinks as 1/n: significance needs signal >= critical / factor
            out["records_factor"] = critical / signal
        elif relative >= min_share:
            # no interaction beyond noise: if there is none, the share (all noise) shrinks as 1/n,
            # and its upper end must fall below the threshold
            out["records_factor"] = out["share_interval"][1] / min_share
            out["no_signal"] = True
        else:
            out["records_factor"] = _decisive_factor(relative, *out["share_interval"], min_share)
    return out


def _decisive_factor(point: float, lo: float, hi: float, threshold: float) -> float | None:
    """How many times the records per configuration would put the interval on one side of
    ``threshold`` (its width shrinks as 1/sqrt(n)), if the share is as estimated."""
    if point >= threshold:
        have, need = point - lo, point - threshold
    else:
        have, need = hi - point, threshold - point
    if need <= 0 or have <= 0:
        return None
    return float((have / need) ** 2)


def coupling_analysis(
    table: pd.DataFrame,
    knobs: Sequence[str],
    objectives: Sequence[Objective],
    *,
    reference: Mapping[str, float] | None = None,
    min_share: float = 0.05,
    alpha: float = 0.05,
    replicates: Replicates | None = None,
) -> dict[str, Any]:
    """Fixed-knob frontiers and a coupled / not coupled / undetermined verdict per knob pair.

    ``replicates`` (bootstrap replicates of the objectives) put an interval on every share so
    that noise cannot make a verdict; without them the verdict rests on the point estimates
    and p-values alone.
    """
    values, kept, excluded = objective_matrix(table, objectives)
    varying = [k for k in knobs if k in kept and kept[k].nunique() > 1]
    # every combination of the varying knobs measured: more combinations cannot help a test
    full_grid = bool(varying) and len(kept[varying].drop_duplicates()) == int(np.prod([kept[k].nunique() for k in varying]))
    effects = {o.column: knob_effects(kept, varying, o) for o in objectives}
    noise = [_noise_state(replicates, kept, k) for k in range(len(objectives))] if replicates else []
    per_config = replicates.records_per_config if replicates else None
    pairs = []
    for a, b in itertools.combinations(varying, 2):
        evidence = []
        for k, o in enumerate(objectives):
            eff = effects[o.column]
            inter = next(r for r in eff["interactions"] if r["knobs"] == [a, b])
            main_ss = (eff["main"][a]["share"] or 0.0) + (eff["main"][b]["share"] or 0.0)
            relative = None
            if inter["estimable"]:
                together = main_ss + inter["share"]
                relative = inter["share"] / together if together > 0 else 0.0
            testable = inter["p_value"] is not None
            material = relative is not None and relative >= min_share and (not testable or inter["p_value"] < alpha)
            entry = {
                "objective": o.column,
                "interaction_share": inter["share"],
                "share_of_pair_effect": relative,
                "p_value": inter["p_value"],
                "df": inter["df"],
                "residual_df": inter["residual_df"],
                "material": material,
                "noise": noise[k][2] if noise else "unknown",
            }
            if noise and relative is not None:
                entry.update(_against_noise(kept, varying, a, b, noise[k], relative, material, min_share, alpha))
            evidence.append(entry)
        others = [k for k in varying if k not in (a, b)]
        optimal_b = _optimal_values_of(kept, a, b, [b, *others], objectives)
        optimal_a = _optimal_values_of(kept, b, a, [a, *others], objectives)
        estimable = [e for e in evidence if e["share_of_pair_effect"] is not None]
        judged = [e for e in estimable if "beyond_noise" in e]
        if not estimable:
            verdict = "undetermined"
            reason = (f"the measured configurations cannot separate {a} x {b} from the main effects; "
                      f"measure more combinations of {a} and {b} (e.g. strategy full or stratified)")  # fmt: skip
        elif judged:
            verdict, reason = _noise_verdict(a, b, judged, min_share, per_config, alpha, full_grid=full_grid)
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
        no_residual = all(e["p_value"] is None for e in estimable) and estimable and not judged
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


def _noise_verdict(a: str, b: str, judged: list[dict[str, Any]], min_share: float, per_config: float | None,
                   alpha: float = 0.05, *, full_grid: bool = False) -> tuple[str, str]:  # fmt: skip
    """A verdict only where every objective's interval (or known exactness) supports it."""
    material = [e for e in judged if e["beyond_noise"] == "material"]
    if material:
        e = max(material, key=lambda e: e["share_of_pair_effect"])
        ci = e.get("share_interval")
        where = f" (95% interval {ci[0]:.0%}-{ci[1]:.0%})" if ci else " (exact values)"
        return "coupled", (f"{a} x {b} explains {e['share_of_pair_effect']:.0%} of their joint effect on {e['objective']}"
                           f"{where}" + _p_text(e["p_value"]))  # fmt: skip
    open_ = [e for e in judged if e["beyond_noise"] != "negligible"]
    if not open_:
        top = max(judged, key=lambda e: e["share_of_pair_effect"])
        ci = top.get("share_interval")
        bound = f"at most {ci[1]:.1%} with 95% confidence" if ci else f"{top['share_of_pair_effect']:.1%}, exact values"
        return "not coupled", (f"the largest {a} x {b} interaction ({top['objective']}) explains {bound} of their joint effect "
                               f"(threshold {min_share:.0%})")  # fmt: skip
    parts, design_limited = [], 0
    for e in open_:
        if e["beyond_noise"] == "unknown":
            parts.append(f"{e['objective']}: {e['share_of_pair_effect']:.0%} from one observation per configuration, which "
                         "cannot separate an interaction from noise; measure repeats >= 2 (or more samples)")  # fmt: skip
            continue
        exact = bool(e.get("exact"))
        if exact or (e["p_noise"] < alpha and e.get("p_value") is not None and e["p_value"] >= alpha):
            # noise alone does not explain it (or there is no noise: exact values), but the design's
            # residual (the interactions and higher-order terms the configurations cannot separate) does
            how = "(exact values, one per configuration)" if exact else f"beyond noise (p = {e['p_noise']:.2g})"
            advice = ("every combination is measured, so it is no larger than the knobs' other interactions" if full_grid
                      else f"measure more combinations of {a} and {b} (e.g. strategy full)")
            parts.append(f"{e['objective']}: {e['share_of_pair_effect']:.0%} of the joint effect{',' if not exact else ''} {how} "
                         f"but not beyond what the other interactions in these configurations leave unexplained "
                         f"(ANOVA p = {_p(e['p_value'])}, {e['residual_df']} residual df); {advice}")  # fmt: skip
            design_limited += 1
            continue
        lo, hi = e["share_interval"]
        factor = e.get("records_factor")
        need = ""
        if factor is not None and per_config:
            what = ("no interaction beyond what noise alone produces; if there is none, about {n} records per configuration "
                    f"(now {per_config:.0f}) would show it below {min_share:.0%}") if e.get("no_signal") else (
                    "about {n} records per configuration" f" (now {per_config:.0f}) would decide it if the effect is as estimated")  # fmt: skip
            need = "; " + what.format(n=int(np.ceil(max(factor, 1.0) * per_config))) if factor < 100 else "; more than 100x the records would be needed"
        parts.append(f"{e['objective']}: {e['share_of_pair_effect']:.0%} of the joint effect (95% interval {lo:.0%}-{hi:.0%}), "
                     f"p = {e['p_noise']:.2g} that noise alone makes an interaction this large{need}")  # fmt: skip
    lead = "not separable in these configurations: " if design_limited == len(parts) else "within noise: "
    return "undetermined", lead + "; ".join(parts)


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}"


def _p_text(p: float | None) -> str:
    if p is None:
        return ""
    return " (p < 1e-6)" if p < 1e-6 else f" (p = {p:.2g})"
