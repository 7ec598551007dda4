"""Numbers with their uncertainty: interval coverage on known noise, the noise-aware frontier,
coupling verdicts that noise cannot make, and adaptive repeats."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import norm

from knobscope.analysis import AnalysisOptions, analyze
from knobscope.analysis.objectives import Objective
from knobscope.analysis.pareto import pareto_mask
from knobscope.analysis.uncertainty import frontier_uncertainty, resample_objectives
from knobscope.intervals import describe, order_statistic_interval, proportion_interval
from knobscope.measure import Measurement, noise_of
from knobscope.results import load_run
from knobscope.spec import load_spec
from knobscope.executors import run_local
from knobscope.runner import run_log

from conftest import PLUGINS, cli

RUNS = 400


def test_intervals_cover_the_truth_about_95_percent_of_the_time() -> None:
    """Known truth (standard normal noise around 10), 400 seeded runs of 30 samples each."""
    rng = np.random.default_rng(2026)
    truth = {"mean": 10.0, "p50": 10.0, "p95": 10.0 + norm.ppf(0.95)}
    covered = dict.fromkeys(truth, 0)
    for run in range(RUNS):
        stats = describe(10 + rng.standard_normal(30), None, timing=True, seed=run, resamples=300)
        for stat, value in truth.items():
            covered[stat] += stats[f"{stat}_ci_low"] <= value <= stats[f"{stat}_ci_high"]
    coverage = {k: v / RUNS for k, v in covered.items()}
    print("coverage of 95% intervals over", RUNS, "runs:", coverage)
    assert 0.93 <= coverage["mean"] <= 0.975, coverage  # Student-t: exact for normal noise
    assert 0.93 <= coverage["p50"] <= 0.995, coverage
    assert coverage["p95"] >= 0.93, coverage  # conservative: the distribution-free bound is the wider


def test_binary_metric_gets_an_exact_binomial_interval_over_samples() -> None:
    values = [1.0] * 18 + [0.0] * 6
    stats = describe(values, list(range(24)), timing=False)
    assert stats["ci_method"] == "binary"
    assert (stats["mean_ci_low"], stats["mean_ci_high"]) == pytest.approx(proportion_interval(18, 24))
    assert stats["mean_ci_low"] < 0.75 < stats["mean_ci_high"]
    # a repeat does not add evidence about a deterministic answer: still 24 samples, not 48
    doubled = describe(values * 2, list(range(24)) * 2, timing=False)
    assert (doubled["mean_ci_low"], doubled["mean_ci_high"]) == pytest.approx((stats["mean_ci_low"], stats["mean_ci_high"]))


def test_a_count_that_is_1_everywhere_is_not_a_proportion() -> None:
    from knobscope.measure import describe_records

    # One image crop on every sample: a constant count, not 2 of 2 right answers (whose exact
    # interval would reach down to 0.16).
    records = [{"sample_id": i, "crops": 1, "correct": 1} for i in range(2)]
    metrics, _ = describe_records(records, quantities=["crops"])
    assert metrics["crops"]["ci_method"] == "samples"
    assert (metrics["crops"]["mean_ci_low"], metrics["crops"]["mean_ci_high"]) == (1.0, 1.0)
    assert metrics["correct"]["ci_method"] == "binary" and metrics["correct"]["mean_ci_low"] == pytest.approx(0.158, abs=1e-3)


def test_a_score_declared_not_a_proportion_and_an_aggregate_estimate_keep_their_intervals_across_passes() -> None:
    from knobscope.intervals import Estimate
    from knobscope.measure import extend_summary
    from knobscope.workloads.base import Metric

    class Scores:
        metrics = {"cider_d": Metric(True, "", "a score", proportion=False), "correct": Metric(True, "", "0/1")}

    from knobscope.measure import quantities_of

    assert quantities_of(Scores()) == ["cider_d"]
    # a CIDEr-D of 0 on every caption (a random model) is a score of 0, not 0 of 2 right answers
    records = [{"sample_id": i, "repeat": 0, "total_ms": 10.0 + i, "cider_d": 0.0} for i in range(2)]
    fields = dict(top_level_stages=(), peak_memory_mb=0.0, memory_kind="-", wall_s=1.0, passes=1)
    first = Measurement.from_records(records, declared=("cider_d",), quantities=quantities_of(Scores()),
                                     aggregate={"bleu4": Estimate(0.3, 0.2, 0.4, "bootstrap")}, **fields)  # fmt: skip
    assert first.metrics["cider_d"]["ci_method"] == "samples"
    assert first.aggregate == {"bleu4": 0.3}  # plain numbers where the table reads them
    assert first.values["bleu4"] == {"value": 0.3, "ci_low": 0.2, "ci_high": 0.4, "ci_method": "bootstrap"}
    # another pass (refine-measurements): the aggregate keeps its interval
    more = [{**r, "repeat": 1, "total_ms": r["total_ms"] + 1} for r in records]
    again = Measurement.from_records(more, **fields)
    merged = extend_summary(first.summary(), records + more, again, declared=("cider_d",), seed=0)
    assert merged["values"]["bleu4"] == first.values["bleu4"] and merged["aggregate"] == {"bleu4": 0.3}


def test_few_records_cannot_bound_a_tail_quantile() -> None:
    x = np.arange(20.0)
    lo, hi = order_statistic_interval(x, 0.95)
    assert np.isfinite(lo) and hi == np.inf  # 20 records: no finite 95% upper bound on a P95
    lo, hi = order_statistic_interval(np.arange(200.0), 0.95)
    assert np.isfinite(hi) and lo < 190 < hi


def test_repeats_of_the_same_sample_narrow_a_timing_interval() -> None:
    rng = np.random.default_rng(0)
    per_sample = rng.uniform(50, 150, 10)  # samples differ a lot; noise is small
    one = describe(per_sample + rng.normal(0, 1, 10), list(range(10)), timing=True)
    many = np.concatenate([per_sample + rng.normal(0, 1, 10) for _ in range(4)])
    four = describe(many, list(range(10)) * 4, timing=True)
    assert one["ci_method"] == "samples" and four["ci_method"] == "within"
    # with one repeat the interval holds the spread between samples; with four, only the noise
    assert (four["mean_ci_high"] - four["mean_ci_low"]) < (one["mean_ci_high"] - one["mean_ci_low"]) / 5


def test_noise_flag_says_why() -> None:
    quiet = [{"sample_id": s, "total_ms": 100 + r * 0.5} for s in range(5) for r in range(3)]
    busy = [{"sample_id": s, "total_ms": 100 * (1 + 2 * (r == 1))} for s in range(5) for r in range(3)]
    single = [{"sample_id": s, "total_ms": 100.0} for s in range(5)]
    assert noise_of(quiet).noisy is False
    assert noise_of(busy).noisy is True and "busy" in noise_of(busy).reasons[0]
    assert noise_of(single).noisy is None and "one repeat" in noise_of(single).reasons[0]
    m = Measurement.from_records(busy, declared=(), top_level_stages=(), peak_memory_mb=0.0, memory_kind="-",
                                 wall_s=0.0, passes=3)  # fmt: skip
    assert m.summary()["noise"]["noisy"] is True


# -- the noise-aware frontier on known truth ----------------------------------------------------


def _table(truth: dict[str, tuple[float, float]], noise: float, samples: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows, recs = [], []
    for tid, (cost, quality) in truth.items():
        c = cost + rng.normal(0, noise, samples)
        q = quality + rng.normal(0, noise, samples)
        rows.append({"trial_id": tid, "status": "done", "cost": c.mean(), "quality": q.mean()})
        recs += [{"trial_id": tid, "sample_id": s, "repeat": 0, "cost": c[s], "quality": q[s]} for s in range(samples)]
    return pd.DataFrame(rows), pd.DataFrame(recs)


OBJECTIVES = [Objective("cost", "min"), Objective("quality", "max")]


def test_probability_of_optimality_ranks_the_truly_optimal_first() -> None:
    # a true front of 4 trade-offs; 8 configurations each dominated by a clear margin (>= 2 noise sds)
    front = {f"f{i}": (float(i), float(i)) for i in range(4)}
    dominated = {f"d{i}": (i % 4 + 2.0, i % 4 - 2.0) for i in range(8)}
    table, samples = _table({**front, **dominated}, noise=1.0, samples=16, seed=1)
    rep = resample_objectives(table, samples, OBJECTIVES, resamples=300, seed=0)
    values = table[["cost", "quality"]].to_numpy()
    unc = frontier_uncertainty(rep, reference=np.array([values[:, 0].max(), values[:, 1].min()]))
    p = unc.probability
    assert min(p[t] for t in front) > max(p[t] for t in dominated), p
    assert all(unc.status[t] == "dominated" for t in dominated)
    lo, hi = unc.hypervolume_interval
    assert lo < hi


def test_configurations_within_noise_of_each_other_are_tied_not_ranked(tmp_path: Path) -> None:
    """Five configurations with identical true values: none is optimal beyond noise, all are tied."""
    same = {f"s{i}": (1.0, 1.0) for i in range(5)}
    worse = {"w": (3.0, -3.0)}
    table, samples = _table({**same, **worse}, noise=0.5, samples=12, seed=3)
    rep = resample_objectives(table, samples, OBJECTIVES, resamples=300, seed=0)
    unc = frontier_uncertainty(rep, reference=np.array([3.5, -3.5]))
    assert unc.status["w"] == "dominated"
    assert all(unc.status[t] != "optimal" for t in same), unc.status
    # one tied group: every pair tested at 95% (jointly over the objectives), so a few of the 10
    # pairs may separate by chance; the group as a whole stays connected and unranked
    group, todo = set(), ["s0"]
    while todo:
        t = todo.pop()
        if t not in group:
            group.add(t)
            todo += list(unc.ties[t])
    assert group == set(same), unc.ties
    assert all(len(unc.ties[t]) >= 3 for t in same), unc.ties
    # with no noise the same table is decided exactly as measured
    exact = resample_objectives(table, None, OBJECTIVES, resamples=50)
    decided = frontier_uncertainty(exact, reference=np.array([3.5, -3.5]))
    mask = pareto_mask(table[["cost", "quality"]].to_numpy(), [False, True])
    assert [decided.status[t] == "optimal" for t in table["trial_id"]] == list(mask)


# -- end to end: a run of the noisy workload ------------------------------------------------------


def _spec(tmp_path: Path, name: str, *, knobs: dict, args: dict, measure: dict, objectives: dict | None = None) -> Path:
    spec = {
        "name": name,
        "workload": {"name": f"{PLUGINS}:NoisyKnown", "args": args},
        "knobs": knobs,
        "strategy": "full",
        "objectives": objectives or {"cost": "min", "quality": "max"},
        "measure": {"warmup": 0, **measure},
        "output": str(tmp_path / name),
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _verdict(run_dir: Path) -> dict:
    result = analyze(load_run(run_dir, with_samples=True), AnalysisOptions(resamples=200)).to_json()
    return result["coupling"]["pairs"][0]


@pytest.mark.parametrize(
    "name, args, measure, expected",
    [
        # the demo: additive truth drowned in noise -> no verdict, and how to get one
        ("noise", {"num_samples": 6, "noise": 4.0}, {"repeats": 1}, "undetermined"),
        # the same truth, measured precisely -> not coupled
        ("quiet", {"num_samples": 6, "noise": 0.02}, {"repeats": 1}, "not coupled"),
        # a real interaction, measured precisely -> coupled
        ("inter", {"num_samples": 6, "noise": 0.02, "interaction": 1.0}, {"repeats": 1}, "coupled"),
        # one observation per configuration: never coupled, and it says why
        ("single", {"num_samples": 1, "noise": 0.02, "interaction": 1.0}, {"repeats": 1}, "undetermined"),
    ],
)
def test_coupling_verdicts_are_not_drawn_from_noise(tmp_path: Path, name: str, args: dict, measure: dict, expected: str) -> None:
    spec = load_spec(_spec(tmp_path, name, knobs={"a": [1, 2, 3], "b": [1, 2, 3]}, args=args, measure=measure,
                           objectives={"cost": "min"}))  # fmt: skip
    run_local(spec)
    pair = _verdict(spec.output_dir)
    assert pair["verdict"] == expected, pair["reason"]
    if name == "noise":
        assert pair["reason"].startswith("within noise") and "records per configuration" in pair["reason"]
    if name == "single":
        assert "one observation per configuration" in pair["reason"]


def test_a_run_stores_exports_and_shows_intervals(tmp_path: Path) -> None:
    spec_path = _spec(tmp_path, "e2e", knobs={"a": [1, 2], "b": [1, 2]}, args={"num_samples": 8, "noise": 0.5},
                      measure={"repeats": 2})  # fmt: skip
    cli("run", str(spec_path), "--no-progress", check=True)
    run_dir = tmp_path / "e2e"
    csv = pd.read_csv(run_dir / "results.csv")
    for column in ("cost", "cost_ci_low", "cost_ci_high", "total_ms_p95_ci_low", "total_ms_mean_ci_high", "noisy", "repeats"):
        assert column in csv.columns, column
    assert (csv["cost_ci_low"] < csv["cost"]).all() and (csv["cost"] < csv["cost_ci_high"]).all()
    truth = {(a, b): a + b for a, b in itertools.product([1, 2], [1, 2])}
    assert all(r.cost_ci_low <= truth[(r.a, r.b)] <= r.cost_ci_high for r in csv.itertuples())
    summary = json.loads((run_dir / "results.json").read_text())["summary"][0]
    assert "quality_ci_low" in summary and "total_ms_p50_ci_high" in summary
    shown = cli("show", str(run_dir), check=True).stdout
    assert "95% interval" in shown and "[" in shown
    analysed = cli("analyze", str(run_dir), check=True).stdout
    assert "P(optimal)" in analysed and "bootstrap replicates" in analysed
    frontier = json.loads((run_dir / "pareto_frontiers.json").read_text())["frontier"]
    assert frontier["hypervolume_interval"] and frontier["uncertainty"]["resamples"] > 0
    assert all("probability" in r and "intervals" in r for r in frontier["rows"])


def test_ties_are_listed_most_likely_optimal_first_as_knob_values(tmp_path: Path) -> None:
    # b in {0, 0.05, 0.1} moves the truth by less than the noise: every b is tied with the others at its a
    spec = load_spec(_spec(tmp_path, "ties", knobs={"a": [1, 2], "b": [0, 0.05, 0.1]},
                           args={"num_samples": 6, "noise": 0.3, "quality_noise": 0.3}, measure={"repeats": 1}))  # fmt: skip
    run_local(spec)
    rows = analyze(load_run(spec.output_dir, with_samples=True), AnalysisOptions(resamples=200)).frontier.rows
    probability = {(r.config["a"], r.config["b"]): r.probability for r in rows}
    tied = [r for r in rows if r.tied_with]
    assert tied, rows
    for r in tied:
        assert all(t["a"] == r.config["a"] for t in r.tied_with), r  # the same a, another b
        p = [probability[(t["a"], t["b"])] for t in r.tied_with]
        assert p == sorted(p, reverse=True), (r.config, r.tied_with, p)
        assert r.tie_labels() == [f"({t['a']}, {t['b']})" for t in r.tied_with]
    table = cli("analyze", str(spec.output_dir), check=True).stdout.split("Knob coupling")[0]
    assert "(2, 0.05)" in table and "a=" not in table and "b=" not in table


def test_auto_repeats_stop_at_the_target_or_the_cap(tmp_path: Path) -> None:
    quiet = load_spec(_spec(tmp_path, "quiet", knobs={"a": [1], "b": [1, 2]}, args={"num_samples": 4, "noise": 0.001},
                            measure={"repeats": "auto", "target_ci": 0.02, "min_repeats": 2, "max_repeats": 8,
                                     "targets": ["cost_mean"]}))  # fmt: skip
    run_local(quiet)
    table = load_run(quiet.output_dir).table
    assert (table["repeats"] == 2).all() and table["target_met"].all()  # precise after the minimum
    noisy = load_spec(_spec(tmp_path, "noisy", knobs={"a": [1], "b": [1, 2]}, args={"num_samples": 4, "noise": 5.0},
                            measure={"repeats": "auto", "target_ci": 0.02, "min_repeats": 2, "max_repeats": 5,
                                     "targets": ["cost_mean"]}))  # fmt: skip
    run_local(noisy)
    table = load_run(noisy.output_dir).table
    assert (table["repeats"] == 5).all() and not table["target_met"].any()  # capped, and it says so
    assert (table["num_records"] == 20).all()


@pytest.mark.parametrize(
    "measure, message",
    [
        ({"repeats": 0}, "measure.repeats"),
        ({"repeats": "sometimes"}, "measure.repeats"),
        ({"repeats": "auto", "min_repeats": 5, "max_repeats": 2}, "min_repeats (5) is above measure.max_repeats (2)"),
        ({"repeats": "auto", "target_ci": 0}, "measure.target_ci"),
        ({"repeats": "auto", "targets": ["total ms"]}, "measure.targets"),
    ],
)
def test_bad_repeat_settings_are_one_line(tmp_path: Path, measure: dict, message: str) -> None:
    spec_path = _spec(tmp_path, "bad", knobs={"a": [1], "b": [1]}, args={}, measure=measure)
    proc = cli("run", str(spec_path), "--no-progress")
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "bad").exists()


def test_refine_measurements_spends_repeats_only_where_the_frontier_is_undecided(tmp_path: Path) -> None:
    # b = 0 truly dominates b = 0.1 by less than one noise sd; b = 3 is dominated by far
    spec_path = _spec(tmp_path, "race", knobs={"a": [1, 2], "b": [0, 0.1, 3]},
                      args={"num_samples": 4, "noise": 0.1, "quality_noise": 0.1}, measure={"repeats": 1})  # fmt: skip
    cli("run", str(spec_path), "--no-progress", check=True)
    run_dir = tmp_path / "race"
    before = load_run(run_dir).table.set_index(["a", "b"])["num_records"]
    proc = cli("refine-measurements", str(run_dir), "--budget", "200", "--resamples", "200", check=True)
    after = load_run(run_dir).table.set_index(["a", "b"])
    grown = after["num_records"] - before
    assert (grown.xs(3, level="b") == 0).all(), grown  # in no open comparison: never measured again
    assert grown.sum() > 0 and grown.sum() <= 200
    assert (after["num_records"] % 4 == 0).all()  # whole passes over the 4 samples
    assert "frontier decided" in proc.stdout, proc.stdout + proc.stderr
    refined = after[grown > 0]
    assert (refined["repeats"] == refined["num_records"] // 4).all()  # the summary counts the passes
    # rerunning finds nothing left to decide and measures nothing
    again = cli("refine-measurements", str(run_dir), check=True)
    assert "frontier decided" in again.stdout and "0 samples spent" in again.stdout


@pytest.mark.parametrize("interleave", [False, True])
def test_interleaved_passes_keep_a_busy_spell_from_posing_as_a_faster_configuration(tmp_path: Path, interleave: bool) -> None:
    """Three configurations doing the same work, three passes of four samples each; a busy spell
    lasts exactly one configuration's twelve calls. Measured one configuration at a time, the
    spell falls on all of one configuration's passes, its repeats agree, and it looks slower
    beyond noise; interleaved, it falls on one pass of each, and nothing is decided."""
    spec = {
        "name": f"spell{interleave}", "workload": {"name": f"{PLUGINS}:BusySpell", "args": {"num_samples": 4}},
        "knobs": {"x": [1, 2, 3]}, "strategy": "full", "objectives": {"total_ms_mean": "min"},
        "measure": {"warmup": 0, "repeats": 3, "interleave": interleave}, "output": str(tmp_path / "run"),
    }  # fmt: skip
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    with run_log(tmp_path / "run"):  # the log file is the caller's (the CLI's) to open
        run_local(load_spec(path))
    table = load_run(tmp_path / "run").table
    assert (table["num_records"] == 12).all() and (table["repeats"] == 3).all()
    result = analyze(load_run(tmp_path / "run", with_samples=True), AnalysisOptions(resamples=300)).to_json()
    status = [r["status"] for r in result["frontier"]["rows"]]
    dominated = result["frontier"]["uncertainty"]["counts"]["dominated"]
    if interleave:
        assert table["noisy"].all()  # every configuration's passes disagree: the spell is seen
        assert dominated == 0 and "optimal" not in status  # no configuration is faster beyond noise
    else:
        assert dominated >= 1  # the spell's configuration looks slower beyond noise: the trap
    log = (tmp_path / "run" / "knobscope.log").read_text()
    assert ("pass 2 of up to 3" in log) == interleave


def test_intervals_stay_inside_a_metrics_declared_range_in_every_pass() -> None:
    from knobscope.measure import describe_records, extend_summary, ranges_of
    from knobscope.workloads.forecast import ForecastWorkload

    ranges = ranges_of(ForecastWorkload)
    assert ranges["acceptance_rate"] == (0.0, 1.0) and "mse" not in ranges
    # An acceptance rate of 0 on most windows (seen on ETTh1 at sigma 1): a Student-t interval
    # of the mean reaches below 0, and three records give a P99 no finite upper bound.
    records = [{"sample_id": i, "repeat": 0, "acceptance_rate": 0.25 if i == 0 else 0.0} for i in range(3)]
    free, _ = describe_records(records, quantities=["acceptance_rate"])
    assert free["acceptance_rate"]["mean_ci_low"] < 0 and free["acceptance_rate"]["p99_ci_high"] == float("inf")
    bounded, _ = describe_records(records, quantities=["acceptance_rate"], ranges=ranges)
    stats = bounded["acceptance_rate"]
    assert stats["mean_ci_low"] == 0.0 and stats["mean_ci_high"] == free["acceptance_rate"]["mean_ci_high"]
    assert stats["p99_ci_high"] == 1.0 and stats["mean"] == free["acceptance_rate"]["mean"]
    # a later pass keeps the clipping
    fields = dict(top_level_stages=(), peak_memory_mb=0.0, memory_kind="-", wall_s=1.0, passes=1)
    first = Measurement.from_records(records, declared=("acceptance_rate",), quantities=["acceptance_rate"], ranges=ranges, **fields)
    assert first.values["acceptance_rate"]["ci_low"] == 0.0
    more = [{**r, "repeat": 1} for r in records]
    merged = extend_summary(first.summary(), records + more, Measurement.from_records(more, **fields),
                            declared=("acceptance_rate",), seed=0, quantities=["acceptance_rate"], ranges=ranges)  # fmt: skip
    assert merged["values"]["acceptance_rate"]["ci_low"] == 0.0
    assert merged["intervals"]["acceptance_rate"]["p99_ci_high"] == 1.0
