"""knobscope: measure how inference knobs trade latency, memory and quality on real models.

The names below are imported on first use (PEP 562), so ``import knobscope`` and
``knobscope --help`` load no numerical library.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_WHERE = {
    "Config": "knobscope.space", "Knob": "knobscope.space", "Space": "knobscope.space",
    "ExperimentSpec": "knobscope.spec", "load_spec": "knobscope.spec", "parse_spec": "knobscope.spec",
    "ExpressionError": "knobscope.errors", "KnobscopeError": "knobscope.errors", "RegistryError": "knobscope.errors",
    "SpecError": "knobscope.errors", "StoreError": "knobscope.errors", "WorkloadError": "knobscope.errors",
    "PeakMemory": "knobscope.measure", "SampleTiming": "knobscope.measure", "StageTimer": "knobscope.measure",
    "summarize": "knobscope.measure",
    "SweepListener": "knobscope.runner", "SweepResult": "knobscope.runner", "run_sweep": "knobscope.runner",
    "trial_source": "knobscope.trials",
    "EXECUTORS": "knobscope.executors", "Executor": "knobscope.executors", "run": "knobscope.executors",
    "Store": "knobscope.store", "merge_stores": "knobscope.store",
    "STRATEGIES": "knobscope.strategies", "Strategy": "knobscope.strategies", "get_strategy": "knobscope.strategies",
    "WORKLOADS": "knobscope.workloads", "Metric": "knobscope.workloads", "Workload": "knobscope.workloads",
    "WorkloadContext": "knobscope.workloads", "resolve_workload": "knobscope.workloads",
    "analyze": "knobscope.analysis",
}  # fmt: skip

__all__ = ["__version__", *sorted(_WHERE)]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'knobscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
