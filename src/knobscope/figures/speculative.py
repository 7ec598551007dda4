"""Seed 003's five figures of a speculative-decoding sweep, under the seed's file names:
``acceptance_vs_mse``, ``acceptance_heatmap`` and ``mse_heatmap`` (sigma x bias, mean over K),
``k_effect`` (acceptance and MSE against K, a line per sigma) and ``pareto_frontier``
(acceptance against MSE, the frontier marked, the target-only MSE as reference). Drawn for any
run with a ``spec_k`` knob and ``acceptance_rate`` and ``mse`` results (the ``forecast`` workload)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knobscope.analysis.pareto import pareto_mask
from knobscope.figures.base import Figure, FigureContext, Info, done_rows, hover, number, plt, save
from knobscope.figures.heatmap import HeatmapFigure, HeatmapInfo, heatmap_info
from knobscope.figures.scatter import ScatterFigure, ScatterInfo, scatter_info

__all__ = ["SpeculativeFigure", "KEffectInfo", "FrontierInfo"]

ACCEPTANCE, MSE = "acceptance_rate", "mse"


@dataclass(frozen=True)
class KEffectInfo(Info):
    k: list[int]
    lines: dict[str, dict[str, list[float]]]  # "sigma=0.25" -> {"acceptance": [...], "mse": [...]} by k


@dataclass(frozen=True)
class FrontierInfo(Info):
    x: list[float]  # mse
    y: list[float]  # acceptance
    optimal: list[bool]
    text: list[str]
    target_mse: float | None


class SpeculativeFigure(Figure):
    name = "speculative"

    def infos(self, ctx: FigureContext) -> list[Any]:
        table = ctx.run.table
        if "spec_k" not in ctx.knobs or not {ACCEPTANCE, MSE} <= set(table.columns):
            return []
        rows = done_rows(table, [ACCEPTANCE, MSE])
        if rows.empty:
            return []
        label = ctx.run.label
        colour = "spec_k" if len(ctx.values["spec_k"]) > 1 else ctx.knobs[0]
        out: list[Any] = [scatter_info(ctx, MSE, ACCEPTANCE, colour, file="acceptance_vs_mse",
                                       title=f"{label}: acceptance vs MSE (each point a configuration)")]  # fmt: skip
        if {"spec_sigma", "spec_accept_bias"} <= set(ctx.knobs):
            out.append(heatmap_info(ctx, ACCEPTANCE, "spec_accept_bias", "spec_sigma", file="acceptance_heatmap"))
            out.append(heatmap_info(ctx, MSE, "spec_accept_bias", "spec_sigma", file="mse_heatmap"))
        ks = [int(k) for k in ctx.values["spec_k"] if (rows["spec_k"] == k).any()]
        group = "spec_sigma" if "spec_sigma" in ctx.knobs else None
        lines: dict[str, dict[str, list[float]]] = {}
        for value in ctx.values[group] if group else [None]:
            part = rows if group is None else rows[rows[group] == value]
            name = "all" if group is None else f"sigma={value}"
            means = part.groupby("spec_k")[[ACCEPTANCE, MSE]].mean()
            lines[name] = {"acceptance": [float(means[ACCEPTANCE].get(k, np.nan)) for k in ks],
                           "mse": [float(means[MSE].get(k, np.nan)) for k in ks]}  # fmt: skip
        out.append(KEffectInfo(file="k_effect", title=f"{label}: effect of the draft length K (mean over the other knobs)",
                               section="effects", k=ks, lines=lines))  # fmt: skip
        pts = rows[[MSE, ACCEPTANCE]].to_numpy(dtype=float)
        optimal = pareto_mask(pts, [False, True]).tolist()
        target = float(rows["target_mse"].mean()) if "target_mse" in rows.columns else None
        out.append(FrontierInfo(file="pareto_frontier", title=f"{label}: acceptance-MSE frontier", section="pareto",
                                x=pts[:, 0].tolist(), y=pts[:, 1].tolist(), optimal=optimal,
                                text=hover(rows, ctx.knobs, [ACCEPTANCE, MSE]), target_mse=target))  # fmt: skip
        return out

    def png(self, info: Any, path: Path) -> None:
        if isinstance(info, HeatmapInfo):
            return HeatmapFigure().png(info, path)
        if isinstance(info, ScatterInfo):
            return ScatterFigure().png(info, path)
        if isinstance(info, KEffectInfo):
            fig, axes = plt.subplots(1, 2, figsize=(10, 4))
            for name, series in info.lines.items():
                axes[0].plot(info.k, series["acceptance"], "o-", label=name)
                axes[1].plot(info.k, series["mse"], "o-", label=name)
            for ax, what in zip(axes, ("acceptance rate (higher is better)", "MSE (lower is better)"), strict=True):
                ax.set_xlabel("K (draft patches per round)")
                ax.set_ylabel(what)
                ax.set_xticks(info.k)
                ax.grid(alpha=0.3)
            axes[0].legend(fontsize=7)
            fig.suptitle(info.title, fontsize=10)
            return save(fig, path)
        fig, ax = plt.subplots(figsize=(6.5, 4.8))
        x, y, opt = np.asarray(info.x), np.asarray(info.y), np.asarray(info.optimal)
        ax.scatter(x[~opt], y[~opt], s=18, color="0.7", label="dominated")
        order = np.argsort(x[opt])
        ax.plot(x[opt][order], y[opt][order], "o-", color="C3", ms=6, label="Pareto-optimal")
        if info.target_mse is not None:
            ax.axvline(info.target_mse, color="k", ls="--", lw=0.8, label=f"target-only MSE {number(info.target_mse)}")
        ax.set_xlabel("MSE (lower is better)")
        ax.set_ylabel("acceptance rate (higher is better)")
        ax.set_title(info.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        save(fig, path)

    def plotly(self, info: Any) -> Any:
        import plotly.graph_objects as go

        if isinstance(info, HeatmapInfo):
            return HeatmapFigure().plotly(info)
        if isinstance(info, ScatterInfo):
            return ScatterFigure().plotly(info)
        if isinstance(info, KEffectInfo):
            from plotly.subplots import make_subplots

            fig = make_subplots(rows=1, cols=2, subplot_titles=("acceptance rate", "MSE"))
            for i, (name, series) in enumerate(info.lines.items()):
                for col, key in ((1, "acceptance"), (2, "mse")):
                    fig.add_trace(go.Scatter(x=info.k, y=series[key], mode="lines+markers", name=name, legendgroup=name,
                                             showlegend=col == 1, line=dict(color=f"hsl({i * 67 % 360},60%,45%)")), row=1, col=col)  # fmt: skip
            fig.update_layout(title=info.title, height=380)
            fig.update_xaxes(title_text="K")
            return fig
        opt = np.asarray(info.optimal)
        x, y, text = np.asarray(info.x), np.asarray(info.y), np.asarray(info.text, dtype=object)
        fig = go.Figure()
        fig.add_trace(go.Scatter(x=x[~opt], y=y[~opt], mode="markers", name="dominated", marker=dict(color="#aaa"),
                                 text=text[~opt], hovertemplate="%{text}<extra></extra>"))  # fmt: skip
        order = np.argsort(x[opt])
        fig.add_trace(go.Scatter(x=x[opt][order], y=y[opt][order], mode="lines+markers", name="Pareto-optimal",
                                 text=text[opt][order], hovertemplate="%{text}<extra></extra>"))  # fmt: skip
        if info.target_mse is not None:
            fig.add_vline(x=info.target_mse, line_dash="dash", annotation_text="target-only MSE")
        fig.update_layout(title=info.title, xaxis_title="MSE (lower is better)", yaxis_title="acceptance rate", height=420)
        return fig

