"""Tables derived from a store, and the exports (JSON, CSV, Parquet).

``summary_table``: one row per configuration — knobs, status, and for every metric its
``{metric}_{stat}`` columns (mean, std, min, max, p50, p90, p95, p99, n) with 95% intervals
``{metric}_{stat}_ci_low`` / ``_ci_high`` for the mean and the percentiles, per-call stage
statistics (``decode_per_call_ms_mean``: inter-token latency), the workload's declared metrics
by their bare name (``accuracy``: the mean of the per-sample values, with ``accuracy_ci_low``
/ ``_ci_high``; or the workload's own aggregate), ``peak_memory_mb``, ``noisy`` and
``noise_reason`` (do repeats of a sample disagree?), with a profiled diagnostic sample
(``measure.diagnose``) ``device_busy_share``, ``host_bound``, ``diagnosed_on`` and per stage ``{stage}_busy_share``
and ``{stage}_launches_per_call``, ``repeats`` (passes measured), and the
evaluation order: ``eval_order`` (1 for the first configuration measured, by the time its
measurement started; the runner measures in a seeded random order and an adaptive search in
the order it proposes, so the rows' creation order is not the order of measurement),
``started_at`` and ``finished_at`` (UTC, ISO 8601) of its latest measurement.

``samples_table``: one row per measured sample — knobs, ``sample_id``, ``repeat`` and metrics.

The JSON export is the seeds' unified format ``{"summary": [...], "all_samples": [...]}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from knobscope.errors import KnobscopeError, SpecError
from knobscope.plain import plain
from knobscope.store import Store

if TYPE_CHECKING:
    from knobscope.spec import ExperimentSpec

__all__ = ["summary_table", "samples_table", "export", "EXPORT_FORMATS", "flatten_summary", "summary_columns", "RunResults",
           "load_run", "to_json", "where_measured"]

EXPORT_FORMATS = ("json", "csv", "parquet")


def flatten_summary(summary: dict[str, Any] | None) -> dict[str, Any]:
    """``{"metrics": {m: {stat: v}}, ...}`` -> ``{"m_stat": v, ...}``."""
    return {name: value for name, _, value in _flat_entries(summary)}


def _flat_entries(summary: dict[str, Any] | None) -> Iterator[tuple[str, tuple[str, ...] | None, Any]]:
    """``(column, its keys in the summary or None, value)``; a later column of a name wins."""
    if not summary:
        return
    for group in ("metrics", "per_call", "intervals"):
        for metric, stats in summary.get(group, {}).items():
            for stat, value in stats.items():
                if stat != "ci_method":
                    yield f"{metric}_{stat}", (group, metric, stat), value
    # Declared metrics at configuration level, by their bare name, with their interval.
    for name, v in summary.get("values", {}).items():
        yield name, ("values", name, "value"), v["value"]
        if v.get("ci_low") is not None:
            yield f"{name}_ci_low", ("values", name, "ci_low"), v["ci_low"]
            yield f"{name}_ci_high", ("values", name, "ci_high"), v["ci_high"]
    for key, value in summary.get("aggregate", {}).items():
        yield key, ("aggregate", key), value
    if summary.get("top_level_stages"):
        yield "stages", None, ",".join(summary["top_level_stages"])
    for key in ("peak_memory_mb", "num_records"):
        if key in summary:
            yield key, (key,), summary[key]
    if "noise" in summary:
        yield "noisy", ("noise", "noisy"), summary["noise"]["noisy"]
        yield "noise_reason", None, "; ".join(summary["noise"]["reasons"])
    if summary.get("diagnostic"):  # knobscope.diagnose: the profiled sample
        d = summary["diagnostic"]
        yield "device_busy_share", ("diagnostic", "busy_share"), d["busy_share"]
        yield "host_bound", None, ",".join(d["host_bound"])
        yield "diagnosed_on", ("diagnostic", "device"), d["device"]
        for stage, a in d["stages"].items():
            yield f"{stage}_busy_share", ("diagnostic", "stages", stage, "busy_share"), a["busy_share"]
            yield f"{stage}_launches_per_call", ("diagnostic", "stages", stage, "launches_per_call"), a["launches_per_call"]
    if "repeats" in summary:
        yield "repeats", ("repeats", "passes"), summary["repeats"]["passes"]
        if "target_met" in summary["repeats"]:
            yield "target_met", ("repeats", "target_met"), summary["repeats"]["target_met"]


def summary_columns(store: Store, names: Sequence[str]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(config, {name: value})`` of each finished trial, for a few result columns (a bare
    metric name means its mean, as in :func:`column_for`; None where a trial has none): what
    :func:`flatten_summary` would give, without parsing every summary in Python. Where the
    columns are is read from the first summary; SQLite takes them from the others (a search's
    prior run: 384 summaries of 10 kB in 45 ms instead of 300), and a trial whose summary is laid
    out otherwise is read whole."""
    from knobscope.goals import column_for

    first = store.first_summary()
    paths = {name: path for name, path, _ in _flat_entries(first) if path is not None}
    rows = store.summary_fields({name: paths[c] for name in names if (c := column_for(name, paths)) is not None})
    out = [(config, {n: fields.get(n) for n in names}) for _, config, fields in rows]
    # A value SQLite did not give (a summary laid out otherwise, or a NaN, which its JSON lacks):
    # read that summary whole.
    redo = {trial_id: i for i, (trial_id, _, fields) in enumerate(rows) if any(fields.get(n) is None for n in names)}
    for t in store.trials(status="done", ids=redo) if redo else ():
        flat = flatten_summary(t.summary)
        out[redo[t.trial_id]] = (t.config, {n: flat.get(column_for(n, flat) or n) for n in names})
    return out


def summary_table(store: Store, *, ids: list[str] | None = None) -> pd.DataFrame:
    trials = store.trials(ids=ids)
    started = sorted((t.started, t.seq) for t in trials if t.started is not None)
    order = {seq: i + 1 for i, (_, seq) in enumerate(started)}
    rows = []
    for t in trials:
        row: dict[str, Any] = dict(t.config)
        row.update(trial_id=t.trial_id, workload=t.workload, status=t.status, error=t.error, attempts=t.attempts,
                   eval_order=order.get(t.seq), started_at=_iso(t.started), finished_at=_iso(t.finished))  # fmt: skip
        row.update(flatten_summary(t.summary))
        rows.append(row)
    table = pd.DataFrame(rows)
    if "eval_order" in table.columns:
        table["eval_order"] = table["eval_order"].astype("Int64")  # integers, empty where never started
    return table


def _iso(timestamp: float | None) -> str | None:
    from datetime import datetime, timezone

    return None if timestamp is None else datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def where_measured(store: Store) -> list[dict[str, Any]]:
    """Which node and device measured how many finished trials (from each trial's provenance),
    most trials first: ``[{"node", "device", "trials"}]``; a Ray node adds its id."""
    counts: dict[tuple[str, str], int] = {}
    for t in store.trials(status="done"):
        m = t.measure or {}
        node = str(m.get("node", "?")) + (f" (ray node {m['ray_node']})" if m.get("ray_node") else "")
        key = (node, str(m.get("device", "?")))
        counts[key] = counts.get(key, 0) + 1
    return [{"node": n, "device": d, "trials": c} for (n, d), c in sorted(counts.items(), key=lambda kv: -kv[1])]


def samples_table(store: Store, *, with_calls: bool = False) -> pd.DataFrame:
    configs = {t.trial_id: t.config for t in store.trials()}
    rows = []
    for trial_id, record in store.samples():
        row: dict[str, Any] = {"trial_id": trial_id, **configs[trial_id]}
        for key, value in record.items():
            if key == "calls":
                if with_calls:
                    row["calls"] = value
                continue
            row[key] = value
        rows.append(row)
    return pd.DataFrame(rows)


def _clean(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {str(_clean(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        return _clean(plain(value))
    return value


def export(run_dir: str | Path, fmt: str, *, out: str | Path | None = None) -> list[Path]:
    """Write the run's results in ``fmt``; returns the files written.

    json -> ``results.json`` (unified ``{summary, all_samples}``); csv -> ``results.csv`` (one
    row per configuration); parquet -> ``summary.parquet`` and ``samples.parquet``. ``out`` is
    a file (json, csv) or a directory (parquet); default: the run directory.
    """
    if fmt not in EXPORT_FORMATS:
        raise SpecError(f"export format {fmt!r} is not supported; choose one of: {', '.join(EXPORT_FORMATS)}")
    run_dir = Path(run_dir)
    with Store.open(run_dir) as store:
        summary = summary_table(store)
        samples = samples_table(store, with_calls=fmt == "json")
    if fmt == "json":
        path = Path(out) if out else run_dir / "results.json"
        payload = {
            "summary": _json_records(summary),
            "all_samples": _json_records(samples),
        }
        path.write_text(json.dumps(payload, indent=1))
        return [path]
    if fmt == "csv":
        path = Path(out) if out else run_dir / "results.csv"
        summary.to_csv(path, index=False)
        return [path]
    folder = Path(out) if out else run_dir
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "summary.parquet", folder / "samples.parquet"]
    summary.to_parquet(paths[0], index=False)
    _parquet_safe(samples).to_parquet(paths[1], index=False)
    return paths


def to_json(payload: Any) -> str:
    """JSON text for analysis results: numpy scalars as numbers, NaN as null, tuples as lists."""
    return json.dumps(_clean(payload), indent=1, default=str)


def _json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    # A column absent from a row (NaN after pandas aligns rows) is left out, not written as null.
    return [_clean({k: v for k, v in r.items() if not _isnan(v)}) for r in df.to_dict("records")]


def _isnan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    # Columns mixing numbers and strings (e.g. sample ids) cannot be typed by Arrow; store them as text.
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object and out[col].map(type).nunique() > 1:
            out[col] = out[col].astype(str)
    return out


@dataclass(frozen=True)
class RunResults:
    """Everything analysis reads from a run directory, loaded once.

    Attributes:
        run_dir: the run directory.
        spec: the spec of the latest invocation (knobs, defaults, objectives, analysis section).
        table: one row per configuration of the spec's workload (all statuses), knobs and
            derived quantities as columns next to the flattened metrics.
        metrics: declared metrics ``{name: {higher_is_better, unit, description}}``.
        provenance: provenance of the latest invocation; ``runs`` has every invocation.
        samples: per-sample records (loaded only when asked for).
    """

    run_dir: Path
    spec: ExperimentSpec
    table: pd.DataFrame
    metrics: dict[str, dict[str, Any]]
    provenance: dict[str, Any]
    runs: list[dict[str, Any]] = field(default_factory=list, repr=False)
    samples: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def knobs(self) -> list[str]:
        return list(self.spec.space.names)

    @property
    def label(self) -> str:
        return self.spec.name


def load_run(run_dir: str | Path, *, with_samples: bool = False) -> RunResults:
    """Read a run directory's store and spec (read-only); raises StoreError/SpecError with one line."""
    from knobscope.spec import parse_spec

    run_dir = Path(run_dir)
    with Store.open(run_dir) as store:
        runs = store.runs()
        if not runs:
            raise SpecError(f"{str(run_dir)!r} holds no runs yet; run a spec into it first")
        table = summary_table(store)
        samples = samples_table(store) if with_samples else None
        measured_on = where_measured(store)
    spec = parse_spec(runs[-1]["spec"], source=str(run_dir), require_workload=False)
    if spec.workload is not None and not table.empty:
        table = table[table["workload"] == spec.workload.name].reset_index(drop=True)
    table = _with_derived(table, spec)
    metrics: dict[str, dict[str, Any]] = {}
    for run in runs:  # later invocations win: a workload's declarations may have changed
        metrics.update(run["provenance"].get("metrics", {}))
    if not metrics and spec.workload is not None:
        metrics = _declared_metrics(spec.workload.name)
    provenance = {**runs[-1]["provenance"], "measured_on": measured_on}
    return RunResults(run_dir, spec, table, metrics, provenance, runs, samples)


def _with_derived(table: pd.DataFrame, spec: ExperimentSpec) -> pd.DataFrame:
    # Constants and derived quantities (e.g. num_blocks) become columns, so constraints and
    # plots can use them like knobs.
    extra = [n for n, _ in (*spec.space.constants, *spec.space.derived) if n not in table.columns]
    if not extra or table.empty or any(k not in table.columns for k in spec.space.names):
        return table
    rows = []
    for config in table[spec.space.names].to_dict("records"):
        try:
            variables = spec.space.variables(config)
        except KnobscopeError:  # an expression that fails on this config; leave its columns empty
            variables = {}
        rows.append({n: variables.get(n) for n in extra})
    return pd.concat([table, pd.DataFrame(rows, index=table.index)], axis=1)


def _declared_metrics(workload: str) -> dict[str, dict[str, Any]]:
    # Runs stored before metric declarations were recorded: ask the workload class (no setup).
    from dataclasses import asdict

    from knobscope.workloads import resolve_workload

    try:
        cls = resolve_workload(workload)
    except KnobscopeError:
        return {}
    return {name: asdict(m) for name, m in getattr(cls, "metrics", {}).items()}
