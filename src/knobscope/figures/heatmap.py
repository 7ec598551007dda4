"""``heatmap_<metric>_<knob>_<knob>.png``: a metric's mean over two knobs (seed 003); the
colour scale runs from worse to better in the metric's own direction."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knobscope.analysis.objectives import direction_of
from knobscope.errors import AnalysisError
from knobscope.figures.base import Figure, FigureContext, Info, axis_label, done_rows, number, plt, save, slug

__all__ = ["HeatmapFigure", "HeatmapInfo", "heatmap_info"]


@dataclass(frozen=True)
class HeatmapInfo(Info):
    column: str
    knob_x: str
    knob_y: str
    x: list[str]
    y: list[str]
    z: list[list[float]]
    better_high: bool  # colour scale: brighter is better
    label: str


def heatmap_info(ctx: FigureContext, column: str, kx: str, ky: str, *, file: str | None = None) -> HeatmapInfo:
    """``column``'s mean over the other knobs, by ``kx`` and ``ky``."""
    values = ctx.values
    rows = done_rows(ctx.run.table, [column])
    grid = rows.pivot_table(index=ky, columns=kx, values=column, aggfunc="mean")
    grid = grid.reindex(index=[v for v in values[ky] if v in grid.index], columns=[v for v in values[kx] if v in grid.columns])
    direction, _ = direction_of(column, ctx.run.metrics)
    return HeatmapInfo(
        file=file or f"heatmap_{slug(column)}_{slug(kx)}_{slug(ky)}", section="effects",
        title=f"{ctx.run.label}: {column} by {kx} and {ky} (mean over the other knobs)",
        column=column, knob_x=kx, knob_y=ky, x=[str(v) for v in grid.columns], y=[str(v) for v in grid.index],
        z=grid.to_numpy(dtype=float).tolist(), better_high=direction != "min", label=axis_label(column, ctx.run.metrics),
    )  # fmt: skip


class HeatmapFigure(Figure):
    name = "heatmap"

    def infos(self, ctx: FigureContext) -> list[HeatmapInfo]:
        knobs, values = ctx.knobs, ctx.values
        maps = list(ctx.heatmaps)
        varying = [k for k in knobs if len(values[k]) > 1]
        if not maps and len(varying) >= 2:
            strongest = ctx.analysis.effects.get(ctx.objectives[-1].column, {}).get("strongest") or []  # type: ignore[union-attr]
            pair = strongest[0]["knobs"] if strongest else varying[:2]
            maps = [(o.column, pair[0], pair[1]) for o in ctx.objectives]
        out = []
        for column, kx, ky in maps:
            for k in (kx, ky):
                if k not in knobs:
                    raise AnalysisError(f"--heatmap names {k!r}, which is not a knob; knobs: {', '.join(knobs)}")
            if column not in ctx.run.table.columns:
                raise AnalysisError(f"--heatmap names {column!r}, which is not a result column")
            out.append(heatmap_info(ctx, column, kx, ky))
        return out

    def png(self, info: HeatmapInfo, path: Path) -> None:
        data = np.asarray(info.z, dtype=float)
        fig, ax = plt.subplots(figsize=(1.0 * data.shape[1] + 3, 0.7 * data.shape[0] + 2))
        cmap = "viridis" if info.better_high else "viridis_r"
        im = ax.imshow(data, cmap=cmap, aspect="auto")
        ax.set_xticks(range(len(info.x)), info.x)
        ax.set_yticks(range(len(info.y)), info.y)
        finite = data[np.isfinite(data)]
        mid = (finite.min() + finite.max()) / 2 if finite.size else 0
        for i in range(data.shape[0]):
            for j in range(data.shape[1]):
                if np.isfinite(data[i, j]):
                    bright = (data[i, j] > mid) == info.better_high  # viridis is bright at its "better" end
                    ax.text(j, i, number(data[i, j]), ha="center", va="center", fontsize=7, color="black" if bright else "white")
        ax.set_xlabel(info.knob_x)
        ax.set_ylabel(info.knob_y)
        fig.colorbar(im, ax=ax, label=info.label)
        ax.set_title(info.title, fontsize=10)
        save(fig, path)

    def plotly(self, info: HeatmapInfo) -> Any:
        import plotly.graph_objects as go

        text = [[number(v) if v == v else "" for v in row] for row in info.z]
        fig = go.Figure(go.Heatmap(z=info.z, x=info.x, y=info.y, colorscale="Viridis", reversescale=not info.better_high,
                                   colorbar=dict(title=info.column), text=text, texttemplate="%{text}",
                                   hovertemplate=f"{info.knob_x}=%{{x}}<br>{info.knob_y}=%{{y}}<br>{info.column}=%{{text}}<extra></extra>"))  # fmt: skip
        fig.update_layout(title=info.title, xaxis_title=info.knob_x, yaxis_title=info.knob_y, height=380)
        return fig
