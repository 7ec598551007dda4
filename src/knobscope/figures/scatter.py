"""``scatter_<x>_vs_<y>.png``: any metric against any metric (``--xy``), e.g. acceptance vs MSE
(seed 003), coloured by a knob, with 95% intervals where the run has them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knobscope.errors import AnalysisError
from knobscope.figures.base import (
    Figure, FigureContext, Info, Series, axis_label, colours, done_rows, hex_colour, hover, interval_arrays, plt, save, slug,
)  # fmt: skip

__all__ = ["ScatterFigure", "ScatterInfo", "scatter_info"]


@dataclass(frozen=True)
class ScatterInfo(Info):
    x_label: str
    y_label: str
    series: tuple[Series, ...]


def scatter_info(ctx: FigureContext, x: str, y: str, knob: str, *, file: str | None = None, title: str | None = None) -> ScatterInfo:
    """Every configuration's ``y`` against its ``x``, one colour per value of ``knob``."""
    palette = colours(ctx.values[knob])
    rows = done_rows(ctx.run.table, [x, y])
    series = []
    for v in ctx.values[knob]:
        part = rows[rows[knob] == v]
        if len(part):
            xe, ye = interval_arrays(part, x), interval_arrays(part, y)
            series.append(Series(f"{knob}={v}", hex_colour(palette[v]), part[x].astype(float).tolist(),
                                 part[y].astype(float).tolist(), (xe[0].tolist(), xe[1].tolist()) if xe else None,
                                 (ye[0].tolist(), ye[1].tolist()) if ye else None, hover(part, ctx.knobs, [x, y])))  # fmt: skip
    return ScatterInfo(file=file or f"scatter_{slug(x)}_vs_{slug(y)}", title=title or f"{ctx.run.label}: {y} vs {x}",
                       section="effects", x_label=axis_label(x, ctx.run.metrics), y_label=axis_label(y, ctx.run.metrics),
                       series=tuple(series))  # fmt: skip


class ScatterFigure(Figure):
    name = "scatter"

    def infos(self, ctx: FigureContext) -> list[ScatterInfo]:
        out = []
        for x, y in ctx.xy:
            for c in (x, y):
                if c not in ctx.run.table.columns:
                    raise AnalysisError(f"--xy names {c!r}, which is not a result column")
            out.append(scatter_info(ctx, x, y, ctx.colour_knob))
        return out

    def png(self, info: ScatterInfo, path: Path) -> None:
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        for s in info.series:
            ax.errorbar(s.x, s.y, xerr=np.array(s.x_err) if s.x_err else None, yerr=np.array(s.y_err) if s.y_err else None,
                        fmt="o", color=s.colour, ms=5, elinewidth=0.7, capsize=1.5, label=s.label)  # fmt: skip
        ax.set_xlabel(info.x_label)
        ax.set_ylabel(info.y_label)
        ax.set_title(info.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, path)

    def plotly(self, info: ScatterInfo) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure()
        for s in info.series:
            err = lambda e: dict(type="data", symmetric=False, arrayminus=e[0], array=e[1]) if e else None  # noqa: E731
            fig.add_trace(go.Scatter(x=s.x, y=s.y, mode="markers", name=s.label, marker=dict(color=s.colour, size=8),
                                     error_x=err(s.x_err), error_y=err(s.y_err), text=s.text, hovertemplate="%{text}<extra></extra>"))  # fmt: skip
        fig.update_layout(title=info.title, xaxis_title=info.x_label, yaxis_title=info.y_label, height=420)
        return fig
