"""Seed 002's stacked-bar latency figures for the profiling presets (``expN_<name>.png``), and
Exp5's FLOPs-scaling ratios (``expN_<name>_ratios.png``).

Both layouts aggregate the run's per-sample records (a stage missing from a sample, such as
decode when the first token was EOS, counts as 0 there):

``phases`` (Exp1-3, 5): prefill and decode subplots. Prefill: mean time to first token per
sample; decode: time per generated token (summed decode time over summed decode steps, so an
early EOS does not blur the comparison). Each bar stacks attention, feed-forward (MoE) and the
rest of the phase (embedding, norms, LM head, sampling) when the run timed those modules
(``breakdown``). Another knob that varies (``block_selection``) gets a row of subplots per
value. ``vision`` (Exp1 on a vision-language model): per value, the prefill as the seed stacks
it: vision encoder + projector + LLM prefill, with the vision tokens under each bar. ``stacked_log`` (Exp4): tokenize + prefill + decode + other per value on a log scale,
as the seed draws output-token scaling. Error bars: the std over samples.

They apply when the context's ``options`` name a preset (``profile: {knob, layout, file,
title}``, and ``flops_rows`` for the ratios); ``knobscope profile`` draws them.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from knobscope.figures.base import Figure, FigureContext, Info, plt, save

__all__ = ["ProfileFigure", "FlopsFigure", "ProfileInfo", "phase_bars", "vision_bars"]

_PARTS = (("attention", "#4C72B0"), ("ffn", "#DD8452"))
_REST = "#8C8C8C"
_STACK = (("tokenize", "#937860"), ("prefill", "#4C72B0"), ("decode", "#DD8452"), ("other", _REST))
_VISION = (("vision_encoder", "#4C72B0", "Vision encoder"), ("projector", "#DD8452", "Projector"),
           ("llm_prefill", "#55A868", "LLM prefill"))  # fmt: skip


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


def vision_bars(samples: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Per configuration: the mean prefill split into vision encoder, projector and LLM prefill
    (they add up to the prefill: a projector inside the vision tower, as Qwen-VL's merger, is
    taken out of the encoder's time), and the mean vision tokens."""
    rows = []
    for key, group in samples.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        prefill, llm, projector = _col(group, "prefill_ms"), _col(group, "llm_prefill_ms"), _col(group, "projector_ms")
        rows.append({**dict(zip(by, key)), "vision_encoder": (prefill - llm - projector).mean(), "projector": projector.mean(),
                     "llm_prefill": llm.mean(), "prefill": prefill.mean(),
                     "prefill_std": prefill.std(ddof=1) if len(group) > 1 else 0.0,
                     "vision_tokens": _col(group, "vision_tokens_actual").mean()})  # fmt: skip
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class ProfileInfo(Info):
    knob: str
    layout: str  # phases | stacked_log
    others: tuple[str, ...]
    groups: tuple[tuple[str, pd.DataFrame], ...]  # (which values of the other knobs, bars)


class ProfileFigure(Figure):
    name = "profile"

    def infos(self, ctx: FigureContext) -> list[ProfileInfo]:
        opts = ctx.options.get("profile")
        samples = ctx.run.samples
        if not opts or samples is None or samples.empty:
            return []
        knob = opts["knob"]
        others = [c for c in ctx.knobs if c != knob and c in samples.columns and samples[c].nunique() > 1]
        bars = (vision_bars if opts["layout"] == "vision" else phase_bars)(samples, others + [knob])
        groups = []
        for key, group in (list(bars.groupby(others, sort=True)) if others else [((), bars)]):
            key = key if isinstance(key, tuple) else (key,)
            groups.append((", ".join(f"{k} = {v}" for k, v in zip(others, key)), group.sort_values(knob)))
        return [ProfileInfo(file=opts["file"], title=opts["title"], section="breakdown", knob=knob, layout=opts["layout"],
                            others=tuple(others), groups=tuple(groups))]  # fmt: skip

    def png(self, info: ProfileInfo, path: Path) -> None:
        if info.layout == "phases":
            count = max(len(g) for _, g in info.groups)
            fig, axes = plt.subplots(len(info.groups), 2, figsize=(max(10, count), 3.6 * len(info.groups) + 0.8), squeeze=False)
            for (where, group), row_axes in zip(info.groups, axes):
                for ax, phase in zip(row_axes, ("prefill", "decode")):
                    _phase_panel(ax, group, info.knob, phase)
                    name = "Prefill (time to first token)" if phase == "prefill" else "Decode (per generated token)"
                    ax.set_title(f"{name}{f' | {where}' if where else ''}", fontsize=10)
        elif info.layout == "vision":
            fig, axes = plt.subplots(len(info.groups), 1, figsize=(9, 4.6 * len(info.groups) + 0.6), squeeze=False)
            for (where, group), (ax,) in zip(info.groups, axes):
                _vision_panel(ax, group, info.knob)
                if where:
                    ax.set_title(where, fontsize=10)
        else:
            fig, axes = plt.subplots(len(info.groups), 1, figsize=(8, 4.4 * len(info.groups) + 0.6), squeeze=False)
            for (where, group), (ax,) in zip(info.groups, axes):
                x = np.arange(len(group))
                bottom = np.zeros(len(group))
                for stage, colour in _STACK:
                    heights = group[stage if stage == "prefill" else f"{stage}_per_sample"].to_numpy(dtype=float)
                    ax.bar(x, heights, bottom=bottom, color=colour, label=stage)
                    bottom += heights
                ax.errorbar(x, group["total_per_sample"], yerr=group["total_std"].fillna(0), fmt="none", ecolor="black",
                            capsize=2, lw=0.8)  # fmt: skip
                ax.set_yscale("log")
                ax.set_xticks(x, [str(v) for v in group[info.knob]])
                ax.set_xlabel(info.knob)
                ax.set_ylabel("time per sample [ms] (log scale)")
                ax.grid(axis="y", alpha=0.3, which="both")
                ax.legend(fontsize=8)
                if where:
                    ax.set_title(where, fontsize=10)
        fig.suptitle(textwrap.fill(info.title, 100), fontsize=11)
        save(fig, path)

    def plotly(self, info: ProfileInfo) -> Any:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        phases = {"phases": ("prefill", "decode"), "vision": ("prefill",)}.get(info.layout, ("total",))
        titles = [f"{p}{f' | {w}' if w else ''}" for w, _ in info.groups for p in phases]
        fig = make_subplots(rows=len(info.groups), cols=len(phases), subplot_titles=titles)
        for r, (_, group) in enumerate(info.groups, start=1):
            x = [str(v) for v in group[info.knob]]
            for c, phase in enumerate(phases, start=1):
                if info.layout == "vision":
                    x = [t.replace("\n", "<br>") for t in _vision_ticks(group, info.knob)]
                    parts = [(label, group[part], colour) for part, colour, label in _VISION]
                elif phase == "total":
                    parts = [(s, group[s if s == "prefill" else f"{s}_per_sample"], colour) for s, colour in _STACK]
                else:
                    split = [(p, group[f"{phase}_{p}"], colour) for p, colour in _PARTS if group[f"{phase}_{p}"].any()]
                    rest = group[phase] - sum((h for _, h, _ in split), start=pd.Series(0.0, index=group.index))
                    parts = [*split, ("rest of phase" if split else phase, rest.clip(lower=0), _REST if split else "#55A868")]
                for name, heights, colour in parts:
                    fig.add_trace(go.Bar(x=x, y=heights, name=name, marker_color=colour, showlegend=r == 1 and c == 1 or phase == "decode" and r == 1,
                                         legendgroup=name), row=r, col=c)  # fmt: skip
        fig.update_layout(barmode="stack", title=info.title, height=360 * len(info.groups) + 80)
        if info.layout != "phases":
            fig.update_yaxes(type="log")
        return fig


def _vision_ticks(bars: pd.DataFrame, knob: str) -> list[str]:
    return [f"{v}\n{t:.0f} tok" for v, t in zip(bars[knob], bars["vision_tokens"])]


def _vision_panel(ax: Any, bars: pd.DataFrame, knob: str) -> None:
    x = np.arange(len(bars))
    bottom = np.zeros(len(bars))
    for part, colour, label in _VISION:
        heights = bars[part].to_numpy(dtype=float)
        ax.bar(x, heights, bottom=bottom, color=colour, label=label)
        bottom += heights
    ax.errorbar(x, bars["prefill"], yerr=bars["prefill_std"].fillna(0).to_numpy(), fmt="none", ecolor="black", capsize=2, lw=0.8)
    ax.set_xticks(x, _vision_ticks(bars, knob), fontsize=8)
    ax.set_xlabel(f"{knob} (vision tokens)")
    ax.set_ylabel("prefill time per sample [ms]")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


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


@dataclass(frozen=True)
class FlopsInfo(Info):
    knob: str
    labels: list[str]
    series: tuple[tuple[str, list[float]], ...]
    base: str


class FlopsFigure(Figure):
    """Seed 002 Exp5: estimated FLOPs, counted FLOPs and latencies, each relative to the first value."""

    name = "flops"
    _SERIES = (("gflops_theoretical_ratio", "FLOPs, 2 x active params"), ("gflops_total_ratio", "FLOPs, counted"),
               ("prefill_ms_mean_ratio", "prefill latency"), ("decode_per_call_ms_mean_ratio", "decode latency per token"))  # fmt: skip

    def infos(self, ctx: FigureContext) -> list[FlopsInfo]:
        rows = ctx.options.get("flops_rows")
        opts = ctx.options.get("profile") or {}
        if not rows:
            return []
        knob = opts["knob"]
        series = tuple((label, [r[k] for r in rows]) for k, label in self._SERIES if all(k in r for r in rows))
        return [FlopsInfo(file=f"{opts['file']}_ratios", title="FLOPs scaling", section="breakdown", knob=knob,
                          labels=[str(r[knob]) for r in rows], series=series, base=str(rows[0][knob]))]  # fmt: skip

    def png(self, info: FlopsInfo, path: Path) -> None:
        x = np.arange(len(info.labels))
        width = 0.8 / max(len(info.series), 1)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for i, (label, values) in enumerate(info.series):
            ax.bar(x + (i - (len(info.series) - 1) / 2) * width, values, width, label=label)
        ax.axhline(1.0, color="black", lw=0.6)
        ax.set_xticks(x, info.labels)
        ax.set_xlabel(info.knob)
        ax.set_ylabel(f"ratio to {info.knob} = {info.base}")
        ax.set_title(info.title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, path)

    def plotly(self, info: FlopsInfo) -> Any:
        import plotly.graph_objects as go

        fig = go.Figure([go.Bar(x=info.labels, y=values, name=label) for label, values in info.series])
        fig.update_layout(barmode="group", title=info.title, xaxis_title=info.knob, yaxis_title=f"ratio to {info.knob} = {info.base}")
        return fig
