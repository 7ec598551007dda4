"""Figures: one module per figure, one registry, each drawn as a 300 DPI PNG and for the report.

=============  =========================================================================  ==========
registry name  files (under ``DIR/figures/``)                                             report
=============  =========================================================================  ==========
``pareto``     ``pareto_<workload>.png``: objectives with 95% intervals, frontier, band    frontier
``coupling``   ``coupling_<knob>.png``: seed 001's frontiers with one knob fixed           coupling
``effects``    ``effects_<metric>.png``: each knob's main effect                           effects
``heatmap``    ``heatmap_<metric>_<knob>_<knob>.png``: a metric over two knobs             effects
``scatter``    ``scatter_<x>_vs_<y>.png``: any metric against any metric (``--xy``)       effects
``breakdown``  ``latency_breakdown_<knob>.png``: stacked stage latencies                  breakdown
``policies``   ``policies.png``: best quality per latency budget, single vs multi-knob    policies
``cases``      ``illustrative_cases.png``: optimal on one workload, dominated on another   comparison
``profile``    ``expN_<name>.png``: seed 002's stacked bars (``knobscope profile``)        —
``flops``      ``expN_<name>_ratios.png``: seed 002's FLOPs scaling                        —
=============  =========================================================================  ==========

A new figure is a :class:`~knobscope.figures.base.Figure` subclass in its own module and one
``FIGURES.add`` line here; the registry loads modules on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from knobscope.figures.base import FIGURE_DPI, Figure, FigureContext, Info
from knobscope.registry import Registry

__all__ = ["FIGURES", "Figure", "FigureContext", "Info", "FIGURE_DPI", "make_figures", "figure"]

FIGURES: Registry[Any] = Registry("figure")
for _name, _target in (
    ("pareto", "knobscope.figures.pareto:ParetoFigure"),
    ("coupling", "knobscope.figures.coupling:CouplingFigure"),
    ("effects", "knobscope.figures.effects:EffectsFigure"),
    ("heatmap", "knobscope.figures.heatmap:HeatmapFigure"),
    ("scatter", "knobscope.figures.scatter:ScatterFigure"),
    ("breakdown", "knobscope.figures.breakdown:BreakdownFigure"),
    ("policies", "knobscope.figures.policies:PolicyFigure"),
    ("cases", "knobscope.figures.cases:CasesFigure"),
    ("speculative", "knobscope.figures.speculative:SpeculativeFigure"),
    ("profile", "knobscope.figures.profile:ProfileFigure"),
    ("flops", "knobscope.figures.profile:FlopsFigure"),
):
    FIGURES.add(_name, _target)


def figure(name: str) -> Figure:
    """An instance of the registered figure ``name`` (unknown names raise with the valid ones)."""
    return FIGURES.load(name)()


def make_figures(ctx: FigureContext, *, out_dir: Path | None = None, names: Sequence[str] | None = None) -> list[Path]:
    """Write the PNG of every figure (or of ``names``) the run supports; returns the paths."""
    out = Path(out_dir) if out_dir else ctx.run.run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names or FIGURES.in_order():
        fig = figure(name)
        for info in fig.infos(ctx):
            path = out / f"{info.file}.png"
            fig.png(info, path)
            paths.append(path)
    return paths
