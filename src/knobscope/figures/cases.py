"""``illustrative_cases.png``: configurations Pareto-optimal on one workload and dominated on
another (seed 001), each beside the configuration that dominates it there: per objective, both
values as a share of the larger one (objectives of different units share one axis), the values
written on the bars."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from knobscope.figures.base import Figure, FigureContext, Info, number, plt, save

__all__ = ["CasesFigure", "CasesInfo"]


@dataclass(frozen=True)
class CasePanel:
    title: str
    columns: list[str]
    values: list[float]
    dominator: list[float]


@dataclass(frozen=True)
class CasesInfo(Info):
    panels: tuple[CasePanel, ...]


class CasesFigure(Figure):
    name = "cases"

    def infos(self, ctx: FigureContext, *, limit: int = 3) -> list[CasesInfo]:
        comparison = ctx.analysis.comparison if ctx.analysis else None
        cases = comparison.workload_dependent[:limit] if comparison else []
        panels = []
        for case in cases:
            for w, cost in case["cost"].items():
                config = ", ".join(f"{k}={v}" for k, v in case["config"].items())
                noise = {True: "", False: " (within noise)", None: ""}[case.get("beyond_noise")]
                cols = list(cost["values"])
                panels.append(CasePanel(f"{config}\noptimal for {', '.join(case['optimal_on'])}; suboptimal for {w}{noise}",
                                        cols, [cost["values"][c] for c in cols], [cost["dominator_values"][c] for c in cols]))  # fmt: skip
        if not panels:
            return []
        return [CasesInfo(file="illustrative_cases", title="Configurations optimal on one workload, dominated on another",
                          section="comparison", panels=tuple(panels))]  # fmt: skip

    def png(self, info: CasesInfo, path: Path) -> None:
        fig, axes = plt.subplots(1, len(info.panels), figsize=(4.2 * len(info.panels), 3.8), squeeze=False)
        for ax, p in zip(axes[0], info.panels):
            xs = np.arange(len(p.columns))
            mine, theirs = _scaled(p)
            for x, h, v in zip(xs - 0.2, mine, p.values):
                ax.text(x, h, number(v), ha="center", va="bottom", fontsize=6)
            for x, h, v in zip(xs + 0.2, theirs, p.dominator):
                ax.text(x, h, number(v), ha="center", va="bottom", fontsize=6)
            ax.bar(xs - 0.2, mine, 0.4, label="this config", color="tab:orange")
            ax.bar(xs + 0.2, theirs, 0.4, label="dominating config", color="tab:blue")
            ax.set_xticks(xs, p.columns, fontsize=7)
            ax.set_ylim(0, 1.15)
            ax.set_ylabel("share of the larger of the two (values on the bars)", fontsize=7)
            ax.set_title(p.title, fontsize=8)
            ax.legend(fontsize=7, loc="lower right")
            ax.grid(axis="y", alpha=0.3)
        save(fig, path)

    def plotly(self, info: CasesInfo) -> Any:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        fig = make_subplots(rows=1, cols=len(info.panels), subplot_titles=[p.title.replace("\n", "<br>") for p in info.panels])
        for i, p in enumerate(info.panels):
            mine, theirs = _scaled(p)
            fig.add_trace(go.Bar(x=p.columns, y=mine, text=[number(v) for v in p.values], name="this config", marker_color="#ff7f0e",
                                 showlegend=i == 0), row=1, col=i + 1)  # fmt: skip
            fig.add_trace(go.Bar(x=p.columns, y=theirs, text=[number(v) for v in p.dominator], name="dominating config",
                                 marker_color="#1f77b4", showlegend=i == 0), row=1, col=i + 1)  # fmt: skip
        fig.update_layout(title=info.title, height=420, barmode="group", yaxis_title="share of the larger of the two")
        return fig


def _scaled(panel: CasePanel) -> tuple[list[float], list[float]]:
    """Each objective's two values over the larger of them: a latency in ms and an accuracy of
    0.9 share one axis; the raw values are written on the bars."""
    mine, theirs = [], []
    for a, b in zip(panel.values, panel.dominator):
        top = max(abs(a), abs(b)) or 1.0
        mine.append(abs(a) / top)
        theirs.append(abs(b) / top)
    return mine, theirs
