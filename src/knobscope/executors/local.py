"""The ``local`` executor: the sweep runs in this process."""

from __future__ import annotations


from knobscope.executors import Executor
from knobscope.runner import SweepListener, SweepResult, run_sweep
from knobscope.spec import ExperimentSpec

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    name = "local"
    summary = "this process (the default)"

    def run(self, spec: ExperimentSpec, *, listener: SweepListener | None = None, shard: tuple[int, int] = (0, 1),
            retry_failed: bool = False, device: str = "auto", lease_s: float = 900.0) -> SweepResult:  # fmt: skip
        return run_sweep(spec, shard=shard, retry_failed=retry_failed, device=device, lease_s=lease_s, listener=listener)
