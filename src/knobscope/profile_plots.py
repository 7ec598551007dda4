"""Seed 002's stacked-bar latency figures for the profiling presets (300 DPI PNG).

``phases`` layout (Exp1-3, 5): two subplots, prefill and decode, each a stacked bar per knob
value of the mean time per sample in attention, feed-forward (MoE) and the rest of the phase
(embedding, norms, LM head, sampling), when the run timed those modules (``breakdown``);
else one bar per phase. ``stacked_log`` layout (Exp4): tokenize + prefill + decode + other
per value, log scale, as the seed draws output-token scaling. Error bars: the std over samples
of the phase (or total) time.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from knobscope.plots import FIGURE_DPI, plt

__all__ = ["profile_figure", "flops_figure"]

_PARTS = (("attention", "#4C72B0"), ("ffn", "#DD8452"))
_REST = "#8C8C8C"


def _value(row: pd.Series, column: str) -> float:
    value = row.get(column, np.nan)
    return float(value) if value == value else 0.0


def _phase_panel(ax: Any, rows: pd.DataFrame, knob: str, phase: str) -> None:
    x = np.arange(len(rows))
    labels = [str(v) for v in rows[knob]]
    bottom = np.zeros(len(rows))
    total = np.array([_value(r, f"{phase}_ms_mean") for _, r in rows.iterrows()])
    for part, colour in _PARTS:
        column = f"{phase}_{part}_ms_mean"
        if column in rows.columns:
            heights = np.array([_value(r, column) for _, r in rows.iterrows()])
            ax.bar(x, heights, bottom=bottom, color=colour, label=part)
            bottom += heights
    rest_label = "rest of phase" if bottom.any() else phase
    ax.bar(x, np.clip(total - bottom, 0, None), bottom=bottom, color=_REST if bottom.any() else "#55A868", label=rest_label)
    std_col = f"{phase}_ms_std"
    if std_col in rows.columns:
        ax.errorbar(x, total, yerr=rows[std_col].fillna(0).to_numpy(), fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_xticks(x, labels, rotation=45 if len(rows) > 12 else 0, fontsize=7 if len(rows) > 12 else 9)
    ax.set_xlabel(knob)
    ax.set_ylabel(f"{phase} time per sample [ms]")
    title = {"prefill": "Prefill (time to first token)", "decode": "Decode (all generated tokens after the first)"}[phase]
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def profile_figure(table: pd.DataFrame, knob: str, layout: str, path: Path, title: str) -> Path:
    """Draw the preset's figure from the run's summary table; returns ``path``."""
    rows = table[table["status"] == "done"].sort_values(knob) if "status" in table else table.sort_values(knob)
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout == "phases":
        fig, axes = plt.subplots(1, 2, figsize=(max(10, 0.45 * len(rows) * 2), 4.5))
        for ax, phase in zip(axes, ("prefill", "decode")):
            _phase_panel(ax, rows, knob, phase)
    else:
        fig, ax = plt.subplots(figsize=(8, 4.8))
        x = np.arange(len(rows))
        bottom = np.zeros(len(rows))
        for stage, colour in (("tokenize", "#937860"), ("prefill", "#4C72B0"), ("decode", "#DD8452"), ("other", _REST)):
            column = f"{stage}_ms_mean"
            if column in rows.columns:
                heights = rows[column].fillna(0).to_numpy(dtype=float)
                ax.bar(x, heights, bottom=bottom, color=colour, label=stage)
                bottom += heights
        if "total_ms_std" in rows.columns:
            ax.errorbar(x, rows["total_ms_mean"], yerr=rows["total_ms_std"].fillna(0), fmt="none", ecolor="black", capsize=2, lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(x, [str(v) for v in rows[knob]])
        ax.set_xlabel(knob)
        ax.set_ylabel("time per sample [ms] (log scale)")
        ax.grid(axis="y", alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(textwrap.fill(title, 100), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path


def flops_figure(rows: list[dict[str, Any]], knob: str, path: Path, title: str) -> Path:
    """Seed 002 Exp5: estimated FLOPs, counted FLOPs and latencies, each relative to the first value."""
    series = [("gflops_theoretical_ratio", "FLOPs, 2 x active params"), ("gflops_total_ratio", "FLOPs, counted"),
              ("prefill_ms_mean_ratio", "prefill latency"), ("decode_per_call_ms_mean_ratio", "decode latency per token")]  # fmt: skip
    series = [(k, label) for k, label in series if all(k in r for r in rows)]
    x = np.arange(len(rows))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (key, label) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * width, [r[key] for r in rows], width, label=label)
    ax.axhline(1.0, color="black", lw=0.6)
    ax.set_xticks(x, [str(r[knob]) for r in rows])
    ax.set_xlabel(knob)
    ax.set_ylabel(f"ratio to {knob} = {rows[0][knob]}")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI)
    plt.close(fig)
    return path
