"""Is a stage's latency the device's work or the host's? One untimed sample under ``torch.profiler``.

On a GPU, small-batch decoding of a small model keeps the device busy a few per cent of the
time (issue 15: SmolLM2 on an H100, ~5%, 484-1,225 kernels per token), so its latency is the
host's Python and kernel-launch speed, and two hosts with the same GPU disagreed by 25%. A user
comparing configurations must be told. Per configuration, :func:`diagnose_sample` runs one
extra sample under the profiler (not recorded among the timed samples: the profiler slows the
host) with each stage annotated, and reports per stage:

* ``busy_share``: the share of the stage's wall time in which the device was working. On CUDA:
  the union of its kernels' and copies' intervals (the stage timer synchronises at stage
  boundaries, so a stage's kernels finish inside it). The profiler also draws every
  ``record_function`` range on the device's timeline (a "user annotation" spanning the kernels
  launched inside it): those are not work, and counting them made decoding on an H200 read
  100% busy at 17 µs of host time per kernel launch. On CPU, where the host *is* the device:
  the union of the intervals of top-level PyTorch operators, so the rest is Python and
  framework overhead between them.
* ``launches`` and ``launches_per_call``: CUDA kernel launches (or top-level operators on CPU)
  in the stage, and per call of it (per token for ``decode``).
* ``host_bound``: the stages whose busy share is below :data:`HOST_BOUND_BELOW` and that take
  at least :data:`SIGNIFICANT_SHARE` of the sample.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DeviceDiagnostic", "StageActivity", "diagnose_sample", "diagnostic_from_events", "diagnostic_from_profile",
           "host_bound_notes",
           "HOST_BOUND_BELOW", "SAMPLE", "STAGE_PREFIX"]

HOST_BOUND_BELOW = 0.5  # a stage in which the device works less than half the time waits on the host
SIGNIFICANT_SHARE = 0.05  # of the sample's wall time: shorter stages are not called host-bound
SAMPLE = "knobscope.sample"
STAGE_PREFIX = "knobscope.stage:"
LAUNCHES = ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchCooperativeKernel", "cudaGraphLaunch", "hipLaunchKernel",
            "hipModuleLaunchKernel")  # fmt: skip


@dataclass(frozen=True)
class StageActivity:
    """One stage of the diagnostic sample (all its calls together)."""

    busy_share: float
    launches: int
    calls: int
    wall_ms: float

    @property
    def launches_per_call(self) -> float:
        return self.launches / self.calls if self.calls else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"busy_share": self.busy_share, "launches": self.launches, "calls": self.calls,
                "launches_per_call": self.launches_per_call, "wall_ms": self.wall_ms}  # fmt: skip


@dataclass(frozen=True)
class DeviceDiagnostic:
    """What the profiled sample says: the device kind, what counts as its work, and per stage."""

    device: str  # "cuda" or "cpu"
    work: str  # "kernels" (CUDA) or "operators" (CPU)
    sample: StageActivity
    stages: Mapping[str, StageActivity] = field(default_factory=dict)

    @property
    def host_bound(self) -> list[str]:
        """Stages busy less than :data:`HOST_BOUND_BELOW` of their time that take at least
        :data:`SIGNIFICANT_SHARE` of the sample (a millisecond of tokenizing is host work by
        nature, and nobody's latency)."""
        floor = SIGNIFICANT_SHARE * self.sample.wall_ms
        return [name for name, s in self.stages.items() if s.busy_share < HOST_BOUND_BELOW and s.wall_ms >= floor]

    def to_json(self) -> dict[str, Any]:
        return {"device": self.device, "work": self.work, "busy_share": self.sample.busy_share,
                "launches": self.sample.launches, "wall_ms": self.sample.wall_ms,
                "stages": {name: s.to_json() for name, s in self.stages.items()}, "host_bound": self.host_bound,
                "host_bound_below": HOST_BOUND_BELOW}  # fmt: skip


@dataclass(frozen=True)
class _Event:
    name: str
    start: float  # microseconds, the profiler's clock
    end: float
    on_device: bool
    thread: int
    top_level_op: bool
    annotation: bool = False  # a record_function range (on the device's timeline too), not work


class _Coverage:
    """The union of intervals, for the covered length of many windows (a decode stage has one per
    token, against tens of thousands of kernels: sorted and merged once, then binary search)."""

    def __init__(self, intervals: Sequence[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for start, end in sorted(intervals):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        pairs = np.array(merged, dtype=float).reshape(-1, 2)
        self.starts, self.ends = pairs[:, 0], pairs[:, 1]
        self.before = np.concatenate([[0.0], np.cumsum(self.ends - self.starts)])  # length of the first i intervals

    def up_to(self, x: np.ndarray) -> np.ndarray:
        """Covered length in (-inf, x]."""
        if not len(self.starts):
            return np.zeros_like(x)
        k = np.searchsorted(self.starts, x, side="right")  # intervals starting at or before x
        last = np.maximum(k - 1, 0)
        covered = self.before[last] + np.minimum(self.ends[last], x) - self.starts[last]
        return np.where(k > 0, covered, 0.0)

    def within(self, lo: np.ndarray, hi: np.ndarray) -> float:
        return float((self.up_to(hi) - self.up_to(lo)).sum())


def diagnostic_from_events(events: Sequence[_Event], device: str) -> DeviceDiagnostic | None:
    """Per-stage activity from profiler events (``None`` if the sample was not annotated)."""
    cuda = device.startswith("cuda")
    events = [e for e in events if not (e.on_device and e.annotation)]
    sample = [e for e in events if e.name == SAMPLE]
    if not sample:
        return None
    host = sample[0].thread
    if cuda:
        busy = [(e.start, e.end) for e in events if e.on_device]
        launches = [e.start for e in events if not e.on_device and e.name.startswith(LAUNCHES)]
    else:  # the operators the host thread ran, outermost only (an op's children are inside it)
        ops = [e for e in events if e.top_level_op and e.thread == host]
        busy = [(e.start, e.end) for e in ops]
        launches = [e.start for e in ops]

    coverage, starts = _Coverage(busy), np.sort(np.array(launches, dtype=float))

    def activity(ranges: list[tuple[float, float]]) -> StageActivity:
        lo, hi = np.array([r[0] for r in ranges], dtype=float), np.array([r[1] for r in ranges], dtype=float)
        wall = float((hi - lo).sum())
        count = int((np.searchsorted(starts, hi, side="left") - np.searchsorted(starts, lo, side="left")).sum())
        return StageActivity(coverage.within(lo, hi) / wall if wall > 0 else 0.0, count, len(ranges), wall / 1e3)

    stages: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        if e.name.startswith(STAGE_PREFIX) and e.thread == host:
            stages.setdefault(e.name[len(STAGE_PREFIX):], []).append((e.start, e.end))
    return DeviceDiagnostic("cuda" if cuda else "cpu", "kernels" if cuda else "operators",
                            activity([(sample[0].start, sample[0].end)]),
                            {name: activity(r) for name, r in stages.items()})  # fmt: skip


def _events(prof: Any) -> list[_Event]:
    from torch.autograd import DeviceType

    out = []
    for e in prof.events():
        on_device = e.device_type != DeviceType.CPU
        parent = e.cpu_parent
        top = (not on_device and e.name.startswith("aten::")
               and (parent is None or not parent.name.startswith("aten::")))  # fmt: skip
        annotation = bool(getattr(e, "is_user_annotation", False))  # FunctionEvent has it from torch 2.4
        out.append(_Event(e.name, float(e.time_range.start), float(e.time_range.end), on_device, int(e.thread), top,
                          annotation))
    return out


def diagnostic_from_profile(prof: Any, device: str) -> DeviceDiagnostic | None:
    """:func:`diagnostic_from_events` of a finished ``torch.profiler.profile`` whose work ran under
    ``record_function(SAMPLE)`` with stages as ``record_function(STAGE_PREFIX + name)`` (also
    how ``benchmarks/sketchwalk_vs_sdpa.py --profile`` splits one SketchWalk layer)."""
    return diagnostic_from_events(_events(prof), device)


@contextlib.contextmanager
def _no_stderr() -> Iterator[None]:
    """The process's stderr (file descriptor 2) to /dev/null: the profiler's C++ side prints two
    lines at every start and stop, whatever the log level."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def diagnose_sample(workload: Any, sample: Any, timer: Any) -> DeviceDiagnostic | None:
    """Run ``sample`` once under ``torch.profiler`` with the timer's stages annotated; the run's
    timing and output are discarded."""
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    cuda = str(timer.device).startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    prof = profile(activities=activities)
    with _no_stderr():
        prof.start()
    try:
        with timer.annotated(), record_function(SAMPLE), timer.sample():
            workload.run(sample, timer)
        if cuda:
            torch.cuda.synchronize()
    finally:
        with _no_stderr():
            prof.stop()
    return diagnostic_from_profile(prof, str(timer.device))


def host_bound_notes(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """One plain sentence per host-bound stage over a results table's rows (``host_bound``,
    ``diagnosed_on`` and ``{stage}_busy_share`` / ``_launches_per_call`` columns), for ``show``
    and the report."""
    rows = [r for r in rows if isinstance(r.get("host_bound"), str)]
    device = str(rows[0].get("diagnosed_on", "cuda")) if rows else "cuda"
    stages: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        for stage in filter(None, r["host_bound"].split(",")):
            stages.setdefault(stage, []).append(r)
    out = []
    for stage, hit in stages.items():
        busy = [float(r[f"{stage}_busy_share"]) for r in hit]
        per_call = [float(r[f"{stage}_launches_per_call"]) for r in hit]
        what = ("the device ran kernels", "kernels launched") if device.startswith("cuda") else (
            "PyTorch operators ran", "operators")  # fmt: skip
        span = lambda v, f: format(min(v), f) + ("" if format(min(v), f) == format(max(v), f) else "-" + format(max(v), f))  # noqa: E731
        out.append(f"{stage} is host-bound in {len(hit)} of {len(rows)} configurations: {what[0]} {span(busy, '.0%')} "
                   f"of its time ({span(per_call, ',.0f')} {what[1]} per call, one "
                   "profiled sample each), so its latency measures the host's Python and launch speed more than the "
                   "device; another host, or fewer launches (larger batches, CUDA graphs, torch.compile), changes it")  # fmt: skip
    return out
