"""The sweep loop: plan the trials, claim them one by one, measure, store, resume.

:func:`plan` turns a spec into trials (identity = canonical config + workload + its
arguments) and records them in the store; :func:`work` claims and runs them. Both are safe to
call from many processes on one run directory (``torchrun``, ``--shard i/n``, or the device
pool in :mod:`knobscope.executors`): a trial is claimed atomically, so it runs exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from knobscope.errors import SpecError, WorkloadError
from knobscope.measure import (
    Measurement, PeakMemory, RepeatPolicy, StageTimer, extend_summary, measure_config, needs_pass, provenance, resolve_device,
)  # fmt: skip
from knobscope.search import Observation
from knobscope.space import Config, canonical_json, identity_hash
from knobscope.spec import ExperimentSpec, repeat_targets
from knobscope.store import Store, owner_id
from knobscope.workloads import Workload, WorkloadContext, resolve_workload

__all__ = ["Trial", "Plan", "SweepResult", "plan", "work", "run_sweep", "trial_id", "measure_trial", "repeat_policy", "LOG_NAME"]

LOG_NAME = "knobscope.log"
log = logging.getLogger("knobscope")


def trial_id(config: Config, workload: str, args: Mapping[str, Any]) -> str:
    """The identity of a trial in the store: a hash of canonical config, workload and its arguments."""
    return identity_hash({"config": config.to_dict(), "workload": workload, "args": dict(args)})


@dataclass(frozen=True)
class Trial:
    trial_id: str
    config: Config


@dataclass(frozen=True)
class Plan:
    """The trials one invocation is responsible for (after strategy, constraints and sharding)."""

    spec: ExperimentSpec
    trials: tuple[Trial, ...]
    run_dir: Path
    total_selected: int  # before sharding

    @property
    def ids(self) -> list[str]:
        return [t.trial_id for t in self.trials]


@dataclass
class SweepResult:
    run_dir: Path
    counts: dict[str, int]
    ran: int = 0
    failed: list[tuple[Config, str]] = field(default_factory=list)
    interrupted: bool = False


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SpecError(f"--shard expects I/N with 0 <= I < N (e.g. 0/4); got {text!r}") from None
    if not 0 <= i < n:
        raise SpecError(f"--shard expects I/N with 0 <= I < N (e.g. 0/4); got {text!r}")
    return i, n


def plan(spec: ExperimentSpec, *, shard: tuple[int, int] = (0, 1)) -> Plan:
    """Select the configurations and compute their identities (touches no store)."""
    if spec.workload is None:
        raise SpecError(f"{spec.source}: the spec has no 'workload'; 'run' needs one")
    strategy = spec.strategy()
    if strategy.adaptive:
        if shard[1] > 1:
            raise SpecError(
                f"--shard does not apply to the adaptive strategy {strategy.name!r}: start several processes on the same "
                "run directory instead; they share the search through the store"
            )
        strategy.goal(spec.objectives)  # raises now if there is nothing to optimise
        return Plan(spec=spec, trials=(), run_dir=spec.output_dir, total_selected=strategy.budget(spec.space))
    configs = strategy.select(spec.space)
    if not configs:
        raise SpecError(
            f"{spec.source}: no configuration satisfies the constraints {[c.source for c in spec.space.constraints]}"
        )
    wl = spec.workload
    trials = [Trial(trial_id(c, wl.name, wl.args), c) for c in configs]
    index, count = shard
    if count > 1:
        trials = [t for t in trials if int(t.trial_id, 16) % count == index]
    return Plan(spec=spec, trials=tuple(trials), run_dir=spec.output_dir, total_selected=len(configs))


def _setup_logging(run_dir: Path) -> logging.Handler:
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(run_dir / LOG_NAME)
    handler.setFormatter(logging.Formatter(f"%(asctime)s pid={os.getpid()} %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return handler


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so a terminated worker hands its claim back."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def build_workload(spec: ExperimentSpec) -> Workload:
    assert spec.workload is not None
    cls = resolve_workload(spec.workload.name)
    try:
        return cls(**dict(spec.workload.args))
    except TypeError as exc:
        raise WorkloadError(f"workload {spec.workload.name!r} rejected its args {dict(spec.workload.args)}: {exc}") from None


def interleaved(spec: ExperimentSpec) -> bool:
    """Whether passes are measured in rounds over the configurations (``measure.interleave``)."""
    return spec.measure.interleave and repeat_policy(spec).cap > 1


def repeat_policy(spec: ExperimentSpec) -> RepeatPolicy:
    """The spec's ``measure`` section as the number of passes each configuration gets."""
    m = spec.measure
    if m.adaptive:
        return RepeatPolicy("auto", min_repeats=m.min_repeats, max_repeats=m.max_repeats, target_ci=m.target_ci,
                            targets=repeat_targets(spec))  # fmt: skip
    return RepeatPolicy("fixed", repeats=int(m.repeats))


def measure_trial(
    workload: Workload,
    config: Config,
    spec: ExperimentSpec,
    timer: StageTimer,
    memory: PeakMemory,
    *,
    on_sample: Callable[[], None] = lambda: None,
    policy: RepeatPolicy | None = None,
) -> Measurement:
    """Measure ``config`` with the spec's measurement settings (see :func:`knobscope.measure.measure_config`);
    ``policy`` overrides the spec's passes (an interleaved measurement takes one at a time)."""
    m = spec.measure
    try:
        return measure_config(workload, config, timer=timer, memory=memory, warmup=m.warmup, num_samples=m.num_samples,
                              policy=policy or repeat_policy(spec), seed=m.seed, on_sample=on_sample)  # fmt: skip
    except ValueError as exc:
        if "no samples" in str(exc):
            raise WorkloadError(f"workload {spec.workload.name!r} returned no samples") from None  # type: ignore[union-attr]
        raise


def prepare_workload(
    spec: ExperimentSpec, *, device: str, run_dir: Path, timer: StageTimer, workload: Workload | None = None
) -> Workload:
    """Build the workload, load its model once, and check the space against it (nothing is stored)."""
    workload = workload if workload is not None else build_workload(spec)
    Workload.check_space(workload, spec.space)  # knob names: cheap, before loading anything
    workload.setup(WorkloadContext(device=device, seed=spec.measure.seed, timer=timer, run_dir=run_dir, log=log))
    try:
        workload.check_space(spec.space)  # values that need the loaded model (e.g. block counts)
    except BaseException:
        workload.teardown()
        raise
    return workload


def work(
    the_plan: Plan,
    *,
    store: Store,
    workload: Workload,
    timer: StageTimer,
    device: str,
    on_progress: Callable[[dict[str, int], Config | None], None] = lambda counts, cfg: None,
    proposals: Iterator[Trial] | None = None,
    ids: list[str] | None = None,
) -> SweepResult:
    """Claim and run this plan's pending trials until none is left for this process.

    ``workload`` must be set up (see :func:`prepare_workload`) with ``timer`` on ``device``.
    An adaptive strategy passes ``proposals`` (trials added to the store one at a time, each
    after the previous one finished) and ``ids``, the list of its trials, which grows as it goes.
    """
    spec = the_plan.spec
    ids = the_plan.ids if ids is None else ids
    result = SweepResult(run_dir=the_plan.run_dir, counts=store.status_counts(ids))
    owner = owner_id()
    seeds = {"measure": spec.measure.seed, **{k: v for k, v in spec.strategy_options.items() if k == "seed"}}
    info = provenance(device=device, seeds=seeds)
    # Metric directions travel with the run, so analysis never has to import the workload again.
    info["metrics"] = {name: asdict(m) for name, m in type(workload).metrics.items()}
    run_id = store.begin_run(spec.name, dict(spec.raw), info)
    memory = PeakMemory(device)
    log.info("run %d: %d trials planned, device %s, owner %s", run_id, len(ids), device, owner)
    try:
        on_progress(store.status_counts(ids), None)
        # Measure in a seeded random order: slow drift of the machine (clocks, heat, other load)
        # then spreads over all configurations as noise instead of posing as a knob effect or a
        # knob interaction, as it would in grid order.
        order = random.Random(spec.measure.seed).sample(list(the_plan.trials), len(the_plan.trials))
        # Interleaved passes: the first pass of every configuration here, the others in rounds
        # below, so a busy spell of the machine lands on passes of different configurations (and
        # shows as disagreement between passes) instead of on every pass of one configuration.
        first = RepeatPolicy("fixed", repeats=1) if interleaved(spec) else None
        for trial in order if proposals is None else proposals:
            if not store.claim(trial.trial_id, owner):
                continue
            on_progress(store.status_counts(ids), trial.config)
            log.info("start %s %s", trial.trial_id, canonical_json(trial.config.to_dict()))
            try:
                measurement = measure_trial(
                    workload, trial.config, spec, timer, memory,
                    on_sample=lambda: store.heartbeat(trial.trial_id, owner), policy=first,
                )  # fmt: skip
                records, summary = list(measurement.records), measurement.summary()
            except KeyboardInterrupt:
                store.release(trial.trial_id, owner)
                log.info("interrupted during %s; claim released", trial.trial_id)
                result.interrupted = True
                raise
            except Exception as exc:  # noqa: BLE001 - a failing trial must not stop the sweep
                reason = f"{type(exc).__name__}: {exc}"
                store.fail(trial.trial_id, owner, reason, run_id=run_id)
                result.failed.append((trial.config, reason))
                log.error("failed %s %s: %s\n%s", trial.trial_id, trial.config, reason, traceback.format_exc())
                _free_device_memory(device)
                continue
            if store.complete(
                trial.trial_id, owner, records=records, summary=summary, run_id=run_id,
                measure={"warmup": spec.measure.warmup, "repeats": spec.measure.repeats,
                         "passes": measurement.passes, "num_samples": spec.measure.num_samples, "device": device},
            ):  # fmt: skip
                result.ran += 1
                total = measurement.metrics["total_ms"]
                log.info("done %s total_ms p50=%.2f [%.2f, %.2f] passes=%d%s", trial.trial_id, total["p50"],
                         total["p50_ci_low"], total["p50_ci_high"], measurement.passes,
                         "; noisy: " + "; ".join(measurement.noise.reasons) if measurement.noise.noisy else "")  # fmt: skip
            else:
                log.warning("lost the claim on %s (presumed dead and re-assigned); result discarded", trial.trial_id)
            on_progress(store.status_counts(ids), None)
        if interleaved(spec):
            _more_passes(spec, store, workload, timer, memory, ids, result, on_progress)
    except KeyboardInterrupt:
        result.interrupted = True
        raise
    finally:
        result.counts = store.status_counts(ids)
    return result


def _more_passes(spec: ExperimentSpec, store: Store, workload: Workload, timer: StageTimer, memory: PeakMemory,
                 ids: list[str], result: SweepResult, on_progress: Callable[[dict[str, int], Config | None], None]) -> None:  # fmt: skip
    """Passes 2, 3, ... of every finished trial, one round at a time, each round in a new seeded
    order; ``repeats: auto`` stops giving passes to a configuration once its targets are met.
    A pass is stored with the trial's new summary in one transaction, and only if no other
    process stored that pass first, so an interrupted or shared sweep never stores one twice."""
    policy = repeat_policy(spec)
    declared = [m for m in type(workload).metrics if not m.endswith("_ms")]
    wanted = set(ids)
    for round_ in range(2, policy.cap + 1):
        trials = [t for t in store.trials(status="done") if t.trial_id in wanted and needs_pass(t.summary, policy, round_)]
        if not trials:
            continue
        log.info("pass %d of up to %d: %d configurations", round_, policy.cap, len(trials))
        for trial in random.Random(spec.measure.seed + round_).sample(trials, len(trials)):
            config = Config((name, trial.config[name]) for name in spec.space.names)
            on_progress(store.status_counts(ids), config)
            passes = int((trial.summary or {}).get("repeats", {}).get("passes", 1))
            try:
                new = measure_trial(workload, config, spec, timer, memory, policy=RepeatPolicy("fixed", repeats=1))
            except Exception as exc:  # noqa: BLE001 - the trial keeps the passes it has
                log.error("pass %d of %s failed: %s: %s", round_, trial.trial_id, type(exc).__name__, exc)
                continue
            old = [rec for _, rec in store.samples(trial.trial_id)]
            added = [{**r, "repeat": passes} for r in new.records]
            summary = extend_summary(trial.summary or {}, old + added, new, declared=declared, seed=spec.measure.seed,
                                     policy=policy)  # fmt: skip
            if store.add_pass(trial.trial_id, added, summary, passes_before=passes):
                log.info("pass %d of %s stored%s", passes + 1, trial.trial_id,
                         "; noisy: " + "; ".join(summary["noise"]["reasons"]) if summary["noise"]["noisy"] else "")  # fmt: skip


def search_history(store: Store, spec: ExperimentSpec) -> list[Observation]:
    """The store's trials that belong to this spec's search: same workload and arguments, and
    a configuration of the spec's space (every knob, values from its lists), in store order."""
    from knobscope.results import flatten_summary

    wl = spec.workload
    assert wl is not None
    args = canonical_json(dict(wl.args))
    space = spec.space
    out = []
    for t in store.trials():
        if t.workload != wl.name or canonical_json(t.workload_args) != args or set(t.config) != set(space.names):
            continue
        if any(t.config[k.name] not in k.values for k in space.knobs):
            continue
        config = Config((name, t.config[name]) for name in space.names)
        row = {**space.variables(config), **flatten_summary(t.summary)}  # constants and derived names too
        out.append(Observation(config, t.status, row, trial_id=t.trial_id))
    return out


def adaptive_trials(spec: ExperimentSpec, store: Store, ids: list[str]) -> Iterator[Trial]:
    """Trials of an adaptive strategy, one at a time: unfinished ones of the search first (a
    resumed or retried search), then the strategy's proposals given every result so far,
    until ``n_trials`` configurations exist or the strategy has nothing more to propose."""
    strategy = spec.strategy()
    goal = strategy.goal(spec.objectives)
    budget = strategy.budget(spec.space)
    wl = spec.workload
    assert wl is not None
    log.info("%s search: %s, %d configurations", strategy.name, goal.description, budget)
    tried: set[str] = set()  # pending trials already handed out by this process
    while True:
        history = search_history(store, spec)
        waiting = [o for o in history if o.status == "pending" and o.trial_id not in tried]
        if waiting:
            tried.add(waiting[0].trial_id)
            yield Trial(waiting[0].trial_id, waiting[0].config)
            continue
        if len(history) >= budget:
            return
        config = strategy.propose(spec.space, history, goal)
        if config is None:
            log.info("%s search: nothing left to propose after %d configurations", strategy.name, len(history))
            return
        trial = Trial(trial_id(config, wl.name, wl.args), config)
        store.add_trials([(trial.trial_id, config.canonical, wl.name, canonical_json(dict(wl.args)))])
        ids.append(trial.trial_id)
        tried.add(trial.trial_id)
        log.info("%s proposes %s", strategy.name, canonical_json(config.to_dict()))
        yield trial


def _say(console: Any, text: str) -> None:
    """A status line for the person at the terminal (the CLI's console), not for the log."""
    if console is not None:
        console.print(text, markup=False, highlight=False)


def _free_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def run_sweep(
    spec: ExperimentSpec,
    *,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
    device: str = "auto",
    lease_s: float = 900.0,
    progress: bool = True,
    console: Any = None,
) -> SweepResult:
    """Plan, record and run a sweep in this process, with a progress bar and a log file.

    Everything that can be wrong with the input (spec, workload arguments, knobs the workload
    lacks, values the model cannot take) is checked before the store is written to.
    """
    the_plan = plan(spec, shard=shard)
    workload = build_workload(spec)  # validates the workload's arguments before touching the run directory
    device = resolve_device(device if device != "auto" else spec.measure.device)
    strategy = spec.strategy()
    ids = the_plan.ids
    handler = _setup_logging(the_plan.run_dir)
    try:
        with Store.open(the_plan.run_dir, create=True) as store:
            if strategy.adaptive:
                known = {o.trial_id: o.status for o in search_history(store, spec)}
                ids = list(known)
                finished = all(v == "done" or (v == "failed" and not retry_failed) for v in known.values())
                todo = [] if len(known) >= the_plan.total_selected and finished else ["the search goes on"]
            else:
                known = store.statuses(ids)
                todo = [i for i in ids if known.get(i, "pending") in ("pending", "running")
                        or (retry_failed and known.get(i) == "failed")]  # fmt: skip
            if not todo and interleaved(spec):  # finished trials may still lack passes (an interrupted round)
                policy = repeat_policy(spec)
                todo = [t.trial_id for t in store.trials(status="done", ids=list(known))
                        if any(needs_pass(t.summary, policy, r) for r in range(2, policy.cap + 1))]  # fmt: skip
            finished_before = sum(v in ("done", "failed") for v in known.values())
            if not todo:
                log.info("nothing to run: all %d trials finished", len(ids))
                _say(console, f"nothing to run: all {len(known)} trials in {the_plan.run_dir} are finished")
                return SweepResult(run_dir=the_plan.run_dir, counts=store.status_counts(ids))
            if finished_before:
                log.info("resuming: %d trials already finished", finished_before)
                _say(console, f"resuming {the_plan.run_dir}: {finished_before} trial(s) already finished, "
                     f"{len(todo) if not strategy.adaptive else 'the search'} to go")  # fmt: skip
            timer = StageTimer(device)
            workload = prepare_workload(spec, device=device, run_dir=the_plan.run_dir, timer=timer, workload=workload)
            try:
                new = store.add_trials(
                    (t.trial_id, t.config.canonical, spec.workload.name, canonical_json(dict(spec.workload.args)))  # type: ignore[union-attr]
                    for t in the_plan.trials
                )
                log.info("spec %s: %d trials (%d new)", spec.source, len(ids), new)
                store.recover_stale(lease_s=lease_s)
                if retry_failed:
                    store.retry_failed(ids)
                proposals = adaptive_trials(spec, store, ids) if strategy.adaptive else None
                total = the_plan.total_selected if strategy.adaptive else len(ids)
                with _progress(total, enabled=progress, console=console) as update, _sigterm_as_interrupt():
                    return work(the_plan, store=store, workload=workload, timer=timer, device=device,
                                on_progress=update, proposals=proposals, ids=ids)  # fmt: skip
            finally:
                timer.detach_all()
                workload.teardown()
    finally:
        log.removeHandler(handler)
        handler.close()


@contextlib.contextmanager
def _progress(total: int, *, enabled: bool, console: Any) -> Iterator[Callable[[dict[str, int], Config | None], None]]:
    if not enabled:
        yield lambda counts, cfg: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[current]}"),
    )  # fmt: skip
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("sweep", total=total, failed=0, current="")

        def update(counts: dict[str, int], config: Config | None) -> None:
            current = "" if config is None else ", ".join(f"{k}={v}" for k, v in config.items())
            bar.update(task, completed=counts["done"] + counts["failed"], failed=counts["failed"], current=current)

        yield update
