"""Figures (matplotlib, 300 DPI PNG under ``DIR/figures/``). Plotting only reads results.

* ``pareto_<workload>.png``: the first two objectives, points coloured by a knob, the frontier drawn.
* ``coupling_<knob>.png``: seed 001's coupling proof, one subplot per fixed value of the knob.
* ``latency_breakdown_<knob>.png``: seed 002's stacked stage latencies per knob value.
* ``heatmap_<metric>_<knob>_<knob>.png``: a metric's mean over two knobs (seed 003).
* ``effects_<metric>.png``: each knob's main effect (mean and std per value).
* ``scatter_<x>_vs_<y>.png``: any metric against any metric (e.g. acceptance vs MSE).
* ``illustrative_cases.png``: configurations optimal on one workload, dominated on another.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from knobscope.analysis.objectives import Objective, direction_of  # noqa: E402
from knobscope.analysis.pareto import pareto_mask  # noqa: E402
from knobscope.errors import AnalysisError  # noqa: E402
from knobscope.results import RunResults  # noqa: E402

__all__ = ["make_figures", "stage_columns", "axis_label", "frontier_points", "breakdown_means", "FIGURE_DPI"]

FIGURE_DPI = 300
_STATUS_DONE = "done"


def axis_label(column: str, metrics: Mapping[str, Mapping[str, Any]]) -> str:
    direction, unit = direction_of(column, metrics)
    arrow = {"min": " (lower is better)", "max": " (higher is better)"}.get(direction or "", "")
    return f"{column}{f' [{unit}]' if unit else ''}{arrow}"


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


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def _colours(values: Sequence[Any]) -> dict[Any, Any]:
    cmap = plt.get_cmap("viridis")
    n = max(len(values) - 1, 1)
    return {v: cmap(i / n) for i, v in enumerate(values)}


def frontier_points(rows: pd.DataFrame, x: Objective, y: Objective) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D frontier of ``rows`` over ``x`` and ``y``, sorted along ``x`` from best to worst."""
    pts = rows[[x.column, y.column]].to_numpy(dtype=float)
    if len(pts) == 0:
        return np.zeros(0), np.zeros(0)
    front = pts[pareto_mask(pts, [x.maximise, y.maximise])]
    front = front[np.argsort(front[:, 0] * (-1 if x.maximise else 1))]
    return front[:, 0], front[:, 1]


def breakdown_means(table: pd.DataFrame, knob: str, values: Sequence[Any], base: Mapping[str, Any] | None) -> tuple[pd.DataFrame, list[str], str]:
    """Mean top-level stage latencies per value of ``knob``: ``(means, stages, note)``.

    Uses the configurations with the other knobs at ``base`` when they cover two or more
    values (seed 002's one-knob sweeps), else the mean over the other knobs (said in ``note``).
    """
    stages = stage_columns(table)
    if not stages:
        return pd.DataFrame(), [], ""
    rows = _done(table, [f"{s}_ms_mean" for s in stages])
    note = "mean over the other knobs"
    others = [k for k in (base or {}) if k != knob]
    if base and others:
        single = rows[np.logical_and.reduce([rows[k] == base[k] for k in others])]
        if single[knob].nunique() >= 2:
            rows, note = single, "other knobs at " + ", ".join(f"{k}={base[k]}" for k in others)
    means = rows.groupby(knob)[[f"{s}_ms_mean" for s in stages]].mean()
    return means.reindex([v for v in values if v in means.index]), stages, note


def _frontier_line(ax: plt.Axes, rows: pd.DataFrame, x: Objective, y: Objective, **style: Any) -> None:
    fx, fy = frontier_points(rows, x, y)
    if len(fx) == 0:
        return
    ax.step(fx, fy, where="post", **style)
    ax.scatter(fx, fy, s=70, facecolors="none", edgecolors=style.get("color", "black"), linewidths=1.5, zorder=4)


def _done(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    rows = table[table["status"] == _STATUS_DONE] if "status" in table.columns else table
    return rows.dropna(subset=list(columns))


def pareto_figure(table: pd.DataFrame, objectives: Sequence[Objective], color_by: str, values: Sequence[Any],
                  metrics: Mapping[str, Any], title: str, path: Path) -> Path:  # fmt: skip
    x, y = objectives[0], objectives[1]
    rows = _done(table, [x.column, y.column])
    fig, ax = plt.subplots(figsize=(7, 5))
    colours = _colours(values)
    for v in values:
        part = rows[rows[color_by] == v]
        if len(part):
            ax.scatter(part[x.column], part[y.column], color=colours[v], s=28, alpha=0.85, label=f"{color_by}={v}")
    all_values = rows[[o.column for o in objectives]].to_numpy(dtype=float)
    if len(objectives) > 2 and len(rows):  # frontier in all objectives, seen in the first two
        mask = pareto_mask(all_values, [o.maximise for o in objectives])
        ax.scatter(rows.loc[mask, x.column], rows.loc[mask, y.column], s=70, facecolors="none", edgecolors="black",
                   linewidths=1.5, label=f"Pareto-optimal ({len(objectives)} objectives)")  # fmt: skip
    else:
        _frontier_line(ax, rows, x, y, color="black", linewidth=1.5, label="Pareto frontier")
    ax.set_xlabel(axis_label(x.column, metrics))
    ax.set_ylabel(axis_label(y.column, metrics))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def coupling_figure(table: pd.DataFrame, objectives: Sequence[Objective], knob: str, values: Sequence[Any],
                    metrics: Mapping[str, Any], title: str, path: Path) -> Path:  # fmt: skip
    x, y = objectives[0], objectives[1]
    rows = _done(table, [x.column, y.column])
    present = [v for v in values if (rows[knob] == v).any()]
    cols = min(4, max(len(present), 1))
    nrows = int(np.ceil(len(present) / cols)) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(3.6 * cols, 3.0 * nrows), sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[len(present):]:
        ax.set_visible(False)
    for ax, v in zip(axes.flat, present):
        part = rows[rows[knob] == v]
        ax.scatter(rows[x.column], rows[y.column], color="0.85", s=12)
        ax.scatter(part[x.column], part[y.column], color="tab:blue", s=18)
        _frontier_line(ax, part, x, y, color="tab:red", linewidth=1.5)
        ax.set_title(f"{knob} = {v}", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel(axis_label(x.column, metrics), fontsize=8)
    for ax in axes[:, 0]:
        ax.set_ylabel(axis_label(y.column, metrics), fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def breakdown_figure(table: pd.DataFrame, knob: str, values: Sequence[Any], base: Mapping[str, Any] | None,
                     title: str, path: Path) -> Path | None:  # fmt: skip
    means, stages, note = breakdown_means(table, knob, values, base)
    if means.empty:
        return None
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(means) + 3), 4.5))
    bottom = np.zeros(len(means))
    labels = [str(v) for v in means.index]
    palette = plt.get_cmap("tab10")
    for i, s in enumerate(stages):
        heights = means[f"{s}_ms_mean"].to_numpy(dtype=float)
        ax.bar(labels, heights, bottom=bottom, label=s, color=palette(i % 10))
        bottom += heights
    ax.set_xlabel(knob)
    ax.set_ylabel("latency per sample [ms] (mean)")
    ax.set_title(f"{title}\n({note})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def heatmap_figure(table: pd.DataFrame, column: str, knob_x: str, knob_y: str, values: Mapping[str, Sequence[Any]],
                   metrics: Mapping[str, Any], title: str, path: Path) -> Path:  # fmt: skip
    rows = _done(table, [column])
    grid = rows.pivot_table(index=knob_y, columns=knob_x, values=column, aggfunc="mean")
    grid = grid.reindex(index=[v for v in values[knob_y] if v in grid.index], columns=[v for v in values[knob_x] if v in grid.columns])
    fig, ax = plt.subplots(figsize=(1.0 * grid.shape[1] + 3, 0.7 * grid.shape[0] + 2))
    data = grid.to_numpy(dtype=float)
    direction, _ = direction_of(column, metrics)
    im = ax.imshow(data, cmap="viridis_r" if direction == "min" else "viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(v) for v in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [str(v) for v in grid.index])
    finite = data[np.isfinite(data)]
    mid = (finite.min() + finite.max()) / 2 if finite.size else 0
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            if np.isfinite(data[i, j]):
                ax.text(j, i, f"{data[i, j]:.3g}", ha="center", va="center", fontsize=7,
                        color="white" if (data[i, j] < mid) != (direction == "min") else "black")  # fmt: skip
    ax.set_xlabel(knob_x)
    ax.set_ylabel(knob_y)
    fig.colorbar(im, ax=ax, label=axis_label(column, metrics))
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def effects_figure(table: pd.DataFrame, column: str, knobs: Sequence[str], values: Mapping[str, Sequence[Any]],
                   metrics: Mapping[str, Any], title: str, path: Path) -> Path:  # fmt: skip
    rows = _done(table, [column])
    fig, axes = plt.subplots(1, len(knobs), figsize=(3.4 * len(knobs), 3.2), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], knobs):
        stats = rows.groupby(k)[column].agg(["mean", "std"]).reindex([v for v in values[k] if (rows[k] == v).any()])
        xs = np.arange(len(stats))
        ax.errorbar(xs, stats["mean"], yerr=stats["std"].fillna(0), marker="o", capsize=3)
        ax.set_xticks(xs, [str(v) for v in stats.index])
        ax.set_xlabel(k)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(axis_label(column, metrics))
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def scatter_figure(table: pd.DataFrame, x: str, y: str, color_by: str, values: Sequence[Any],
                   metrics: Mapping[str, Any], title: str, path: Path) -> Path:  # fmt: skip
    for c in (x, y):
        if c not in table.columns:
            raise AnalysisError(f"--xy names {c!r}, which is not a result column")
    rows = _done(table, [x, y])
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    colours = _colours(values)
    for v in values:
        part = rows[rows[color_by] == v]
        if len(part):
            ax.scatter(part[x], part[y], color=colours[v], s=28, label=f"{color_by}={v}")
    ax.set_xlabel(axis_label(x, metrics))
    ax.set_ylabel(axis_label(y, metrics))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, path)


def cases_figure(comparison: Mapping[str, Any], path: Path, *, limit: int = 3) -> Path | None:
    cases = comparison.get("workload_dependent", [])[:limit]
    if not cases:
        return None
    panels = [(c, w) for c in cases for w in c["cost"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, (case, w) in zip(axes[0], panels):
        cost = case["cost"][w]
        cols = list(cost["values"])
        xs = np.arange(len(cols))
        ax.bar(xs - 0.2, [cost["values"][c] for c in cols], 0.4, label="this config", color="tab:orange")
        ax.bar(xs + 0.2, [cost["dominator_values"][c] for c in cols], 0.4, label="dominating config", color="tab:blue")
        ax.set_xticks(xs, cols, fontsize=7)
        config = ", ".join(f"{k}={v}" for k, v in case["config"].items())
        ax.set_title(f"{config}\noptimal for {', '.join(case['optimal_on'])}; suboptimal for {w}", fontsize=8)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(text))


def make_figures(
    run: RunResults,
    analysis: Mapping[str, Any],
    *,
    out_dir: Path | None = None,
    color_by: str | None = None,
    heatmaps: Sequence[tuple[str, str, str]] = (),
    xy: Sequence[tuple[str, str]] = (),
    compare: Sequence[RunResults] = (),
) -> list[Path]:
    """Write every figure the run supports; returns the paths written."""
    out = Path(out_dir) if out_dir else run.run_dir / "figures"
    out.mkdir(parents=True, exist_ok=True)
    knobs = run.knobs
    values = {k.name: list(k.values) for k in run.spec.space.knobs}
    objectives = [Objective(o["column"], o["direction"], o.get("unit", "")) for o in analysis["objectives"]]
    color_by = color_by or (run.spec.analysis or {}).get("color_by") or _strongest_knob(analysis, knobs)
    if color_by not in knobs:
        raise AnalysisError(f"--color-by {color_by!r} is not a knob; knobs: {', '.join(knobs)}")
    paths: list[Path | None] = []
    name = run.label
    if len(objectives) >= 2:
        paths.append(pareto_figure(run.table, objectives, color_by, values[color_by], run.metrics,
                                   f"{name}: latency-quality frontier", out / f"pareto_{_slug(name)}.png"))  # fmt: skip
        for other in compare:
            other_objs = [Objective(o["column"], o["direction"], o.get("unit", ""))
                          for o in analysis["comparison"]["objectives"].get(other.label, [])]  # fmt: skip
            if len(other_objs) >= 2:
                paths.append(pareto_figure(other.table, other_objs, color_by, values[color_by], other.metrics,
                                           f"{other.label}: latency-quality frontier", out / f"pareto_{_slug(other.label)}.png"))  # fmt: skip
        for knob in analysis["coupling"]["knobs"]:
            paths.append(coupling_figure(run.table, objectives, knob, values[knob], run.metrics,
                                         f"{name}: frontier over the other knobs with {knob} fixed", out / f"coupling_{_slug(knob)}.png"))  # fmt: skip
    base = analysis["policies"].get("base")
    for knob in knobs:
        paths.append(breakdown_figure(run.table, knob, values[knob], base, f"{name}: latency by stage vs {knob}",
                                      out / f"latency_breakdown_{_slug(knob)}.png"))  # fmt: skip
    varying = [k for k in knobs if len(values[k]) > 1]
    if not heatmaps and len(varying) >= 2:
        strongest = analysis["effects"].get(objectives[-1].column, {}).get("strongest") or []
        pair = strongest[0]["knobs"] if strongest else varying[:2]
        heatmaps = [(o.column, pair[0], pair[1]) for o in objectives]
    for column, kx, ky in heatmaps:
        for k in (kx, ky):
            if k not in knobs:
                raise AnalysisError(f"--heatmap names {k!r}, which is not a knob; knobs: {', '.join(knobs)}")
        if column not in run.table.columns:
            raise AnalysisError(f"--heatmap names {column!r}, which is not a result column")
        paths.append(heatmap_figure(run.table, column, kx, ky, values, run.metrics, f"{name}: {column} by {kx} and {ky}",
                                    out / f"heatmap_{_slug(column)}_{_slug(kx)}_{_slug(ky)}.png"))  # fmt: skip
    if varying:
        for o in objectives:
            paths.append(effects_figure(run.table, o.column, varying, values, run.metrics,
                                        f"{name}: main effect of each knob on {o.column}", out / f"effects_{_slug(o.column)}.png"))  # fmt: skip
    for x, y in xy:
        paths.append(scatter_figure(run.table, x, y, color_by, values[color_by], run.metrics, f"{name}: {y} vs {x}",
                                    out / f"scatter_{_slug(x)}_vs_{_slug(y)}.png"))  # fmt: skip
    if analysis.get("comparison"):
        paths.append(cases_figure(analysis["comparison"], out / "illustrative_cases.png"))
    return [p for p in paths if p is not None]


def _strongest_knob(analysis: Mapping[str, Any], knobs: Sequence[str]) -> str:
    """The knob with the largest main effect on the last objective (usually quality)."""
    objectives = analysis["objectives"]
    effects = analysis["effects"].get(objectives[-1]["column"], {}).get("main", {}) if objectives else {}
    ranked = sorted(knobs, key=lambda k: -((effects.get(k) or {}).get("share") or 0.0))
    return ranked[0] if ranked else knobs[0]
