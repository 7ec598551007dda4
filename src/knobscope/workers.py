"""Where a sweep's measurements happen: the workers the sweep loop hands its jobs to.

A *job* is one measurement of one trial: its first measurement (the trial is claimed in the
store) or one more pass of a finished trial (interleaved repeats). :class:`Workers` is the
contract between the sweep loop (:mod:`knobscope.runner`) and the place that runs the model:
:class:`InProcessWorkers` measures in this process; the Ray executor's workers are actors on a
cluster (:mod:`knobscope.executors.ray`). The loop is the only one that touches the store.

Also here, because every kind of worker does it the same way: building the workload from the
spec, loading its model once (:func:`prepare_workload`) and measuring one configuration
(:func:`measure_trial`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobscope.errors import WorkloadError
from knobscope.measure import Measurement, PeakMemory, RepeatPolicy, StageTimer, measure_config
from knobscope.space import Config
from knobscope.spec import ExperimentSpec, repeat_targets
from knobscope.trials import Trial
from knobscope.workloads import Workload, WorkloadContext

__all__ = ["Job", "Outcome", "Workers", "InProcessWorkers", "build_workload", "prepare_workload", "measure_trial",
           "repeat_policy", "interleaved"]  # fmt: skip

log = logging.getLogger("knobscope")


@dataclass(frozen=True)
class Job:
    """One measurement to make: ``passes_before == 0`` is a claimed trial's first measurement
    (with ``policy``'s passes), otherwise one more pass of a finished trial that has that many."""

    trial: Trial
    policy: RepeatPolicy
    passes_before: int = 0


@dataclass
class Outcome:
    """What became of a job: a measurement, or ``error`` (the workload raised: the trial
    fails), or ``lost`` (the worker died: the trial is handed out again). ``where`` names the
    node and device that measured it (provenance)."""

    job: Job
    measurement: Measurement | None = None
    error: str | None = None
    lost: str | None = None
    where: dict[str, Any] = field(default_factory=dict)


class Workers:
    """The workers of one sweep.

    Contract: :meth:`start` builds the workload and loads its model on every worker, and raises
    a :class:`~knobscope.errors.KnobscopeError` for input the loaded model rejects, before the
    sweep stores anything. At most ``slots`` jobs are in flight: :meth:`submit` hands one to an
    idle worker; :meth:`wait` blocks until at least one has finished and returns the outcomes
    (a worker that died is replaced, and its job comes back ``lost``). :meth:`stop` frees
    everything, also after Ctrl-C, and may be called more than once. ``heartbeat`` is called
    while a job runs, so the loop can keep its claim alive.
    """

    slots: int = 1
    description: str = "this process"

    def __init__(self) -> None:
        self.heartbeat: Callable[[Trial], None] = lambda trial: None

    def start(self) -> None:
        """Load the model on every worker."""

    def submit(self, job: Job) -> None:
        raise NotImplementedError

    def wait(self) -> list[Outcome]:
        raise NotImplementedError

    def stop(self) -> None:
        """Free models and processes."""


class InProcessWorkers(Workers):
    """One worker: this process, measuring each job when :meth:`wait` is called."""

    def __init__(self, spec: ExperimentSpec, *, device: str, run_dir: Path, workload: Workload | None = None) -> None:
        super().__init__()
        self.spec, self.device, self.run_dir = spec, device, run_dir
        self.workload = workload if workload is not None else build_workload(spec)
        self.timer = StageTimer(device, hook_timing=spec.measure.hook_timing)
        self.memory = PeakMemory(device)
        self.description = f"this process ({device})"
        self._pending: list[Job] = []
        self._ready = False

    def start(self) -> None:
        prepare_workload(self.spec, device=self.device, run_dir=self.run_dir, timer=self.timer, workload=self.workload)
        self._ready = True

    def submit(self, job: Job) -> None:
        self._pending.append(job)

    def wait(self) -> list[Outcome]:
        job = self._pending.pop(0)
        where = {"node": socket.gethostname(), "device": self.device, "pid": os.getpid()}
        try:
            measurement = measure_trial(self.workload, job.trial.config, self.spec, self.timer, self.memory,
                                        on_sample=lambda: self.heartbeat(job.trial), policy=job.policy,
                                        first=job.passes_before == 0)  # fmt: skip
        except KeyboardInterrupt:
            self._pending.insert(0, job)
            raise
        except Exception as exc:  # noqa: BLE001 - a failing trial must not stop the sweep
            free_device_memory(self.device)
            return [Outcome(job, error=f"{type(exc).__name__}: {exc}", where=where)]
        return [Outcome(job, measurement, where=where)]

    def stop(self) -> None:
        if self._ready:
            self._ready = False
            self.timer.detach_all()
            self.workload.teardown()


def build_workload(spec: ExperimentSpec) -> Workload:
    """The spec's workload object, nothing loaded: its arguments, knob names and the knob values
    it can check without a model are checked (a typo costs a second, not a model load)."""
    assert spec.workload is not None
    cls = spec.workload.workload_class()
    try:
        workload = cls(**spec.workload.resolved_args(cls.path_args))
    except TypeError as exc:
        raise WorkloadError(f"workload {spec.workload.name!r} rejected its args {dict(spec.workload.args)}: {exc}") from None
    shadowed = [n for n in spec.space.names if n in cls.metrics]
    if shadowed:
        raise WorkloadError(f"knob {shadowed[0]!r} has the name of a metric workload {spec.workload.name!r} reports; "
                            "rename the knob, so results keep both")  # fmt: skip
    Workload.check_space(workload, spec.space)  # knob names
    workload.check_values(spec.space)
    return workload


def prepare_workload(
    spec: ExperimentSpec, *, device: str, run_dir: Path, timer: StageTimer, workload: Workload | None = None
) -> Workload:
    """Build the workload, load its model once, and check the space against it (nothing is stored)."""
    workload = workload if workload is not None else build_workload(spec)  # checks what needs no model
    import scipy.stats  # noqa: F401 - the intervals need it: imported here, not inside the first trial's time
    workload.setup(WorkloadContext(device=device, seed=spec.measure.seed, timer=timer, run_dir=run_dir, log=log))
    try:
        workload.check_space(spec.space)  # values that need the loaded model (e.g. block counts)
    except BaseException:
        workload.teardown()
        raise
    return workload


def interleaved(spec: ExperimentSpec) -> bool:
    """Whether passes are measured in rounds over the configurations (``measure.interleave``)."""
    return spec.measure.interleave and repeat_policy(spec).cap > 1


def repeat_policy(spec: ExperimentSpec) -> RepeatPolicy:
    """The spec's ``measure`` section as the number of passes each configuration gets."""
    m = spec.measure
    if m.adaptive:
        return RepeatPolicy("auto", min_repeats=m.min_repeats, max_repeats=m.max_repeats, target_ci=m.target_ci,
                            targets=repeat_targets(spec))  # fmt: skip
    return RepeatPolicy("fixed", repeats=int(m.repeats))


def measure_trial(
    workload: Workload,
    config: Config,
    spec: ExperimentSpec,
    timer: StageTimer,
    memory: PeakMemory,
    *,
    on_sample: Callable[[], None] = lambda: None,
    policy: RepeatPolicy | None = None,
    first: bool = True,
) -> Measurement:
    """Measure ``config`` with the spec's measurement settings (see :func:`knobscope.measure.measure_config`);
    ``policy`` overrides the spec's passes (an interleaved measurement takes one at a time);
    ``first``: the configuration's first measurement, which brings the profiled diagnostic
    sample where the spec asks for one."""
    m = spec.measure
    try:
        return measure_config(workload, config, timer=timer, memory=memory, warmup=m.warmup, num_samples=m.num_samples,
                              policy=policy or repeat_policy(spec), seed=m.seed, on_sample=on_sample,
                              diagnose=first and m.diagnoses(str(timer.device)))  # fmt: skip
    except ValueError as exc:
        if "no samples" in str(exc):
            raise WorkloadError(f"workload {spec.workload.name!r} returned no samples") from None  # type: ignore[union-attr]
        raise


def free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
