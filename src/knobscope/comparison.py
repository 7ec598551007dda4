"""The files of a comparison of workloads: seed 001's E2 outputs.

Runs of one knob space on several workloads (QA and captioning, say), each analysed on its own
objectives, and the first analysed against the others. Written by ``knobscope analyze RUN
--compare OTHER --prefix PREFIX`` into one folder, under the names seed 001 lists (with
``--prefix e2``):

==========================================  ======================================================
``PREFIX_knob_grid_results.json``           every configuration's results, per workload
``PREFIX_pareto_frontiers.json``            each workload's frontier (with its uncertainty) and
                                            the configurations optimal on one, dominated on another
``PREFIX_coupling_analysis.json``           each workload's coupling verdicts, effects and
                                            single- vs multi-knob policies; the illustrative cases
``figures/PREFIX_pareto_WORKLOAD.png``      one latency-quality frontier per workload
``figures/PREFIX_coupling_proof.png``       per workload and fixed knob, the frontier over the others
``figures/PREFIX_illustrative_cases.png``   the configurations optimal on one workload, dominated
                                            on another, beside what dominates them there
==========================================  ======================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from knobscope.plain import plain

if TYPE_CHECKING:
    from knobscope.analysis.results import Analysis
    from knobscope.results import RunResults

__all__ = ["write_comparison", "grid_results"]


def grid_results(run: RunResults) -> list[dict[str, Any]]:
    """Every measured configuration of ``run``: its knobs and every numeric result column."""
    table = run.table
    knobs = run.knobs
    done = table[table["status"] == "done"] if "status" in table.columns else table
    numeric = [c for c in done.columns if c not in knobs and done[c].dtype.kind in "fiub"]
    return [{"trial_id": str(r["trial_id"]), "config": {k: plain(r[k]) for k in knobs},
             "results": {c: plain(r[c]) for c in numeric if r[c] == r[c]}}  # NaN: not measured
            for r in done.to_dict("records")]  # fmt: skip


def write_comparison(
    runs: Sequence[RunResults], analyses: Sequence[Analysis], out_dir: str | Path, *, prefix: str, color_by: str | None = None
) -> list[Path]:
    """Write the comparison files for ``runs`` (``analyses[0]`` compares the first with the rest);
    returns the paths."""
    from knobscope.figures import FigureContext
    from knobscope.figures.cases import CasesFigure
    from knobscope.figures.coupling import CouplingFigure, coupling_proof_png
    from knobscope.figures.pareto import ParetoFigure
    from knobscope.figures.base import slug
    from knobscope.results import to_json

    out = Path(out_dir)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    labels = [run.label for run in runs]
    primary = analyses[0]

    def objectives(a: Analysis) -> list[dict[str, Any]]:
        return [{"column": o.column, "direction": o.direction, "unit": o.unit} for o in a.objectives]

    payloads = {
        f"{prefix}_knob_grid_results.json": {
            "knobs": runs[0].knobs,
            "workloads": {label: {"run_dir": str(run.run_dir), "workload": run.spec.workload.name, "objectives": objectives(a),
                                  "configurations": grid_results(run)}
                          for label, run, a in zip(labels, runs, analyses)},
        },  # fmt: skip
        f"{prefix}_pareto_frontiers.json": {
            "workloads": {label: {"objectives": objectives(a), **a.frontier.to_json()} for label, a in zip(labels, analyses)},
            "comparison": primary.comparison.to_json() if primary.comparison else None,
        },
        f"{prefix}_coupling_analysis.json": {
            "workloads": {label: {"objectives": objectives(a), **a.coupling.to_json(), "effects": a.effects,
                                  "policies": a.policies.to_json()}
                          for label, a in zip(labels, analyses)},
            "cases": [c.to_json() for c in primary.cases],
        },  # fmt: skip
    }
    paths = []
    for name, payload in payloads.items():
        path = out / name
        path.write_text(to_json(payload))
        paths.append(path)

    contexts = [FigureContext(run, a, color_by=color_by) for run, a in zip(runs, analyses)]
    pareto = ParetoFigure()
    for label, ctx in zip(labels, contexts):
        infos = pareto.infos(ctx)
        if infos:
            path = out / "figures" / f"{prefix}_pareto_{slug(label)}.png"
            pareto.png(dataclasses.replace(infos[0], file=path.stem), path)
            paths.append(path)
    rows = [(label, info) for label, ctx in zip(labels, contexts) for info in CouplingFigure().infos(ctx)]
    if rows:
        path = out / "figures" / f"{prefix}_coupling_proof.png"
        coupling_proof_png(rows, path)
        paths.append(path)
    cases = CasesFigure().infos(FigureContext(runs[0], primary, compare=runs[1:], color_by=color_by))
    path = out / "figures" / f"{prefix}_illustrative_cases.png"
    if cases:
        CasesFigure().png(cases[0], path)
    else:  # the seed's file, saying what the data say
        _message_png(path, "No configuration is Pareto-optimal on one workload and dominated on another:\n"
                           f"the frontiers of {', '.join(labels)} agree on the common configurations.")  # fmt: skip
    paths.append(path)
    return paths


def _message_png(path: Path, text: str) -> None:
    from knobscope.figures.base import plt, save

    fig, ax = plt.subplots(figsize=(7, 2.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, wrap=True)
    save(fig, path)
