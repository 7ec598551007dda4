from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import PLUGINS, cli, write_spec
from knobscope.measure import PeakMemory, StageTimer, summarize
from knobscope.store import Store


def test_summarize_matches_numpy() -> None:
    values = np.random.default_rng(0).exponential(10.0, size=1000)
    stats = summarize(values.tolist())
    assert stats["n"] == 1000
    assert stats["mean"] == pytest.approx(values.mean())
    assert stats["std"] == pytest.approx(values.std(ddof=1))
    for q in (50, 90, 95, 99):
        assert stats[f"p{q}"] == pytest.approx(np.percentile(values, q))
    assert summarize([])["n"] == 0 and summarize([float("nan"), 2.0])["mean"] == 2.0


def test_known_stage_times_are_reported_within_a_few_percent(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path / "spec.yaml",
        workload={"name": f"{PLUGINS}:KnownStages", "args": {"num_samples": 8}},
        knobs={"a_sleep": [20, 50], "b_sleep": [10]},
        measure={"warmup": 1, "repeats": 2},
    )
    cli("run", str(spec), "--no-progress", check=True)
    with Store.open(tmp_path / "run") as store:
        for t in store.trials():
            a, b = t.config["a_sleep"], t.config["b_sleep"]
            m = t.summary["metrics"]
            assert m["a_ms"]["n"] == 16
            assert m["a_ms"]["p50"] == pytest.approx(a, rel=0.05)
            assert m["b_ms"]["p50"] == pytest.approx(b, rel=0.05)
            assert m["total_ms"]["p50"] == pytest.approx(a + b + 1, rel=0.05)
            for _, rec in store.samples(t.trial_id):
                # top-level stages plus the unattributed rest add up to the total exactly
                assert rec["a_ms"] + rec["b_ms"] + rec["other_ms"] == pytest.approx(rec["total_ms"], abs=1e-9)
            assert 0.9 < m["other_ms"]["p50"] < 2.0  # the untimed 1 ms sleep lands in "other"


def test_module_hooks_time_a_model_without_edits() -> None:
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    timer = StageTimer("cpu")
    timer.attach(model[0], "first")
    timer.attach(model[2], "last")
    x = torch.randn(64, 256)
    with timer.sample() as timing:
        with timer.stage("forward"):
            model(x)
            model(x)
    assert timing.calls_ms["first"] and len(timing.calls_ms["first"]) == 2
    assert timing.top_level == {"forward"}  # hooked modules nested inside a stage are not top-level
    assert timing.stages_ms["first"] + timing.stages_ms["last"] <= timing.stages_ms["forward"]
    assert timing.other_ms >= 0
    model(x)  # outside a sample the hooks record nothing
    timer.detach_all()
    with timer.sample() as timing:
        model(x)
    assert "first" not in timing.stages_ms


class _WallEvent:
    """A stand-in for ``torch.cuda.Event`` on CPU: the time it was recorded."""

    made = 0

    def __init__(self) -> None:
        _WallEvent.made += 1

    def record(self) -> None:
        import time

        self.t = time.perf_counter()

    def elapsed_time(self, end: _WallEvent) -> float:
        return (end.t - self.t) * 1e3


def test_hooks_timed_by_events_are_read_at_the_end_of_the_sample() -> None:
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256))
    timer = StageTimer("cpu", hook_timing="events", event_factory=_WallEvent)
    timer.attach(model[0], "first", scoped=True)
    timer.attach(model[2], "last")
    x = torch.randn(64, 256)
    with timer.sample() as timing:
        with timer.stage("prefill"):
            model(x)
        for _ in range(3):
            with timer.stage("decode"):
                model(x)
        model(x)  # outside any stage: its hooks' stages are top-level
    assert _WallEvent.made == 2 * (2 * 5)  # a start and an end event per hooked call, no synchronisation between
    assert len(timing.calls_ms["prefill_first"]) == 1 and len(timing.calls_ms["decode_first"]) == 3
    assert len(timing.calls_ms["last"]) == 5 and len(timing.calls_ms["first"]) == 1
    assert timing.top_level == {"prefill", "decode", "first", "last"}
    assert timing.stages_ms["prefill_first"] <= timing.stages_ms["prefill"]
    assert all(ms > 0 for calls in timing.calls_ms.values() for ms in calls)
    sync = StageTimer("cuda:0", hook_timing="sync")  # the default: hooks synchronise, whatever the device
    assert not sync._hook_events and StageTimer("cpu", hook_timing="events")._events is None  # nothing to record on CPU


def test_device_timed_stages_record_events_inside_a_synchronised_stage() -> None:
    """Sub-stages a loop repeats (SketchWalk's per-layer sketch and product) take the device's
    time between events on CUDA instead of synchronising at each boundary; the enclosing stage
    still synchronises. Without device events (CPU) they are ordinary stages."""
    _WallEvent.made = 0
    x = torch.randn(128, 128)
    for factory in (_WallEvent, None):
        timer = StageTimer("cpu", event_factory=factory)
        with timer.sample() as timing:
            with timer.stage("arm"):
                for _ in range(4):
                    with timer.stage("sketch", device_time=True):
                        x @ x
                    with timer.stage("product", device_time=True):
                        x @ x
        assert len(timing.calls_ms["sketch"]) == 4 and len(timing.calls_ms["product"]) == 4
        assert timing.top_level == {"arm"}
        assert timing.stages_ms["sketch"] + timing.stages_ms["product"] <= timing.stages_ms["arm"]
    assert _WallEvent.made == 2 * 8  # only the timer that had events made them


def test_peak_memory_window_resets() -> None:
    import mmap

    mem = PeakMemory("cpu")
    mem.reset()
    # An anonymous mapping, touched page by page, then unmapped: its 200 MiB surely leave the
    # resident set. (A numpy array may reuse heap memory an earlier test freed, which free()
    # keeps resident: the resident set would not drop, and the reset would rightly keep the peak.)
    block = mmap.mmap(-1, 200 * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    high = mem.peak_mb()
    block.close()
    mem.reset()
    if not mem.resettable:
        pytest.skip("this kernel does not let a process reset its RSS high-water mark")
    assert mem.peak_mb() < high - 100


def test_peak_memory_notices_a_kernel_that_ignores_the_reset(monkeypatch: pytest.MonkeyPatch) -> None:
    # A sandboxed kernel accepts the write to clear_refs and leaves the high-water mark alone.
    import knobscope.measure as measure

    status = {"VmHWM:": 1431.0, "VmRSS:": 300.0}
    monkeypatch.setattr(measure, "_proc_status_mb", lambda key: status.get(key))
    mem = PeakMemory("cpu")
    mem.reset()
    assert not mem.resettable
    assert mem.kind == "rss_high_water_since_start"  # stored with the trial, so the number is not misread
