"""Knob effects: main effects and two-knob interactions on one objective, by ANOVA.

Each knob is a categorical factor. A knob's main effect is its type-II sum of squares in the
main-effects model ``y ~ C(a) + C(b) + ...``; an interaction ``a:b`` is the drop in residual
sum of squares when ``C(a):C(b)`` is added to that model, tested with an F-test (statsmodels).
Both are reported as a share of the total sum of squares (eta squared), so effects of knobs
and of pairs are on one scale. Sparse designs work: statsmodels measures degrees of freedom
by rank, so an interaction the design cannot separate has ``df == 0`` and is reported as not
estimable rather than as zero.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from knobscope.analysis.objectives import Objective, objective_matrix
from knobscope.plain import plain

__all__ = ["knob_effects", "marginal_means"]


def marginal_means(table: pd.DataFrame, knob: str, column: str) -> pd.DataFrame:
    """Mean, std and count of ``column`` per value of ``knob`` (over all other knobs)."""
    grouped = table.groupby(knob, sort=True)[column]
    return grouped.agg(["mean", "std", "count"]).reset_index()


def _formula_term(knob: str) -> str:
    return f'C(Q("{knob}"))'


def knob_effects(table: pd.DataFrame, knobs: Sequence[str], objective: Objective, *, top_pairs: int = 3) -> dict[str, Any]:
    """Main effects of every knob and the two-knob interactions on ``objective``, strongest first.

    Returns ``{"objective", "n", "main": {knob: {share, p_value, df, means}}, "interactions":
    [{knobs, share, p_value, df, estimable}], "strongest": [...first top_pairs estimable...]}``.
    """
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    _, kept, _ = objective_matrix(table, [objective])
    varying = [k for k in knobs if kept[k].nunique() > 1]
    data = kept[varying].astype(str).assign(y=kept[objective.column].astype(float).to_numpy())
    result: dict[str, Any] = {"objective": objective.to_dict(), "n": int(len(data)), "main": {}, "interactions": []}
    for k in knobs:
        result["main"][k] = {
            "share": 0.0 if k not in varying else None,
            "p_value": None,
            "df": 0,
            "means": {_key(v): float(m) for v, m in marginal_means(kept, k, objective.column)[[k, "mean"]].itertuples(index=False)},
        }
    total_ss = float(((data["y"] - data["y"].mean()) ** 2).sum()) if len(data) else 0.0
    if not varying or len(data) < 3 or total_ss == 0.0:
        for k in varying:
            result["main"][k]["share"] = 0.0
        # A constant objective: every effect, interactions included, is exactly nothing. Too few
        # configurations: the interactions cannot be estimated.
        constant = total_ss == 0.0 and len(data) >= 3
        result["interactions"] = [
            {"knobs": [a, b], "share": 0.0 if constant else None, "p_value": None, "df": 0, "residual_df": 0,
             "estimable": constant}
            for a, b in itertools.combinations(varying, 2)
        ]  # fmt: skip
        result["strongest"] = []
        return result
    base = " + ".join(_formula_term(k) for k in varying)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rank-deficient sparse designs and zero residuals warn; handled below
        main_model = smf.ols(f"y ~ {base}", data=data).fit()
        try:
            table2 = anova_lm(main_model, typ=2)
        except (ValueError, np.linalg.LinAlgError):
            # Knobs that only ever change together (a listed set of scenarios) cannot be told
            # apart: their effects stay undetermined (share None) rather than guessed.
            result["interactions"] = [
                {"knobs": [a, b], "share": None, "p_value": None, "df": 0, "residual_df": 0, "estimable": False}
                for a, b in itertools.combinations(varying, 2)
            ]
            result["strongest"] = []
            result["confounded"] = True
            return result
        for k in varying:
            row = table2.loc[_formula_term(k)]
            result["main"][k].update(share=float(row["sum_sq"]) / total_ss, p_value=_p(row.get("PR(>F)")), df=int(row["df"]))
        for a, b in itertools.combinations(varying, 2):
            full = smf.ols(f"y ~ {base} + {_formula_term(a)}:{_formula_term(b)}", data=data).fit()
            df = int(round(main_model.df_resid - full.df_resid))
            ss = max(0.0, float(main_model.ssr - full.ssr))
            p = None
            if df > 0 and full.df_resid > 0:
                p = _p(anova_lm(main_model, full).iloc[1]["Pr(>F)"])
            result["interactions"].append({
                "knobs": [a, b],
                "share": ss / total_ss if df > 0 else None,
                "p_value": p,
                "df": df,
                "residual_df": int(full.df_resid),
                "estimable": df > 0,
            })  # fmt: skip
    result["interactions"].sort(key=lambda r: -(r["share"] or 0.0))
    result["strongest"] = [r for r in result["interactions"] if r["estimable"]][:top_pairs]
    return result


def _p(value: Any) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


_key = plain


def _dummies(frame: pd.DataFrame, knob: str) -> np.ndarray:
    """One-hot columns of a knob's values, the first value dropped (``(n, levels - 1)``)."""
    codes, _ = pd.factorize(frame[knob].astype(str), sort=True)
    levels = codes.max() + 1 if len(codes) else 0
    return np.eye(max(levels, 1))[codes][:, 1:]


def _ssr(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, int]:
    """Residual sums of squares of every column of ``y`` regressed on ``x``, and rank(x)."""
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    rank = int((s > s.max() * max(x.shape) * np.finfo(float).eps).sum()) if s.size else 0
    basis = u[:, :rank]
    fitted = basis @ (basis.T @ y)
    return ((y - fitted) ** 2).sum(axis=0), rank


def pair_effect_shares(
    frame: pd.DataFrame, knobs: Sequence[str], a: str, b: str, y: np.ndarray
) -> tuple[np.ndarray, int, np.ndarray]:
    """The ``a x b`` interaction's share of the pair's joint effect, for every column of ``y``.

    Same quantities as :func:`knob_effects` (type-II main effects of ``a`` and ``b`` in the
    main-effects model, the interaction as the drop in residual sum of squares when ``a:b`` is
    added), by least squares on one design matrix for all columns at once: the bootstrap
    replicates of an objective are judged together. Returns ``(shares, interaction df,
    interaction sums of squares)``; shares are NaN where the pair has no effect at all, and all
    NaN when df is 0.
    """
    varying = [k for k in knobs if frame[k].nunique() > 1]
    ones = np.ones((len(frame), 1))
    dummies = {k: _dummies(frame, k) for k in varying}

    def design(skip: str | None = None, interaction: bool = False) -> np.ndarray:
        cols = [ones] + [dummies[k] for k in varying if k != skip]
        if interaction:
            da, db = dummies[a], dummies[b]
            cols.append((da[:, :, None] * db[:, None, :]).reshape(len(frame), -1))
        return np.hstack(cols)

    ssr_main, rank_main = _ssr(design(), y)
    ssr_full, rank_full = _ssr(design(interaction=True), y)
    df = rank_full - rank_main
    if df <= 0:
        return np.full(y.shape[1], np.nan), 0, np.zeros(y.shape[1])
    ssr_no_a, _ = _ssr(design(skip=a), y)
    ssr_no_b, _ = _ssr(design(skip=b), y)
    inter = np.maximum(ssr_main - ssr_full, 0.0)
    together = np.maximum(ssr_no_a - ssr_main, 0.0) + np.maximum(ssr_no_b - ssr_main, 0.0) + inter
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(together > 0, inter / together, np.nan)
    return shares, df, inter
