"""Which trials a sweep runs: one trial source, chosen once from the strategy.

A *trial* is one configuration of one workload with its arguments; its identity (a hash of
the three) is its key in the store, so the same configuration measured again is the same
trial. A :class:`TrialSource` says which trials a sweep has and hands them out one at a time:

- :class:`FixedTrials`: the strategy's selection (after constraints and ``--shard``), known up
  front and handed out in a seeded random order.
- :class:`AdaptiveTrials`: proposals of an adaptive strategy (``bayesian``, ``nsga2``,
  ``refine``), each made from every result in the store so far, so several processes or Ray
  actors share one search.

:func:`trial_source` is the one place that reads ``Strategy.adaptive`` to run a sweep; the sweep
loop (:mod:`knobscope.runner`) only claims, measures and stores what the source yields.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from knobscope.errors import SpecError
from knobscope.space import Config, canonical_json, identity_hash

if TYPE_CHECKING:
    from knobscope.search import Observation
    from knobscope.spec import ExperimentSpec
    from knobscope.store import Store

__all__ = ["Trial", "TrialSource", "FixedTrials", "AdaptiveTrials", "trial_source", "trial_id", "parse_shard", "search_history"]

log = logging.getLogger("knobscope")


def trial_id(config: Config, workload: str, args: Mapping[str, Any]) -> str:
    """The identity of a trial in the store: a hash of canonical config, workload and its arguments."""
    return identity_hash({"config": config.to_dict(), "workload": workload, "args": dict(args)})


@dataclass(frozen=True)
class Trial:
    trial_id: str
    config: Config


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SpecError(f"--shard expects I/N with 0 <= I < N (e.g. 0/4); got {text!r}") from None
    if not 0 <= i < n:
        raise SpecError(f"--shard expects I/N with 0 <= I < N (e.g. 0/4); got {text!r}")
    return i, n


class TrialSource:
    """The trials of one sweep.

    Contract: ``total`` is how many configurations the sweep has when it is finished (the
    progress bar's end); :meth:`register` records the trials known up front in the store
    (idempotent; nothing for an adaptive source); :meth:`ids` lists the sweep's trials now in
    the store; :meth:`trials` yields trials to claim, lazily, each after the caller is done with
    the previous one (an adaptive source proposes from the results stored by then). A trial may
    be yielded that another process has claimed or finished: the caller's claim decides.
    """

    adaptive = False

    def __init__(self, spec: ExperimentSpec) -> None:
        if spec.workload is None:
            raise SpecError(f"{spec.source}: the spec has no 'workload'; 'run' needs one")
        self.spec = spec
        self.workload = spec.workload
        self.total = 0

    def _row(self, trial: Trial) -> tuple[str, str, str, str]:
        return (trial.trial_id, trial.config.canonical, self.workload.name, canonical_json(dict(self.workload.args)))

    def register(self, store: Store) -> int:
        """Add the trials known up front to ``store``; returns how many were new."""
        return 0

    def ids(self, store: Store) -> list[str]:
        raise NotImplementedError

    def unfinished(self, store: Store, *, retry_failed: bool) -> bool:
        """Whether the sweep has trials left to measure (not counting extra passes)."""
        raise NotImplementedError

    def trials(self, store: Store) -> Iterator[Trial]:
        raise NotImplementedError


class FixedTrials(TrialSource):
    """A fixed strategy's selection, sharded by trial identity, in a seeded random order."""

    def __init__(self, spec: ExperimentSpec, *, shard: tuple[int, int] = (0, 1)) -> None:
        super().__init__(spec)
        configs = spec.strategy().select(spec.space)
        if not configs:
            raise SpecError(
                f"{spec.source}: no configuration satisfies the constraints {[c.source for c in spec.space.constraints]}"
            )
        trials = [Trial(trial_id(c, self.workload.name, self.workload.args), c) for c in configs]
        index, count = shard
        if count > 1:
            trials = [t for t in trials if int(t.trial_id, 16) % count == index]
        self.selected = len(configs)  # before sharding
        self.planned: tuple[Trial, ...] = tuple(trials)
        self.total = len(trials)

    def register(self, store: Store) -> int:
        return store.add_trials(self._row(t) for t in self.planned)

    def ids(self, store: Store | None = None) -> list[str]:
        return [t.trial_id for t in self.planned]

    def unfinished(self, store: Store, *, retry_failed: bool) -> bool:
        known = store.statuses(self.ids())
        left = ("pending", "running", "failed") if retry_failed else ("pending", "running")
        return any(known.get(i, "pending") in left for i in self.ids())

    def trials(self, store: Store) -> Iterator[Trial]:
        # A seeded random order: slow drift of the machine (clocks, heat, other load) then
        # spreads over all configurations as noise instead of posing as a knob effect or a knob
        # interaction, as it would in grid order.
        yield from random.Random(self.spec.measure.seed).sample(list(self.planned), len(self.planned))


class AdaptiveTrials(TrialSource):
    """An adaptive strategy's search: unfinished trials of the search first (a resumed or
    retried search), then one proposal at a time from every result so far, until ``n_trials``
    configurations exist or the strategy has nothing more to propose."""

    adaptive = True

    def __init__(self, spec: ExperimentSpec, *, shard: tuple[int, int] = (0, 1)) -> None:
        super().__init__(spec)
        self.strategy = spec.strategy()
        if shard[1] > 1:
            raise SpecError(
                f"--shard does not apply to the adaptive strategy {self.strategy.name!r}: start several processes on the "
                "same run directory instead; they share the search through the store"
            )
        # raises now if there is nothing to optimise; bounded metrics bring their declared range
        self.goal = self.strategy.goal(spec.objectives).with_ranges(getattr(self.workload.workload_class(), "metrics", {}))
        self.strategy.check(spec.space)  # type: ignore[attr-defined]
        self.total = self.strategy.budget(spec.space)

    def ids(self, store: Store) -> list[str]:
        return [o.trial_id for o in search_history(store, self.spec)]

    def unfinished(self, store: Store, *, retry_failed: bool) -> bool:
        known = [o.status for o in search_history(store, self.spec)]
        return len(known) < self.total or any(s in ("pending", "running") or (retry_failed and s == "failed") for s in known)

    def trials(self, store: Store) -> Iterator[Trial]:
        name = self.strategy.name
        log.info("%s search: %s, %d configurations", name, self.goal.description, self.total)
        handed: set[str] = set()  # pending trials this source already handed out
        while True:
            history = search_history(store, self.spec)
            waiting = [o for o in history if o.status == "pending" and o.trial_id not in handed]
            if waiting:
                handed.add(waiting[0].trial_id)
                yield Trial(waiting[0].trial_id, waiting[0].config)
                continue
            if len(history) >= self.total:
                return
            config = self.strategy.propose(self.spec.space, history, self.goal)  # type: ignore[attr-defined]
            if config is None:
                log.info("%s search: nothing left to propose after %d configurations", name, len(history))
                return
            trial = Trial(trial_id(config, self.workload.name, self.workload.args), config)
            store.add_trials([self._row(trial)])
            handed.add(trial.trial_id)
            log.info("%s proposes %s", name, canonical_json(config.to_dict()))
            yield trial


def trial_source(spec: ExperimentSpec, *, shard: tuple[int, int] = (0, 1)) -> TrialSource:
    """The spec's trial source: adaptive for an adaptive strategy, else its fixed selection."""
    if spec.workload is None:
        raise SpecError(f"{spec.source}: the spec has no 'workload'; 'run' needs one")
    if spec.strategy().adaptive:
        return AdaptiveTrials(spec, shard=shard)
    return FixedTrials(spec, shard=shard)


def search_history(store: Store, spec: ExperimentSpec) -> list[Observation]:
    """The store's trials that belong to this spec's search: same workload and arguments, and
    a configuration of the spec's space (every knob, values from its lists), in store order."""
    from knobscope.results import flatten_summary
    from knobscope.search import Observation

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
