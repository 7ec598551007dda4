"""The ``ray`` executor: trials measured by Ray actors, the store written by the driver alone.

``knobscope run SPEC --executor ray`` starts a local Ray instance (or joins a running cluster
with ``--address auto|HOST:PORT``) and creates one actor per device slot: ``--gpus-per-trial``
GPUs (default 1 when the cluster has GPUs) and ``--cpus-per-trial`` CPUs (default 1) each.
Every actor builds the workload and loads its model once, then measures the configurations
the driver sends it in place (``apply``/``run``) and sends back the records and summary. The
driver runs the ordinary sweep loop (:mod:`knobscope.runner`): it claims trials in the store,
proposes them for an adaptive strategy, and is the only process that writes the run
directory, so the cluster needs no shared file system.

Faults: an actor that dies mid-trial (its process killed, its node lost, a CUDA error that
kills the process) is replaced and its trial handed out again, up to ``--max-failures`` times;
then the trial is recorded as failed with the reason. Ctrl-C on the driver hands the claims
back and kills the actors; the same command resumes. Each trial's node and device are stored
with it (``knobscope show`` prints them).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

from knobscope.errors import KnobscopeError, SpecError, WorkloadError
from knobscope.executors import Executor
from knobscope.runner import SweepListener, SweepResult, run_sweep
from knobscope.spec import ExperimentSpec
from knobscope.trials import trial_source
from knobscope.workers import Job, Outcome, Workers, build_workload

__all__ = ["RayExecutor", "RayWorkers"]

log = logging.getLogger("knobscope")
INSTALL = "pip install 'knobscope[ray]'"
HEARTBEAT_S = 30.0  # how often the driver renews the claims of trials still being measured


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SpecError(f"--executor ray needs Ray, which is not installed: {INSTALL}") from None
    return ray


class RayExecutor(Executor):
    name = "ray"
    summary = "Ray actors on a local or running Ray cluster; the driver alone writes the store"
    options = {"address": None, "gpus_per_trial": None, "cpus_per_trial": 1.0, "max_failures": 3, "workers": None}

    def run(self, spec: ExperimentSpec, *, listener: SweepListener | None = None, shard: tuple[int, int] = (0, 1),
            retry_failed: bool = False, device: str = "auto", lease_s: float = 900.0) -> SweepResult:  # fmt: skip
        ray = _import_ray()
        s = self.settings
        if s["max_failures"] < 0:
            raise SpecError(f"--max-failures must be 0 or more (got {s['max_failures']})")
        if s["cpus_per_trial"] <= 0 and not s["gpus_per_trial"]:
            raise SpecError(f"--cpus-per-trial must be above 0 (got {s['cpus_per_trial']})")
        trial_source(spec, shard=shard)  # bad input is reported before Ray starts
        build_workload(spec)
        started = not ray.is_initialized()
        if started:
            address = s["address"] or "local"  # "local": a new instance, never an unrelated running one
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise SpecError(f"--address {address!r}: cannot connect to a Ray cluster ({first})") from None
        try:
            workers = RayWorkers(spec, device=device, gpus_per_trial=s["gpus_per_trial"],
                                 cpus_per_trial=s["cpus_per_trial"], count=s["workers"])  # fmt: skip
            return run_sweep(spec, shard=shard, retry_failed=retry_failed, lease_s=lease_s, listener=listener,
                             workers=workers, max_failures=int(s["max_failures"]), executor="ray")  # fmt: skip
        finally:
            if started:
                ray.shutdown()


class _TrialActor:
    """A Ray actor that holds one loaded workload and measures configurations in place."""

    def __init__(self, spec: ExperimentSpec, device: str, run_dir: str) -> None:
        self.spec, self.device, self.run_dir = spec, device, Path(run_dir)
        self.workload: Any = None

    def setup(self) -> dict[str, Any]:
        import ray

        from knobscope.measure import PeakMemory, StageTimer, resolve_device
        from knobscope.workers import prepare_workload

        self.device = resolve_device(self.device)
        self.timer, self.memory = StageTimer(self.device, hook_timing=self.spec.measure.hook_timing), PeakMemory(self.device)
        self.workload = prepare_workload(self.spec, device=self.device, run_dir=self.run_dir, timer=self.timer)
        gpus = [str(g) for g in ray.get_gpu_ids()]
        return {"node": socket.gethostname(), "ray_node": ray.get_runtime_context().get_node_id()[:12],
                "device": self.device + (f" (gpu {','.join(gpus)})" if gpus else ""), "pid": os.getpid()}  # fmt: skip

    def measure(self, config: Any, policy: Any, first: bool = True) -> tuple[Any, str | None]:
        """(measurement, None), or (None, reason) when the workload raised: a failed trial, not a lost actor."""
        from knobscope.workers import free_device_memory, measure_trial

        try:
            return measure_trial(self.workload, config, self.spec, self.timer, self.memory, policy=policy, first=first), None
        except Exception as exc:  # noqa: BLE001 - the trial fails; the actor lives on
            free_device_memory(self.device)
            return None, f"{type(exc).__name__}: {exc}"

    def pid(self) -> int:
        return os.getpid()


class RayWorkers(Workers):
    """One Ray actor per device slot of the cluster (see :class:`~knobscope.workers.Workers`)."""

    def __init__(self, spec: ExperimentSpec, *, device: str = "auto", gpus_per_trial: float | None = None,
                 cpus_per_trial: float = 1.0, count: int | None = None) -> None:  # fmt: skip
        super().__init__()
        self.ray = _import_ray()
        resources = self.ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        self.gpus = gpus_per_trial if gpus_per_trial is not None else (1.0 if gpus else 0.0)
        self.cpus = float(cpus_per_trial)
        if self.gpus > gpus:
            raise SpecError(f"--gpus-per-trial {self.gpus:g}: the Ray cluster has {gpus:g} GPUs")
        fits = [math.floor(gpus / self.gpus + 1e-9)] if self.gpus else []
        fits += [math.floor(float(resources.get("CPU", 0)) / self.cpus + 1e-9)] if self.cpus else []
        self.slots = int(count) if count else max(1, min(fits))
        wanted = device if device != "auto" else spec.measure.device
        self.device = "cuda" if self.gpus else ("cpu" if wanted in ("auto", "cuda") or wanted.startswith("cuda") else wanted)
        self.spec = spec
        self.actor_class = self.ray.remote(_TrialActor)
        self.actors: list[Any] = []
        self.idle: list[Any] = []
        self.where: dict[Any, dict[str, Any]] = {}
        self.running: dict[Any, tuple[Any, Job]] = {}  # object ref -> (actor, job)
        self.description = f"{self.slots} Ray actors ({self.cpus:g} CPU, {self.gpus:g} GPU each)"

    def _new_actors(self, n: int) -> list[Any]:
        actors = [self.actor_class.options(num_cpus=self.cpus, num_gpus=self.gpus, max_restarts=0)
                  .remote(self.spec, self.device, str(self.spec.output_dir)) for _ in range(n)]  # fmt: skip
        try:
            infos = self.ray.get([a.setup.remote() for a in actors])
        except self.ray.exceptions.RayTaskError as exc:  # setup raised: bad input the loaded model rejects
            for a in actors:
                self.ray.kill(a)
            cause = exc.cause
            if isinstance(cause, KnobscopeError):
                raise type(cause)(str(cause)) from None
            raise WorkloadError(f"a Ray actor could not load the workload: {type(cause).__name__}: {cause}") from None
        for actor, info in zip(actors, infos):
            self.where[actor] = info
            log.info("ray actor on %s (%s), pid %s", info["node"], info["device"], info["pid"])
        return actors

    def start(self) -> None:
        self.actors = self._new_actors(self.slots)
        self.idle = list(self.actors)

    def submit(self, job: Job) -> None:
        actor = self.idle.pop()
        self.running[actor.measure.remote(job.trial.config, job.policy, job.passes_before == 0)] = (actor, job)

    def wait(self) -> list[Outcome]:
        ray = self.ray
        while True:
            done, _ = ray.wait(list(self.running), num_returns=1, timeout=HEARTBEAT_S)
            if done:
                break
            for _, job in self.running.values():
                self.heartbeat(job.trial)
        outcomes = []
        for ref in done:
            actor, job = self.running.pop(ref)
            where = self.where.get(actor, {})
            try:
                measurement, error = ray.get(ref)
            except ray.exceptions.RayActorError as exc:  # the process died: killed, node lost, fatal CUDA error
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                log.warning("ray actor pid %s on %s died: %s", where.get("pid"), where.get("node"), reason)
                outcomes.append(Outcome(job, lost=f"Ray actor on {where.get('node', '?')} died ({type(exc).__name__})", where=where))
                self._replace(actor)
                continue
            outcomes.append(Outcome(job, measurement, error=error, where=where))
            self.idle.append(actor)
        return outcomes

    def _replace(self, dead: Any) -> None:
        self.actors.remove(dead)
        self.where.pop(dead, None)
        try:
            (actor,) = self._new_actors(1)
        except Exception as exc:  # noqa: BLE001 - go on with fewer actors
            log.error("could not replace a dead Ray actor: %s", exc)
            self.slots = len(self.actors)
            if not self.actors:
                raise WorkloadError(f"every Ray actor died and none could be replaced: {exc}") from None
            return
        self.actors.append(actor)
        self.idle.append(actor)

    def pids(self) -> list[int]:
        return self.ray.get([a.pid.remote() for a in self.actors])

    def stop(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors, self.idle, self.running = [], [], {}
