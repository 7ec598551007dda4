"""``policies.png``: the best quality reachable within each latency budget, moving every knob
(multi-knob) or one knob from the defaults (best single-knob), as seed 001 compares them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knobscope.figures.base import Figure, FigureContext, Info, plt, save

__all__ = ["PolicyFigure", "PolicyInfo"]


@dataclass(frozen=True)
class PolicyInfo(Info):
    cost: str
    quality: str
    budgets: list[float]
    multi: list[float | None]
    single: list[float | None]


class PolicyFigure(Figure):
    name = "policies"

    def infos(self, ctx: FigureContext) -> list[PolicyInfo]:
        pol = ctx.analysis.policies if ctx.analysis else None
        b = pol.budgets if pol else None
        if not b or not pol.available:  # type: ignore[union-attr]
            return []
        rows = b["rows"]
        return [PolicyInfo(file="policies", section="policies", title=f"{ctx.run.label}: best {b['quality']} within a {b['cost']} budget",
                           cost=b["cost"], quality=b["quality"], budgets=[r["budget"] for r in rows],
                           multi=[r["multi"] for r in rows], single=[r["single"] for r in rows])]  # fmt: skip

    def png(self, info: PolicyInfo, path: Path) -> None:
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        nan = lambda v: float("nan") if v is None else v  # noqa: E731
        ax.step(info.budgets, [nan(v) for v in info.multi], where="post", marker="o", label="multi-knob")
        ax.step(info.budgets, [nan(v) for v in info.single], where="post", marker="s", ls="--", label="best single-knob")
        ax.set_xlabel(f"budget: {info.cost}")
        ax.set_ylabel(info.quality)
        ax.set_title(info.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, path)

    def plotly(self, info: PolicyInfo) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure()
        fig.add_trace(go.Scatter(x=info.budgets, y=info.multi, mode="lines+markers", line=dict(shape="hv"), name="multi-knob"))
        fig.add_trace(go.Scatter(x=info.budgets, y=info.single, mode="lines+markers", line=dict(shape="hv", dash="dash"),
                                 name="best single-knob"))  # fmt: skip
        fig.update_layout(title=info.title, xaxis_title=f"budget: {info.cost}", yaxis_title=info.quality, height=380)
        return fig
