"""Recommendations under constraints: "maximize X subject to Y <= a and Z >= b".

A :class:`Scenario` is a goal plus constraints. Goals: maximise or minimise a column, maximise
a score expression (seed 004's composite, e.g. ``cosine + 0.5*log(1/total_ms_mean) + 0.3*sparsity``),
or maximise a weighted sum of objectives each scaled to [0, 1] from worst to best observed
(``weights``). Constraints are expressions over result columns, knobs and derived quantities.
Seed 003's decision table is three scenarios::

    maximize_speed:   {maximize: acceptance, constraints: ["spec_k >= 4"]}
    maintain_quality: {maximize: acceptance, constraints: ["mse <= 0.50", "acceptance >= 0.60"]}
    balanced:         {maximize: acceptance, constraints: ["mse <= 0.52", "acceptance >= 0.75"]}

An infeasible scenario never answers with an empty list alone: it says which constraint no
configuration meets (with the best value observed), or, when each is met by some configuration
but none meets all, the configuration that comes closest and what it violates.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from knobscope.analysis.objectives import Objective, resolve_objective
from knobscope.goals import Goal, goal_from
from knobscope.analysis.uncertainty import Replicates
from knobscope.errors import AnalysisError, KnobscopeError
from knobscope.expressions import Expression
from knobscope.plain import plain, plain_config

__all__ = ["Goal", "Scenario", "recommend", "scenarios_from_spec"]


@dataclass(frozen=True)
class Scenario:
    name: str
    goal: Goal
    constraints: tuple[str, ...] = ()
    description: str = ""

    def describe(self) -> str:
        where = f" subject to {' and '.join(self.constraints)}" if self.constraints else ""
        return self.goal.describe() + where


def scenarios_from_spec(analysis: Mapping[str, Any], default_goal: Goal) -> list[Scenario]:
    """The spec's main recommendation (``analysis``) and its named ``analysis.scenarios``."""
    out = [Scenario("recommendation", goal_from(analysis, default_goal), tuple(analysis.get("constraints", ())))]  # type: ignore[arg-type]
    for name, section in (analysis.get("scenarios") or {}).items():
        out.append(Scenario(name, goal_from(section, default_goal, where=f"analysis.scenarios.{name}"),  # type: ignore[arg-type]
                            tuple(section.get("constraints", ())), section.get("description", "")))  # fmt: skip
    return out


def _check_names(expr: Expression, table: pd.DataFrame, what: str) -> None:
    for name in sorted(expr.names):
        if name not in table.columns:
            close = difflib.get_close_matches(name, [str(c) for c in table.columns], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise AnalysisError(f"{what} {expr.source!r} reads {name!r}, which is not a result column, knob or derived quantity{hint}")


def _evaluate(expr: Expression, table: pd.DataFrame) -> np.ndarray:
    cols = sorted(expr.names)
    out = []
    for values in table[cols].itertuples(index=False, name=None):
        env = dict(zip(cols, values))
        if any(isinstance(v, float) and np.isnan(v) for v in env.values()):
            out.append(np.nan)
            continue
        try:
            out.append(expr.evaluate(env))
        except KnobscopeError:
            out.append(np.nan)  # e.g. log(0): this configuration cannot be scored
    return np.asarray(out, dtype=float)


def _simple_bound(expr: Expression) -> tuple[str, str] | None:
    """``column <= const``-like constraints -> (column, 'min'|'max' side that satisfies it)."""
    node = expr.tree.body
    if not (isinstance(node, ast.Compare) and len(node.ops) == 1):
        return None
    left, right, op = node.left, node.comparators[0], node.ops[0]
    if isinstance(left, ast.Name) and isinstance(right, ast.Constant):
        name, lower_ok = left.id, isinstance(op, (ast.Lt, ast.LtE))
    elif isinstance(right, ast.Name) and isinstance(left, ast.Constant):
        name, lower_ok = right.id, isinstance(op, (ast.Gt, ast.GtE))
    else:
        return None
    if not isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
        return None
    return name, "min" if lower_ok else "max"


def _config(row: Mapping[str, Any], knobs: Sequence[str]) -> dict[str, Any]:
    return plain_config(row, knobs)


def recommend(
    table: pd.DataFrame,
    scenario: Scenario,
    *,
    knobs: Sequence[str],
    metrics: Mapping[str, Mapping[str, Any]],
    top: int = 5,
    show: Sequence[str] = (),
    tie_break: Sequence[Objective] = (),
    replicates: Replicates | None = None,
) -> dict[str, Any]:
    """The ``top`` configurations for ``scenario``, best first, or the reason there are none.

    ``show`` names extra columns to report for each answer (e.g. the objectives); equal scores
    are ordered by ``tie_break`` objectives (e.g. the lower latency first). The best answer
    names the feasible configurations it is statistically tied with: by paired bootstrap
    ``replicates`` when the goal is one of their objectives, else by overlapping 95% intervals;
    an answer whose interval straddles a constraint's bound says it meets it only within noise.
    """
    goal = scenario.goal
    usable = table[table["status"] == "done"] if "status" in table.columns else table
    constraints = [Expression.parse(c) for c in scenario.constraints]
    for expr in constraints:
        _check_names(expr, table, "constraint")
    score, score_columns = _goal_scores(usable, goal, metrics, knobs)
    met = np.ones(len(usable), dtype=bool)
    report = []
    for expr in constraints:
        ok = np.nan_to_num(_evaluate(expr, usable), nan=0.0).astype(bool)
        met &= ok
        entry: dict[str, Any] = {"constraint": expr.source, "met_by": int(ok.sum()), "of": int(len(usable))}
        bound = _simple_bound(expr)
        if bound and len(usable) and usable[bound[0]].notna().any():
            col = usable[bound[0]].astype(float)
            idx = col.idxmin() if bound[1] == "min" else col.idxmax()
            entry["best_observed"] = float(col[idx])
            entry["best_config"] = _config(usable.loc[idx], knobs)
        report.append(entry)
    scored = np.isfinite(score)
    candidates = usable[met & scored].assign(_score=score[met & scored])
    ties = [o for o in tie_break if o.column in candidates.columns]
    candidates = candidates.sort_values(
        ["_score", *(o.column for o in ties)],
        ascending=[goal.kind == "minimize", *(not o.maximise for o in ties)],
        kind="stable",
    )
    columns = list(dict.fromkeys([*score_columns, *show, *(n for e in constraints for n in sorted(e.names))]))
    columns = [c for c in columns if c in usable.columns and c not in knobs]
    answers = [
        {"config": _config(r, knobs), "trial_id": r.get("trial_id"), "score": float(r["_score"]),
         "values": {c: _num(r[c]) for c in columns},
         "intervals": {c: [_num(r[f"{c}_ci_low"]), _num(r[f"{c}_ci_high"])] for c in columns if f"{c}_ci_low" in r},
         "within_noise": _bounds_within_noise(r, constraints)}
        for _, r in candidates.head(top).iterrows()
    ]  # fmt: skip
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "description": scenario.description,
        "goal": goal.describe(),
        "constraints": list(scenario.constraints),
        "considered": int(len(usable)),
        "not_considered": int(len(table) - len(usable)),
        "feasible": int(len(candidates)),
        "constraint_report": report,
        "top": answers,
        "reason": None,
    }
    if answers:
        result["tied_with"], result["tie_basis"] = _ties(candidates, goal, score_columns, knobs, replicates)
    if not answers:
        result["reason"] = _why_empty(usable, report, met, scored, constraints, knobs, goal)
    return result


def _bounds_within_noise(row: pd.Series, constraints: Sequence[Expression]) -> list[str]:
    """Constraints a configuration meets by its estimate but not by its whole 95% interval."""
    out = []
    for expr in constraints:
        bound = _simple_bound(expr)
        if bound is None or f"{bound[0]}_ci_low" not in row:
            continue
        column, side = bound
        # the side of the interval that is worst for this constraint
        edge = row[f"{column}_ci_high"] if side == "min" else row[f"{column}_ci_low"]
        if edge is None or (isinstance(edge, float) and np.isnan(edge)):
            continue
        try:
            holds = bool(expr.evaluate({column: float(edge)}))
        except (KnobscopeError, TypeError, ValueError):
            continue
        if not holds:
            out.append(expr.source)
    return out


def _ties(candidates: pd.DataFrame, goal: Goal, score_columns: Sequence[str], knobs: Sequence[str],
          replicates: Replicates | None) -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    """Feasible configurations whose goal value is within noise of the best one's."""
    if goal.kind not in ("maximize", "minimize") or not score_columns:
        return [], None
    column = score_columns[0]
    best = candidates.iloc[0]
    others = candidates.iloc[1:]
    if replicates is not None and column in [o.column for o in replicates.objectives]:
        k = [o.column for o in replicates.objectives].index(column)
        rows = {t: i for i, t in enumerate(replicates.trial_ids)}
        if str(best.get("trial_id")) in rows and replicates.has_noise:
            b = replicates.values[:, rows[str(best["trial_id"])], k]
            tied = []
            for _, r in others.iterrows():
                j = rows.get(str(r.get("trial_id")))
                if j is None:
                    continue
                lo, hi = np.percentile(b - replicates.values[:, j, k], [2.5, 97.5])
                if lo <= 0 <= hi:
                    tied.append(_config(r, knobs))
            return tied, "paired bootstrap replicates of the per-sample records"
    lo_col, hi_col = f"{column}_ci_low", f"{column}_ci_high"
    if lo_col not in candidates.columns:
        return [], None
    blo, bhi = best[lo_col], best[hi_col]
    if blo is None or bhi is None or not np.isfinite([blo, bhi]).all():
        return [], None
    tied = [_config(r, knobs) for _, r in others.iterrows() if r[lo_col] <= bhi and r[hi_col] >= blo]
    return tied, "overlapping 95% intervals"


def _num(value: Any) -> Any:
    value = plain(value)
    return None if isinstance(value, float) and np.isnan(value) else value


def _goal_scores(
    table: pd.DataFrame, goal: Goal, metrics: Mapping[str, Mapping[str, Any]], knobs: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    if goal.kind in ("maximize", "minimize"):
        obj = resolve_objective(goal.target, table, metrics, knobs=knobs) if goal.target not in table.columns else None
        column = obj.column if obj else goal.target
        if column not in table.columns:
            raise AnalysisError(f"cannot {goal.kind} {goal.target!r}: not a result column")
        return pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float), [column]
    if goal.kind == "score":
        expr = Expression.parse(goal.target)
        _check_names(expr, table, "score")
        return _evaluate(expr, table), sorted(expr.names)
    # weights: each objective scaled to [0, 1] from worst (0) to best (1) observed
    total = np.zeros(len(table))
    columns = []
    for name, weight in goal.weights.items():
        obj = resolve_objective(name, table, metrics, knobs=knobs)
        col = pd.to_numeric(table[obj.column], errors="coerce").to_numpy(dtype=float)
        lo, hi = (np.nanmin(col), np.nanmax(col)) if np.isfinite(col).any() else (0.0, 1.0)
        span = hi - lo if hi > lo else 1.0
        scaled = (col - lo) / span if obj.maximise else (hi - col) / span
        total = total + weight * scaled
        columns.append(obj.column)
    return total, columns


def _why_empty(
    usable: pd.DataFrame,
    report: list[dict[str, Any]],
    met: np.ndarray,
    scored: np.ndarray,
    constraints: Sequence[Expression],
    knobs: Sequence[str],
    goal: Goal,
) -> str:
    if len(usable) == 0:
        return "no finished configuration to choose from (see the failures)"
    never = [r for r in report if r["met_by"] == 0]
    if never:
        parts = []
        for r in never:
            best = f"; the best observed is {r['best_observed']:.4g} at {r['best_config']}" if "best_observed" in r else ""
            parts.append(f"no configuration meets {r['constraint']!r}{best}")
        return "; ".join(parts)
    if met.any() and not (met & scored).any():
        return f"the configurations that meet every constraint cannot be scored for '{goal.describe()}' (missing or invalid values)"
    # each constraint alone is satisfiable; find the configuration violating the fewest
    violations = np.zeros(len(usable), dtype=int)
    per_row: list[list[str]] = [[] for _ in range(len(usable))]
    for expr in constraints:
        ok = np.nan_to_num(_evaluate(expr, usable), nan=0.0).astype(bool)
        violations += ~ok
        for i in np.flatnonzero(~ok):
            per_row[i].append(expr.source)
    i = int(np.argmin(violations))
    closest = _config(usable.iloc[i], knobs)
    return (f"each constraint is met by some configuration but none meets all {len(constraints)}; "
            f"the closest, {closest}, violates {', '.join(repr(c) for c in per_row[i])}")  # fmt: skip
