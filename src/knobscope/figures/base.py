"""The figure interface: compute a figure's data once, draw it twice.

A :class:`Figure` turns a :class:`FigureContext` (a loaded run and its analysis) into ``info``
objects — the numbers the figure shows, one per image — and draws each info as a 300 DPI
matplotlib PNG and as an interactive plotly figure for the report. Both drawings read the same
info, so the PNG and the report cannot show different things (as Optuna's visualization does
with ``_get_pareto_front_info``). Adding a figure is one module under ``knobscope/figures/``
and one line in its registry. Plotting only reads results.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from knobscope.analysis.objectives import Objective, direction_of  # noqa: E402
from knobscope.analysis.pareto import pareto_mask  # noqa: E402
from knobscope.results import RunResults  # noqa: E402

if TYPE_CHECKING:
    from knobscope.analysis.results import Analysis

__all__ = ["Figure", "FigureContext", "Info", "FIGURE_DPI", "plt", "axis_label", "number", "interval_text", "done_rows", "colours",
           "frontier_points", "stage_columns", "slug", "save", "interval_arrays"]  # fmt: skip

FIGURE_DPI = 300


@dataclass(frozen=True)
class Info:
    """What one image shows. ``file``: the PNG's name without suffix; ``section``: where the
    report puts it."""

    file: str
    title: str
    section: str


@dataclass(frozen=True)
class FigureContext:
    """A run, its analysis (None for figures that need none, e.g. a profile preset's) and the options."""

    run: RunResults
    analysis: Analysis | None
    compare: Sequence[RunResults] = ()
    color_by: str | None = None
    heatmaps: Sequence[tuple[str, str, str]] = ()
    xy: Sequence[tuple[str, str]] = ()
    options: Mapping[str, Any] = field(default_factory=dict)  # figure-specific (e.g. a profile preset)

    @property
    def objectives(self) -> list[Objective]:
        return list(self.analysis.objectives) if self.analysis else []

    @property
    def values(self) -> dict[str, list[Any]]:
        return {k.name: list(k.values) for k in self.run.spec.space.knobs}

    @property
    def knobs(self) -> list[str]:
        return self.run.knobs

    @property
    def colour_knob(self) -> str:
        """The knob that colours points: the option, the spec's ``analysis.color_by``, else the
        knob with the largest main effect on the last objective (usually quality)."""
        chosen = self.color_by or (self.run.spec.analysis or {}).get("color_by")
        if chosen:
            return chosen
        objectives = self.objectives
        effects = self.analysis.effects.get(objectives[-1].column, {}).get("main", {}) if objectives and self.analysis else {}
        ranked = sorted(self.knobs, key=lambda k: -((effects.get(k) or {}).get("share") or 0.0))
        return ranked[0] if ranked else self.knobs[0]


class Figure(ABC):
    """Base class of every figure: data once (:meth:`infos`), drawn twice (:meth:`png`, :meth:`plotly`)."""

    name: ClassVar[str]

    @abstractmethod
    def infos(self, ctx: FigureContext) -> list[Any]:
        """One info per image this run supports (empty: the figure does not apply)."""

    @abstractmethod
    def png(self, info: Any, path: Path) -> None:
        """Draw ``info`` with matplotlib into ``path`` (300 DPI)."""

    @abstractmethod
    def plotly(self, info: Any) -> Any:
        """Draw ``info`` as a ``plotly.graph_objects.Figure`` (hover shows configurations)."""


# -- helpers shared by the figures ------------------------------------------------------------


def axis_label(column: str, metrics: Mapping[str, Mapping[str, Any]]) -> str:
    direction, unit = direction_of(column, metrics)
    arrow = {"min": " (lower is better)", "max": " (higher is better)"}.get(direction or "", "")
    return f"{column}{f' [{unit}]' if unit else ''}{arrow}"


def number(value: Any) -> str:
    """A value for a person: 3 significant digits, never scientific notation below 1e9."""
    if value is None:
        return "–"
    v = float(value)
    if not np.isfinite(v):
        return "∞" if v > 0 else ("-∞" if v < 0 else "–")
    if v == 0:
        return "0"
    digits = max(0, 2 - int(np.floor(np.log10(abs(v)))))
    if abs(v) < 1e-4:
        return f"{v:.2g}"
    return f"{v:,.{digits}f}"


def interval_text(ci: Sequence[Any] | None, *, bracket: str = "[") -> str:
    """`` [lo, hi]`` of a stored interval (None: unbounded on that side); ``bracket`` lets rich escape it."""
    if not ci or (ci[0] is None and ci[1] is None):
        return ""
    lo = "-∞" if ci[0] is None else number(ci[0])
    hi = "∞" if ci[1] is None else number(ci[1])
    return f" {bracket}{lo}, {hi}]"


def done_rows(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    rows = table[table["status"] == "done"] if "status" in table.columns else table
    return rows.dropna(subset=[c for c in columns if c in rows.columns])


def colours(values: Sequence[Any]) -> dict[Any, Any]:
    cmap = plt.get_cmap("viridis")
    n = max(len(values) - 1, 1)
    return {v: cmap(i / n) for i, v in enumerate(values)}


def hex_colour(rgba: Any) -> str:
    return matplotlib.colors.to_hex(rgba)


def frontier_points(rows: pd.DataFrame, x: Objective, y: Objective) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D frontier of ``rows`` over ``x`` and ``y``, sorted along ``x`` from best to worst."""
    pts = rows[[x.column, y.column]].to_numpy(dtype=float)
    if len(pts) == 0:
        return np.zeros(0), np.zeros(0)
    front = pts[pareto_mask(pts, [x.maximise, y.maximise])]
    front = front[np.argsort(front[:, 0] * (-1 if x.maximise else 1))]
    return front[:, 0], front[:, 1]


def interval_arrays(rows: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(minus, plus)`` error-bar lengths from ``{column}_ci_low`` / ``_ci_high`` (None if absent).
    An unbounded side is drawn to the edge of the data (NaN would hide the bar)."""
    lo_col, hi_col = f"{column}_ci_low", f"{column}_ci_high"
    if lo_col not in rows.columns or hi_col not in rows.columns:
        return None
    value = rows[column].to_numpy(dtype=float)
    lo = pd.to_numeric(rows[lo_col], errors="coerce").to_numpy(dtype=float)
    hi = pd.to_numeric(rows[hi_col], errors="coerce").to_numpy(dtype=float)
    finite_hi = hi[np.isfinite(hi)]
    edge = max(float(np.nanmax(value)), float(finite_hi.max()) if finite_hi.size else -np.inf)
    hi = np.where(np.isfinite(hi), hi, np.where(np.isnan(hi), value, edge))
    lo = np.where(np.isfinite(lo), lo, value)
    return np.clip(value - lo, 0, None), np.clip(hi - value, 0, None)


def stage_columns(table: pd.DataFrame) -> list[str]:
    """Top-level stage names whose ``{stage}_ms_mean`` columns add up (with ``other``) to the total."""
    if "stages" in table.columns and table["stages"].notna().any():
        names: list[str] = []
        for text in table["stages"].dropna():
            names.extend(s for s in str(text).split(",") if s and s not in names)
    else:  # runs stored before top-level stages were recorded
        names = [c[: -len("_ms_mean")] for c in table.columns if c.endswith("_ms_mean") and "_per_call" not in c]
        names = [n for n in names if n not in ("total", "other")]
    names = [n for n in names if f"{n}_ms_mean" in table.columns]
    if "other_ms_mean" in table.columns:
        names.append("other")
    return names


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)


def hover(rows: pd.DataFrame, knobs: Sequence[str], columns: Sequence[str]) -> list[str]:
    out = []
    for r in rows.to_dict("records"):
        parts = [f"{k}={r[k]}" for k in knobs]
        for c in columns:
            lo, hi = r.get(f"{c}_ci_low"), r.get(f"{c}_ci_high")
            ci = f" [{number(lo)}, {number(hi)}]" if lo is not None and hi is not None and not pd.isna(lo) else ""
            parts.append(f"{c}={number(r.get(c))}{ci}")
        out.append("<br>".join(parts))
    return out


@dataclass(frozen=True)
class Series:
    """Points of one colour group: values, error bars, hover texts."""

    label: str
    colour: str
    x: list[float]
    y: list[float]
    x_err: tuple[list[float], list[float]] | None = None
    y_err: tuple[list[float], list[float]] | None = None
    text: list[str] = field(default_factory=list)
