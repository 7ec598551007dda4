"""All timing lives here: stage timer, module hooks, a configuration's measurement, memory, provenance.

:func:`measure_config` measures one configuration and returns a :class:`Measurement`: the raw
per-sample records, statistics derived from them with 95% intervals
(:mod:`knobscope.intervals`), and a noise verdict with its reason.

Nothing else in knobscope calls ``time.perf_counter`` for a measurement. A sample is timed as
a whole (``total``); inside it, a workload marks named stages (``with timer.stage("prefill")``)
or attaches stages to ``torch.nn.Module`` objects through forward hooks, so a user's model needs
no edits. On CUDA the timer synchronizes the device at every stage boundary (kernels are
asynchronous, so an unsynchronized clock measures launch time, not work); on CPU it does not.

Top-level stages never overlap, so they add up to at most the total; the remainder is recorded
as ``other_ms`` and ``sum(top-level stages) + other == total`` holds exactly for every sample.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from knobscope.intervals import Estimate

__all__ = [
    "Measurement",
    "Noise",
    "RepeatPolicy",
    "measure_config",
    "extend_summary",
    "needs_pass",
    "describe_records",
    "ranges_of",
    "noise_of",
    "StageTimer",
    "SampleTiming",
    "PeakMemory",
    "summarize",
    "STAT_NAMES",
    "provenance",
    "resolve_device",
    "Stage",
    "no_stage",
]

# A function that times a block as the named stage (``StageTimer.stage``), or does nothing.
Stage = Callable[[str], contextlib.AbstractContextManager[Any]]


def no_stage(name: str) -> contextlib.AbstractContextManager[Any]:
    """A :data:`Stage` that times nothing (code that is timed inside a workload, called outside one)."""
    return contextlib.nullcontext()


STAT_NAMES = ("mean", "std", "min", "max", "p50", "p90", "p95", "p99", "n")


def summarize(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample std, min, max, P50/P90/P95/P99 and count of ``values`` (NaNs dropped)."""
    arr = np.asarray([v for v in values if v is not None], dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return {name: float("nan") for name in STAT_NAMES[:-1]} | {"n": 0}
    p50, p90, p95, p99 = np.percentile(arr, [50, 90, 95, 99])
    return {
        "mean": float(arr.mean()),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "p50": float(p50),
        "p90": float(p90),
        "p95": float(p95),
        "p99": float(p99),
        "n": int(arr.size),
    }


def resolve_device(device: str = "auto", *, local_rank: int | None = None) -> str:
    """``auto`` -> ``cuda:LOCAL_RANK`` when CUDA is available (``cuda:0`` outside torchrun), else ``cpu``."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        rank = local_rank if local_rank is not None else int(os.environ.get("LOCAL_RANK", 0))
        return f"cuda:{rank % torch.cuda.device_count()}"
    return "cpu"


def _cuda_sync(device: str) -> Callable[[], None] | None:
    if not device.startswith("cuda"):
        return None
    import torch

    dev = torch.device(device)
    return lambda: torch.cuda.synchronize(dev)


@dataclass
class SampleTiming:
    """Times of one sample, in milliseconds.

    Attributes:
        total_ms: wall time of the whole sample.
        stages_ms: per stage name, the sum over its calls in this sample.
        calls_ms: per stage name, every call's time (e.g. one per decoded token).
        top_level: names of stages that ran outside any other stage (they add up to <= total).
    """

    total_ms: float = 0.0
    stages_ms: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls_ms: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    top_level: set[str] = field(default_factory=set)

    @property
    def other_ms(self) -> float:
        return self.total_ms - sum(self.stages_ms[s] for s in self.top_level)

    def metrics(self) -> dict[str, float]:
        """Flat ``{stage}_ms`` metrics plus ``total_ms`` and ``other_ms``."""
        out = {f"{name}_ms": ms for name, ms in self.stages_ms.items()}
        out["total_ms"] = self.total_ms
        out["other_ms"] = self.other_ms
        return out


class StageTimer:
    """Times named stages within samples.

    Usage::

        timer = StageTimer(device="cuda:0")
        timer.attach(model.vision_tower, "vision_encoder")   # forward hooks, no model edits
        with timer.sample() as timing:
            with timer.stage("prefill"):
                ...
        timing.stages_ms["prefill"], timing.total_ms

    Stages may nest (a hooked module inside a named stage); a stage entered while another is
    open is recorded under its own name but is not top-level. Hooks fire only inside
    :meth:`sample`, so a hooked model costs nothing outside measurements. Not thread-safe.
    """

    def __init__(self, device: str = "cpu", *, hook_timing: str = "sync", event_factory: Callable[[], Any] | None = None) -> None:
        """``hook_timing="events"``: on CUDA, stages timed through :meth:`attach` hooks record
        CUDA events instead of synchronising the device at every boundary (which serialises the
        GPU: ~13% of a SmolLM2 generation on an H100 with ``breakdown: true``); their times are
        read at the end of the sample, as the device's time between the events. Stages entered
        with :meth:`stage` synchronise unless ``device_time=True``. ``event_factory`` makes the
        events (default, on CUDA: ``torch.cuda.Event(enable_timing=True)``; anything with
        ``record()`` and ``elapsed_time(end)`` in milliseconds)."""
        self.device = device
        self._sync = _cuda_sync(device)
        self._stack: list[tuple[str, float]] = []
        self._current: SampleTiming | None = None
        self._hooks: list[Any] = []
        self._marks: list[Any] | None = None  # inside annotated(): the open profiler ranges
        if event_factory is None and device.startswith("cuda"):
            import torch

            event_factory = lambda: torch.cuda.Event(enable_timing=True)  # noqa: E731
        self._events = event_factory  # None: no device events (CPU); stages always synchronise
        self._hook_events = hook_timing == "events" and event_factory is not None
        self._open: list[tuple[str, Any, bool]] = []  # event-timed hooks: (name, start event, top level)
        self._done: list[tuple[str, Any, Any, bool]] = []  # (name, start, end, top level), read at the sample's end

    @contextlib.contextmanager
    def annotated(self) -> Iterator[None]:
        """Inside, every stage is also a ``torch.profiler`` range named ``knobscope.stage:NAME``
        (:mod:`knobscope.diagnose` reads them); outside, stages cost what they always cost."""
        self._marks = []
        try:
            yield
        finally:
            for mark in reversed(self._marks):
                mark.__exit__(None, None, None)
            self._marks = None

    def _now(self) -> float:
        if self._sync is not None:
            self._sync()
        return time.perf_counter()

    def _mark(self, name: str) -> None:
        if self._marks is not None:
            from torch.autograd.profiler import record_function

            from knobscope.diagnose import STAGE_PREFIX

            mark = record_function(STAGE_PREFIX + name)
            mark.__enter__()
            self._marks.append(mark)

    def _enter(self, name: str) -> None:
        if self._current is not None:
            self._stack.append((name, self._now()))
            self._mark(name)

    def _enter_event(self, name: str) -> None:
        if self._current is not None and self._events is not None:
            start = self._events()
            start.record()
            self._open.append((name, start, not self._stack and not self._open))
            self._mark(name)

    def _exit_event(self) -> None:
        if self._current is None or not self._open:
            return
        end = self._events()  # type: ignore[misc]
        end.record()
        if self._marks:
            self._marks.pop().__exit__(None, None, None)
        name, start, top = self._open.pop()
        self._done.append((name, start, end, top))

    def _exit(self) -> None:
        if self._current is None or not self._stack:
            return
        end = self._now()  # after the device's work (synchronised on CUDA): it falls inside the range
        if self._marks:
            self._marks.pop().__exit__(None, None, None)
        name, start = self._stack.pop()
        ms = (end - start) * 1e3
        self._current.stages_ms[name] += ms
        self._current.calls_ms[name].append(ms)
        if not self._stack:
            self._current.top_level.add(name)

    @contextlib.contextmanager
    def stage(self, name: str, *, device_time: bool = False) -> Iterator[None]:
        """Time the enclosed block as stage ``name`` (a no-op outside :meth:`sample`).

        ``device_time=True``, for stages inside another that many small steps repeat: on CUDA,
        the device's time between two events read at the sample's end, so the host keeps
        queueing work instead of waiting for the device at every boundary (elsewhere, as
        without it). The enclosing stage still synchronises, so its time is the wall time."""
        events = device_time and self._events is not None and self._current is not None
        self._enter_event(name) if events else self._enter(name)
        try:
            yield
        finally:
            self._exit_event() if events else self._exit()

    def stage_ms(self, name: str) -> float:
        """Milliseconds stage ``name`` has taken so far in the open sample (NaN outside one)."""
        if self._current is None:
            return float("nan")
        return self._current.stages_ms.get(name, 0.0)

    @contextlib.contextmanager
    def sample(self) -> Iterator[SampleTiming]:
        """Time one sample; the yielded :class:`SampleTiming` is complete after the block."""
        if self._current is not None:
            raise RuntimeError("StageTimer.sample() does not nest")
        timing = SampleTiming()
        self._current = timing
        self._stack.clear()
        self._open.clear()
        self._done.clear()
        start = self._now()
        try:
            yield timing
        finally:
            timing.total_ms = (self._now() - start) * 1e3  # synchronised: every recorded event has happened
            for name, first, last, top in self._done:
                ms = float(first.elapsed_time(last))
                timing.stages_ms[name] += ms
                timing.calls_ms[name].append(ms)
                if top:
                    timing.top_level.add(name)
            self._current = None
            self._stack.clear()
            self._open.clear()
            self._done.clear()

    def attach(self, module: Any, name: str, *, scoped: bool = False) -> Any:
        """Time every forward call of ``module`` (a ``torch.nn.Module``) as stage ``name``.

        ``scoped=True`` names the stage after the top-level stage it runs in, so one hook
        splits by phase: ``attention`` becomes ``prefill_attention`` and ``decode_attention``.
        Returns a handle whose ``remove()`` detaches the hooks.
        """

        events = self._hook_events

        def enter(*_: Any) -> None:
            stage = f"{self._stack[0][0]}_{name}" if scoped and self._stack else name
            self._enter_event(stage) if events else self._enter(stage)

        pre = module.register_forward_pre_hook(enter)
        post = module.register_forward_hook(lambda *_: self._exit_event() if events else self._exit())
        handle = _HookPair(pre, post)
        self._hooks.append(handle)
        return handle

    def detach_all(self) -> None:
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()


@dataclass
class _HookPair:
    pre: Any
    post: Any

    def remove(self) -> None:
        self.pre.remove()
        self.post.remove()


def _proc_status_mb(field: str) -> float | None:
    """A memory line of ``/proc/self/status`` (``VmRSS:``, ``VmHWM:``) in MiB; None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory over a window: CUDA peak allocated bytes, or the process RSS high-water mark.

    On Linux the RSS high-water mark (``VmHWM``) is reset at :meth:`reset` by writing ``5`` to
    ``/proc/self/clear_refs``; where the kernel refuses or ignores that, ``resettable`` turns
    False and the peak is since process start.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.resettable = True

    @property
    def kind(self) -> str:
        """What :meth:`peak_mb` measures, stored with every trial."""
        if self.device.startswith("cuda"):
            return "cuda_peak_allocated"
        return "rss_high_water" if self.resettable else "rss_high_water_since_start"

    def reset(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            self.resettable = False
            return
        # Some kernels (sandboxes among them) accept the write and reset nothing: right after a
        # real reset the high-water mark equals the resident set, so check that it did.
        hwm, rss = _proc_status_mb("VmHWM:"), _proc_status_mb("VmRSS:")
        if hwm is None or rss is None or hwm > rss + 4:
            self.resettable = False

    def current_mb(self) -> float | None:
        """Memory in use now: CUDA allocated bytes, or the resident set (None where unknown)."""
        if self.device.startswith("cuda"):
            import torch

            return torch.cuda.memory_allocated(torch.device(self.device)) / 2**20
        return _proc_status_mb("VmRSS:")

    def peak_mb(self) -> float:
        if self.device.startswith("cuda"):
            import torch

            return torch.cuda.max_memory_allocated(torch.device(self.device)) / 2**20
        hwm = _proc_status_mb("VmHWM:")
        if hwm is not None:
            return hwm
        # ru_maxrss is kB on Linux, bytes on macOS.
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _git_hash(path: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(
        ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True, text=True, timeout=5, check=False,
    ).stdout.strip()  # fmt: skip
    return out.stdout.strip() + ("-dirty" if dirty else "")


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def provenance(*, device: str, seeds: dict[str, int] | None = None) -> dict[str, Any]:
    """Everything needed to say where and how a number was measured."""
    import knobscope

    torch_threads = None
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:
        pass
    return {
        "knobscope_version": knobscope.__version__,
        "knobscope_git": _git_hash(Path(knobscope.__file__).resolve().parent),
        "cwd_git": _git_hash(Path.cwd()),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "transformers": _version("transformers"),
        "numpy": _version("numpy"),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "device": device,
        "device_name": _device_name(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch_threads,
        "seeds": seeds or {},
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


# -- a configuration's measurement -----------------------------------------------------------

NOISY_SPREAD = 0.10  # repeats of one sample differing by more than this (IQR / median) is noise


def _is_timing(name: str) -> bool:
    return name.endswith("_ms")


@dataclass(frozen=True)
class Noise:
    """Whether a measurement's timings are noisy, and why.

    ``noisy`` is None when it cannot be told: with one repeat per sample, measurement noise and
    real differences between samples look the same.
    """

    noisy: bool | None
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"noisy": self.noisy, "reasons": list(self.reasons)}


def noise_of(records: Sequence[Mapping[str, Any]], metric: str = "total_ms") -> Noise:
    """Judge noise by how much repeats of the same sample disagree on ``metric``
    (the median over samples of IQR / median, flagged above 10% as torch.utils.benchmark does)."""
    by_sample: dict[Any, list[float]] = defaultdict(list)
    for r in records:
        value = r.get(metric)
        if isinstance(value, (int, float)):
            by_sample[str(r.get("sample_id"))].append(float(value))
    repeated = [np.asarray(v) for v in by_sample.values() if len(v) >= 2]
    if not repeated:
        return Noise(None, (f"one repeat per sample: noise in {metric} cannot be told from differences between samples; "
                            "measure repeats >= 2 (or repeats: auto)",))  # fmt: skip
    spreads = [float(np.subtract(*np.percentile(v, [75, 25])) / np.median(v)) for v in repeated if np.median(v) > 0]
    spread = float(np.median(spreads)) if spreads else 0.0
    worst = max(float(v.max() / np.median(v)) for v in repeated if np.median(v) > 0) if spreads else 1.0
    if spread > NOISY_SPREAD:
        return Noise(True, (f"repeats of one sample differ by {spread:.0%} in {metric} (median IQR/median; above "
                            f"{NOISY_SPREAD:.0%}), the slowest {worst:.1f}x its median: the machine was busy or its clocks changed",))  # fmt: skip
    return Noise(False, (f"repeats of one sample differ by {spread:.1%} in {metric} (median IQR/median)",))


@dataclass(frozen=True)
class RepeatPolicy:
    """How many passes over the samples a configuration gets.

    ``fixed``: exactly ``repeats``. ``auto``: at least ``min_repeats``, then one more pass at a
    time until every target statistic's 95% interval is within ``target_ci`` of its value
    (relative half-width), or ``max_repeats`` passes.
    """

    mode: str = "fixed"
    repeats: int = 1
    min_repeats: int = 2
    max_repeats: int = 10
    target_ci: float = 0.05
    targets: tuple[tuple[str, str], ...] = (("total_ms", "mean"),)  # (per-sample metric, statistic)

    @property
    def first(self) -> int:
        return self.repeats if self.mode == "fixed" else self.min_repeats

    @property
    def cap(self) -> int:
        return self.repeats if self.mode == "fixed" else self.max_repeats


@dataclass(frozen=True)
class Measurement:
    """One configuration measured: raw per-sample records and everything derived from them.

    Attributes:
        records: one per sample and pass (``sample_id``, ``repeat``, stage times, metrics).
        metrics: per-sample metric -> statistics with 95% intervals (:func:`knobscope.intervals.describe`).
        per_call: ``{stage}_per_call_ms`` -> statistics of every call of a repeated stage.
        values: the workload's declared metrics at configuration level: the mean of the
            per-sample values with its interval, or the workload's own aggregate (no interval).
        aggregate: :meth:`Workload.summarize`'s configuration-level metrics.
        noise: whether the timings are noisy, and why.
        passes: passes over the samples; ``target`` says, for ``repeats: auto``, whether the
            intervals reached their target and how wide they ended.
    """

    records: tuple[Mapping[str, Any], ...]
    metrics: Mapping[str, Mapping[str, Any]]
    per_call: Mapping[str, Mapping[str, Any]]
    values: Mapping[str, Mapping[str, Any]]
    aggregate: Mapping[str, Any]
    top_level_stages: tuple[str, ...]
    peak_memory_mb: float
    memory_kind: str
    wall_s: float
    noise: Noise
    passes: int
    policy: str = "fixed"
    target: Mapping[str, Any] | None = None
    diagnostic: Mapping[str, Any] | None = None  # knobscope.diagnose: one profiled sample, untimed

    @classmethod
    def from_records(
        cls,
        records: Sequence[Mapping[str, Any]],
        *,
        declared: Sequence[str] = (),
        quantities: Collection[str] = (),
        ranges: Mapping[str, tuple[float, float]] | None = None,
        aggregate: Mapping[str, Any] | None = None,
        seed: int = 0,
        **fields: Any,
    ) -> Measurement:
        metrics, per_call = describe_records(records, seed=seed, quantities=quantities, ranges=ranges)
        values: dict[str, dict[str, Any]] = {}
        for name in declared:
            if name in metrics:
                s = metrics[name]
                values[name] = {"value": s["mean"], "ci_low": s["mean_ci_low"], "ci_high": s["mean_ci_high"],
                                "ci_method": s.get("ci_method")}  # fmt: skip
        plain: dict[str, Any] = {}
        for name, value in (aggregate or {}).items():
            if isinstance(value, Estimate):
                values[name] = {"value": value.value, "ci_low": value.ci_low, "ci_high": value.ci_high, "ci_method": value.method}
                plain[name] = value.value
            else:
                values[name] = {"value": value, "ci_low": None, "ci_high": None, "ci_method": "none (one value per configuration)"}
                plain[name] = value
        fields.setdefault("noise", noise_of(records))
        return cls(records=tuple(records), metrics=metrics, per_call=per_call, values=values,
                   aggregate=plain, **fields)  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """The JSON the store keeps with the trial (everything but the records)."""
        both = {**self.metrics, **self.per_call}
        return {
            "metrics": {k: _stats_only(v) for k, v in self.metrics.items()},
            "per_call": {k: _stats_only(v) for k, v in self.per_call.items()},
            # 95% intervals of the mean and the percentiles, and how they were computed
            "intervals": {k: {s: x for s, x in v.items() if s not in STAT_NAMES} for k, v in both.items()},
            "values": {k: dict(v) for k, v in self.values.items()},
            "aggregate": dict(self.aggregate),
            # Stages that ran outside any other stage: they (plus other_ms) add up to total_ms,
            # so the latency-breakdown plots stack exactly these.
            "top_level_stages": list(self.top_level_stages),
            "peak_memory_mb": self.peak_memory_mb,
            "memory_kind": self.memory_kind,
            "num_records": len(self.records),
            "measure_wall_s": self.wall_s,  # bookkeeping, not a measurement
            "noise": self.noise.to_json(),
            "repeats": {"passes": self.passes, "policy": self.policy, **(dict(self.target) if self.target else {})},
            **({"diagnostic": dict(self.diagnostic)} if self.diagnostic else {}),
        }


def extend_summary(
    old: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    new: Measurement,
    *,
    declared: Sequence[str],
    seed: int,
    policy: RepeatPolicy | None = None,
    quantities: Collection[str] = (),
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """A trial's summary after another pass: statistics over all its ``records`` (old and new);
    configuration-level aggregates (perplexity, FLOPs) do not depend on repeats and are kept.
    With an ``auto`` policy, whether its targets are met now."""
    passes = int((old.get("repeats") or {}).get("passes", 1)) + new.passes
    target = None
    if policy is not None and policy.mode == "auto":
        widths = _target_widths(records, policy, seed)
        target = {"target_ci": policy.target_ci, "target_met": all(w <= policy.target_ci for w in widths.values()),
                  "half_widths": widths, "min_repeats": policy.min_repeats, "max_repeats": policy.max_repeats}  # fmt: skip
    merged = Measurement.from_records(
        records, declared=declared, quantities=quantities, ranges=ranges, aggregate=_old_aggregate(old), seed=seed,
        top_level_stages=tuple(sorted(set(old.get("top_level_stages", [])) | set(new.top_level_stages))),
        peak_memory_mb=max(float(old.get("peak_memory_mb") or 0.0), new.peak_memory_mb), memory_kind=new.memory_kind,
        wall_s=float(old.get("measure_wall_s") or 0.0) + new.wall_s, passes=passes,
        policy=policy.mode if policy is not None else "refined", target=target, diagnostic=old.get("diagnostic"),
    )  # fmt: skip
    return merged.summary()


def _old_aggregate(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A stored summary's configuration-level aggregates, with the intervals they were stored with."""
    out: dict[str, Any] = {}
    for name, value in (summary.get("aggregate") or {}).items():
        v = (summary.get("values") or {}).get(name) or {}
        if v.get("ci_low") is not None:
            out[name] = Estimate(value, v["ci_low"], v["ci_high"], str(v.get("ci_method")))
        else:
            out[name] = value
    return out


def needs_pass(summary: Mapping[str, Any] | None, policy: RepeatPolicy, round_: int) -> bool:
    """Whether a finished trial takes pass number ``round_`` (1-based) of an interleaved measurement."""
    if not summary:
        return False
    repeats = summary.get("repeats") or {}
    passes = int(repeats.get("passes", policy.cap))
    if passes >= round_ or passes >= policy.cap:
        return False
    if policy.mode == "auto" and passes >= policy.min_repeats and repeats.get("target_met"):
        return False
    return True


def _stats_only(stats: Mapping[str, Any]) -> dict[str, Any]:
    return {s: stats[s] for s in STAT_NAMES if s in stats}


def describe_records(
    records: Sequence[Mapping[str, Any]], *, seed: int = 0, quantities: Collection[str] = (),
    ranges: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Per-metric statistics with intervals, and per-call statistics of repeated stages.
    ``quantities``: metrics declared with a unit (counts, amounts), never 0/1 outcomes;
    ``ranges``: the values a metric can take, which its intervals are clipped to."""
    from knobscope.intervals import describe

    numeric: dict[str, tuple[list[float], list[Any]]] = {}
    calls: dict[str, tuple[list[float], list[Any]]] = {}
    for rec in records:
        group = str(rec.get("sample_id"))
        for key, value in rec.items():
            if key in ("repeat", "sample_id") or isinstance(value, str):
                continue
            if key == "calls":
                for stage, times in value.items():
                    vals, groups = calls.setdefault(stage, ([], []))
                    vals.extend(times)
                    groups.extend([group] * len(times))
            elif isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
                vals, groups = numeric.setdefault(key, ([], []))
                vals.append(value)
                groups.append(group)
    ranges = ranges or {}
    metrics = {k: describe(v, g, timing=_is_timing(k), proportion=k not in quantities and not _is_timing(k), seed=seed, name=k,
                           bounds=ranges.get(k))
               for k, (v, g) in numeric.items()}  # fmt: skip
    per_call = {f"{stage}_per_call_ms": describe(v, g, timing=False, seed=seed, name=stage) for stage, (v, g) in calls.items()}
    return metrics, per_call


def _target_widths(records: Sequence[Mapping[str, Any]], policy: RepeatPolicy, seed: int) -> dict[str, float]:
    """Relative half-width of each target statistic's interval so far."""
    from knobscope.intervals import describe, relative_half_width

    out = {}
    for metric, stat in policy.targets:
        pairs = [(r[metric], r.get("sample_id")) for r in records if isinstance(r.get(metric), (int, float))]
        stats = describe([p[0] for p in pairs], [str(p[1]) for p in pairs], timing=_is_timing(metric), seed=seed, name=metric)
        out[f"{metric}_{stat}"] = relative_half_width(stats, stat)
    return out


def measure_config(
    workload: Any,
    config: Mapping[str, Any],
    *,
    timer: StageTimer,
    memory: PeakMemory,
    warmup: int = 1,
    num_samples: int | None = None,
    policy: RepeatPolicy = RepeatPolicy(),
    seed: int = 0,
    on_sample: Callable[[], None] = lambda: None,
    diagnose: bool = False,
) -> Measurement:
    """Apply ``config`` to a set-up workload, warm up, and measure passes over its samples.

    Each pass runs every sample once, so repeats of a sample are spread over the measurement
    (time-correlated noise does not look like agreement). Raises what the workload raises.
    With ``diagnose``, one more run of the first sample under the profiler, after the timed
    ones and not among them (:func:`knobscope.diagnose.diagnose_sample`).
    """
    workload.apply(config)
    samples = list(workload.samples())
    if num_samples is not None:
        samples = samples[:num_samples]
    if not samples:
        raise ValueError("the workload returned no samples")
    memory.reset()
    for w in range(warmup):
        with timer.sample():
            workload.run(samples[w % len(samples)], timer)
    records: list[dict[str, Any]] = []
    top_level: set[str] = set()
    started = time.perf_counter()
    passes = 0
    widths: dict[str, float] = {}
    while passes < policy.cap:
        first = len(records)
        for index, sample in enumerate(samples):
            with timer.sample() as timing:
                out = dict(workload.run(sample, timer))
            record: dict[str, Any] = {"sample_id": _sample_id(sample, index), "repeat": passes}
            record.update(timing.metrics())
            top_level |= timing.top_level
            record.update(out)
            repeated = {s: c for s, c in timing.calls_ms.items() if len(c) > 1}
            if repeated:
                record["calls"] = repeated
            records.append(record)
            on_sample()
        workload.score_set(records[first:])
        passes += 1
        if policy.mode == "auto" and passes >= policy.first:
            widths = _target_widths(records, policy, seed)
            if all(w <= policy.target_ci for w in widths.values()):
                break
    target = None
    if policy.mode == "auto":
        target = {"target_ci": policy.target_ci, "target_met": all(w <= policy.target_ci for w in widths.values()),
                  "half_widths": widths, "min_repeats": policy.min_repeats, "max_repeats": policy.max_repeats}  # fmt: skip
    wall = time.perf_counter() - started  # bookkeeping, not a measurement
    diagnostic = None
    if diagnose:
        from knobscope.diagnose import diagnose_sample

        try:
            found = diagnose_sample(workload, samples[0], timer)
            diagnostic = found.to_json() if found else None
        except Exception as exc:  # noqa: BLE001 - a diagnostic that cannot run must not fail the trial
            import logging

            logging.getLogger("knobscope").warning("profiled diagnostic sample failed: %s: %s", type(exc).__name__, exc)
    declared = [m for m in getattr(workload, "metrics", {}) if not _is_timing(m)]
    return Measurement.from_records(
        records, declared=declared, quantities=quantities_of(workload), ranges=ranges_of(workload),
        aggregate=dict(workload.summarize(records)), seed=seed,
        top_level_stages=tuple(sorted(top_level)), peak_memory_mb=memory.peak_mb(), memory_kind=memory.kind,
        wall_s=wall, passes=passes, policy=policy.mode, target=target, diagnostic=diagnostic,
    )  # fmt: skip


def quantities_of(workload: Any) -> list[str]:
    """The workload's metrics that are never 0/1 outcomes: counts and amounts (declared with a
    unit) and scores (declared ``proportion=False``)."""
    return [name for name, m in getattr(workload, "metrics", {}).items()
            if getattr(m, "unit", "") or not getattr(m, "proportion", True)]  # fmt: skip


def ranges_of(workload: Any) -> dict[str, tuple[float, float]]:
    """The workload's metrics that declare the values they can take (``Metric.range``)."""
    return {name: tuple(m.range) for name, m in getattr(workload, "metrics", {}).items()
            if getattr(m, "range", None) is not None}  # fmt: skip


def _sample_id(sample: Any, index: int) -> Any:
    if isinstance(sample, Mapping) and "id" in sample:
        return sample["id"]
    return index
