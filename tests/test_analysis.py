"""Analysis against independent computations, and the CLI on real runs of plugin workloads."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import PLUGINS, cli
from knobscope.analysis import Goal, Objective, Scenario, hypervolume, pareto_front, pareto_mask, recommend


def brute_force_mask(values: np.ndarray, maximise: list[bool]) -> np.ndarray:
    v = np.where(maximise, -values, values)  # everything lower-is-better
    n = len(v)
    keep = np.ones(n, dtype=bool)
    for i in range(n):
        for j in range(n):
            if i != j and (v[j] <= v[i]).all() and (v[j] < v[i]).any():
                keep[i] = False
                break
    return keep


def brute_force_hypervolume(values: np.ndarray, maximise: list[bool], ref: np.ndarray) -> float:
    """Exact volume by cutting the box into grid cells at every coordinate and testing each cell."""
    v = np.where(maximise, -values, values)
    r = np.where(maximise, -ref, ref)
    v = v[(v < r).all(axis=1)]
    if len(v) == 0:
        return 0.0
    axes = [np.unique(np.append(v[:, k], r[k])) for k in range(v.shape[1])]
    total = 0.0
    for cell in itertools.product(*[range(len(a) - 1) for a in axes]):
        lo = np.array([axes[k][i] for k, i in enumerate(cell)])
        hi = np.array([axes[k][i + 1] for k, i in enumerate(cell)])
        if ((v <= lo).all(axis=1)).any():
            total += float(np.prod(hi - lo))
    return total


@pytest.mark.parametrize("seed", range(6))
def test_pareto_and_hypervolume_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = 2 + seed % 2  # 2 and 3 objectives
    n = 40
    # Few distinct levels -> many ties and duplicated points.
    values = rng.integers(0, 6, size=(n, m)).astype(float)
    values[5] = values[4]
    maximise = [bool(b) for b in rng.integers(0, 2, size=m)]
    mask = pareto_mask(values, maximise)
    assert (mask == brute_force_mask(values, maximise)).all()
    assert mask[4] == mask[5]  # ties are kept together
    ref = np.where(maximise, values.min(axis=0) - 1, values.max(axis=0) + 1)
    assert hypervolume(values, maximise, ref) == pytest.approx(brute_force_hypervolume(values, maximise, ref))
    # the default reference is the worst observed value
    worst = np.where(maximise, values.min(axis=0), values.max(axis=0))
    assert hypervolume(values, maximise) == pytest.approx(brute_force_hypervolume(values, maximise, worst))


def test_pareto_front_excludes_failed_and_nan_with_reasons() -> None:
    table = pd.DataFrame({
        "trial_id": ["a", "b", "c", "d", "e"],
        "k": [1, 2, 3, 4, 5],
        "status": ["done", "done", "failed", "done", "done"],
        "error": [None, None, "RuntimeError: CUDA out of memory", None, None],
        "lat": [1.0, 2.0, 0.1, np.nan, 1.0],
        "acc": [0.5, 0.9, 1.0, 0.99, 0.5],
    })  # fmt: skip
    res = pareto_front(table, [Objective("lat", "min"), Objective("acc", "max")])
    assert set(res.frontier["trial_id"]) == {"a", "b", "e"}  # a and e tie: both kept
    reasons = dict(zip(res.excluded["trial_id"], res.excluded["reason"]))
    assert reasons == {"c": "failed: RuntimeError: CUDA out of memory", "d": "lat is missing or not finite"}


def _table() -> pd.DataFrame:
    rows = []
    for k, q in itertools.product([1, 2, 3, 4], [1, 2, 3]):
        rows.append({"trial_id": f"{k}{q}", "k": k, "q": q, "status": "done", "mse": 0.40 + 0.04 * k - 0.01 * q,
                     "acceptance": 0.5 + 0.1 * k - 0.05 * q})  # fmt: skip
    return pd.DataFrame(rows)


def test_recommendation_meets_every_constraint_and_is_best() -> None:
    table = _table()
    metrics = {"mse": {"higher_is_better": False}, "acceptance": {"higher_is_better": True}}
    sc = Scenario("balanced", Goal("maximize", "acceptance"), ("mse <= 0.52", "acceptance >= 0.6"))
    rec = recommend(table, sc, knobs=["k", "q"], metrics=metrics, top=3)
    feasible = table[(table.mse <= 0.52) & (table.acceptance >= 0.6)]
    assert rec["feasible"] == len(feasible) > 0
    for r in rec["top"]:
        assert r["values"]["mse"] <= 0.52 and r["values"]["acceptance"] >= 0.6
    assert rec["top"][0]["score"] == pytest.approx(feasible.acceptance.max())
    # seed 004's composite score with user weights
    sc = Scenario("composite", Goal("score", "1.0*acceptance + 0.5*log(1/mse)"))
    rec = recommend(table, sc, knobs=["k", "q"], metrics=metrics, top=1)
    expected = (table.acceptance + 0.5 * np.log(1 / table.mse)).max()
    assert rec["top"][0]["score"] == pytest.approx(expected)


def test_infeasible_recommendation_says_why() -> None:
    table = _table()
    metrics = {"mse": {"higher_is_better": False}, "acceptance": {"higher_is_better": True}}
    rec = recommend(table, Scenario("x", Goal("maximize", "acceptance"), ("mse <= 0.1",)), knobs=["k", "q"], metrics=metrics)
    assert rec["top"] == [] and "no configuration meets 'mse <= 0.1'" in rec["reason"] and "best observed is 0.41" in rec["reason"]
    # each constraint alone is met, jointly none: the closest configuration is named
    rec = recommend(table, Scenario("y", Goal("maximize", "acceptance"), ("mse <= 0.45", "acceptance >= 0.85")),
                    knobs=["k", "q"], metrics=metrics)  # fmt: skip
    assert rec["top"] == [] and "none meets all 2" in rec["reason"] and "closest" in rec["reason"]


def _known_quality_run(tmp_path: Path, form: str) -> Path:
    spec = {
        "name": form,
        "workload": {"name": f"{PLUGINS}:KnownQualityWorkload", "args": {"form": form}},
        "knobs": {"a": [1, 2, 4], "b": [1, 4, 9], "c": [0, 2, 4]},
        "strategy": "full",
        "measure": {"warmup": 1, "repeats": 2},
        "objectives": {"total_ms_mean": "min", "quality": "max"},
        "analysis": {"scenarios": {"fast_enough": {"maximize": "quality", "constraints": ["total_ms_mean <= 1e9"]}}},
        "output": str(tmp_path / form),
    }
    path = tmp_path / f"{form}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    cli("run", str(path), "--no-progress", check=True)
    return tmp_path / form


@pytest.fixture(scope="module")
def known_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("known")
    return {form: _known_quality_run(tmp, form) for form in ("separable", "interaction")}


def test_coupling_verdicts_on_known_functions(known_runs: dict[str, Path]) -> None:
    # Both objectives are known functions of the knobs: the cost is the work done, not its
    # measured latency, whose noise can make a small interaction real on a busy machine.
    verdicts = {}
    for form, run in known_runs.items():
        cli("analyze", str(run), "--objective", "matmuls:min", "--objective", "quality:max", check=True)
        data = json.loads((run / "coupling_analysis.json").read_text())
        verdicts[form] = {tuple(p["knobs"]): p["verdict"] for p in data["pairs"]}
        assert set(data["knobs"]) == {"a", "b", "c"}
        assert len(data["knobs"]["a"]["values"]) == 3  # one frontier per fixed value
    assert verdicts["separable"] == {("a", "b"): "not coupled", ("a", "c"): "not coupled", ("b", "c"): "not coupled"}
    assert verdicts["interaction"][("a", "b")] == "coupled"
    assert verdicts["interaction"][("a", "c")] == "not coupled"
    assert verdicts["interaction"][("b", "c")] == "not coupled"


def test_analyze_json_policies_and_comparison(known_runs: dict[str, Path]) -> None:
    proc = cli("analyze", str(known_runs["interaction"]), "--compare", str(known_runs["separable"]), "--json", check=True)
    result = json.loads(proc.stdout)
    pol = result["policies"]
    assert pol["available"] and pol["base"] == {"a": 2, "b": 4, "c": 2}
    assert 0 < pol["hypervolume_ratio"] <= 1.0 + 1e-9
    comp = result["comparison"]
    assert comp["common_configs"] == 27
    for case in comp["workload_dependent"]:
        assert case["optimal_on"] and case["dominated_on"]
        for cost in case["cost"].values():
            assert all(v > 0 for v in cost["improvement"].values() if v is not None) or any(
                v > 0 for v in cost["improvement"].values()
            )
    names = {r["scenario"] for r in result["recommendations"]}
    assert names == {"recommendation", "fast_enough"}


def test_compare_writes_seed_001s_e2_files(known_runs: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "e2"
    cli("analyze", str(known_runs["interaction"]), "--compare", str(known_runs["separable"]), "--prefix", "e2",
        "--out", str(out), "--objective", "matmuls:min", "--objective", "quality:max", check=True)  # fmt: skip
    grid = json.loads((out / "e2_knob_grid_results.json").read_text())
    assert grid["knobs"] == ["a", "b", "c"] and set(grid["workloads"]) == {"interaction", "separable"}
    for form, data in grid["workloads"].items():
        assert len(data["configurations"]) == 27
        table = pd.read_csv(known_runs[form] / "results.csv")
        row = data["configurations"][0]
        stored = table[(table.a == row["config"]["a"]) & (table.b == row["config"]["b"]) & (table.c == row["config"]["c"])]
        assert row["results"]["quality_mean"] == pytest.approx(float(stored["quality_mean"].iloc[0]))
    fronts = json.loads((out / "e2_pareto_frontiers.json").read_text())
    assert fronts["comparison"]["common_configs"] == 27
    assert [o["column"] for o in fronts["workloads"]["interaction"]["objectives"]] == ["matmuls", "quality"]
    coupling = json.loads((out / "e2_coupling_analysis.json").read_text())
    verdicts = {w: {tuple(p["knobs"]): p["verdict"] for p in c["pairs"]} for w, c in coupling["workloads"].items()}
    assert verdicts["interaction"][("a", "b")] == "coupled"  # each workload judged on its own, as analyze does
    assert verdicts["separable"][("a", "b")] == "not coupled"
    for name in ("e2_pareto_interaction", "e2_pareto_separable", "e2_coupling_proof", "e2_illustrative_cases"):
        with Image.open(out / "figures" / f"{name}.png") as image:
            assert round(image.info["dpi"][0]) == 300
    # The run directory keeps its own analysis files.
    assert (known_runs["interaction"] / "analysis.json").is_file()


def test_report_renders_in_headless_chromium(known_runs: dict[str, Path], tmp_path: Path) -> None:
    from browser import find_chromium, render

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'; .ci/run installs it)")
    run = known_runs["interaction"]
    proc = cli("report", str(run), "--compare", str(known_runs["separable"]), check=True)
    assert f"report: {(run / 'report.html').resolve()}" in proc.stdout.replace("\n", "")
    html = (run / "report.html").read_text()
    for section in ("overview", "coverage", "frontier", "coupling", "effects", "breakdown", "policies",
                    "recommendations", "comparison", "failures", "provenance"):  # fmt: skip
        assert f"<section id='{section}'>" in html
    page = render(chromium, run / "report.html", tmp_path)
    assert page.console == [], page.console
    assert page.page_requests == [], page.page_requests
    assert page.errors == []
    assert page.plots_rendered >= 8 and page.svg_layers >= page.plots_rendered
    # The same checks catch a broken page: a script error and a network fetch are both seen.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><img src='http://example.invalid/x.png'><script>undefinedFunction()</script></body></html>")
    broken = render(chromium, bad, tmp_path)
    assert broken.console and broken.page_requests
    figures = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert "pareto_interaction.png" in figures and "coupling_a.png" in figures and "illustrative_cases.png" in figures


def test_plot_options_and_bad_input(known_runs: dict[str, Path]) -> None:
    run = known_runs["separable"]
    proc = cli("plot", str(run), "--heatmap", "quality_mean:a,b", "--xy", "quality_mean,total_ms_p95", "--color-by", "b", check=True)
    assert "heatmap_quality_mean_a_b.png" in proc.stdout and "scatter_quality_mean_vs_total_ms_p95.png" in proc.stdout
    from PIL import Image

    with Image.open(run / "figures" / "heatmap_quality_mean_a_b.png") as img:
        assert round(img.info["dpi"][0]) == 300
    before = (run / "results.db").read_bytes()
    for args, needle in [
        (["analyze", str(run), "--objective", "nope"], "'nope' is not a result column"),
        (["analyze", str(run), "--objective", "quality_std"], "no declared direction"),
        (["analyze", str(run), "--objective", "quality:up"], "direction 'up' is not valid"),
        (["analyze", str(run), "--constraint", "latency <= 3"], "reads 'latency', which is not a result column"),
        (["analyze", str(run), "--fix", "zz"], "--fix 'zz' is not a knob"),
        (["analyze", str(run), "--maximize", "quality", "--minimize", "total_ms_mean"], "give one of"),
        (["analyze", str(run), "--scenario", "nope"], "scenario 'nope' is not in the spec"),
        (["plot", str(run), "--heatmap", "quality_mean:a"], "must look like METRIC:KNOB_X,KNOB_Y"),
        (["plot", str(run), "--color-by", "zz"], "--color-by 'zz' is not a knob"),
        (["analyze", str(run / "missing")], "missing"),
    ]:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (args, proc.stderr)
    assert (run / "results.db").read_bytes() == before


def test_spec_analysis_section_errors(tmp_path: Path) -> None:
    from conftest import write_spec

    for analysis, needle in [
        ({"constraints": ["total_ms_p95 <="]}, "analysis.constraints[0]"),
        ({"maximize": "accuracy", "score": "accuracy"}, "more than one of maximize, minimize and score"),
        ({"scenarios": {"fast": {"score": "__import__('os')"}}}, "analysis.scenarios.fast.score"),
        ({"top": 0}, "top"),
        ({"colour_by": "n"}, "colour_by"),
    ]:
        spec = write_spec(tmp_path / "spec.yaml", analysis=analysis)
        proc = cli("sample", str(spec))
        assert proc.returncode == 2, (analysis, proc.stdout)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (analysis, proc.stderr)


def test_knobs_that_only_change_together_are_undetermined_not_a_crash() -> None:
    from knobscope.analysis.coupling import coupling_analysis

    # Three listed scenarios: every knob changes at once, so no effect can be told apart
    # (statsmodels' ANOVA raises on such a design; seed 004's case studies are one).
    table = pd.DataFrame({"a": [1, 2, 3], "b": [10, 20, 30], "c": [5, 6, 7], "status": "done",
                          "cost": [3.0, 1.0, 2.0], "quality": [0.9, 0.5, 0.7]})  # fmt: skip
    objectives = [Objective("cost", "min"), Objective("quality", "max")]
    result = coupling_analysis(table, ["a", "b", "c"], objectives)
    assert [p["verdict"] for p in result["pairs"]] == ["undetermined"] * 3
    assert all(result["effects"][o.column]["main"][k]["share"] is None for o in objectives for k in "abc")


def test_an_objective_that_never_changes_is_not_coupled_and_not_a_crash() -> None:
    from knobscope.analysis.coupling import coupling_analysis

    # A random model's accuracy is 0 everywhere (seed 000's Exp5 on a tiny VLM): the pair's
    # verdict rests on the objective that moves, and the constant one shows no interaction.
    grid = list(itertools.product([1, 2, 3], [10, 20]))
    table = pd.DataFrame({"a": [a for a, _ in grid], "b": [b for _, b in grid], "status": "done",
                          "cost": [a * b + (a == 3) * b * 2.0 for a, b in grid], "quality": 0.0})  # fmt: skip
    objectives = [Objective("cost", "min"), Objective("quality", "max")]
    result = coupling_analysis(table, ["a", "b"], objectives)
    (pair,) = result["pairs"]
    quality = next(e for e in pair["evidence"] if e["objective"] == "quality")
    assert quality["interaction_share"] == 0.0 and quality["material"] is False
    assert pair["verdict"] in ("coupled", "not coupled")


def test_an_interaction_beyond_noise_that_the_design_cannot_separate_is_said_so() -> None:
    from knobscope.analysis.coupling import _noise_verdict

    entry = {"objective": "total_ms_p95", "share_of_pair_effect": 0.59, "share_interval": [0.45, 0.68], "p_noise": 0.0025,
             "p_value": 0.32, "residual_df": 5, "beyond_noise": "undetermined", "records_factor": 0.4}  # fmt: skip
    verdict, reason = _noise_verdict("a", "b", [entry], 0.05, 8.0, 0.05)
    assert verdict == "undetermined" and reason.startswith("not separable in these configurations")
    assert "ANOVA p = 0.32, 5 residual df" in reason and "records per configuration" not in reason
    assert "measure more combinations of a and b" in reason
    _, reason = _noise_verdict("a", "b", [entry], 0.05, 8.0, 0.05, full_grid=True)  # nothing more to combine
    assert "measure more combinations" not in reason and "every combination is measured" in reason
    # A corpus score (one value per configuration, taken as exact): 14% is over the threshold but
    # not beyond the design's residual, so neither "coupled" nor "not coupled".
    exact = {"objective": "cider_d", "share_of_pair_effect": 0.145, "p_value": 0.2, "residual_df": 8, "beyond_noise": "undetermined",
             "exact": True}  # fmt: skip
    verdict, reason = _noise_verdict("a", "b", [exact], 0.05, 1.0, 0.05, full_grid=True)
    assert verdict == "undetermined" and "14% of the joint effect (exact values" in reason and "ANOVA p = 0.2" in reason
    entry |= {"p_value": None}  # no residual to test against: noise is what decides, and more records would
    verdict, reason = _noise_verdict("a", "b", [entry], 0.05, 8.0, 0.05)
    assert reason.startswith("within noise")
