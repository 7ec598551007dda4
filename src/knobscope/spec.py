"""The YAML experiment spec: parsed into validated, frozen objects, or one clear error.

Every key is documented in ``docs/spec.md``. A minimal spec::

    name: depth-vs-length
    workload: {name: lm, args: {num_questions: 20}}
    knobs:
      num_active_blocks: {range: [10, 30], step: 10, default: 30}
      max_new_tokens: [8, 16]
    strategy: full
    objectives: {decode_ms: min, accuracy: max}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from knobscope.errors import KnobscopeError, SpecError, field_problem
from knobscope.expressions import Expression
from knobscope.goals import Objective, goal_from
from knobscope.space import Knob, Space, Value, range_values
from knobscope.strategies import STRATEGIES, Strategy, get_strategy

__all__ = ["ExperimentSpec", "MeasureSettings", "WorkloadSpec", "load_spec", "parse_spec", "parse_set_option", "repeat_targets", "target_statistic"]

Scalar = int | float | str | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class _RangeKnob(_Model):
    range: tuple[float, float] = Field(description="[lo, hi], both inclusive")
    step: float = Field(1, gt=0)
    default: Scalar | None = None


class _ListKnob(_Model):
    values: list[Scalar]
    default: Scalar | None = None


class _WorkloadModel(_Model):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class _MeasureModel(_Model):
    warmup: int = Field(1, ge=0, description="unrecorded runs before measuring each config")
    repeats: int | Literal["auto"] = Field(1, description="measured passes over the samples, or auto")
    target_ci: float = Field(0.05, gt=0, lt=1, description="repeats: auto stops when every target's 95% interval is this close (relative half-width)")
    min_repeats: int = Field(2, ge=1, description="repeats: auto measures at least this many passes")
    max_repeats: int = Field(10, ge=1, description="repeats: auto measures at most this many passes")
    targets: list[str] = Field(default_factory=list, description="statistics repeats: auto makes precise (default: the timing objectives, else total_ms_mean)")
    interleave: bool = Field(True, description="measure passes in rounds over the configurations")
    hook_timing: Literal["sync", "events"] = Field(
        "sync", description="stages timed by module hooks (breakdown): synchronise the device at each boundary, or "
        "record CUDA events and read them at the sample's end (CPU: always sync)")
    diagnose: bool | Literal["auto"] = Field(
        "auto", description="one more, untimed sample per configuration under torch.profiler: how busy the device was "
        "per stage (auto: on CUDA devices)")
    num_samples: int | None = Field(None, ge=1, description="samples per config (default: the workload's all)")
    seed: int = 0
    device: str = "auto"


class _ScenarioModel(_Model):
    maximize: str | None = Field(None, description="metric column to maximize")
    minimize: str | None = Field(None, description="metric column to minimize")
    score: str | None = Field(None, description="expression to maximize (a composite score)")
    constraints: list[str] = Field(default_factory=list, description="expressions every answer must meet")
    description: str = ""


class _AnalysisModel(_ScenarioModel):
    weights: dict[str, float] = Field(default_factory=dict, description="weighted normalised composite score")
    top: int = Field(5, ge=1, description="configurations listed per recommendation")
    reference: dict[str, float] = Field(default_factory=dict, description="hypervolume reference point per objective")
    color_by: str | None = Field(None, description="knob that colours the Pareto plots")
    scenarios: dict[str, _ScenarioModel] = Field(default_factory=dict)


class _FilesModel(_Model):
    csv: str = Field("results.csv", pattern=r"^[^/\\]+\.csv$", description="name of the results CSV in the run directory")
    log: str = Field("knobscope.log", pattern=r"^[^/\\]+$", description="name of the log file in the run directory")


class _SpecModel(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    workload: str | _WorkloadModel | None = None
    knobs: dict[str, Any] = Field(min_length=1)
    constants: dict[str, int | float] = Field(default_factory=dict)
    derived: dict[str, str] = Field(default_factory=dict)
    constraints: list[str] = Field(default_factory=list)
    strategy: str | dict[str, Any] = "full"
    objectives: dict[str, Literal["min", "max"]] = Field(default_factory=dict)
    measure: _MeasureModel = Field(default_factory=_MeasureModel)
    analysis: _AnalysisModel = Field(default_factory=_AnalysisModel)
    output: str | None = None
    files: _FilesModel = Field(default_factory=_FilesModel)


@dataclass(frozen=True)
class WorkloadSpec:
    """Which workload to build (registered name, ``module:Class`` or ``file.py:Class``) and its
    arguments. ``base_dir``: the spec file's directory, against which a relative plugin file and
    the workload's relative path arguments are read (None: the current directory). The name and
    arguments stay as written, so a trial's identity does not depend on where the spec lives."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)
    base_dir: Path | None = None

    def workload_class(self) -> Any:
        from knobscope.workloads import resolve_workload

        return resolve_workload(self.name, base_dir=self.base_dir)

    def resolved_args(self, path_args: Sequence[str]) -> dict[str, Any]:
        """The arguments, with each relative path in ``path_args`` read from ``base_dir`` when it
        exists there (otherwise as given: a built-in name, a hub id, or a path from here)."""
        args = dict(self.args)
        if self.base_dir is None:
            return args
        for key in path_args:
            value = args.get(key)
            if not isinstance(value, str) or not value:
                continue
            path, colon, obj = value.rpartition(":") if ".py:" in value else (value, "", "")
            if not Path(path).is_absolute() and (self.base_dir / path).exists():  # a file, or 'file.py:function'
                args[key] = str(self.base_dir / path) + colon + obj
        return args


@dataclass(frozen=True)
class MeasureSettings:
    """How each configuration is measured.

    Args:
        warmup: runs of the first sample before measuring, not recorded (caches, allocator, JIT).
        repeats: measured passes over the samples (each sample's run is a separate record), or
            ``"auto"``: at least ``min_repeats`` passes, then more until every target
            statistic's 95% interval is within ``target_ci`` of its value (relative
            half-width), or ``max_repeats`` passes.
        interleave: measure passes in rounds over the configurations (pass 1 of every
            configuration, then pass 2 of every one in a new seeded order, ...), so a busy spell
            of the machine shows as disagreement between passes rather than as a slow
            configuration; false measures all of a configuration's passes at once.
        targets: the statistics ``repeats: auto`` makes precise, as result columns
            (``total_ms_p95``; a bare metric means its mean); default: the spec's timing
            objectives, else ``total_ms_mean``.
        num_samples: how many of the workload's samples to run (None: all of them).
        seed: seed for every random generator the workload uses.
        device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        diagnose: profile one extra, untimed sample per configuration (:mod:`knobscope.diagnose`):
            ``auto`` does on CUDA devices, where a stage can wait on the host.
        hook_timing: ``events``: stages timed by module hooks record CUDA events instead of
            synchronising (see :class:`~knobscope.measure.StageTimer`).
    """

    warmup: int = 1
    repeats: int | Literal["auto"] = 1
    num_samples: int | None = None
    seed: int = 0
    device: str = "auto"
    target_ci: float = 0.05
    min_repeats: int = 2
    max_repeats: int = 10
    targets: tuple[str, ...] = ()
    interleave: bool = True
    diagnose: bool | Literal["auto"] = "auto"
    hook_timing: Literal["sync", "events"] = "sync"

    @property
    def adaptive(self) -> bool:
        return self.repeats == "auto"

    def diagnoses(self, device: str) -> bool:
        return self.diagnose is True or (self.diagnose == "auto" and device.startswith("cuda"))


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment: what to measure, over which space, sampled how, stored where."""

    name: str
    space: Space
    strategy_name: str
    strategy_options: Mapping[str, Any]
    workload: WorkloadSpec | None = None
    objectives: tuple[Objective, ...] = ()
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    # The spec's ``analysis`` section as plain data (see docs/spec.md); read by knobscope.analysis.
    analysis: Mapping[str, Any] = field(default_factory=dict)
    output: Path | None = None
    # names of the results CSV and the log inside the run directory (seed 003 names its own)
    files: Mapping[str, str] = field(default_factory=lambda: {"csv": "results.csv", "log": "knobscope.log"})
    description: str = ""
    source: str = "<spec>"
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def output_dir(self) -> Path:
        return self.output if self.output is not None else Path("runs") / self.name

    def strategy(self) -> Strategy:
        return get_strategy(self.strategy_name, self.strategy_options)

    def with_overrides(
        self,
        *,
        values: Mapping[str, Sequence[Value]] | None = None,
        strategy: str | None = None,
        output: Path | None = None,
    ) -> ExperimentSpec:
        """The CLI's overrides: ``--set knob=a,b``, ``--strategy NAME``, ``--out DIR``."""
        spec = self
        if values:
            spec = replace(spec, space=spec.space.with_values(values))
        if strategy is not None:
            STRATEGIES.load(strategy)  # raises with the valid names
            options = spec.strategy_options if strategy == spec.strategy_name else {}
            spec = replace(spec, strategy_name=strategy, strategy_options=options)
            spec.strategy()  # validate options now, before anything runs
        if output is not None:
            spec = replace(spec, output=output)
        return spec


def _format_error(source: str, exc: ValidationError) -> str:
    problem = field_problem(exc)
    where = problem.where or "top level"
    if problem.unknown_key:
        return f"{source}: unknown key {where!r}; allowed keys here: {_allowed_fields(problem.loc[:-1])}"
    return f"{source}: {where}: {problem.message} (got {problem.got!r})"


def _allowed_fields(loc: tuple[Any, ...]) -> str:
    model: type[BaseModel] = _SpecModel
    for part in loc:
        if isinstance(part, str) and part in model.model_fields:
            ann = model.model_fields[part].annotation
            sub = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
            if sub:
                model = sub[0]
        elif part == "_RangeKnob":
            model = _RangeKnob
        elif part == "_ListKnob":
            model = _ListKnob
    return ", ".join(model.model_fields)


def parse_spec(data: Any, *, source: str = "<spec>", require_workload: bool = True,
               base_dir: Path | None = None) -> ExperimentSpec:  # fmt: skip
    """Validate a spec mapping (as read from YAML) into an :class:`ExperimentSpec`; ``base_dir``
    is where relative paths in it are read from (:func:`load_spec`: the spec file's directory).

    Raises:
        SpecError: one line naming the bad key or value and what is allowed.
    """
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: a spec must be a YAML mapping of keys to values, got {type(data).__name__}")
    try:
        model = _SpecModel.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_error(source, exc)) from None

    try:
        knobs = tuple(_build_knob(name, body, source) for name, body in model.knobs.items())
        space = Space(
            knobs=knobs,
            constants=tuple(model.constants.items()),
            derived=tuple((n, Expression.parse(e)) for n, e in model.derived.items()),
            constraints=tuple(Expression.parse(c) for c in model.constraints),
        )
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None

    if isinstance(model.strategy, str):
        strategy_name, strategy_options = model.strategy, {}
    else:
        options = dict(model.strategy)
        if "name" not in options:
            raise SpecError(f"{source}: strategy needs a 'name' (one of: {', '.join(STRATEGIES.names())})")
        strategy_name = str(options.pop("name"))
        strategy_options = options
    try:
        get_strategy(strategy_name, strategy_options)
    except KnobscopeError as exc:
        raise SpecError(f"{source}: {exc}") from None

    workload = None
    if model.workload is not None:
        w = model.workload
        name, args = (w, {}) if isinstance(w, str) else (w.name, dict(w.args))
        workload = WorkloadSpec(name=name, args=args, base_dir=base_dir)
        if require_workload:
            _check_plugin_file(workload, source)
    elif require_workload:
        raise SpecError(f"{source}: the spec has no 'workload'; name a registered workload or a plugin 'module:Class'")

    analysis = model.analysis.model_dump()
    _check_analysis_expressions(analysis, source)
    m = model.measure
    return ExperimentSpec(
        name=model.name,
        description=model.description,
        space=space,
        strategy_name=strategy_name,
        strategy_options=strategy_options,
        workload=workload,
        objectives=tuple(Objective(c, d) for c, d in model.objectives.items()),
        measure=_measure_settings(m, source),
        analysis=analysis,
        output=Path(model.output) if model.output else None,
        files=model.files.model_dump(),
        source=source,
        raw=dict(data),
    )


def _measure_settings(m: _MeasureModel, source: str) -> MeasureSettings:
    if isinstance(m.repeats, int) and m.repeats < 1:
        raise SpecError(f"{source}: measure.repeats: must be a whole number >= 1 or 'auto' (got {m.repeats!r})")
    if m.min_repeats > m.max_repeats:
        raise SpecError(f"{source}: measure.min_repeats ({m.min_repeats}) is above measure.max_repeats ({m.max_repeats})")
    targets = tuple(m.targets)
    for t in targets:
        target_statistic(t, source=source)  # raises on a bad name now, not after loading the model
    return MeasureSettings(m.warmup, m.repeats, m.num_samples, m.seed, m.device, m.target_ci, m.min_repeats,
                           m.max_repeats, targets, m.interleave, m.diagnose, m.hook_timing)  # fmt: skip


_TARGET_STATS = ("mean", "p50", "p90", "p95", "p99")


def target_statistic(column: str, *, source: str = "<spec>") -> tuple[str, str]:
    """``total_ms_p95`` -> ``("total_ms", "p95")``; a bare metric means its mean."""
    for stat in _TARGET_STATS:
        if column.endswith(f"_{stat}") and len(column) > len(stat) + 1:
            return column[: -len(stat) - 1], stat
    if not column or not column.replace("_", "").isalnum():
        raise SpecError(f"{source}: measure.targets: {column!r} is not a result column; write e.g. total_ms_p95 or decode_ms_mean")
    return column, "mean"


def repeat_targets(spec: ExperimentSpec) -> tuple[tuple[str, str], ...]:
    """The statistics ``repeats: auto`` makes precise: measure.targets, else the spec's timing
    objectives (measured per sample, so repeats narrow them), else the mean total latency."""
    if spec.measure.targets:
        return tuple(target_statistic(t, source=spec.source) for t in spec.measure.targets)
    timing = [target_statistic(o.column, source=spec.source) for o in spec.objectives]
    timing = [(m, s) for m, s in timing if m.endswith("_ms")]
    return tuple(timing) or (("total_ms", "mean"),)


def _check_analysis_expressions(analysis: Mapping[str, Any], source: str) -> None:
    # Names refer to result columns, known only after the run; syntax is checked now.
    sections = [("analysis", analysis)] + [(f"analysis.scenarios.{k}", v) for k, v in analysis["scenarios"].items()]
    for where, section in sections:
        for i, text in enumerate(section["constraints"]):
            _parse_expression(text, f"{source}: {where}.constraints[{i}]")
        if section["score"]:
            _parse_expression(section["score"], f"{source}: {where}.score")
        try:
            goal_from(section, where=where)  # the same rules as the command line's --maximize/--score/...
        except SpecError as exc:
            raise SpecError(f"{source}: {exc}") from None


def _parse_expression(text: str, where: str) -> Expression:
    try:
        return Expression.parse(text)
    except KnobscopeError as exc:
        raise SpecError(f"{where}: {exc}") from None


_KNOB_FORMS = "a list of values, {values: [...], default: v} or {range: [lo, hi], step: s, default: v}"


def _build_knob(name: str, raw: Any, source: str) -> Knob:
    if isinstance(raw, list):
        raw = {"values": raw}
    if not isinstance(raw, Mapping):
        raise SpecError(f"knob {name!r} is {raw!r}; a knob is {_KNOB_FORMS}")
    kind = _RangeKnob if "range" in raw else _ListKnob if "values" in raw else None
    if kind is None:
        raise SpecError(f"knob {name!r} has neither 'values' nor 'range'; a knob is {_KNOB_FORMS}")
    try:
        body = kind.model_validate(raw)
    except ValidationError as exc:
        problem = field_problem(exc)
        if problem.unknown_key:
            raise SpecError(
                f"knob {name!r}: unknown key {problem.where!r}; allowed keys: {', '.join(kind.model_fields)}"
            ) from None
        raise SpecError(f"knob {name!r}: {problem.where}: {problem.message} (got {problem.got!r})") from None
    if isinstance(body, _ListKnob):
        return Knob(name, tuple(body.values), body.default)
    lo, hi = body.range
    step = body.step
    as_int = [int(x) if float(x).is_integer() else x for x in (lo, hi, step)]
    values = range_values(*as_int) if all(isinstance(x, int) for x in as_int) else range_values(lo, hi, step)
    default = body.default
    if isinstance(default, float) and default.is_integer() and all(isinstance(v, int) for v in values):
        default = int(default)
    return Knob(name, values, default)


def load_spec(path: str | Path, *, require_workload: bool = True) -> ExperimentSpec:
    """Read and validate a YAML spec file."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{p}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return parse_spec(data, source=str(p), require_workload=require_workload, base_dir=p.parent.resolve())


def _check_plugin_file(workload: WorkloadSpec, source: str) -> None:
    """A plugin file named in the spec must exist now, not only when the model is about to load."""
    module, sep, _ = workload.name.rpartition(":")
    if not sep or not module.endswith(".py"):
        return
    where = workload.base_dir if workload.base_dir is not None else Path.cwd()
    if not (where / module).is_file():
        raise SpecError(f"{source}: workload file {module!r} not found in {str(where)!r} (a relative path in a spec "
                        "is read from the spec file's directory)")  # fmt: skip


def parse_set_option(items: Sequence[str]) -> dict[str, list[Value]]:
    """Parse ``--set knob=v1,v2,...`` options (values read as YAML scalars: 4 -> int, 0.5 -> float)."""
    out: dict[str, list[Value]] = {}
    for item in items:
        name, sep, rest = item.partition("=")
        name = name.strip()
        if not sep or not name or not rest.strip():
            raise SpecError(f"--set expects KNOB=V1,V2,... (e.g. --set top_k=4,16,32); got {item!r}")
        values = []
        for token in rest.split(","):
            token = token.strip()
            if not token:
                raise SpecError(f"--set {item!r} has an empty value; separate values with single commas")
            value = yaml.safe_load(token)
            if not isinstance(value, (int, float, str, bool)):
                raise SpecError(f"--set {item!r}: {token!r} is not a number, string or boolean")
            values.append(value)
        out[name] = values
    return out
