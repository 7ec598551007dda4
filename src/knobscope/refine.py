"""Repeats spent where they decide the frontier (``knobscope refine-measurements DIR``).

After a sweep, some configurations are Pareto-optimal in some bootstrap replicates and dominated
in others: the measurements cannot yet say which side of the frontier they are on. Racing (as
in the bandit literature) measures only the comparisons still open: round after round, one more
pass over the samples for each uncertain configuration, most uncertain first (probability of
optimality closest to 1/2), and for its rivals (the configurations that dominate it in at least
5% of replicates: a comparison is decided only when both sides are precise), until none is
uncertain (the frontier is decided) or the budget of samples is spent. Configurations that
take part in no open comparison are not measured again.

Every pass is appended to the store with its recomputed summary in one transaction, so an
interrupted refinement loses at most the pass in flight and the same command resumes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobscope.errors import SpecError
from knobscope.measure import (
    PeakMemory,
    RepeatPolicy,
    StageTimer,
    extend_summary,
    measure_config,
    quantities_of,
    ranges_of,
    resolve_device,
)
from knobscope.space import Config

__all__ = ["RefineResult", "refine_measurements"]

log = logging.getLogger("knobscope")


@dataclass
class RefineResult:
    """What a refinement did: ``decided`` (no configuration left uncertain), samples ``spent``,
    ``rounds``, the configurations still ``uncertain`` with their probability, and per round the
    number of uncertain configurations before it (``history``)."""

    decided: bool
    spent: int
    rounds: int
    uncertain: dict[str, float] = field(default_factory=dict)
    history: list[int] = field(default_factory=list)
    objectives: list[str] = field(default_factory=list)


def _status(run_dir: Path, requested: Sequence[str], resamples: int, seed: int) -> tuple[Any, Any, Any]:
    from knobscope.analysis.analyze import run_objectives
    from knobscope.analysis.pareto import pareto_front
    from knobscope.analysis.uncertainty import frontier_uncertainty, resample_objectives
    from knobscope.results import load_run

    run = load_run(run_dir, with_samples=True)
    objectives = run_objectives(run, requested)
    front = pareto_front(run.table, objectives)
    if not len(front.table):
        raise SpecError(f"{str(run_dir)!r} has no finished configuration with every objective; nothing to refine")
    rep = resample_objectives(front.table, run.samples, objectives, resamples=resamples, seed=seed)
    return run, objectives, frontier_uncertainty(rep, reference=front.reference)


def _round(uncertain: dict[str, float], rivals: dict[str, tuple[str, ...]]) -> list[str]:
    """This round's configurations: each uncertain one (most uncertain first), then its rivals."""
    out: list[str] = []
    for trial_id in sorted(uncertain, key=lambda t: abs(uncertain[t] - 0.5)):
        for t in (trial_id, *rivals.get(trial_id, ())):
            if t not in out:
                out.append(t)
    return out


def refine_measurements(
    run_dir: str | Path,
    *,
    budget: int | None = None,
    objectives: Sequence[str] = (),
    resamples: int = 200,
    seed: int = 0,
    device: str = "auto",
    on_round: Callable[[int, int, int], None] = lambda rnd, uncertain, spent: None,
) -> RefineResult:
    """Measure more passes of the uncertain configurations until the frontier is decided.

    ``budget``: samples (records) to spend at most (default: as many as the run holds, i.e. at
    most doubling it). ``on_round(round, uncertain, spent)`` reports progress.
    """
    from knobscope.workers import build_workload, prepare_workload
    from knobscope.spec import parse_spec
    from knobscope.store import Store

    run_dir = Path(run_dir)
    run, chosen, unc = _status(run_dir, objectives, resamples, seed)
    names = [o.column for o in chosen]
    spec_dir = run.runs[-1]["provenance"].get("spec_dir")
    spec = parse_spec(run.runs[-1]["spec"], source=str(run_dir), base_dir=Path(spec_dir) if spec_dir else None)
    if budget is None:
        budget = int(run.table["num_records"].fillna(0).sum()) if "num_records" in run.table else 0
    uncertain = {t: p for t, p in unc.probability.items() if unc.status[t] == "uncertain"}
    rivals = dict(unc.rivals)
    result = RefineResult(decided=not uncertain, spent=0, rounds=0, uncertain=uncertain, objectives=names)
    if not uncertain or budget <= 0:
        return result
    workload = build_workload(spec)
    device = resolve_device(device if device != "auto" else spec.measure.device)
    timer = StageTimer(device, hook_timing=spec.measure.hook_timing)
    memory = PeakMemory(device)
    workload = prepare_workload(spec, device=device, run_dir=run_dir, timer=timer, workload=workload)
    declared = [m for m in type(workload).metrics if not m.endswith("_ms")]
    configs = {str(r["trial_id"]): Config((k, r[k]) for k in spec.space.names) for r in run.table.to_dict("records")}
    try:
        with Store.open(run_dir) as store:
            while uncertain and result.spent < budget:
                result.history.append(len(uncertain))
                on_round(result.rounds, len(uncertain), result.spent)
                for trial_id in _round(uncertain, rivals):
                    if result.spent >= budget:
                        break
                    new = measure_config(workload, configs[trial_id], timer=timer, memory=memory, warmup=spec.measure.warmup,
                                         num_samples=spec.measure.num_samples, policy=RepeatPolicy("fixed", repeats=1),
                                         seed=spec.measure.seed)  # fmt: skip
                    (trial,) = store.trials(ids=[trial_id])
                    old = [rec for _, rec in store.samples(trial_id)]
                    first = max((int(r.get("repeat", 0)) for r in old), default=-1) + 1
                    added = [{**r, "repeat": first} for r in new.records]
                    summary = extend_summary(trial.summary or {}, old + added, new, declared=declared, seed=spec.measure.seed,
                                             quantities=quantities_of(workload), ranges=ranges_of(workload))
                    if store.add_pass(trial_id, added, summary):
                        result.spent += len(added)
                        log.info("refine: %s one more pass (%d samples)", trial_id, len(added))
                result.rounds += 1
                _, _, unc = _status(run_dir, names, resamples, seed + result.rounds)
                uncertain = {t: p for t, p in unc.probability.items() if unc.status[t] == "uncertain"}
                rivals = dict(unc.rivals)
    finally:
        timer.detach_all()
        workload.teardown()
    result.uncertain = uncertain
    result.decided = not uncertain
    return result
