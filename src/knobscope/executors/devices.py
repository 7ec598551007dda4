"""The ``devices`` executor: one worker process per device, sharing the run directory.

Each worker is a ``local`` sweep in its own process (``spawn``: CUDA cannot be re-initialised
in a forked child) that loads the model once and claims trials until none is left; the store's
atomic claims keep two workers off one trial. The parent only watches the store for progress.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from collections.abc import Sequence
from typing import Any

from knobscope.errors import KnobscopeError, SpecError
from knobscope.executors import Executor
from knobscope.runner import SweepListener, SweepResult, run_log, run_sweep
from knobscope.spec import ExperimentSpec
from knobscope.store import DB_NAME, Store
from knobscope.trials import trial_source
from knobscope.workers import build_workload

__all__ = ["DevicesExecutor"]


def _worker(spec: ExperimentSpec, device: str, kwargs: dict[str, Any], errors: Any) -> None:
    # A worker process is the caller of its own sweep: it writes its lines to the run's log.
    try:
        with run_log(spec.output_dir):
            run_sweep(spec, device=device, **kwargs)
    except KnobscopeError as exc:  # the parent reports it, once
        errors.put(str(exc))
    except KeyboardInterrupt:
        pass


class DevicesExecutor(Executor):
    name = "devices"
    summary = "one worker process per device on this machine (--devices cuda:0,cuda:1 or cpu,cpu)"
    options = {"devices": ()}

    def run(self, spec: ExperimentSpec, *, listener: SweepListener | None = None, shard: tuple[int, int] = (0, 1),
            retry_failed: bool = False, device: str = "auto", lease_s: float = 900.0) -> SweepResult:  # fmt: skip
        devices: Sequence[str] = self.settings["devices"]
        if not devices:
            raise SpecError("--executor devices needs --devices, e.g. --devices cuda:0,cuda:1 (or cpu,cpu)")
        listener = listener or SweepListener()
        source = trial_source(spec, shard=shard)  # bad input is reported here, before any process starts
        build_workload(spec)
        run_dir = spec.output_dir

        def counts() -> dict[str, int] | None:
            if not (run_dir / DB_NAME).exists():
                return None
            with Store.open(run_dir) as store:
                return store.status_counts(source.ids(store))

        done_before = (counts() or {}).get("done", 0)
        ctx = mp.get_context("spawn")
        errors = ctx.Queue()
        kwargs = {"shard": shard, "retry_failed": retry_failed, "lease_s": lease_s}
        procs = [ctx.Process(target=_worker, args=(spec, d, kwargs, errors), daemon=False) for d in devices]
        for p in procs:
            p.start()
        try:
            while any(p.is_alive() for p in procs):
                time.sleep(0.5)  # polling the store for the progress bar, not a measurement
                try:
                    now = counts()
                except KnobscopeError:  # being created by a worker right now
                    now = None
                if now is not None:
                    listener.progress(now, source.total, None)
        except KeyboardInterrupt:
            for p in procs:
                p.terminate()  # workers turn SIGTERM into a released claim
            raise
        finally:
            for p in procs:
                p.join()
        try:
            problem = errors.get(timeout=0.1)
        except queue.Empty:
            problem = None
        if problem is not None and not (run_dir / DB_NAME).exists():
            raise SpecError(problem)
        with Store.open(run_dir) as store:
            ids = source.ids(store)
            final = store.status_counts(ids)
            failed = [(t.config, t.error or "") for t in store.trials(status="failed", ids=ids)]
        if problem is not None:
            raise SpecError(problem)
        return SweepResult(run_dir=run_dir, counts=final, ran=final["done"] - done_before, failed=failed)  # type: ignore[arg-type]
