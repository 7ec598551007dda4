"""The Workload interface: the thing knobscope measures.

A workload loads its model and data once per worker (:meth:`Workload.setup`), applies a
configuration in place (:meth:`Workload.apply`), and runs one sample at a time
(:meth:`Workload.run`), marking stages on the timer it is given. Built-in workloads and user
plugins (``module:Class`` or ``path/to/file.py:Class`` in a spec) use the same interface::

    class MyWorkload(Workload):
        knobs = ("batch_size",)
        metrics = {"accuracy": Metric(higher_is_better=True)}

        def setup(self, ctx):      self.model = load(...).to(ctx.device)
        def samples(self):         return self.dataset
        def apply(self, config):   self.batch_size = config["batch_size"]
        def run(self, sample, timer):
            with timer.stage("forward"):
                out = self.model(sample)
            return {"accuracy": float(out == sample.label)}
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from knobscope.errors import WorkloadError, field_problem
from knobscope.measure import StageTimer
from knobscope.space import Space

__all__ = ["Workload", "WorkloadContext", "Metric", "parse_args"]

ArgsT = TypeVar("ArgsT", bound=BaseModel)


def parse_args(model: type[ArgsT], args: Mapping[str, Any], workload: str) -> ArgsT:
    """Validate a workload's ``args`` with its pydantic model; one line naming the bad one."""
    try:
        return model(**args)
    except ValidationError as exc:
        problem = field_problem(exc)
        raise WorkloadError(
            f"workload {workload}: argument {problem.where!r}: {problem.message} (got {problem.got!r}); "
            f"arguments it takes: {', '.join(model.model_fields)}"
        ) from None


def require_inductor(device: str, what: str) -> None:
    """Raise :class:`WorkloadError` where ``what`` would compile off CUDA without a C++ compiler
    (torch.compile's inductor writes C++ for the CPU)."""
    import shutil

    if not str(device).startswith("cuda") and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        raise WorkloadError(f"{what} on CPU needs a C++ compiler (torch.compile's inductor), and none is on the PATH")


@dataclass(frozen=True)
class Metric:
    """A metric's declared direction and unit, so analysis never has to guess."""

    higher_is_better: bool
    unit: str = ""
    description: str = ""
    # Whether a metric with no unit may be a 0/1 outcome (accuracy): its mean then gets an
    # exact binomial interval when every value is 0 or 1. False for scores such as CIDEr-D.
    proportion: bool = True
    # The values the metric can take, where it is bounded at both ends (a cosine: (-1, 1), a
    # share: (0, 1)); the frontier search models such an objective on the logit of this range.
    range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"Metric range {self.range!r}: the low end must be below the high end")


@dataclass
class WorkloadContext:
    """What a workload receives at setup: where to run and how to time.

    Attributes:
        device: ``cpu``, ``cuda:N``, ...
        seed: seed for every random generator the workload uses.
        timer: the stage timer; attach module hooks to it in :meth:`Workload.setup`.
        run_dir: the run directory (for caches a workload wants to keep); it may not exist yet at
            ``setup``, because nothing is created before the input is known to be good.
        log: a logger that writes to the run's log file.
    """

    device: str
    seed: int
    timer: StageTimer
    run_dir: Path
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("knobscope.workload"))


class Workload(ABC):
    """Base class of every workload.

    Class attributes:
        knobs: names of the knobs this workload understands; a spec naming another knob is
            rejected before anything runs. Empty means "accepts any knob".
        metrics: per-sample metrics the workload reports, with their directions. Timing
            metrics (``*_ms``) are added by knobscope and are always lower-is-better.
        path_args: arguments that may be file or directory paths; a relative one is read from
            the spec file's directory when it exists there.

    Constructor keyword arguments are the spec's ``workload.args``.
    """

    knobs: ClassVar[tuple[str, ...]] = ()
    metrics: ClassVar[Mapping[str, Metric]] = {}
    path_args: ClassVar[tuple[str, ...]] = ()

    def setup(self, ctx: WorkloadContext) -> None:
        """Load model and data (once per worker). Optional."""

    def check_values(self, space: Space) -> None:
        """Raise :class:`WorkloadError` for knob values this workload can never take (a wrong
        type, an unknown name), whatever the model. Called before :meth:`setup`, so a typo is
        reported in a second, not after the model has loaded. Optional."""

    def check_space(self, space: Space) -> None:
        """Raise :class:`WorkloadError` if the space asks for something this workload lacks.

        The default checks knob names against :attr:`knobs`; override to also check values
        that need the loaded model (e.g. more active blocks than the model has). Called after
        :meth:`setup`; the names are also checked before it.
        """
        if self.knobs:
            unknown = [n for n in space.names if n not in self.knobs]
            if unknown:
                raise WorkloadError(
                    f"workload {type(self).__name__} has no knob {unknown[0]!r}; its knobs are: {', '.join(self.knobs)}"
                )

    @abstractmethod
    def samples(self) -> Sequence[Any]:
        """The evaluation samples. A sample that is a mapping with an ``id`` key names itself."""

    @abstractmethod
    def apply(self, config: Mapping[str, Any]) -> None:
        """Put the model into ``config`` in place (no reloading between configurations)."""

    @abstractmethod
    def run(self, sample: Any, timer: StageTimer) -> Mapping[str, Any]:
        """Run one sample, timing stages with ``timer.stage(name)``; return its metrics."""

    def score_set(self, records: Sequence[dict[str, Any]]) -> None:
        """Per-sample metrics that need the whole evaluation set (a caption's CIDEr-D takes its
        IDF from every reference of the set): add them to each of one pass's ``records``, in
        place. Called after each pass over the samples. Optional."""

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Configuration-level metrics computed from all records (e.g. corpus BLEU): numbers, or
        :class:`knobscope.intervals.Estimate` for a value with its interval. Optional."""
        return {}

    def teardown(self) -> None:
        """Release resources. Optional."""
