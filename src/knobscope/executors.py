"""Where trials run: this process, or one worker process per device.

Both share the store's claim protocol, so they also combine with ``torchrun`` and with other
invocations on the same run directory (other machines included, via a shared file system).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Sequence
from typing import Any

from knobscope.errors import SpecError
from knobscope.runner import SweepResult, _progress, plan, run_sweep, search_history
from knobscope.spec import ExperimentSpec
from knobscope.store import Store

__all__ = ["run_local", "run_device_pool"]


def run_local(spec: ExperimentSpec, **kwargs: Any) -> SweepResult:
    """Run the sweep in this process."""
    return run_sweep(spec, **kwargs)


def _worker(spec: ExperimentSpec, device: str, kwargs: dict[str, Any]) -> None:
    run_sweep(spec, device=device, progress=False, **kwargs)


def run_device_pool(
    spec: ExperimentSpec, devices: Sequence[str], *, progress: bool = True, console: Any = None, **kwargs: Any
) -> SweepResult:
    """One worker process per device (``cuda:0``, ``cuda:1``, ... or ``cpu`` repeated); each
    loads the model once and claims trials until none is left. The parent shows progress."""
    if not devices:
        raise SpecError("--devices needs at least one device, e.g. cuda:0,cuda:1")
    the_plan = plan(spec, shard=kwargs.get("shard", (0, 1)))
    adaptive = spec.strategy().adaptive

    def trial_ids(store: Store) -> list[str]:
        # An adaptive search's trials appear one at a time: read them from the store.
        return [o.trial_id for o in search_history(store, spec)] if adaptive else the_plan.ids

    done_before = 0
    if (the_plan.run_dir / "results.db").exists():
        with Store.open(the_plan.run_dir) as store:
            done_before = store.status_counts(trial_ids(store))["done"]
    ctx = mp.get_context("spawn")  # CUDA cannot be re-initialised in a forked child
    procs = [ctx.Process(target=_worker, args=(spec, d, kwargs), daemon=False) for d in devices]
    for p in procs:
        p.start()
    try:
        with _progress(the_plan.total_selected if adaptive else len(the_plan.trials), enabled=progress,
                       console=console) as update:  # fmt: skip
            while any(p.is_alive() for p in procs):
                time.sleep(1.0)  # polling the store for the progress bar, not a measurement
                try:
                    with Store.open(the_plan.run_dir) as store:
                        update(store.status_counts(trial_ids(store)), None)
                except Exception:  # noqa: BLE001 - store not created yet
                    pass
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()  # workers turn SIGTERM into a released claim
        raise
    finally:
        for p in procs:
            p.join()
    with Store.open(the_plan.run_dir) as store:
        ids = trial_ids(store)
        counts = store.status_counts(ids)
        failed = [(t.config, t.error or "") for t in store.trials(status="failed", ids=ids)]
    return SweepResult(run_dir=the_plan.run_dir, counts=counts, ran=counts["done"] - done_before, failed=failed)  # type: ignore[arg-type]
