"""Tables derived from a store, and the exports (JSON, CSV, Parquet).

``summary_table``: one row per configuration — knobs, status, and for every metric its
``{metric}_{stat}`` columns (mean, std, min, max, p50, p90, p95, p99, n), per-call stage
statistics (``decode_per_call_ms_mean``: inter-token latency), the workload's aggregates
(e.g. ``accuracy``) and ``peak_memory_mb``.

``samples_table``: one row per measured sample — knobs, ``sample_id``, ``repeat`` and metrics.

The JSON export is the seeds' unified format ``{"summary": [...], "all_samples": [...]}``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from knobscope.errors import SpecError
from knobscope.store import Store

__all__ = ["summary_table", "samples_table", "export", "EXPORT_FORMATS", "flatten_summary"]

EXPORT_FORMATS = ("json", "csv", "parquet")


def flatten_summary(summary: dict[str, Any] | None) -> dict[str, Any]:
    """``{"metrics": {m: {stat: v}}, ...}`` -> ``{"m_stat": v, ...}``."""
    if not summary:
        return {}
    flat: dict[str, Any] = {}
    for group in ("metrics", "per_call"):
        for metric, stats in summary.get(group, {}).items():
            for stat, value in stats.items():
                flat[f"{metric}_{stat}"] = value
    flat.update(summary.get("aggregate", {}))
    for key in ("peak_memory_mb", "num_records"):
        if key in summary:
            flat[key] = summary[key]
    return flat


def summary_table(store: Store, *, ids: list[str] | None = None) -> pd.DataFrame:
    rows = []
    for t in store.trials(ids=ids):
        row: dict[str, Any] = dict(t.config)
        row.update(trial_id=t.trial_id, workload=t.workload, status=t.status, error=t.error, attempts=t.attempts)
        row.update(flatten_summary(t.summary))
        rows.append(row)
    return pd.DataFrame(rows)


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
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy scalar
        return _clean(value.item())
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
