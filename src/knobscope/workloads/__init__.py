"""Workloads: the registry of built-ins and the loader of user plugins."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from knobscope.errors import WorkloadError
from knobscope.registry import Registry
from knobscope.workloads.base import Metric, Workload, WorkloadContext

__all__ = ["WORKLOADS", "Metric", "Workload", "WorkloadContext", "resolve_workload", "register_workload", "load_callable"]

WORKLOADS: Registry[str] = Registry("workload")
# Built-ins are registered by import path, so that listing them imports no model code.
WORKLOADS.add("lm", "knobscope.workloads.lm:LMWorkload")
WORKLOADS.add("sketchwalk", "knobscope.workloads.sketchwalk:SketchWalkWorkload")
WORKLOADS.add("vlm", "knobscope.workloads.vlm:VLMWorkload")
WORKLOADS.add("forecast", "knobscope.workloads.forecast:ForecastWorkload")


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
    module = _import(module_name, base_dir, "workload")
    cls = getattr(module, class_name, None)
    if cls is None:
        raise WorkloadError(f"workload {name!r}: module {module_name!r} has no class {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Workload)):
        raise WorkloadError(f"workload {name!r}: {class_name!r} is not a knobscope.Workload subclass")
    return cls


def _import(module_name: str, base_dir: Path | None, what: str) -> Any:
    """A module by import path, or a ``.py`` file (relative ones from ``base_dir``)."""
    if module_name.endswith(".py"):
        where = base_dir if base_dir is not None else Path.cwd()
        path = where / module_name
        if not path.is_file():
            raise WorkloadError(f"{what} file {module_name!r} not found in {str(where)!r}")
        mod_id = f"knobscope_plugin_{abs(hash(str(path.resolve())))}"
        if mod_id in sys.modules:
            return sys.modules[mod_id]
        spec = importlib.util.spec_from_file_location(mod_id, path)
        if spec is None or spec.loader is None:
            raise WorkloadError(f"cannot import {what} file {str(path)!r}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_id] = module
        spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise WorkloadError(f"{what} module {module_name!r} cannot be imported: {exc}") from None


def load_callable(target: str, what: str, *, base_dir: Path | None = None) -> Any:
    """``path/to/file.py:name`` or ``package.module:name`` -> that object (a factory a workload
    argument names, such as the ``forecast`` workload's ``models``)."""
    module_name, colon, name = target.rpartition(":")
    if not colon or not module_name or not name:
        raise WorkloadError(f"{what} {target!r} must be 'file.py:name' or 'package.module:name'")
    obj = getattr(_import(module_name, base_dir, what), name, None)
    if not callable(obj):
        raise WorkloadError(f"{what} {target!r}: {module_name!r} has no callable {name!r}")
    return obj
