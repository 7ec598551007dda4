"""``pareto_<workload>.png``: the first two objectives, each configuration with its 95% intervals,
coloured by a knob; the frontier, and the band it lies in given the noise (the 2.5% and 97.5%
attainment curves of the bootstrap replicates)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knobscope.analysis.objectives import Objective
from knobscope.figures.base import (
    Figure, FigureContext, Info, Series, axis_label, colours, done_rows, frontier_points, hex_colour, hover, interval_arrays,
    plt, save, slug,
)  # fmt: skip
from knobscope.results import RunResults

__all__ = ["ParetoFigure", "ParetoInfo", "pareto_info"]


@dataclass(frozen=True)
class ParetoInfo(Info):
    x_label: str
    y_label: str
    series: tuple[Series, ...]
    frontier: tuple[list[float], list[float]]
    optimal: tuple[list[float], list[float]] | None  # more than two objectives: the optimal points
    n_objectives: int
    band: dict[str, list[float]] | None = None


def pareto_info(run: RunResults, objectives: list[Objective], color_by: str, values: list[Any], *, section: str,
                band: dict[str, list[float]] | None = None, probability: dict[str, float] | None = None) -> ParetoInfo:  # fmt: skip
    x, y = objectives[0], objectives[1]
    rows = done_rows(run.table, [x.column, y.column])
    palette = colours(values)
    shown = [o.column for o in objectives]
    series = []
    for v in values:
        part = rows[rows[color_by] == v]
        if not len(part):
            continue
        text = hover(part, run.knobs, shown)
        if probability:
            text = [f"{t}<br>P(optimal)={probability.get(str(tid), 0.0):.2f}" for t, tid in zip(text, part["trial_id"])]
        xe, ye = interval_arrays(part, x.column), interval_arrays(part, y.column)
        series.append(Series(f"{color_by}={v}", hex_colour(palette[v]), part[x.column].astype(float).tolist(),
                             part[y.column].astype(float).tolist(),
                             (xe[0].tolist(), xe[1].tolist()) if xe else None,
                             (ye[0].tolist(), ye[1].tolist()) if ye else None, text))  # fmt: skip
    optimal = None
    if len(objectives) > 2 and len(rows):  # the frontier in all objectives, seen in the first two
        from knobscope.analysis.pareto import pareto_mask

        mask = pareto_mask(rows[shown].to_numpy(dtype=float), [o.maximise for o in objectives])
        optimal = (rows.loc[mask, x.column].astype(float).tolist(), rows.loc[mask, y.column].astype(float).tolist())
    fx, fy = frontier_points(rows, x, y)
    return ParetoInfo(
        file=f"pareto_{slug(run.label)}", title=f"{run.label}: latency-quality frontier", section=section,
        x_label=axis_label(x.column, run.metrics), y_label=axis_label(y.column, run.metrics), series=tuple(series),
        frontier=(fx.tolist(), fy.tolist()), optimal=optimal, n_objectives=len(objectives),
        band=band if len(objectives) == 2 else None,
    )  # fmt: skip


class ParetoFigure(Figure):
    name = "pareto"

    def infos(self, ctx: FigureContext) -> list[ParetoInfo]:
        objectives = ctx.objectives
        if len(objectives) < 2:
            return []
        knob = ctx.colour_knob
        assert ctx.analysis is not None  # objectives come from it
        unc = ctx.analysis.frontier.uncertainty or {}
        out = [pareto_info(ctx.run, objectives, knob, ctx.values[knob], section="frontier", band=unc.get("band"),
                           probability=unc.get("probability"))]  # fmt: skip
        comparison = ctx.analysis.comparison
        for other in ctx.compare:
            given = comparison.objectives.get(other.label, []) if comparison else []
            objs = [Objective(o["column"], o["direction"], o.get("unit", "")) for o in given]
            if len(objs) >= 2:
                out.append(pareto_info(other, objs, knob, ctx.values[knob], section="comparison"))
        return out

    def png(self, info: ParetoInfo, path: Path) -> None:
        fig, ax = plt.subplots(figsize=(7, 5))
        if info.band:
            ax.fill_between(info.band["x"], info.band["low"], info.band["high"], step="post", color="0.6", alpha=0.25,
                            label="frontier within noise (95%)")  # fmt: skip
        for s in info.series:
            ax.errorbar(s.x, s.y, xerr=np.array(s.x_err) if s.x_err else None, yerr=np.array(s.y_err) if s.y_err else None,
                        fmt="o", color=s.colour, ms=5, alpha=0.85, elinewidth=0.7, capsize=1.5, label=s.label)  # fmt: skip
        if info.optimal is not None:
            ax.scatter(*info.optimal, s=70, facecolors="none", edgecolors="black", linewidths=1.5,
                       label=f"Pareto-optimal ({info.n_objectives} objectives)")  # fmt: skip
        elif info.frontier[0]:
            ax.step(*info.frontier, where="post", color="black", linewidth=1.5, label="Pareto frontier (estimates)")
            ax.scatter(*info.frontier, s=70, facecolors="none", edgecolors="black", linewidths=1.5, zorder=4)
        ax.set_xlabel(info.x_label)
        ax.set_ylabel(info.y_label)
        ax.set_title(info.title + ("\n(bars: 95% intervals)" if any(s.x_err or s.y_err for s in info.series) else ""), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        save(fig, path)

    def plotly(self, info: ParetoInfo) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure()
        if info.band:
            fig.add_trace(go.Scatter(x=info.band["x"], y=info.band["low"], mode="lines", line=dict(shape="hv", width=0),
                                     hoverinfo="skip", showlegend=False))  # fmt: skip
            fig.add_trace(go.Scatter(x=info.band["x"], y=info.band["high"], mode="lines", line=dict(shape="hv", width=0),
                                     fill="tonexty", fillcolor="rgba(120,120,120,0.25)", hoverinfo="skip",
                                     name="frontier within noise (95%)"))  # fmt: skip
        for s in info.series:
            err = lambda e: dict(type="data", symmetric=False, arrayminus=e[0], array=e[1], thickness=1, width=2) if e else None  # noqa: E731
            fig.add_trace(go.Scatter(x=s.x, y=s.y, mode="markers", name=s.label, marker=dict(color=s.colour, size=8),
                                     error_x=err(s.x_err), error_y=err(s.y_err), text=s.text,
                                     hovertemplate="%{text}<extra></extra>"))  # fmt: skip
        if info.optimal is not None:
            fig.add_trace(go.Scatter(x=info.optimal[0], y=info.optimal[1], mode="markers", hoverinfo="skip",
                                     name=f"Pareto-optimal ({info.n_objectives} objectives)",
                                     marker=dict(size=13, symbol="circle-open", color="black")))  # fmt: skip
        elif info.frontier[0]:
            fig.add_trace(go.Scatter(x=info.frontier[0], y=info.frontier[1], mode="lines+markers", name="Pareto frontier (estimates)",
                                     line=dict(shape="hv", color="black"), marker=dict(size=13, symbol="circle-open", color="black"),
                                     hoverinfo="skip"))  # fmt: skip
        fig.update_layout(title=info.title + " (hover shows the configuration; bars: 95% intervals)",
                          xaxis_title=info.x_label, yaxis_title=info.y_label, height=480)  # fmt: skip
        return fig
