"""The typed results of :func:`knobscope.analysis.analyze`: frozen dataclasses, each with ``to_json()``.

The CLI's text, the report and the figures read these attributes; ``Analysis.write`` writes the
three files (``analysis.json``, ``coupling_analysis.json``, ``pareto_frontiers.json``) from
``to_json()``. Details a reader rarely needs field by field (a verdict's per-objective
evidence, the effects tables, per-value fixed-knob frontiers) stay JSON-ready mappings inside
the typed objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from knobscope.goals import Objective

__all__ = ["Analysis", "Frontier", "FrontierRow", "PairVerdict", "Coupling", "Policies", "Recommendation",
           "Comparison", "Case", "ANALYSIS_FILES"]  # fmt: skip

ANALYSIS_FILES = ("analysis.json", "coupling_analysis.json", "pareto_frontiers.json")


class _Json:
    """``to_json()``: the fields as a mapping, nested results converted, in declaration order."""

    _omit_none: tuple[str, ...] = ()  # fields left out of the JSON while None (as the dict form did)

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is None and f.name in self._omit_none:
                continue
            out[f.name] = _json(value)
        return out


def _json(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class FrontierRow(_Json):
    """One configuration of the frontier table: its values and 95% intervals, and, where the noise
    is known, its probability of being Pareto-optimal, its status and what it is tied with."""

    trial_id: str | None
    config: Mapping[str, Any]
    values: Mapping[str, Any]
    intervals: Mapping[str, Any]
    pareto: bool
    probability: float | None = None
    status: str | None = None
    tied_with: tuple[Mapping[str, Any], ...] = ()
    _omit_none = ("probability", "status")

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        if self.status is None:
            out.pop("tied_with")
        return out

    def tie_labels(self, fmt: Callable[[Any], str] = str) -> list[str]:
        """Each tied configuration as its knob values in the table's knob order, ``(0.25, 50, 2)``:
        the table's columns name the knobs, and ``knob=value`` for every tie filled the screen."""
        return ["(" + ", ".join(fmt(v) for v in tie.values()) + ")" for tie in self.tied_with]


@dataclass(frozen=True)
class Frontier(_Json):
    n: int
    size: int
    reference: tuple[Any, ...]
    reference_source: str
    hypervolume: float
    hypervolume_normalized: float
    hypervolume_interval: tuple[float, float] | None
    hypervolume_unit: str
    rows: tuple[FrontierRow, ...]
    uncertainty: Mapping[str, Any] | None  # probability, status, ties, band, counts, sources, notes
    excluded: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class PairVerdict(_Json):
    """A knob pair's coupling verdict (coupled, not coupled, undetermined) with its reason and
    the per-objective evidence; ``optimal`` holds ``optimal_<b>_by_<a>`` and ``optimal_<a>_by_<b>``."""

    knobs: tuple[str, str]
    verdict: str
    reason: str
    evidence: tuple[Mapping[str, Any], ...]
    optimal: Mapping[str, Any]
    optimal_values_change: bool

    def to_json(self) -> dict[str, Any]:
        return {"knobs": list(self.knobs), "verdict": self.verdict, "reason": self.reason, "evidence": _json(self.evidence),
                **_json(self.optimal), "optimal_values_change": self.optimal_values_change}  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PairVerdict:
        optimal = {k: v for k, v in d.items() if k.startswith("optimal_") and k != "optimal_values_change"}
        return cls(tuple(d["knobs"]), d["verdict"], d["reason"], tuple(d["evidence"]), optimal, d["optimal_values_change"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Coupling(_Json):
    objectives: tuple[Mapping[str, str], ...]
    n: int
    excluded: tuple[Mapping[str, Any], ...]
    thresholds: Mapping[str, float]
    reference: Any
    knobs: Mapping[str, Any]  # per fixed knob: per-value frontiers, hypervolume range, comparisons
    pairs: tuple[PairVerdict, ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Coupling:
        return cls(tuple(d["objectives"]), d["n"], tuple(d["excluded"]), d["thresholds"], d["reference"], d["knobs"],
                   tuple(PairVerdict.from_dict(p) for p in d["pairs"]))  # fmt: skip


@dataclass(frozen=True)
class Policies(_Json):
    """Single- vs multi-knob policies (see :mod:`knobscope.analysis.policies`); fields the data
    could not fill are None and left out of the JSON."""

    objectives: tuple[Mapping[str, str], ...]
    available: bool
    reason: str | None = None
    base: Mapping[str, Any] | None = None
    base_source: str | None = None
    multi: Mapping[str, Any] | None = None
    single: Mapping[str, Any] | None = None
    best_single: Mapping[str, Any] | None = None
    hypervolume_ratio: float | None = None
    budgets: Mapping[str, Any] | None = None
    largest_gap: Mapping[str, Any] | None = None
    budgets_single_cannot_meet: tuple[float, ...] | None = None
    cheapest_single: Mapping[str, Any] | None = None
    multi_knob_wins: bool | None = None
    _omit_none = ("reason", "base", "base_source", "multi", "single", "best_single", "hypervolume_ratio", "budgets",
                  "largest_gap", "budgets_single_cannot_meet", "cheapest_single", "multi_knob_wins")  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Policies:
        known = {f.name for f in fields(cls)}
        return cls(**{k: (tuple(v) if k in ("objectives", "budgets_single_cannot_meet") and v is not None else v)
                      for k, v in d.items() if k in known})  # fmt: skip


@dataclass(frozen=True)
class Recommendation(_Json):
    scenario: str
    description: str
    goal: str
    constraints: tuple[str, ...]
    considered: int
    not_considered: int
    feasible: int
    constraint_report: tuple[Mapping[str, Any], ...]
    top: tuple[Mapping[str, Any], ...]  # config, trial_id, score, values, intervals, within_noise
    reason: str | None
    tied_with: tuple[Mapping[str, Any], ...] | None = None
    tie_basis: str | None = None
    _omit_none = ("tied_with", "tie_basis")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Recommendation:
        return cls(d["scenario"], d["description"], d["goal"], tuple(d["constraints"]), d["considered"], d["not_considered"],
                   d["feasible"], tuple(d["constraint_report"]), tuple(d["top"]), d["reason"],
                   tuple(d["tied_with"]) if "tied_with" in d else None, d.get("tie_basis"))  # fmt: skip


@dataclass(frozen=True)
class Comparison(_Json):
    workloads: tuple[str, ...]
    objectives: Mapping[str, Any]
    common_configs: int
    frontier_sizes: Mapping[str, int]
    shared_optimal: tuple[Mapping[str, Any], ...]
    workload_dependent: tuple[Mapping[str, Any], ...]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Comparison:
        return cls(tuple(d["workloads"]), d["objectives"], d["common_configs"], d["frontier_sizes"], tuple(d["shared_optimal"]),
                   tuple(d["workload_dependent"]))  # fmt: skip


@dataclass(frozen=True)
class Case(_Json):
    """One of seed 001's illustrative cases; ``supported`` False: the intervals do not support it."""

    kind: str
    text: str
    supported: bool | None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "supported": self.supported, "text": self.text, **_json(self.detail)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Case:
        return cls(d["kind"], d["text"], d.get("supported"), {k: v for k, v in d.items() if k not in ("kind", "text", "supported")})


@dataclass(frozen=True)
class Analysis(_Json):
    """Everything :func:`~knobscope.analysis.analyze` answers for one run."""

    run: Mapping[str, Any]
    provenance: Mapping[str, Any]
    objectives: tuple[Objective, ...]
    counts: Mapping[str, int]
    coverage: Mapping[str, Any]
    frontier: Frontier
    coupling: Coupling
    effects: Mapping[str, Any]  # per objective column: main effects and interactions
    policies: Policies
    recommendations: tuple[Recommendation, ...]
    comparison: Comparison | None
    cases: tuple[Case, ...]
    failures: tuple[Mapping[str, Any], ...]

    def files(self) -> dict[str, dict[str, Any]]:
        """The three files' contents, by name."""
        data = self.to_json()
        return {
            "analysis.json": data,
            "coupling_analysis.json": {"objectives": data["objectives"], **data["coupling"], "effects": data["effects"]},
            "pareto_frontiers.json": {"objectives": data["objectives"], "frontier": data["frontier"], "comparison": data["comparison"]},
        }

    def write(self, run_dir: str | Path) -> list[Path]:
        """Write ``analysis.json``, ``coupling_analysis.json`` and ``pareto_frontiers.json``; returns the paths."""
        from knobscope.results import to_json

        paths = []
        for name, payload in self.files().items():
            path = Path(run_dir) / name
            path.write_text(to_json(payload))
            paths.append(path)
        return paths

    def objective(self, column: str) -> Objective | None:
        return next((o for o in self.objectives if o.column == column), None)


def rows_from(rows: Sequence[Mapping[str, Any]]) -> tuple[FrontierRow, ...]:
    return tuple(FrontierRow(r["trial_id"], r["config"], r["values"], r["intervals"], r["pareto"], r.get("probability"),
                             r.get("status"), tuple(r.get("tied_with", ()))) for r in rows)  # fmt: skip
