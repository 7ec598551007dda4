"""One call that answers the seeds' questions for a loaded run (pure: reads tables, writes nothing).

``analyze(run, options)`` returns an :class:`~knobscope.analysis.results.Analysis`: the frontier
(with each configuration's probability of being Pareto-optimal), coupling verdicts, knob
effects, single- vs multi-knob policies, recommendations (the spec's scenarios and the
request's), the workload comparison (when other runs are given), seed 001's illustrative cases,
strategy coverage and failures. The CLI prints it, the report renders it, ``to_json()`` and
``write()`` store it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from knobscope.analysis.compare import compare_workloads, illustrative_cases
from knobscope.analysis.coupling import coupling_analysis
from knobscope.analysis.objectives import Objective, default_objectives, resolve_objectives
from knobscope.analysis.pareto import pareto_front
from knobscope.analysis.policies import policy_comparison
from knobscope.analysis.recommend import Goal, Scenario, recommend, scenarios_from_spec
from knobscope.analysis.results import Analysis, Case, Comparison, Coupling, Frontier, Policies, Recommendation, rows_from
from knobscope.analysis.uncertainty import RESAMPLES, FrontierUncertainty, frontier_uncertainty, resample_objectives
from knobscope.errors import AnalysisError
from knobscope.plain import plain
from knobscope.results import RunResults

__all__ = ["AnalysisOptions", "analyze", "run_objectives"]


@dataclass(frozen=True)
class AnalysisOptions:
    """What to analyse; empty fields fall back to the spec's ``objectives`` and ``analysis``.

    Attributes:
        objectives: ``"column"`` or ``"column:min|max"``; default: the spec's, else P95 latency
            and the first declared quality metric.
        constraints: constraints of the main recommendation (replace the spec's when given).
        goal: the main recommendation's goal (default: the spec's, else the best quality).
        scenario: only this named scenario (default: all).
        fix: knobs to fix in the coupling analysis (default: every knob).
        reference: hypervolume reference point per objective (default: worst observed).
        top: configurations listed per recommendation.
        min_share, alpha: coupling thresholds (see :mod:`knobscope.analysis.coupling`).
        resamples, seed: bootstrap replicates of the objectives from the per-sample records
            (:mod:`knobscope.analysis.uncertainty`); 0 judges point estimates alone.
    """

    objectives: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    goal: Goal | None = None
    scenario: str | None = None
    fix: tuple[str, ...] = ()
    reference: Mapping[str, float] = field(default_factory=dict)
    top: int | None = None
    min_share: float = 0.05
    alpha: float = 0.05
    resamples: int = RESAMPLES
    seed: int = 0


def run_objectives(run: RunResults, requested: Sequence[str] = ()) -> list[Objective]:
    if requested:
        return resolve_objectives(requested, run.table, run.metrics, knobs=run.knobs)
    return default_objectives(run.table, run.metrics, run.spec.objectives, knobs=run.knobs)


def _default_goal(objectives: Sequence[Objective]) -> Goal:
    quality = next((o for o in objectives if o.maximise), None)
    if quality is not None:
        return Goal("maximize", quality.column)
    return Goal("minimize", objectives[0].column)


def _py(value: Any) -> Any:
    return plain(value, missing=True)


def analyze(run: RunResults, options: AnalysisOptions = AnalysisOptions(), *, compare: Sequence[RunResults] = ()) -> Analysis:
    """Answer the seeds' questions for ``run`` (and across ``compare`` runs of the same knobs)."""
    spec = run.spec
    knobs = run.knobs
    table = run.table
    if table.empty:
        raise AnalysisError(f"{str(run.run_dir)!r} has no trials of its workload to analyse")
    objectives = run_objectives(run, options.objectives)
    settings = spec.analysis or {}
    reference = dict(settings.get("reference") or {})
    reference.update(options.reference)
    unknown_fix = [k for k in options.fix if k not in knobs]
    if unknown_fix:
        raise AnalysisError(f"--fix {unknown_fix[0]!r} is not a knob of this run; knobs: {', '.join(knobs)}")
    top = options.top or int(settings.get("top") or 5)

    front = pareto_front(table, objectives, reference=reference or None)
    shown = [o.column for o in objectives]
    replicates = uncertainty = None
    if run.samples is not None and len(front.table) and options.resamples > 0:
        replicates = resample_objectives(front.table, run.samples, objectives, resamples=options.resamples, seed=options.seed)
        uncertainty = frontier_uncertainty(replicates, reference=front.reference)
    frontier_rows = _frontier_rows(front, knobs, shown, uncertainty)
    coupling = coupling_analysis(table, knobs, objectives, reference=reference or None,
                                 min_share=options.min_share, alpha=options.alpha, replicates=replicates)  # fmt: skip
    if options.fix:
        coupling["knobs"] = {k: v for k, v in coupling["knobs"].items() if k in options.fix}
        coupling["pairs"] = [p for p in coupling["pairs"] if set(p["knobs"]) & set(options.fix)]
    effects = coupling.pop("effects")
    defaults = {k.name: k.default for k in spec.space.knobs}
    policies = policy_comparison(table, knobs, defaults, objectives, reference=reference or None)

    default_goal = _default_goal(objectives)
    scenarios = scenarios_from_spec(settings, default_goal) if settings else [Scenario("recommendation", default_goal)]
    if options.constraints or options.goal:
        main = scenarios[0]
        scenarios[0] = Scenario("recommendation", options.goal or main.goal,
                                tuple(options.constraints) if options.constraints else main.constraints)  # fmt: skip
    if options.scenario:
        chosen = [s for s in scenarios if s.name == options.scenario]
        if not chosen:
            names = ", ".join(s.name for s in scenarios)
            raise AnalysisError(f"scenario {options.scenario!r} is not in the spec; scenarios: {names}")
        scenarios = chosen
    recommendations = [recommend(table, s, knobs=knobs, metrics=run.metrics, top=top, show=shown, tie_break=objectives,
                                 replicates=replicates) for s in scenarios]  # fmt: skip

    comparison = None
    if compare:
        tables = {run.label: table}
        objs = {run.label: objectives}
        for other in compare:
            if other.knobs != knobs:
                raise AnalysisError(f"run {str(other.run_dir)!r} has knobs {other.knobs}; {str(run.run_dir)!r} has {knobs}; "
                                    "workloads are compared over the same knobs")  # fmt: skip
            label = other.label if other.label not in tables else f"{other.label} ({other.run_dir})"
            tables[label] = other.table
            objs[label] = run_objectives(other, _transfer(options.objectives, objectives, other))
        statuses = {run.label: uncertainty.status if uncertainty else None}
        for label, other in zip(list(tables)[1:], compare):
            statuses[label] = _statuses(other, objs[label], options)
        comparison = compare_workloads(tables, knobs, objs, statuses=statuses)
    space_values = {k.name: list(k.values) for k in spec.space.knobs}
    cases = illustrative_cases(knobs=knobs, space_values=space_values, frontier=front.frontier,
                               policies=policies, comparison=comparison, coupling=coupling,
                               status=uncertainty.status if uncertainty else None, table=table)  # fmt: skip
    counts = table["status"].value_counts().to_dict()
    failures = [
        {"trial_id": r["trial_id"], "config": {k: _py(r[k]) for k in knobs}, "error": r.get("error") or ""}
        for r in table[table["status"] == "failed"].to_dict("records")
    ]  # fmt: skip
    done = table[table["status"] == "done"]
    coverage = {
        "strategy": spec.strategy_name,
        "grid_size": spec.space.grid_size,
        "measured": int(len(done)),
        "knobs": {k: {"values": space_values[k], "measured": sorted({_py(v) for v in done[k]}, key=str),
                      "counts": [int((done[k] == v).sum()) for v in space_values[k]]} for k in knobs},
    }  # fmt: skip
    fr = {
        "n": int(len(front.table)),
        "size": int(front.table["pareto"].sum()) if len(front.table) else 0,
        "reference": tuple(_py(v) for v in front.reference),
        "reference_source": "given" if reference else "worst observed value of each objective",
        "hypervolume": front.hypervolume,
        "hypervolume_normalized": front.hypervolume_normalized,
        "hypervolume_interval": tuple(uncertainty.hypervolume_interval) if uncertainty else None,
        "hypervolume_unit": " x ".join(o.unit or o.column for o in objectives),
        "rows": rows_from(frontier_rows),
        "uncertainty": _uncertainty_json(uncertainty),
        "excluded": tuple({"trial_id": r.get("trial_id"), "reason": r["reason"]} for r in front.excluded.to_dict("records")),
    }
    return Analysis(
        run={"dir": str(run.run_dir), "name": spec.name, "workload": spec.workload.name if spec.workload else None,
             "description": spec.description},
        provenance=run.provenance,
        objectives=tuple(objectives),
        counts={str(k): int(v) for k, v in counts.items()},
        coverage=coverage,
        frontier=Frontier(**fr),
        coupling=Coupling.from_dict(coupling),
        effects=effects,
        policies=Policies.from_dict(policies),
        recommendations=tuple(Recommendation.from_dict(r) for r in recommendations),
        comparison=Comparison.from_dict(comparison) if comparison else None,
        cases=tuple(Case.from_dict(c) for c in cases),
        failures=tuple(failures),
    )  # fmt: skip


def _interval(row: Mapping[str, Any], column: str) -> list[Any] | None:
    lo, hi = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if lo is None or hi is None:
        return None
    return [_py(lo), _py(hi)]


def _frontier_rows(front: Any, knobs: Sequence[str], shown: Sequence[str], unc: FrontierUncertainty | None) -> list[dict[str, Any]]:
    """The frontier: the point estimates' Pareto set, plus (with uncertainty) every configuration
    that is optimal in more than 5% of replicates; most probable first, ties named."""
    rows = front.frontier
    if unc is not None:
        candidates = front.table[[unc.status.get(str(t)) != "dominated" for t in front.table["trial_id"]]]
        rows = pd.concat([rows, candidates[~candidates["trial_id"].isin(rows["trial_id"])]])
        rows = rows.assign(_p=[unc.probability.get(str(t), 0.0) for t in rows["trial_id"]])
        rows = rows.sort_values("_p", ascending=False, kind="stable")
    configs = {str(r["trial_id"]): {k: _py(r[k]) for k in knobs} for r in rows.to_dict("records")}
    out = []
    for r in rows.to_dict("records"):
        tid = str(r.get("trial_id"))
        entry = {"trial_id": r.get("trial_id"), "config": configs[tid], "values": {c: _py(r[c]) for c in shown},
                 "intervals": {c: _interval(r, c) for c in shown}, "pareto": bool(r["pareto"])}  # fmt: skip
        if unc is not None:
            entry.update(probability=unc.probability.get(tid), status=unc.status.get(tid),
                         # most likely optimal first: the ones a short listing shows
                         tied_with=[configs.get(t, {"trial_id": t})
                                    for t in sorted(unc.ties.get(tid, ()), key=lambda t: -unc.probability.get(t, 0.0))])  # fmt: skip
        out.append(entry)
    return out


def _uncertainty_json(unc: FrontierUncertainty | None) -> dict[str, Any] | None:
    if unc is None:
        return None
    counts = {s: sum(v == s for v in unc.status.values()) for s in ("optimal", "uncertain", "dominated")}
    data = unc.to_json()
    data["probability"] = {k: v for k, v in unc.probability.items() if v > 0}
    data["status"] = {k: v for k, v in unc.status.items() if v != "dominated"}
    return {**data, "counts": counts, "decided": counts["uncertain"] == 0}


def _statuses(run: RunResults, objectives: Sequence[Objective], options: AnalysisOptions) -> Mapping[str, str] | None:
    if run.samples is None or options.resamples <= 0:
        return None
    front = pareto_front(run.table, objectives)
    if not len(front.table):
        return None
    rep = resample_objectives(front.table, run.samples, objectives, resamples=options.resamples, seed=options.seed)
    return frontier_uncertainty(rep, reference=front.reference).status


def _transfer(requested: Sequence[str], objectives: Sequence[Objective], other: RunResults) -> list[str]:
    """Objectives for a compared run: the same columns where it has them, else its own defaults."""
    if requested and all(o.column in other.table.columns for o in objectives):
        return [f"{o.column}:{o.direction}" for o in objectives]
    return []
