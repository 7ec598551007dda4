"""The profiled diagnostic sample (``knobscope.diagnose``): how busy the device was per stage."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import PLUGINS, cli, write_spec
from knobscope.diagnose import SAMPLE, STAGE_PREFIX, _Event, diagnostic_from_events


def _ev(name: str, start: float, end: float, *, device: bool = False, top: bool = False,
        annotation: bool = False) -> _Event:
    return _Event(name, start, end, device, 1, top, annotation)


def test_busy_share_and_launches_per_stage_from_cuda_events() -> None:
    events = [
        _ev(SAMPLE, 0, 1000),
        _ev(STAGE_PREFIX + "tokenize", 0, 20),  # host work by nature, and 2% of the sample: not reported
        _ev(STAGE_PREFIX + "prefill", 20, 400),
        _ev(STAGE_PREFIX + "decode", 400, 700), _ev(STAGE_PREFIX + "decode", 700, 1000),  # two calls (tokens)
        *[_ev("cudaLaunchKernel", t, t + 1) for t in (30, 40, 50, 410, 420, 710)],
        _ev("gemm", 50, 350, device=True), _ev("gemm", 100, 200, device=True),  # overlapping: counted once
        _ev("small", 450, 480, device=True), _ev("small", 750, 780, device=True),
    ]  # fmt: skip
    d = diagnostic_from_events(events, "cuda:0")
    assert d is not None and d.device == "cuda" and d.work == "kernels"
    assert d.stages["prefill"].busy_share == pytest.approx(300 / 380) and d.stages["prefill"].launches == 3
    decode = d.stages["decode"]
    assert decode.calls == 2 and decode.launches == 3 and decode.launches_per_call == 1.5
    assert decode.busy_share == pytest.approx(60 / 600)
    assert d.stages["tokenize"].busy_share == 0
    assert d.sample.busy_share == pytest.approx(360 / 1000) and d.host_bound == ["decode"]


def test_the_profilers_annotations_on_the_device_timeline_are_not_work() -> None:
    """On CUDA the profiler draws every record_function range on the device's timeline as well
    (kineto's "gpu_user_annotation"), spanning the kernels inside it; counted as work, they made
    host-bound decoding on an H200 read 100% busy."""
    events = [
        _ev(SAMPLE, 0, 1000, annotation=True), _ev(STAGE_PREFIX + "decode", 0, 1000, annotation=True),
        _ev("cudaLaunchKernel", 10, 11), _ev("small", 100, 150, device=True),
        # the same ranges on the device's timeline, on another "thread" (the stream)
        _Event(SAMPLE, 5, 995, True, 7, False, True), _Event(STAGE_PREFIX + "decode", 5, 995, True, 7, False, True),
        _Event("CompiledFxGraph", 90, 160, True, 7, False, True),
    ]  # fmt: skip
    d = diagnostic_from_events(events, "cuda:0")
    assert d is not None and d.stages["decode"].busy_share == pytest.approx(50 / 1000)
    assert d.sample.busy_share == pytest.approx(50 / 1000) and d.host_bound == ["decode"]


def test_on_cpu_the_work_is_the_outermost_operators() -> None:
    events = [_ev(SAMPLE, 0, 100), _ev(STAGE_PREFIX + "s", 0, 100), _ev("aten::mm", 10, 60, top=True),
              _ev("aten::addmm", 20, 30), _ev("aten::add", 70, 80, top=True)]  # fmt: skip
    d = diagnostic_from_events(events, "cpu")
    assert d is not None and d.work == "operators"
    assert d.stages["s"].launches == 2 and d.stages["s"].busy_share == pytest.approx(0.6)
    assert diagnostic_from_events(events[1:], "cpu") is None  # no annotated sample


def test_a_stage_waiting_on_the_host_is_reported_and_the_timed_samples_are_untouched(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", workload={"name": f"{PLUGINS}:HostAndDevice", "args": {"num_samples": 2}},
                      knobs={"host_wait": [0, 60]}, measure={"warmup": 0, "repeats": 1, "diagnose": True})  # fmt: skip
    cli("run", str(spec), "--no-progress", check=True)
    df = pd.read_csv(tmp_path / "run" / "results.csv").set_index("host_wait")
    assert (df["num_records"] == 2).all()  # the profiled sample is not among the measured ones
    assert (df["diagnosed_on"] == "cpu").all()
    assert df.loc[60, "host_busy_share"] < 0.2 and df.loc[60, "compute_busy_share"] > 0.5
    assert df.loc[60, "host_bound"] == "host" and df.loc[60, "compute_launches_per_call"] >= 40  # 20 x (mm, tanh)
    shown = cli("show", str(tmp_path / "run"), check=True).stdout
    assert "device busy" in shown and "host is host-bound in" in shown
    cli("report", str(tmp_path / "run"), check=True)
    html = (tmp_path / "run" / "report.html").read_text()
    assert "device busy" in html and "Host-bound: host is host-bound in" in html
    summary = json.loads((tmp_path / "run" / "results.json").read_text())["summary"]
    assert all("host_busy_share" in row for row in summary)


def test_auto_diagnoses_on_cuda_only(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", workload={"name": f"{PLUGINS}:HostAndDevice", "args": {"num_samples": 1}},
                      knobs={"host_wait": [0]})  # fmt: skip
    cli("run", str(spec), "--no-progress", check=True)
    assert "device_busy_share" not in pd.read_csv(tmp_path / "run" / "results.csv").columns


def test_profiler_events_carry_whether_they_are_annotations() -> None:
    from types import SimpleNamespace

    from torch.autograd import DeviceType

    from knobscope.diagnose import _events

    def fe(name: str, device: DeviceType, annotation: bool) -> SimpleNamespace:
        return SimpleNamespace(name=name, device_type=device, cpu_parent=None, time_range=SimpleNamespace(start=0, end=5),
                               thread=1, is_user_annotation=annotation)  # fmt: skip

    prof = SimpleNamespace(events=lambda: [fe(SAMPLE, DeviceType.CUDA, True), fe("gemm", DeviceType.CUDA, False)])
    assert [(e.name, e.on_device, e.annotation) for e in _events(prof)] == [(SAMPLE, True, True), ("gemm", True, False)]
