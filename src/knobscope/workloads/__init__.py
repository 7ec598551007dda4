"""Workloads: the registry of built-ins and the loader of user plugins."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from knobscope.errors import WorkloadError
from knobscope.registry import Registry
from knobscope.workloads.base import Metric, Workload, WorkloadContext

__all__ = ["WORKLOADS", "Metric", "Workload", "WorkloadContext", "resolve_workload", "register_workload"]

WORKLOADS: Registry[str] = Registry("workload")
# Built-ins are registered by import path, so that listing them imports no model code.
WORKLOADS.add("lm", "knobscope.workloads.lm:LMWorkload")
WORKLOADS.add("sketchwalk", "knobscope.workloads.sketchwalk:SketchWalkWorkload")
WORKLOADS.add("vlm", "knobscope.workloads.vlm:VLMWorkload")


def register_workload(name: str, target: str) -> None:
    """Register ``module:Class`` under ``name`` (duplicate names raise)."""
    WORKLOADS.add(name, target)


def resolve_workload(name: str, *, base_dir: Path | None = None) -> type[Workload]:
    """A registered name, ``package.module:Class`` or ``path/to/file.py:Class`` -> the class; a
    relative file is read from ``base_dir`` (the spec's directory; default: the current one).

    Raises:
        WorkloadError: unknown name, module or file not found, class missing or not a Workload.
    """
    target = WORKLOADS.get(name) if name in WORKLOADS else name
    if ":" not in target:
        raise WorkloadError(
            f"unknown workload {name!r}; use a registered name ({', '.join(WORKLOADS.names())}), "
            "'package.module:Class' or 'path/to/file.py:Class'"
        )
    module_name, _, class_name = target.rpartition(":")
    if module_name.endswith(".py"):
        where = base_dir if base_dir is not None else Path.cwd()
        path = where / module_name
        if not path.is_file():
            raise WorkloadError(f"workload file {module_name!r} not found in {str(where)!r}")
        mod_id = f"knobscope_plugin_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(mod_id, path)
        if spec is None or spec.loader is None:
            raise WorkloadError(f"cannot import workload file {str(path)!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_id] = module
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise WorkloadError(f"workload module {module_name!r} cannot be imported: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise WorkloadError(f"workload {name!r}: module {module_name!r} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Workload)):
        raise WorkloadError(f"workload {name!r}: {class_name!r} is not a knobscope.Workload subclass")
    return cls
