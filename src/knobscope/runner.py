"""The sweep loop: claim trials, have workers measure them, store the results, resume.

:func:`run_sweep` drives one sweep from one process: it asks the spec's trial source
(:mod:`knobscope.trials`) for trials, claims each atomically in the store, hands it to the
workers (:mod:`knobscope.workers`: this process, or Ray actors) and stores what comes back.
It is the only code that writes trials to the store, and it is safe to run from many processes
on one run directory (``torchrun``, ``--shard i/n``, the ``devices`` executor): a claim is
atomic, so a trial runs exactly once. Executors (:mod:`knobscope.executors`) decide where the
workers live; the caller decides how progress is shown (:class:`SweepListener`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import random
import signal
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from knobscope.measure import RepeatPolicy, extend_summary, needs_pass, provenance, quantities_of, ranges_of, resolve_device
from knobscope.space import Config, canonical_json
from knobscope.spec import ExperimentSpec
from knobscope.store import DB_NAME, Store, owner_id
from knobscope.trials import Trial, TrialSource, trial_id, trial_source
from knobscope.workers import InProcessWorkers, Job, Outcome, Workers, build_workload, interleaved, repeat_policy

__all__ = ["SweepResult", "SweepListener", "run_sweep", "run_log", "trial_id", "LOG_NAME"]

LOG_NAME = "knobscope.log"
log = logging.getLogger("knobscope")


@dataclass
class SweepResult:
    run_dir: Path
    counts: dict[str, int]
    ran: int = 0
    failed: list[tuple[Config, str]] = field(default_factory=list)
    interrupted: bool = False


class SweepListener:
    """What a sweep tells the person who started it. The default ignores everything; the CLI
    draws a progress bar. Every executor reports through these two methods."""

    def progress(self, counts: Mapping[str, int], total: int, current: Config | None) -> None:
        """Trial counts by status (pending, running, done, failed) of ``total``; ``current``:
        the configuration being measured now, if one is."""

    def say(self, text: str) -> None:
        """A status line (resuming, nothing to run)."""


@contextlib.contextmanager
def run_log(run_dir: Path, name: str = LOG_NAME) -> Iterator[None]:
    """Append the ``knobscope`` logger to ``run_dir/name`` while the block runs (the file is
    opened at the first message, so a run that never starts creates nothing)."""
    handler = _DirFileHandler(run_dir / name)
    handler.setFormatter(logging.Formatter(f"%(asctime)s pid={os.getpid()} %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()


class _DirFileHandler(logging.FileHandler):
    """Holds messages back until the run directory exists (the sweep creates it once the input
    is known to be good); a run that never starts writes nothing."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True)
        self.early: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not Path(self.baseFilename).parent.is_dir():
            self.early.append(record)
            return
        early, self.early = self.early, []
        for r in [*early, record]:
            super().emit(r)


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


def run_sweep(
    spec: ExperimentSpec,
    *,
    shard: tuple[int, int] = (0, 1),
    retry_failed: bool = False,
    device: str = "auto",
    lease_s: float = 900.0,
    listener: SweepListener | None = None,
    workers: Workers | None = None,
    max_failures: int = 0,
    executor: str = "local",
) -> SweepResult:
    """Run a sweep's trials that are left, with ``workers`` (default: this process on ``device``).

    Everything that can be wrong with the input (spec, workload arguments, knobs the workload
    lacks, values the loaded model cannot take) is reported before the run directory is created.
    ``max_failures``: how many times a trial whose worker died is handed out again before it is
    recorded as failed.
    """
    listener = listener or SweepListener()
    source = trial_source(spec, shard=shard)
    run_dir = spec.output_dir
    if workers is None:
        workload = build_workload(spec)  # validates the workload's arguments before touching the run directory
        device = resolve_device(device if device != "auto" else spec.measure.device)
        workers = InProcessWorkers(spec, device=device, run_dir=run_dir, workload=workload)
    if (run_dir / DB_NAME).exists():
        with Store.open(run_dir) as store:
            if not _left_to_do(source, store, spec, retry_failed=retry_failed):
                counts = store.status_counts(source.ids(store))
                log.info("nothing to run: all %d trials finished", sum(counts.values()))
                listener.say(f"nothing to run: all {sum(counts.values())} trials in {run_dir} are finished")
                return SweepResult(run_dir=run_dir, counts=counts)
            finished = sum(store.status_counts(source.ids(store))[s] for s in ("done", "failed"))
        if finished:
            log.info("resuming: %d trials already finished", finished)
            listener.say(f"resuming {run_dir}: {finished} trial(s) already finished, "
                         f"{'the search' if source.adaptive else 'the rest'} to go")  # fmt: skip
    try:
        workers.start()  # loads the model: bad values are reported before anything is created
        with Store.open(run_dir, create=True) as store:
            new = source.register(store)
            log.info("spec %s: %d trials (%d new), workers: %s", spec.source, source.total, new, workers.description)
            store.recover_stale(lease_s=lease_s)
            if retry_failed:
                store.retry_failed(source.ids(store))
            with _sigterm_as_interrupt():
                return _Sweep(spec, source, store, workers, listener, max_failures, executor).run()
    finally:
        workers.stop()


def _left_to_do(source: TrialSource, store: Store, spec: ExperimentSpec, *, retry_failed: bool) -> bool:
    if source.unfinished(store, retry_failed=retry_failed):
        return True
    if interleaved(spec):  # finished trials may still lack passes (an interrupted round)
        policy = repeat_policy(spec)
        return any(any(needs_pass(t.summary, policy, r) for r in range(2, policy.cap + 1))
                   for t in store.trials(status="done", ids=source.ids(store)))  # fmt: skip
    return False


class _Sweep:
    """One invocation's loop over the trial source, then over the extra passes."""

    def __init__(self, spec: ExperimentSpec, source: TrialSource, store: Store, workers: Workers,
                 listener: SweepListener, max_failures: int, executor: str) -> None:  # fmt: skip
        self.spec, self.source, self.store, self.workers, self.listener = spec, source, store, workers, listener
        self.max_failures = max_failures
        self.owner = owner_id()
        self.lost: collections.Counter[str] = collections.Counter()
        self.retry: collections.deque[Trial] = collections.deque()
        self.in_flight: dict[str, Job] = {}
        self.result = SweepResult(run_dir=spec.output_dir, counts=store.status_counts(source.ids(store)))
        seeds = {"measure": spec.measure.seed, **{k: v for k, v in spec.strategy_options.items() if k == "seed"}}
        info = provenance(device=getattr(workers, "device", "?"), seeds=seeds)
        info["executor"], info["workers"] = executor, workers.description
        workload = spec.workload.workload_class()  # type: ignore[union-attr]
        # Metric directions travel with the run, so analysis never has to import the workload again.
        info["metrics"] = {name: asdict(m) for name, m in workload.metrics.items()}
        info["spec_dir"] = str(spec.workload.base_dir or Path.cwd())  # type: ignore[union-attr]  # relative paths, for refine
        self.declared = [m for m in info["metrics"] if not m.endswith("_ms")]
        # as the first pass had them (measure_config): extended passes describe the records alike
        self.quantities, self.ranges = quantities_of(workload), ranges_of(workload)
        self.run_id = store.begin_run(spec.name, dict(spec.raw), info)
        workers.heartbeat = lambda trial: store.heartbeat(trial.trial_id, self.owner)

    def progress(self, current: Config | None = None) -> None:
        self.listener.progress(self.store.status_counts(self.source.ids(self.store)), self.source.total, current)

    def run(self) -> SweepResult:
        log.info("run %d: %d trials, owner %s", self.run_id, self.source.total, self.owner)
        try:
            self.progress()
            # Interleaved passes: the first pass of every configuration here, the others in
            # rounds after, so a busy spell of the machine lands on passes of different
            # configurations (and shows as disagreement between passes) instead of on every pass
            # of one configuration.
            first = RepeatPolicy("fixed", repeats=1) if interleaved(self.spec) else repeat_policy(self.spec)
            trials = self.source.trials(self.store)
            while True:
                while len(self.in_flight) < self.workers.slots:
                    trial = self.retry.popleft() if self.retry else next(trials, None)
                    if trial is None:
                        break
                    if self.store.claim(trial.trial_id, self.owner):
                        self._submit(Job(trial, first))
                if not self.in_flight:
                    break
                self._collect()
            if interleaved(self.spec):
                self._more_passes()
        except KeyboardInterrupt:
            self.result.interrupted = True
            # Every claim of this process goes back, not only those in flight: Ctrl-C can land
            # between a claim and its submission, or while a result that has left the in-flight
            # set is being stored (its transaction then rolls back). Extra passes claim nothing.
            for trial_id in self.store.release_owned(self.owner):
                log.info("interrupted during %s; claim released", trial_id)
            raise
        finally:
            self.result.counts = self.store.status_counts(self.source.ids(self.store))
        return self.result

    def _submit(self, job: Job) -> None:
        self.in_flight[job.trial.trial_id] = job
        if job.passes_before == 0:
            log.info("start %s %s", job.trial.trial_id, canonical_json(job.trial.config.to_dict()))
        self.progress(job.trial.config)
        self.workers.submit(job)

    def _collect(self) -> None:
        for outcome in self.workers.wait():
            del self.in_flight[outcome.job.trial.trial_id]
            if outcome.job.passes_before == 0:
                self._first(outcome)
            else:
                self._extra(outcome)
            self.progress()

    def _first(self, out: Outcome) -> None:
        trial = out.job.trial
        if out.lost is not None:
            self.lost[trial.trial_id] += 1
            if self.lost[trial.trial_id] <= self.max_failures:
                log.warning("worker lost during %s (%s); handing it out again (%d of %d)", trial.trial_id, out.lost,
                            self.lost[trial.trial_id], self.max_failures)  # fmt: skip
                self.store.release(trial.trial_id, self.owner)
                self.retry.append(trial)
                return
            out.error = f"WorkerLost: {out.lost} ({self.lost[trial.trial_id]} times)"
        if out.error is not None or out.measurement is None:
            reason = out.error or "no measurement"
            self.store.fail(trial.trial_id, self.owner, reason, run_id=self.run_id)
            self.result.failed.append((trial.config, reason))
            log.error("failed %s %s: %s", trial.trial_id, dict(trial.config), reason)
            return
        m, spec = out.measurement, self.spec
        settings = {"warmup": spec.measure.warmup, "repeats": spec.measure.repeats, "passes": m.passes,
                    "num_samples": spec.measure.num_samples, **out.where}  # fmt: skip
        if self.store.complete(trial.trial_id, self.owner, records=list(m.records), summary=m.summary(),
                               run_id=self.run_id, measure=settings):  # fmt: skip
            self.result.ran += 1
            total = m.metrics["total_ms"]
            log.info("done %s on %s %s: total_ms p50=%.2f [%.2f, %.2f] passes=%d%s", trial.trial_id,
                     out.where.get("node", "?"), out.where.get("device", "?"), total["p50"], total["p50_ci_low"],
                     total["p50_ci_high"], m.passes, "; noisy: " + "; ".join(m.noise.reasons) if m.noise.noisy else "")  # fmt: skip
        else:
            log.warning("lost the claim on %s (presumed dead and re-assigned); result discarded", trial.trial_id)

    def _extra(self, out: Outcome) -> None:
        job = out.job
        tid = job.trial.trial_id
        if out.measurement is None:
            log.error("pass %d of %s failed: %s", job.passes_before + 1, tid, out.error or out.lost)
            return  # the trial keeps the passes it has; a rerun measures this one again
        (trial,) = self.store.trials(ids=[tid])
        old = [rec for _, rec in self.store.samples(tid)]
        added = [{**r, "repeat": job.passes_before} for r in out.measurement.records]
        summary = extend_summary(trial.summary or {}, old + added, out.measurement, declared=self.declared,
                                 quantities=self.quantities, ranges=self.ranges, seed=self.spec.measure.seed,
                                 policy=repeat_policy(self.spec))  # fmt: skip
        if self.store.add_pass(tid, added, summary, passes_before=job.passes_before):
            log.info("pass %d of %s stored%s", job.passes_before + 1, tid,
                     "; noisy: " + "; ".join(summary["noise"]["reasons"]) if summary["noise"]["noisy"] else "")  # fmt: skip

    def _more_passes(self) -> None:
        """Passes 2, 3, ... of every finished trial, one round at a time, each round in a new
        seeded order; ``repeats: auto`` stops giving passes to a configuration once its targets
        are met. A pass is stored with the trial's new summary in one transaction, and only if
        no other process stored that pass first, so an interrupted or shared sweep never stores
        one twice."""
        policy, spec = repeat_policy(self.spec), self.spec
        one = RepeatPolicy("fixed", repeats=1)
        for round_ in range(2, policy.cap + 1):
            wanted = set(self.source.ids(self.store))
            trials = [t for t in self.store.trials(status="done")
                      if t.trial_id in wanted and needs_pass(t.summary, policy, round_)]  # fmt: skip
            if not trials:
                continue
            log.info("pass %d of up to %d: %d configurations", round_, policy.cap, len(trials))
            queue = collections.deque(random.Random(spec.measure.seed + round_).sample(trials, len(trials)))
            while queue or self.in_flight:
                while queue and len(self.in_flight) < self.workers.slots:
                    t = queue.popleft()
                    config = Config((name, t.config[name]) for name in spec.space.names)
                    passes = int((t.summary or {}).get("repeats", {}).get("passes", 1))
                    self._submit(Job(Trial(t.trial_id, config), one, passes_before=passes))
                self._collect()
