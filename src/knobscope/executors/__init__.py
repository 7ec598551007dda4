"""Executors: where a sweep's trials run, chosen by name (``knobscope run --executor NAME``).

==========  ====================================================================================
``local``   this process (the default)
``devices`` one worker process per device on this machine (``--devices cuda:0,cuda:1``); the
            processes share the run directory through the store's claims
``ray``     Ray actors on a local or existing Ray cluster; the driver is the only writer of the
            store, so the cluster needs no shared file system (``pip install knobscope[ray]``)
==========  ====================================================================================

Writing a new executor is one new module in this package (or anywhere importable): subclass
:class:`Executor` and register it in :data:`EXECUTORS` as ``"module:Class"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from knobscope.errors import SpecError
from knobscope.registry import Registry

__all__ = ["Executor", "EXECUTORS", "get_executor", "run", "run_local"]

EXECUTORS: Registry[Any] = Registry("executor")
# Entries are import paths, resolved on first use: choosing 'local' never imports Ray.
EXECUTORS.add("local", "knobscope.executors.local:LocalExecutor")
EXECUTORS.add("devices", "knobscope.executors.devices:DevicesExecutor")
EXECUTORS.add("ray", "knobscope.executors.ray:RayExecutor")


class Executor:
    """Runs a sweep's trials somewhere.

    Contract: a subclass sets ``name``, ``summary`` and ``options`` (the option names it takes,
    with their defaults) and implements :meth:`run`, which measures every trial of the spec
    that is left (resuming what an earlier invocation stored), reports progress only through
    ``listener`` (a :class:`knobscope.runner.SweepListener`), logs to the ``knobscope``
    logger (the caller decides where that goes: the CLI appends it to the run's
    ``knobscope.log`` with :func:`knobscope.runner.run_log`), and returns a
    :class:`knobscope.runner.SweepResult`. Bad input raises a
    :class:`~knobscope.errors.KnobscopeError` before anything is created; Ctrl-C stops the
    workers, leaves the store consistent (no trial half-written, claims handed back) and
    raises ``KeyboardInterrupt``, so the same command resumes.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **options: Any) -> None:
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            allowed = ", ".join(f"--{o.replace('_', '-')}" for o in self.options) or "no options"
            raise SpecError(f"--{unknown[0].replace('_', '-')} does not apply to --executor {self.name} (it takes {allowed})")
        self.settings = {**self.options, **options}

    def run(self, spec: Any, *, listener: Any = None, shard: tuple[int, int] = (0, 1), retry_failed: bool = False,
            device: str = "auto", lease_s: float = 900.0) -> Any:  # fmt: skip
        raise NotImplementedError


def get_executor(name: str, **options: Any) -> Executor:
    """The executor registered as ``name``, with its options (raises with the valid names if unknown)."""
    try:
        cls = EXECUTORS.load(name)
    except ImportError as exc:  # an executor whose own dependency is missing says so itself
        raise SpecError(f"executor {name!r} cannot be loaded: {exc}") from None
    return cls(**options)


def run(spec: Any, executor: str = "local", *, listener: Any = None, **kwargs: Any) -> Any:
    """Run ``spec`` with the named executor; ``kwargs`` are the executor's options and
    :meth:`Executor.run`'s arguments (shard, retry_failed, device, lease_s)."""
    common = {k: kwargs.pop(k) for k in ("shard", "retry_failed", "device", "lease_s") if k in kwargs}
    return get_executor(executor, **kwargs).run(spec, listener=listener, **common)


def run_local(spec: Any, **kwargs: Any) -> Any:
    """Run the sweep in this process (see :func:`run`)."""
    return run(spec, "local", **kwargs)
