"""Uncertainty of the analysis: bootstrap replicates of the objective matrix, and what they say.

Every configuration's objectives are statistics of its per-sample records. :func:`resample_objectives`
draws ``B`` bootstrap replicates of the whole ``(configurations, objectives)`` matrix at once:

* a statistic of a timing measured at least twice on every sample (``within``) resamples each
  configuration's repeats of each sample independently: the samples are the benchmark, and the
  noise of one configuration's measurement has nothing to do with another's;
* any other per-sample statistic (quality, or a timing with one repeat) resamples sample ids,
  **the same ids for every configuration**: configurations run the same samples, so a hard
  question is hard for all of them, and comparisons stay paired;
* an objective with no per-sample records (a configuration-level aggregate such as perplexity)
  is taken as exact, and :attr:`Replicates.sources` says so.

From the replicates: the probability that each configuration is Pareto-optimal, whether it is
dominated beyond noise (in at least 95% of replicates), which configurations are statistically
tied (every objective's paired difference has an interval containing 0, 95% jointly), the hypervolume's
interval, and the frontier's uncertainty band. Pure functions; nothing is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from knobscope.analysis.objectives import Objective
from knobscope.analysis.pareto import hypervolume, pareto_mask
from knobscope.intervals import CONFIDENCE

__all__ = ["Replicates", "FrontierUncertainty", "objective_source", "resample_objectives", "frontier_uncertainty",
           "DECIDED", "RESAMPLES"]  # fmt: skip

RESAMPLES = 400
DECIDED = 0.95  # a configuration optimal (or dominated) in this share of replicates is decided
_QUANTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0}
_STATS = ("mean", "min", "max", *_QUANTILES)


def objective_source(column: str, sample_columns: Sequence[str]) -> tuple[str, str] | None:
    """``(per-sample field, statistic)`` an objective column is computed from, or None when it
    has no per-sample records (a configuration-level aggregate)."""
    for stat in _STATS:
        if column.endswith(f"_{stat}"):
            base = column[: -len(stat) - 1]
            if base in sample_columns:
                return base, stat
    if column in sample_columns:  # a declared metric by its bare name: the mean
        return column, "mean"
    return None


@dataclass(frozen=True)
class Replicates:
    """Bootstrap replicates of a table's objectives.

    Attributes:
        values: ``(B, C, m)``: replicate ``b`` of configuration ``c``'s objective ``k``, rows in
            the order of ``trial_ids``.
        point: ``(C, m)``: the estimates themselves (the table's values).
        trial_ids: the configurations, in row order.
        sources: per objective column, how its uncertainty was resampled (for the reader).
        seed: the generator's seed.
    """

    values: np.ndarray
    point: np.ndarray
    trial_ids: tuple[str, ...]
    objectives: tuple[Objective, ...]
    sources: Mapping[str, str]
    seed: int = 0
    records_per_config: float = 0.0

    @property
    def resamples(self) -> int:
        return int(self.values.shape[0])

    @property
    def has_noise(self) -> bool:
        """Whether any objective varies between replicates at all."""
        return bool(np.any(np.nanstd(self.values, axis=0) > 0))

    def interval(self, row: int, k: int) -> tuple[float, float]:
        tail = (1 - CONFIDENCE) / 2 * 100
        lo, hi = np.nanpercentile(self.values[:, row, k], [tail, 100 - tail])
        return float(lo), float(hi)


def _statistic(x: np.ndarray, stat: str, axis: int) -> np.ndarray:
    nan = bool(np.isnan(x).any())
    if stat == "mean":
        return np.nanmean(x, axis=axis) if nan else x.mean(axis=axis)
    if stat == "min":
        return np.nanmin(x, axis=axis) if nan else x.min(axis=axis)
    if stat == "max":
        return np.nanmax(x, axis=axis) if nan else x.max(axis=axis)
    q = _QUANTILES[stat]
    if nan or axis != 1:
        return np.nanpercentile(x, q, axis=axis) if nan else np.percentile(x, q, axis=axis)
    # numpy's "linear" quantile from one sort per row: several times faster than np.percentile here
    s = np.sort(x, axis=1)
    pos = (s.shape[1] - 1) * q / 100
    lo = int(np.floor(pos))
    hi = min(lo + 1, s.shape[1] - 1)
    return s[:, lo] + (s[:, hi] - s[:, lo]) * (pos - lo)


def _cube(samples: pd.DataFrame, field: str, trial_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(C, G, R)`` array of ``field`` by configuration, sample and repeat (NaN where absent),
    and ``(C, G)`` counts of records."""
    data = samples[samples["trial_id"].isin(trial_ids)][["trial_id", "sample_id", field]].copy()
    data[field] = pd.to_numeric(data[field], errors="coerce")
    data = data.dropna(subset=[field])
    data["sample_id"] = data["sample_id"].astype(str)
    rows = {t: i for i, t in enumerate(trial_ids)}
    groups = {g: i for i, g in enumerate(sorted(data["sample_id"].unique()))}
    r_idx = data.groupby(["trial_id", "sample_id"]).cumcount().to_numpy()
    c_idx = data["trial_id"].map(rows).to_numpy()
    g_idx = data["sample_id"].map(groups).to_numpy()
    width = int(r_idx.max()) + 1 if len(r_idx) else 1
    cube = np.full((len(trial_ids), max(len(groups), 1), width), np.nan)
    cube[c_idx, g_idx, r_idx] = data[field].to_numpy(dtype=float)
    counts = np.zeros(cube.shape[:2], dtype=int)
    np.add.at(counts, (c_idx, g_idx), 1)
    return cube, counts


def resample_objectives(
    table: pd.DataFrame,
    samples: pd.DataFrame | None,
    objectives: Sequence[Objective],
    *,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Replicates:
    """Bootstrap replicates of ``table``'s objective matrix from the per-sample records.

    ``table`` holds the usable configurations (finished, every objective finite) with a
    ``trial_id`` column; ``samples`` the run's per-sample records (``trial_id``, ``sample_id``,
    metrics). See the module docstring for how each objective is resampled.
    """
    trial_ids = tuple(str(t) for t in table["trial_id"])
    point = table[[o.column for o in objectives]].to_numpy(dtype=float)
    out = np.broadcast_to(point, (resamples, *point.shape)).copy()
    rng = np.random.default_rng(seed)
    sources: dict[str, str] = {}
    per_config: list[float] = []
    columns = list(samples.columns) if samples is not None else []
    for k, o in enumerate(objectives):
        src = objective_source(o.column, columns)
        if src is None or samples is None or not len(trial_ids):
            sources[o.column] = "one value per configuration: taken as exact (no per-sample records)"
            continue
        field_name, stat = src
        cube, counts = _cube(samples, field_name, trial_ids)
        per_config.append(float(counts.sum(axis=1).mean()))
        c, g, r = cube.shape
        within = field_name.endswith("_ms") and bool((counts >= 2).all())
        if within:
            sources[o.column] = f"{stat} of per-sample {field_name}: each sample's repeats resampled (measurement noise)"
            ragged = bool((counts != r).any())  # equal counts: no padding to mask out
            compact = cube.astype(np.float32)  # replicates need no more precision; half the memory traffic
            for b in range(resamples):
                if ragged:
                    picks = (rng.random((c, g, r)) * counts[:, :, None]).astype(np.intp)
                    drawn = np.take_along_axis(compact, picks, axis=2)
                else:  # flat indexing: each (configuration, sample) row's own repeats
                    picks = rng.integers(0, r, size=(c, g, r), dtype=np.int8 if r < 128 else np.intp)
                    drawn = compact.reshape(-1)[(np.arange(c * g, dtype=np.intp) * r)[:, None] + picks.reshape(c * g, r)]
                if ragged:
                    drawn = np.where(np.arange(r)[None, None, :] < counts[:, :, None], drawn, np.nan)
                out[b, :, k] = _statistic(drawn.reshape(c, g * r), stat, axis=1)
        else:
            sources[o.column] = f"{stat} of per-sample {field_name}: samples resampled, the same for every configuration (paired)"
            for b in range(resamples):
                ids = rng.integers(0, g, size=g)
                out[b, :, k] = _statistic(cube[:, ids, :].reshape(c, g * r), stat, axis=1)
    return Replicates(out, point, trial_ids, tuple(objectives), sources, seed,
                      float(np.mean(per_config)) if per_config else 1.0)  # fmt: skip


@dataclass(frozen=True)
class FrontierUncertainty:
    """What the replicates say about the frontier.

    Attributes:
        probability: per configuration (trial id), the share of replicates in which it is
            Pareto-optimal.
        status: per configuration: ``optimal`` (in >= 95% of replicates), ``dominated``
            (dominated beyond noise: optimal in <= 5%), else ``uncertain``.
        ties: per configuration that is not dominated beyond noise, the others it is
            statistically tied with (on every objective, the paired difference's 95% interval
            holds 0).
        rivals: per uncertain configuration, the configurations that dominate it in at least 5%
            of replicates, most often first: what it must be measured against to be decided.
        hypervolume_interval: 95% interval of the frontier's hypervolume (same reference point).
        band: for two objectives, the 2.5% and 97.5% attainment curves: ``{"x": [...],
            "low": [...], "high": [...]}`` with ``y`` reachable at each ``x`` in 95% of replicates
            (between them the frontier lies, given the noise).
    """

    probability: Mapping[str, float]
    status: Mapping[str, str]
    ties: Mapping[str, tuple[str, ...]]
    hypervolume_interval: tuple[float, float]
    resamples: int
    sources: Mapping[str, str]
    band: Mapping[str, list[float]] | None = None
    has_noise: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)
    rivals: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "resamples": self.resamples,
            "sources": dict(self.sources),
            "has_noise": self.has_noise,
            "hypervolume_interval": list(self.hypervolume_interval),
            "probability": dict(self.probability),
            "status": dict(self.status),
            "ties": {k: list(v) for k, v in self.ties.items()},
            "band": dict(self.band) if self.band else None,
            "notes": list(self.notes),
            "rivals": {k: list(v) for k, v in self.rivals.items()},
        }


def _ties(rep: Replicates, candidates: np.ndarray) -> dict[int, list[int]]:
    """Pairs among ``candidates`` whose paired differences are within noise on every objective
    (jointly at 95%: each objective's interval at 1 - 5%/m, Bonferroni)."""
    tail = (1 - CONFIDENCE) / 2 / rep.values.shape[2] * 100
    out: dict[int, list[int]] = {int(i): [] for i in candidates}
    vals = rep.values[:, candidates, :]  # (B, n, m)
    for a_pos, a in enumerate(candidates):
        diff = vals[:, a_pos : a_pos + 1, :] - vals  # (B, n, m)
        lo, hi = np.nanpercentile(diff, [tail, 100 - tail], axis=0)  # (n, m)
        within = ((lo <= 0) & (hi >= 0)).all(axis=1)
        for b_pos in np.flatnonzero(within):
            if b_pos != a_pos:
                out[int(a)].append(int(candidates[b_pos]))
    return out


def _band(rep: Replicates, flags: np.ndarray) -> dict[str, list[float]] | None:
    """Attainment curves of the 2-D frontier over the replicates, on the observed x values."""
    if rep.values.shape[2] != 2:
        return None
    xs = np.unique(rep.point[:, 0])
    tail = (1 - CONFIDENCE) / 2 * 100
    sign_x = -1.0 if flags[0] else 1.0  # flip to "lower is better" on x
    best_y = []
    for b in range(rep.resamples):
        x, y = rep.values[b, :, 0] * sign_x, rep.values[b, :, 1]
        order = np.argsort(x)
        x, y = x[order], y[order]
        run = np.maximum.accumulate(y) if flags[1] else np.minimum.accumulate(y)  # best y with x at most
        idx = np.searchsorted(x, xs * sign_x, side="right") - 1
        best_y.append(np.where(idx >= 0, run[np.clip(idx, 0, None)], np.nan))
    curves = np.array(best_y)  # (B, len(xs))
    low, high = np.nanpercentile(curves, [tail, 100 - tail], axis=0)
    return {"x": xs.tolist(), "low": low.tolist(), "high": high.tolist()}


def _rivals(rep: Replicates, flags: np.ndarray, uncertain: np.ndarray, candidates: np.ndarray, *,
            limit: int = 200) -> dict[int, list[int]]:  # fmt: skip
    """For each uncertain configuration (at most ``limit``), the ``candidates`` (configurations not
    dominated beyond noise) dominating it in >= 5% of replicates. Others need not be looked at:
    where one dominated beyond noise dominates it, so does a candidate that dominates that one."""
    sign = np.where(flags, -1.0, 1.0)  # flip to "lower is better"
    vals = rep.values[:, candidates, :] * sign  # (B, n, m)
    out = {}
    for u in uncertain[:limit]:
        mine = rep.values[:, u : u + 1, :] * sign  # (B, 1, m)
        dominates = (vals <= mine).all(axis=2) & (vals < mine).any(axis=2)  # (B, n)
        share = dominates.mean(axis=0)
        order = np.argsort(-share)
        out[int(u)] = [int(candidates[j]) for j in order if share[j] >= 1 - DECIDED and candidates[j] != u]
    return out


def frontier_uncertainty(rep: Replicates, *, reference: np.ndarray) -> FrontierUncertainty:
    """Probability of optimality, decided and tied configurations, hypervolume interval, band."""
    flags = np.array([o.maximise for o in rep.objectives])
    n = len(rep.trial_ids)
    optimal = np.zeros(n)
    volumes = np.empty(rep.resamples)
    for b in range(rep.resamples):
        v = rep.values[b]
        mask = pareto_mask(v, flags)
        optimal += mask
        volumes[b] = hypervolume(v, flags, reference, mask=mask)
    probability = optimal / rep.resamples
    status = np.where(probability >= DECIDED, "optimal", np.where(probability <= 1 - DECIDED, "dominated", "uncertain"))
    candidates = np.flatnonzero(status != "dominated")
    ties = _ties(rep, candidates) if len(candidates) else {}
    uncertain = np.flatnonzero(status == "uncertain")
    uncertain = uncertain[np.argsort(np.abs(probability[uncertain] - 0.5))]
    rivals = _rivals(rep, flags, uncertain, candidates) if len(uncertain) else {}
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = np.percentile(volumes, [tail, 100 - tail])
    ids = rep.trial_ids
    notes = []
    if not rep.has_noise:
        notes.append("no objective varies between replicates (one record per configuration, or exact values): "
                     "the frontier is as measured, with no measure of its noise")  # fmt: skip
    return FrontierUncertainty(
        probability={ids[i]: float(probability[i]) for i in range(n)},
        status={ids[i]: str(status[i]) for i in range(n)},
        ties={ids[i]: tuple(ids[j] for j in js) for i, js in ties.items()},
        hypervolume_interval=(float(lo), float(hi)),
        resamples=rep.resamples,
        sources=dict(rep.sources),
        band=_band(rep, flags),
        has_noise=rep.has_noise,
        notes=tuple(notes),
        rivals={ids[i]: tuple(ids[j] for j in js) for i, js in rivals.items()},
    )
