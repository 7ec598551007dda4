"""``effects_<metric>.png``: each knob's main effect on an objective: the mean over the other knobs
at each value, with the spread (std) of the configurations behind it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knobscope.figures.base import Figure, FigureContext, Info, axis_label, done_rows, plt, save, slug

__all__ = ["EffectsFigure", "EffectsInfo"]


@dataclass(frozen=True)
class EffectsInfo(Info):
    column: str
    y_label: str
    knobs: tuple[str, ...]
    x: dict[str, list[str]]
    mean: dict[str, list[float]]
    std: dict[str, list[float]]


class EffectsFigure(Figure):
    name = "effects"

    def infos(self, ctx: FigureContext) -> list[EffectsInfo]:
        varying = [k for k in ctx.knobs if len(ctx.values[k]) > 1]
        if not varying:
            return []
        out = []
        for o in ctx.objectives:
            rows = done_rows(ctx.run.table, [o.column])
            x, mean, std = {}, {}, {}
            for k in varying:
                stats = rows.groupby(k)[o.column].agg(["mean", "std"])
                stats = stats.reindex([v for v in ctx.values[k] if v in stats.index])
                x[k] = [str(v) for v in stats.index]
                mean[k] = stats["mean"].astype(float).tolist()
                std[k] = stats["std"].fillna(0).astype(float).tolist()
            out.append(EffectsInfo(file=f"effects_{slug(o.column)}", section="effects",
                                   title=f"{ctx.run.label}: main effect of each knob on {o.column} (mean ± std over the other knobs)",
                                   column=o.column, y_label=axis_label(o.column, ctx.run.metrics), knobs=tuple(varying),
                                   x=x, mean=mean, std=std))  # fmt: skip
        return out

    def png(self, info: EffectsInfo, path: Path) -> None:
        fig, axes = plt.subplots(1, len(info.knobs), figsize=(3.4 * len(info.knobs), 3.4), sharey=True, squeeze=False)
        for ax, k in zip(axes[0], info.knobs):
            xs = np.arange(len(info.x[k]))
            ax.errorbar(xs, info.mean[k], yerr=info.std[k], marker="o", capsize=3)
            ax.set_xticks(xs, info.x[k])
            ax.set_xlabel(k)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel(info.y_label)
        fig.suptitle(info.title, fontsize=10)
        save(fig, path)

    def plotly(self, info: EffectsInfo) -> Any:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=len(info.knobs), shared_yaxes=True, subplot_titles=list(info.knobs))
        for i, k in enumerate(info.knobs):
            fig.add_trace(go.Scatter(x=info.x[k], y=info.mean[k], mode="lines+markers", showlegend=False,
                                     error_y=dict(type="data", array=info.std[k]),
                                     hovertemplate=f"{k}=%{{x}}<br>mean {info.column}: %{{y:.4g}}<extra></extra>"),
                          row=1, col=i + 1)  # fmt: skip
        fig.update_layout(title=info.title, height=360, yaxis_title=info.y_label)
        return fig
