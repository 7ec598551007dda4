"""``coupling_<knob>.png``: seed 001's coupling proof, one subplot per fixed value of the knob:
every configuration in grey, those at the fixed value in blue, their frontier in red.
:func:`coupling_proof_png` draws several of them as the rows of one image (seed 001's
``e2_coupling_proof.png``: one row per workload and fixed knob)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knobscope.figures.base import FIGURE_DPI, Figure, FigureContext, Info, axis_label, done_rows, frontier_points, hover, plt, save, slug

__all__ = ["CouplingFigure", "CouplingInfo", "coupling_proof_png"]

_ALL, _PART, _FRONT = "#c8ccd2", "#2c6fbb", "#c0392b"


@dataclass(frozen=True)
class Panel:
    value: Any
    x: list[float]
    y: list[float]
    text: list[str]
    frontier: tuple[list[float], list[float]]


@dataclass(frozen=True)
class CouplingInfo(Info):
    knob: str
    x_label: str
    y_label: str
    all_x: list[float]
    all_y: list[float]
    panels: tuple[Panel, ...]


class CouplingFigure(Figure):
    name = "coupling"

    def infos(self, ctx: FigureContext) -> list[CouplingInfo]:
        objectives = ctx.objectives
        if len(objectives) < 2:
            return []
        x, y = objectives[0], objectives[1]
        rows = done_rows(ctx.run.table, [x.column, y.column])
        out = []
        for knob in ctx.analysis.coupling.knobs:  # type: ignore[union-attr]  # objectives imply an analysis
            panels = []
            for v in ctx.values[knob]:
                part = rows[rows[knob] == v]
                if not len(part):
                    continue
                fx, fy = frontier_points(part, x, y)
                panels.append(Panel(v, part[x.column].astype(float).tolist(), part[y.column].astype(float).tolist(),
                                    hover(part, ctx.knobs, [x.column, y.column]), (fx.tolist(), fy.tolist())))  # fmt: skip
            out.append(CouplingInfo(
                file=f"coupling_{slug(knob)}", section="coupling",
                title=f"{ctx.run.label}: frontier over the other knobs with {knob} fixed ({x.column} vs {y.column})",
                knob=knob, x_label=axis_label(x.column, ctx.run.metrics), y_label=axis_label(y.column, ctx.run.metrics),
                all_x=rows[x.column].astype(float).tolist(), all_y=rows[y.column].astype(float).tolist(), panels=tuple(panels),
            ))  # fmt: skip
        return out

    def png(self, info: CouplingInfo, path: Path) -> None:
        cols = min(4, max(len(info.panels), 1))
        nrows = int(np.ceil(len(info.panels) / cols)) or 1
        fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.0 * nrows + 0.6), sharex=True, sharey=True, squeeze=False)
        for ax in axes.flat[len(info.panels):]:
            ax.set_visible(False)
        for ax, p in zip(axes.flat, info.panels):
            ax.scatter(info.all_x, info.all_y, color=_ALL, s=12, label="all configurations")
            ax.scatter(p.x, p.y, color=_PART, s=18, label=f"{info.knob} = {p.value}")
            if p.frontier[0]:
                ax.step(*p.frontier, where="post", color=_FRONT, linewidth=1.5, label=f"frontier at {info.knob} = {p.value}")
            ax.set_title(f"{info.knob} = {p.value}", fontsize=9)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel(info.x_label, fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel(info.y_label, fontsize=8)
        handles = [plt.Line2D([], [], color=_ALL, marker="o", ls="", label="every configuration"),
                   plt.Line2D([], [], color=_PART, marker="o", ls="", label=f"configurations at this {info.knob}"),
                   plt.Line2D([], [], color=_FRONT, label="their frontier")]  # fmt: skip
        fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
        fig.suptitle(info.title, fontsize=10)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        save(fig, path)

    def plotly(self, info: CouplingInfo) -> Any:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        cols = min(4, max(len(info.panels), 1))
        nrows = int(np.ceil(len(info.panels) / cols)) or 1
        fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[f"{info.knob} = {p.value}" for p in info.panels],
                            shared_xaxes=True, shared_yaxes=True)  # fmt: skip
        for i, p in enumerate(info.panels):
            r, c = i // cols + 1, i % cols + 1
            first = i == 0  # one legend entry per kind of marker
            fig.add_trace(go.Scatter(x=info.all_x, y=info.all_y, mode="markers", marker=dict(color=_ALL, size=5), hoverinfo="skip",
                                     name="every configuration", legendgroup="all", showlegend=first), row=r, col=c)  # fmt: skip
            fig.add_trace(go.Scatter(x=p.x, y=p.y, mode="markers", marker=dict(color=_PART, size=7), text=p.text,
                                     hovertemplate="%{text}<extra></extra>", name=f"configurations at this {info.knob}",
                                     legendgroup="part", showlegend=first), row=r, col=c)  # fmt: skip
            fig.add_trace(go.Scatter(x=p.frontier[0], y=p.frontier[1], mode="lines", line=dict(shape="hv", color=_FRONT),
                                     hoverinfo="skip", name="their frontier", legendgroup="front", showlegend=first), row=r, col=c)  # fmt: skip
        fig.update_layout(title=info.title, height=300 * nrows + 100)
        return fig


def coupling_proof_png(rows: list[tuple[str, CouplingInfo]], path: Path) -> None:
    """One row per ``(workload, info)``: the panels of each fixed value of the info's knob."""
    cols = max(len(info.panels) for _, info in rows) or 1
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.7 * cols, 2.5 * len(rows) + 0.8), squeeze=False)
    for r, (label, info) in enumerate(rows):
        for ax in axes[r, len(info.panels):]:
            ax.set_visible(False)
        for c, p in enumerate(info.panels):
            ax = axes[r, c]
            ax.scatter(info.all_x, info.all_y, color=_ALL, s=6)
            ax.scatter(p.x, p.y, color=_PART, s=9)
            if p.frontier[0]:
                ax.step(*p.frontier, where="post", color=_FRONT, linewidth=1.2)
                ax.scatter(*p.frontier, color=_FRONT, s=12, zorder=3)  # a one-point frontier has no line
            ax.set_title(f"{info.knob} = {p.value}", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.grid(alpha=0.3)
            if c == 0:
                ax.set_ylabel(f"{label}\n{info.y_label}", fontsize=7)
            ax.set_xlabel(info.x_label, fontsize=6)
    handles = [plt.Line2D([], [], color=_ALL, marker="o", ls="", label="every configuration of the workload"),
               plt.Line2D([], [], color=_PART, marker="o", ls="", label="configurations at the fixed value"),
               plt.Line2D([], [], color=_FRONT, marker="o", label="their frontier over the other knobs")]  # fmt: skip
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Coupling proof: the frontier over the other knobs, one row per workload and fixed knob", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.98))
    fig.savefig(path, dpi=FIGURE_DPI)  # save() would lay it out again, over the legend
    plt.close(fig)
