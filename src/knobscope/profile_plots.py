"""Seed 002's stacked-bar latency figures for the profiling presets (300 DPI PNG).

Both layouts aggregate the run's per-sample records (a stage missing from a sample, such as
decode when the first token was EOS, counts as 0 there):

``phases`` (Exp1-3, 5): prefill and decode subplots. Prefill: mean time to first token per
sample; decode: time per generated token (summed decode time over summed decode steps, so an
early EOS does not blur the comparison). Each bar stacks attention, feed-forward (MoE) and the
rest of the phase (embedding, norms, LM head, sampling) when the run timed those modules
(``breakdown``). Another knob that varies (``block_selection``) gets a row of subplots per
value. ``stacked_log`` (Exp4): tokenize + prefill + decode + other per value on a log scale,
as the seed draws output-token scaling. Error bars: the std over samples.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from knobscope.plots import FIGURE_DPI, plt

__all__ = ["profile_figure", "flops_figure", "phase_bars"]

_PARTS = (("attention", "#4C72B0"), ("ffn", "#DD8452"))
_REST = "#8C8C8C"


def _col(group: pd.DataFrame, name: str) -> pd.Series:
    return group[name].fillna(0.0).astype(float) if name in group.columns else pd.Series(0.0, index=group.index)


def phase_bars(samples: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per configuration: prefill and per-token decode time, split into attention / ffn / rest."""
    rows = []
    for key, group in samples.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        steps = (_col(group, "tokens_out") - 1).clip(lower=0)
        row: dict[str, Any] = dict(zip(by, key))
        row["prefill"] = _col(group, "prefill_ms").mean()
        row["prefill_std"] = _col(group, "prefill_ms").std(ddof=1) if len(group) > 1 else 0.0
        per_token = _col(group, "decode_ms")[steps > 0] / steps[steps > 0]
        row["decode"] = _col(group, "decode_ms").sum() / steps.sum() if steps.sum() else 0.0
        row["decode_std"] = per_token.std(ddof=1) if len(per_token) > 1 else 0.0
        for part, _ in _PARTS:
            row[f"prefill_{part}"] = _col(group, f"prefill_{part}_ms").mean()
            row[f"decode_{part}"] = _col(group, f"decode_{part}_ms").sum() / steps.sum() if steps.sum() else 0.0
        for stage in ("tokenize", "decode", "other", "total"):
            row[f"{stage}_per_sample"] = _col(group, f"{stage}_ms").mean()
        row["total_std"] = _col(group, "total_ms").std(ddof=1) if len(group) > 1 else 0.0
        rows.append(row)
    return pd.DataFrame(rows)


def _phase_panel(ax: Any, bars: pd.DataFrame, knob: str, phase: str) -> None:
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for part, colour in _PARTS:
        heights = bars[f"{phase}_{part}"].to_numpy(dtype=float)
        if heights.any():
            ax.bar(x, heights, bottom=bottom, color=colour, label=part)
            bottom += heights
    total = bars[phase].to_numpy(dtype=float)
    split = bottom.any()
    ax.bar(x, np.clip(total - bottom, 0, None), bottom=bottom, color=_REST if split else "#55A868",
           label="rest of phase" if split else phase)  # fmt: skip
    ax.errorbar(x, total, yerr=bars[f"{phase}_std"].fillna(0).to_numpy(), fmt="none", ecolor="black", capsize=2, lw=0.8)
    many = len(bars) > 12
    ax.set_xticks(x, [str(v) for v in bars[knob]], rotation=45 if many else 0, fontsize=7 if many else 9)
    ax.set_xlabel(knob)
    ax.set_ylabel("prefill time [ms]" if phase == "prefill" else "decode time per token [ms]")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def profile_figure(samples: pd.DataFrame, knob: str, layout: str, path: Path, title: str) -> Path:
    """Draw a preset's figure from the run's per-sample records; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    from knobscope.workloads.lm import LMWorkload

    others = [c for c in LMWorkload.knobs if c != knob and c in samples.columns and samples[c].nunique() > 1]
    bars = phase_bars(samples, others + [knob])
    groups = list(bars.groupby(others, sort=True)) if others else [((), bars)]
    if layout == "phases":
        count = bars[knob].nunique()
        fig, axes = plt.subplots(len(groups), 2, figsize=(max(10, count), 3.6 * len(groups) + 0.8), squeeze=False)
        for (key, group), row_axes in zip(groups, axes):
            key = key if isinstance(key, tuple) else (key,)
            where = ", ".join(f"{k} = {v}" for k, v in zip(others, key))
            for ax, phase in zip(row_axes, ("prefill", "decode")):
                _phase_panel(ax, group.sort_values(knob), knob, phase)
                name = "Prefill (time to first token)" if phase == "prefill" else "Decode (per generated token)"
                ax.set_title(f"{name}{f' | {where}' if where else ''}", fontsize=10)
    else:
        fig, axes = plt.subplots(len(groups), 1, figsize=(8, 4.4 * len(groups) + 0.6), squeeze=False)
        for (key, group), (ax,) in zip(groups, axes):
            group = group.sort_values(knob)
            x = np.arange(len(group))
            bottom = np.zeros(len(group))
            for stage, colour in (("tokenize", "#937860"), ("prefill", "#4C72B0"), ("decode", "#DD8452"), ("other", _REST)):
                heights = group[stage if stage == "prefill" else f"{stage}_per_sample"].to_numpy(dtype=float)
                ax.bar(x, heights, bottom=bottom, color=colour, label=stage)
                bottom += heights
            ax.errorbar(x, group["total_per_sample"], yerr=group["total_std"].fillna(0), fmt="none", ecolor="black",
                        capsize=2, lw=0.8)  # fmt: skip
            ax.set_yscale("log")
            ax.set_xticks(x, [str(v) for v in group[knob]])
            ax.set_xlabel(knob)
            ax.set_ylabel("time per sample [ms] (log scale)")
            ax.grid(axis="y", alpha=0.3, which="both")
            ax.legend(fontsize=8)
            if others:
                key = key if isinstance(key, tuple) else (key,)
                ax.set_title(", ".join(f"{k} = {v}" for k, v in zip(others, key)), fontsize=10)
    fig.suptitle(textwrap.fill(title, 100), fontsize=11)
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
