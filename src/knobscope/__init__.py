"""knobscope: measure how inference knobs trade latency, memory and quality on real models."""

from __future__ import annotations

__version__ = "0.1.0"

from knobscope.errors import (
    ExpressionError,
    KnobscopeError,
    RegistryError,
    SpecError,
    StoreError,
    WorkloadError,
)
from knobscope.measure import PeakMemory, SampleTiming, StageTimer, summarize
from knobscope.runner import SweepResult, plan, run_sweep
from knobscope.space import Config, Knob, Space
from knobscope.spec import ExperimentSpec, load_spec, parse_spec
from knobscope.store import Store, merge_stores
from knobscope.strategies import STRATEGIES, Strategy, get_strategy
from knobscope.workloads import WORKLOADS, Metric, Workload, WorkloadContext, resolve_workload

__all__ = [
    "__version__",
    "Config",
    "ExperimentSpec",
    "ExpressionError",
    "Knob",
    "KnobscopeError",
    "Metric",
    "PeakMemory",
    "RegistryError",
    "STRATEGIES",
    "SampleTiming",
    "Space",
    "SpecError",
    "StageTimer",
    "Store",
    "StoreError",
    "Strategy",
    "SweepResult",
    "WORKLOADS",
    "Workload",
    "WorkloadContext",
    "WorkloadError",
    "get_strategy",
    "load_spec",
    "merge_stores",
    "parse_spec",
    "plan",
    "resolve_workload",
    "run_sweep",
    "summarize",
]
