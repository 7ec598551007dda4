from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from conftest import PLUGINS, cli, knobscope, write_spec
from knobscope.store import Store


def _done_lines(run: Path) -> Counter[str]:
    text = (run / "knobscope.log").read_text()
    return Counter(re.findall(r" done ([0-9a-f]{16}) ", text))


def test_sweep_records_every_sample_and_summary(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", measure={"warmup": 1, "repeats": 2})
    proc = knobscope("run", str(spec), "--no-progress", check=True)
    assert "6 done, 0 failed" in proc.stdout
    with Store.open(tmp_path / "run") as store:
        trials = store.trials()
        assert len(trials) == 6 and all(t.status == "done" for t in trials)
        for t in trials:
            assert store.count_samples(t.trial_id) == 2 * 2  # num_samples x repeats
            stats = t.summary["metrics"]["matmul_ms"]
            assert set(stats) == {"mean", "std", "min", "max", "p50", "p90", "p95", "p99", "n"} and stats["n"] == 4
        prov = store.runs()[0]["provenance"]
    assert {"knobscope_version", "knobscope_git", "python", "torch", "device", "seeds", "time"} <= set(prov)
    # Rerunning resumes: nothing left to do, nothing run twice.
    proc = cli("run", str(spec), "--no-progress", check=True)
    assert "this invocation ran 0" in proc.stdout
    assert set(_done_lines(tmp_path / "run").values()) == {1}


def test_failed_trials_are_recorded_and_retried_only_on_request(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml", workload={"name": f"{PLUGINS}:MatmulWorkload", "args": {"num_samples": 1, "fail_on_n": 32}}
    )
    proc = cli("run", str(spec), "--no-progress", check=True)
    assert "4 done, 2 failed" in proc.stdout and "out of memory" in proc.stderr
    with Store.open(tmp_path / "run") as store:
        failed = store.trials(status="failed")
        assert {t.config["n"] for t in failed} == {32} and all("out of memory" in t.error for t in failed)
    assert "ran 0" in cli("run", str(spec), "--no-progress", check=True).stdout
    proc = cli("run", str(spec), "--no-progress", "--retry-failed", check=True)
    assert "4 done, 2 failed" in proc.stdout
    with Store.open(tmp_path / "run") as store:
        assert all(t.attempts == 2 for t in store.trials(status="failed"))


def test_four_processes_share_one_run_directory(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", knobs={"n": [128, 192, 256, 320, 384], "reps": [25, 50, 75, 100]})
    cmd = [sys.executable, "-m", "knobscope.cli", "run", str(spec), "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    run = tmp_path / "run"
    with Store.open(run) as store:
        trials = store.trials()
        assert len(trials) == 20 and all(t.status == "done" and t.attempts == 1 for t in trials)
        pids = {rec["pid"] for _, rec in store.samples()}
        assert all(store.count_samples(t.trial_id) == 2 for t in trials)
    assert Counter(_done_lines(run).values()) == Counter({1: 20})  # every config exactly once
    assert len(pids) >= 2  # the work really was shared


def test_device_pool_runs_one_worker_per_device(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", knobs={"n": [128, 192, 256], "reps": [20, 40]})
    proc = knobscope("run", str(spec), "--devices", "cpu,cpu", "--no-progress", check=True)
    assert "6 done, 0 failed" in proc.stdout and "ran 6" in proc.stdout
    with Store.open(tmp_path / "run") as store:
        assert all(t.status == "done" and t.attempts == 1 for t in store.trials())
    assert set(_done_lines(tmp_path / "run").values()) == {1}


def test_shards_partition_the_configs(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", knobs={"n": [8, 16, 24, 32], "reps": [1, 2, 3]})
    for i in range(3):
        cli("run", str(spec), "--no-progress", "--shard", f"{i}/3", check=True)
    with Store.open(tmp_path / "run") as store:
        trials = store.trials()
    assert len(trials) == 12 and all(t.status == "done" and t.attempts == 1 for t in trials)


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_random_points_then_resume(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    spec = write_spec(
        tmp_path / "spec.yaml",
        knobs={"n": [96, 128, 160, 192], "reps": [20, 40, 60]},
        workload={"name": f"{PLUGINS}:MatmulWorkload", "args": {"num_samples": 3}},
    )
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "knobscope.cli", "run", str(spec), "--no-progress"]
    done_before: dict[str, float] = {}
    for _ in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 3.0))  # let it get somewhere, then kill it without warning
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (run / "results.db").exists():
            with Store.open(run) as store:
                for t in store.trials(status="done"):
                    # a finished trial is never lost nor run again
                    assert done_before.setdefault(t.trial_id, t.finished) == t.finished
                    assert store.count_samples(t.trial_id) == 3
    knobscope("run", str(spec), "--no-progress", check=True)
    with Store.open(run) as store:
        trials = store.trials()
        assert len(trials) == 12 and all(t.status == "done" for t in trials)
        for t in trials:
            assert store.count_samples(t.trial_id) == 3
            if t.trial_id in done_before:
                assert t.finished == done_before[t.trial_id]
    assert set(_done_lines(run).values()) == {1}


def test_exports_and_merge(tmp_path: Path) -> None:
    a = write_spec(tmp_path / "a" / "spec.yaml", knobs={"n": [16, 32], "reps": [1]}) if (tmp_path / "a").mkdir() is None else None
    b = write_spec(tmp_path / "b" / "spec.yaml", knobs={"n": [32, 48], "reps": [1]}) if (tmp_path / "b").mkdir() is None else None
    assert a and b
    cli("run", str(a), "--no-progress", check=True)
    cli("run", str(b), "--no-progress", check=True)
    run_a, run_b, merged = tmp_path / "a" / "run", tmp_path / "b" / "run", tmp_path / "merged"

    data = json.loads((run_a / "results.json").read_text())  # written by run
    assert set(data) == {"summary", "all_samples"}
    assert len(data["summary"]) == 2 and len(data["all_samples"]) == 4
    assert {"n", "reps", "matmul_ms_p95", "total_ms_mean", "status"} <= set(data["summary"][0])
    assert {"sample_id", "n", "reps", "matmul_ms", "total_ms", "other_ms"} <= set(data["all_samples"][0])
    csv = pd.read_csv(run_a / "results.csv")
    assert list(csv["n"]) == [16, 32] and "total_ms_p99" in csv.columns
    # The evaluation order: the rows follow creation order, eval_order the order of measurement.
    with Store.open(run_a) as store:
        by_start = [t.config["n"] for t in sorted(store.trials(), key=lambda t: t.started)]
    assert sorted(csv["eval_order"]) == [1, 2]
    assert list(csv.sort_values("eval_order")["n"]) == by_start
    assert all(pd.Timestamp(s) <= pd.Timestamp(f) for s, f in zip(csv["started_at"], csv["finished_at"]))

    cli("export", str(run_a), "--format", "parquet", check=True)
    assert len(pd.read_parquet(run_a / "summary.parquet")) == 2
    assert len(pd.read_parquet(run_a / "samples.parquet")) == 4

    proc = cli("merge", str(run_a), str(run_b), "-o", str(merged), check=True)
    assert "3 trials added" in proc.stdout and "1 duplicates" in proc.stdout
    with Store.open(merged) as store:
        trials = store.trials()
        assert sorted(t.config["n"] for t in trials) == [16, 32, 48]
        assert all(store.count_samples(t.trial_id) == 2 for t in trials)
        assert len(store.runs()) == 2


def test_a_few_columns_read_by_sqlite_equal_the_flattened_summaries(tmp_path: Path) -> None:
    from knobscope.goals import column_for
    from knobscope.results import flatten_summary, summary_columns

    summaries = [  # the usual layout, a NaN and an infinity where SQLite's JSON has none, an older layout, none
        {"metrics": {"cosine": {"mean": 0.9, "p95": 0.95}}, "values": {"cosine": {"value": 0.9, "ci_low": 0.8, "ci_high": 1.0}},
         "aggregate": {"bound": 2.0}},
        {"metrics": {"cosine": {"mean": float("nan"), "p95": float("-inf")}}, "values": {"cosine": {"value": 0.7}},
         "aggregate": {"bound": float("inf")}},
        {"metrics": {"cosine": {"mean": 0.6, "p95": 0.65}}, "aggregate": {"bound": 3.0}},
        {},
    ]  # fmt: skip
    with Store.open(tmp_path / "run", create=True) as store:
        run = store.begin_run("x", {}, {})
        store.add_trials([(f"t{i}", json.dumps({"a": i}), "w", "{}") for i in range(len(summaries) + 1)])
        for i, summary in enumerate(summaries):
            assert store.claim(f"t{i}", "me")
            store.complete(f"t{i}", "me", records=[], summary=summary, measure={}, run_id=run)
        names = ["cosine", "cosine_p95", "cosine_ci_low", "bound", "absent"]
        expected = []
        for t in store.trials(status="done"):
            flat = flatten_summary(t.summary)
            expected.append((t.config, {n: flat.get(column_for(n, flat) or n) for n in names}))
        got = summary_columns(store, names)
    assert len(got) == 4 and got == expected  # the pending trial is not read
    assert got[0][1] == {"cosine": 0.9, "cosine_p95": 0.95, "cosine_ci_low": 0.8, "bound": 2.0, "absent": None}
    assert got[2][1]["cosine"] == 0.6  # the bare name means the mean where no value is declared


def test_stored_json_is_strict_and_keeps_nan_and_infinities(tmp_path: Path) -> None:
    import math
    import sqlite3

    def strict(text: str) -> object:  # a reader that knows no NaN / Infinity tokens
        return json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} in stored JSON"))

    summary = {"stages": {"total": {"mean": 2.0, "p99_ci_low": float("nan"), "p99_ci_high": float("inf")}},
               "metrics": {"gap": {"min": float("-inf"), "values": [1.0, float("nan")]}}}  # fmt: skip
    record = {"sample_id": "s0", "cosine": float("nan"), "ms": 1.5}
    with Store.open(tmp_path / "run", create=True) as store:
        run = store.begin_run("x", {}, {})
        store.add_trials([("t0", json.dumps({"a": 0}), "w", "{}"), ("t1", json.dumps({"a": 1}), "w", "{}")])
        assert store.claim("t0", "me")
        store.complete("t0", "me", records=[record], summary=summary, measure={"repeats": 1}, run_id=run)
        back = store.trials(status="done")[0].summary
        (_, rec), = store.samples("t0")
    assert back is not None and back["stages"]["total"]["mean"] == 2.0
    assert math.isnan(back["stages"]["total"]["p99_ci_low"]) and back["stages"]["total"]["p99_ci_high"] == math.inf
    assert back["metrics"]["gap"]["min"] == -math.inf and math.isnan(back["metrics"]["gap"]["values"][1])
    assert "_nonfinite" not in back and math.isnan(rec["cosine"]) and rec["ms"] == 1.5
    conn = sqlite3.connect(tmp_path / "run" / "results.db")
    text, = conn.execute("SELECT summary FROM trials WHERE trial_id = 't0'").fetchone()
    stored = strict(text)
    assert stored["stages"]["total"]["p99_ci_low"] is None and stored["stages"]["total"]["mean"] == 2.0
    strict(conn.execute("SELECT record FROM samples").fetchone()[0])
    # SQLite's own JSON reads it (the non-finite as null, which AVG skips)
    assert conn.execute("SELECT json_extract(summary, '$.stages.total.p99_ci_high') IS NULL FROM trials "
                        "WHERE trial_id = 't0'").fetchone() == (1,)  # fmt: skip
    # a store written before strict JSON (bare NaN / Infinity tokens) still reads
    conn.execute("UPDATE trials SET status = 'done', summary = ? WHERE trial_id = 't1'",
                 ('{"stages": {"total": {"mean": 1.0, "p99_ci_low": NaN, "p99_ci_high": Infinity}}}',))  # fmt: skip
    conn.commit()
    conn.close()
    with Store.open(tmp_path / "run") as store:
        old = {t.trial_id: t.summary for t in store.trials(status="done")}["t1"]
        # SQLite's JSON reads a few fields of both layouts (the bare tokens as null)
        fields = {tid: f for tid, _, f in store.summary_fields({"mean": ["stages", "total", "mean"],
                                                                 "low": ["stages", "total", "p99_ci_low"]})}  # fmt: skip
    assert old is not None and math.isnan(old["stages"]["total"]["p99_ci_low"])
    assert old["stages"]["total"]["p99_ci_high"] == math.inf
    assert fields == {"t0": {"mean": 2.0, "low": None}, "t1": {"mean": 1.0, "low": None}}


def test_an_interrupt_while_a_result_is_stored_hands_its_claim_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C can land after a trial has left the in-flight set and before its result is stored
    (the store's transaction then rolls back): its claim must still go back, or a resume in this
    process's lifetime would skip it and its status would read 'running' until the lease ran out."""
    from knobscope.executors import run_local
    from knobscope.spec import load_spec

    real, calls = Store.complete, []

    def complete(self: Store, *args: object, **kw: object) -> bool:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the second result, as it is being written
        return real(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "complete", complete)
    with pytest.raises(KeyboardInterrupt):
        run_local(load_spec(write_spec(tmp_path / "spec.yaml")))
    with Store.open(tmp_path / "run") as store:
        assert store.status_counts() == {"pending": 5, "running": 0, "done": 1, "failed": 0}
    monkeypatch.setattr(Store, "complete", real)
    assert "ran 5" in cli("run", str(tmp_path / "spec.yaml"), "--no-progress", check=True).stdout
