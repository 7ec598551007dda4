"""``latency_breakdown_<knob>.png``: seed 002's stacked stage latencies per knob value, with the
total's 95% interval where one configuration stands for each value."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from knobscope.figures.base import Figure, FigureContext, Info, done_rows, interval_arrays, number, plt, save, slug, stage_columns

__all__ = ["BreakdownFigure", "BreakdownInfo", "breakdown_means"]


def breakdown_means(table: pd.DataFrame, knob: str, values: Sequence[Any], base: Mapping[str, Any] | None
                    ) -> tuple[pd.DataFrame, list[str], str, pd.DataFrame | None]:  # fmt: skip
    """Mean top-level stage latencies per value of ``knob``: ``(means, stages, note, single)``.

    Uses the configurations with the other knobs at ``base`` when they cover two or more
    values (seed 002's one-knob sweeps; then ``single`` holds those rows, one per value), else
    the mean over the other knobs (said in ``note``).
    """
    stages = stage_columns(table)
    if not stages:
        return pd.DataFrame(), [], "", None
    rows = done_rows(table, [f"{s}_ms_mean" for s in stages])
    note, single = "mean over the other knobs", None
    others = [k for k in (base or {}) if k != knob]
    if base and others:
        picked = rows[np.logical_and.reduce([rows[k] == base[k] for k in others])]
        if picked[knob].nunique() >= 2:
            rows, note, single = picked, "other knobs at " + ", ".join(f"{k}={base[k]}" for k in others), picked
    means = rows.groupby(knob)[[f"{s}_ms_mean" for s in stages]].mean()
    return means.reindex([v for v in values if v in means.index]), stages, note, single


@dataclass(frozen=True)
class BreakdownInfo(Info):
    knob: str
    labels: list[str]
    stages: list[str]
    heights: dict[str, list[float]]
    note: str
    total: list[float] | None = None
    total_err: tuple[list[float], list[float]] | None = None


class BreakdownFigure(Figure):
    name = "breakdown"

    def infos(self, ctx: FigureContext) -> list[BreakdownInfo]:
        if ctx.analysis is None:
            return []
        base = ctx.analysis.policies.base
        out = []
        for knob in ctx.knobs:
            means, stages, note, single = breakdown_means(ctx.run.table, knob, ctx.values[knob], base)
            if means.empty:
                continue
            total = err = None
            if single is not None and "total_ms_mean" in single.columns:
                ordered = single.set_index(knob).reindex(means.index)
                bars = interval_arrays(ordered.reset_index(), "total_ms_mean")
                total = ordered["total_ms_mean"].astype(float).tolist()
                err = (bars[0].tolist(), bars[1].tolist()) if bars else None
            out.append(BreakdownInfo(
                file=f"latency_breakdown_{slug(knob)}", title=f"{ctx.run.label}: latency by stage vs {knob}", section="breakdown",
                knob=knob, labels=[str(v) for v in means.index], stages=stages,
                heights={s: means[f"{s}_ms_mean"].astype(float).tolist() for s in stages}, note=note, total=total, total_err=err,
            ))  # fmt: skip
        return out

    def png(self, info: BreakdownInfo, path: Path) -> None:
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(info.labels) + 3), 4.5))
        bottom = np.zeros(len(info.labels))
        palette = plt.get_cmap("tab10")
        for i, s in enumerate(info.stages):
            heights = np.asarray(info.heights[s])
            ax.bar(info.labels, heights, bottom=bottom, label=s, color=palette(i % 10))
            bottom += heights
        if info.total and info.total_err:
            ax.errorbar(info.labels, info.total, yerr=np.array(info.total_err), fmt="none", ecolor="black", capsize=3,
                        lw=0.9, label="total: 95% interval")  # fmt: skip
        ax.set_xlabel(info.knob)
        ax.set_ylabel("latency per sample [ms] (mean)")
        ax.set_title(f"{info.title}\n({info.note})", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        save(fig, path)

    def plotly(self, info: BreakdownInfo) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure()
        for s in info.stages:
            fig.add_trace(go.Bar(x=info.labels, y=info.heights[s], name=s,
                                 hovertemplate=f"{info.knob}=%{{x}}<br>{s}: %{{y:.2f}} ms<extra></extra>"))  # fmt: skip
        if info.total and info.total_err:
            fig.add_trace(go.Scatter(x=info.labels, y=info.total, mode="markers", marker=dict(color="black", size=4),
                                     name="total: 95% interval", error_y=dict(type="data", symmetric=False, array=info.total_err[1],
                                                                             arrayminus=info.total_err[0], color="black"),
                                     text=[number(t) for t in info.total], hovertemplate="total %{text} ms<extra></extra>"))  # fmt: skip
        fig.update_layout(barmode="stack", title=f"{info.title} ({info.note})", xaxis_title=info.knob,
                          yaxis_title="latency per sample [ms] (mean)", height=400)  # fmt: skip
        return fig
