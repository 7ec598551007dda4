"""Statistics of per-sample records with 95% confidence intervals (pure numpy/scipy, no I/O).

Records are grouped by sample (``sample_id``): every repeat of a sample is one record. What an
interval means depends on the metric:

* ``binary`` — a 0/1 metric that every repeat of a sample agrees on (an answer is right or
  wrong): the mean is a proportion of samples, and its interval is the exact Clopper-Pearson
  interval over samples (what another draw of samples of this kind would give).
* ``within`` — a timing measured at least twice on every sample: the samples are the
  benchmark, repeats measure their noise. The interval is measurement uncertainty on these
  samples: Student-t for the mean (variance from each sample's repeats), and a bootstrap that
  resamples each sample's repeats for quantiles. More repeats make it narrower.
* ``samples`` — anything else (quality scores, timings with one repeat): the interval resamples
  whole samples (a cluster bootstrap; cluster-robust Student-t for the mean), so it also holds
  the spread between samples. More repeats cannot make it narrower than that spread; more
  samples can.

A quantile's interval is the wider of two: the distribution-free order-statistic interval
(exact for independent records, whatever their distribution) and a seeded percentile bootstrap
in the mode above (for records that are not independent). Few records cannot bound a tail
quantile: a 95% upper bound on a P95 needs 72 records, on a P99 367; below that the upper bound
is infinite, which is the truth about such a measurement, not a failure. The mean's interval is
exact for normal noise.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = [
    "CONFIDENCE",
    "INTERVAL_STATS",
    "QUANTILES",
    "STAT_NAMES",
    "Mode",
    "describe",
    "Estimate",
    "interval_mode",
    "mean_interval",
    "proportion_interval",
    "bootstrap_quantile_intervals",
    "order_statistic_interval",
    "relative_half_width",
    "seed_for",
]

CONFIDENCE = 0.95
STAT_NAMES = ("mean", "std", "min", "max", "p50", "p90", "p95", "p99", "n")
QUANTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
INTERVAL_STATS = ("mean", *QUANTILES)  # statistics that get a *_ci_low / *_ci_high
RESAMPLES = 1000

Mode = Literal["binary", "within", "samples"]


@dataclass(frozen=True)
class Estimate:
    """A configuration-level value with its 95% interval, for a statistic that is not the mean of
    per-sample values (corpus BLEU-4): :meth:`Workload.summarize` may return one in place of a
    bare number."""

    value: float
    ci_low: float
    ci_high: float
    method: str


def seed_for(seed: int, name: str) -> np.random.SeedSequence:
    """A random stream per (seed, metric name): intervals do not depend on the order of metrics."""
    return np.random.SeedSequence([seed, zlib.crc32(name.encode())])


def _groups(values: np.ndarray, groups: Sequence[Any] | None) -> list[np.ndarray]:
    if groups is None:
        return [values[i : i + 1] for i in range(len(values))]
    index: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        index.setdefault(g if isinstance(g, (int, str, float)) else str(g), []).append(i)
    return [values[ix] for ix in index.values()]


def interval_mode(values: np.ndarray, parts: list[np.ndarray], *, timing: bool, proportion: bool = True) -> Mode:
    """Which interval fits these records (see the module docstring); ``proportion`` False: the
    metric is a count or an amount (it has a unit), never a 0/1 outcome, even when every value is 1."""
    if proportion and len(values) and np.isin(values, (0.0, 1.0)).all() and all(np.all(p == p[0]) for p in parts):
        return "binary"
    if timing and len(parts) and all(len(p) >= 2 for p in parts):
        return "within"
    return "samples"


def proportion_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a proportion."""
    from scipy.stats import binomtest

    if trials == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(successes), int(trials)).proportion_ci(confidence_level=confidence, method="exact")
    return float(ci.low), float(ci.high)


def _t(df: float, confidence: float) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, df))


def mean_interval(parts: list[np.ndarray], mode: Mode, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of the mean over all records (each part is one sample's records)."""
    values = np.concatenate(parts)
    n, mean = len(values), float(values.mean())
    if mode == "binary":
        return proportion_interval(sum(int(p[0]) for p in parts), len(parts), confidence)
    if mode == "within":
        # Fixed samples: the mean's variance is the repeats' noise, sum_g n_g s_g^2 / N^2.
        var = sum(len(p) * p.var(ddof=1) for p in parts) / n**2
        df = n - len(parts)
    else:
        # Cluster-robust: samples are independent, a sample's repeats are not.
        g = len(parts)
        if g < 2:
            return float("nan"), float("nan")
        var = g / (g - 1) * sum(float((p - mean).sum()) ** 2 for p in parts) / n**2
        df = g - 1
    if var == 0.0:
        return mean, mean
    half = _t(df, confidence) * np.sqrt(var)
    return mean - half, mean + half


def bootstrap_quantile_intervals(
    parts: list[np.ndarray],
    mode: Mode,
    rng: np.random.Generator,
    *,
    quantiles: Sequence[float] = tuple(QUANTILES.values()),
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> np.ndarray:
    """``(len(quantiles), 2)`` percentile-bootstrap intervals of quantiles of all records.

    ``within`` resamples each sample's repeats (the samples stay); otherwise whole samples are
    resampled with their repeats.
    """
    sizes = np.array([len(p) for p in parts])
    width = int(sizes.max())
    padded = np.full((len(parts), width), np.nan)
    for i, p in enumerate(parts):
        padded[i, : len(p)] = p
    if mode == "within":
        # (B, G, width): each sample's own repeats, drawn with replacement among its valid ones
        picks = (rng.random((resamples, len(parts), width)) * sizes[None, :, None]).astype(int)
        drawn = np.take_along_axis(np.broadcast_to(padded, (resamples, *padded.shape)), picks, axis=2)
        drawn = np.where(np.arange(width)[None, None, :] < sizes[None, :, None], drawn, np.nan)
    else:
        picks = rng.integers(0, len(parts), size=(resamples, len(parts)))
        drawn = padded[picks]  # (B, G, width)
    flat = drawn.reshape(resamples, -1)
    equal = bool((sizes == width).all())
    stats = np.percentile(flat, quantiles, axis=1) if equal else np.nanpercentile(flat, quantiles, axis=1)  # (Q, B)
    tail = (1 - confidence) / 2 * 100
    return np.percentile(stats, [tail, 100 - tail], axis=1).T


def order_statistic_interval(values: np.ndarray, q: float, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval of the ``q``-quantile (0..1) of independent ``values``:
    ``(x_(l), x_(u))`` with ``P(l <= Binomial(n, q) < u) >= confidence``; an order statistic
    beyond the data is an infinite bound."""
    from scipy.stats import binom

    x = np.sort(np.asarray(values, dtype=float))
    n, tail = len(x), (1 - confidence) / 2
    low = int(binom.ppf(tail, n, q))  # 1-based rank of the lower bound
    high = int(binom.ppf(1 - tail, n, q)) + 1  # 1-based rank of the upper bound
    return (x[low - 1] if low >= 1 else -np.inf), (x[high - 1] if high <= n else np.inf)


def describe(
    values: Sequence[float],
    groups: Sequence[Any] | None = None,
    *,
    timing: bool,
    proportion: bool = True,
    seed: int = 0,
    name: str = "",
    resamples: int = RESAMPLES,
    bounds: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """Mean, std, min, max, P50/P90/P95/P99 and n of ``values`` (NaN and None dropped), with a
    95% interval ``{stat}_ci_low`` / ``{stat}_ci_high`` for the mean and each quantile, and the
    interval's ``ci_method`` (binary, within, samples; see the module docstring).

    ``groups`` gives each value's sample (None: every value is its own sample); ``timing`` says
    whether repeats of a sample are measurements of the same thing (timings) or not;
    ``proportion`` False rules out the ``binary`` interval (a count such as crops, all 1);
    ``bounds``: the values the metric can take (a workload's ``Metric.range``), which every
    interval end is clipped to: a Student-t interval of an acceptance rate near 0 would reach
    below 0, a P99 bound from few records up to infinity, where the range says better.
    """
    raw = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    keep = ~np.isnan(raw)
    arr = raw[keep]
    if arr.size == 0:
        out: dict[str, Any] = {s: float("nan") for s in STAT_NAMES[:-1]} | {"n": 0}
        for s in INTERVAL_STATS:
            out[f"{s}_ci_low"] = out[f"{s}_ci_high"] = float("nan")
        return out
    kept_groups = None if groups is None else [g for g, k in zip(groups, keep) if k]
    parts = _groups(arr, kept_groups)
    qs = np.percentile(arr, list(QUANTILES.values()))
    out = {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
        **{s: float(q) for s, q in zip(QUANTILES, qs)},
        "n": int(arr.size),
    }
    mode = interval_mode(arr, parts, timing=timing, proportion=proportion)
    out["ci_method"] = mode
    if arr.size < 2 or (mode == "samples" and len(parts) < 2):
        for s in INTERVAL_STATS:
            out[f"{s}_ci_low"] = out[f"{s}_ci_high"] = float("nan")
        return out
    out["mean_ci_low"], out["mean_ci_high"] = mean_interval(parts, mode)
    if arr.min() == arr.max():
        ends = np.tile([arr.min(), arr.max()], (len(QUANTILES), 1))
    else:
        rng = np.random.default_rng(seed_for(seed, name))
        ends = bootstrap_quantile_intervals(parts, mode, rng, resamples=resamples)
        exact = np.array([order_statistic_interval(arr, q / 100) for q in QUANTILES.values()])
        ends = np.column_stack([np.minimum(ends[:, 0], exact[:, 0]), np.maximum(ends[:, 1], exact[:, 1])])
    for s, (lo, hi) in zip(QUANTILES, ends):
        out[f"{s}_ci_low"], out[f"{s}_ci_high"] = float(lo), float(hi)
    if bounds is not None:
        for s in INTERVAL_STATS:
            for end in ("ci_low", "ci_high"):
                out[f"{s}_{end}"] = float(np.clip(out[f"{s}_{end}"], *bounds))
    return out


def relative_half_width(stats: dict[str, Any], stat: str) -> float:
    """Half the interval's width over the statistic's magnitude (inf when unknown)."""
    lo, hi, value = stats.get(f"{stat}_ci_low"), stats.get(f"{stat}_ci_high"), stats.get(stat)
    if lo is None or hi is None or value is None or not np.isfinite([lo, hi, value]).all():
        return float("inf")
    if value == 0:
        return 0.0 if hi == lo else float("inf")
    return float((hi - lo) / 2 / abs(value))
