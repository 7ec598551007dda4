"""All timing lives here: stage timer, module hooks, statistics, memory, provenance.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "StageTimer",
    "SampleTiming",
    "PeakMemory",
    "summarize",
    "STAT_NAMES",
    "provenance",
    "resolve_device",
]

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

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self._sync = _cuda_sync(device)
        self._stack: list[tuple[str, float]] = []
        self._current: SampleTiming | None = None
        self._hooks: list[Any] = []

    def _now(self) -> float:
        if self._sync is not None:
            self._sync()
        return time.perf_counter()

    def _enter(self, name: str) -> None:
        if self._current is not None:
            self._stack.append((name, self._now()))

    def _exit(self) -> None:
        if self._current is None or not self._stack:
            return
        end = self._now()
        name, start = self._stack.pop()
        ms = (end - start) * 1e3
        self._current.stages_ms[name] += ms
        self._current.calls_ms[name].append(ms)
        if not self._stack:
            self._current.top_level.add(name)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as stage ``name`` (a no-op outside :meth:`sample`)."""
        self._enter(name)
        try:
            yield
        finally:
            self._exit()

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
        start = self._now()
        try:
            yield timing
        finally:
            timing.total_ms = (self._now() - start) * 1e3
            self._current = None
            self._stack.clear()

    def attach(self, module: Any, name: str, *, scoped: bool = False) -> Any:
        """Time every forward call of ``module`` (a ``torch.nn.Module``) as stage ``name``.

        ``scoped=True`` names the stage after the top-level stage it runs in, so one hook
        splits by phase: ``attention`` becomes ``prefill_attention`` and ``decode_attention``.
        Returns a handle whose ``remove()`` detaches the hooks.
        """

        def enter(*_: Any) -> None:
            self._enter(f"{self._stack[0][0]}_{name}" if scoped and self._stack else name)

        pre = module.register_forward_pre_hook(enter)
        post = module.register_forward_hook(lambda *_: self._exit())
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
    ``/proc/self/clear_refs``; where that is not possible the peak is since process start.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.kind = "cuda_peak_allocated" if device.startswith("cuda") else "rss_high_water"
        self.resettable = True

    def reset(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(torch.device(self.device))
            return
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
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
