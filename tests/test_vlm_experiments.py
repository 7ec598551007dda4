"""The seeds' experiments on the vlm workload: seed 002's Exp1 (``knobscope profile
context-scaling`` on a VLM) and seed 001's E2 pipeline (``examples/e2_vlm``: two workloads,
compared), on tiny randomly initialised models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, cli

pytest.importorskip("skimage", reason="the shipped VQA/caption set reads the images scikit-image ships")
pytestmark = pytest.mark.model


def test_exp1_context_scaling_on_a_vlm_sweeps_tilings_and_splits_the_prefill(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "exp1"
    res = cli("profile", "context-scaling", "--model", "random:idefics3", "--num-samples", "2", "--warmup", "0",
              "--max-crops", "1", "--max-crops", "3", "--max-crops", "6", "--out", str(out), "--no-progress")  # fmt: skip
    assert res.returncode == 0, res.stderr
    data = json.loads((out / "exp1_context_scaling_results.json").read_text())
    summary = {row["max_crops"]: row for row in data["summary"]}
    assert sorted(summary) == [1, 3, 6]
    per_crop = 4  # the tiny model: 64-pixel tiles of 16-pixel patches, pixel-shuffled by 2
    for tiles, row in summary.items():
        crops = tiles + 1 if tiles > 1 else 1  # one row of `tiles` tiles, and the global view
        assert row["crops_mean"] == crops and row["vision_tokens_actual_mean"] == crops * per_crop
    assert len(data["all_samples"]) == 6
    for sample in data["all_samples"]:  # the stacked parts add up to the prefill
        parts = sample["vision_encoder_ms"] + sample["projector_ms"] + sample["llm_prefill_ms"]
        assert parts == pytest.approx(sample["prefill_ms"])
        assert sample["tokens_out"] == 1  # the prefill is the experiment: one token
    with Image.open(out / "figures" / "exp1_context_scaling.png") as image:
        assert round(image.info["dpi"][0]) == 300


def test_a_language_model_preset_is_refused_on_a_vlm(tmp_path: Path) -> None:
    res = cli("profile", "moe-topk", "--model", "random:idefics3", "--out", str(tmp_path / "x"), "--no-progress")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "runs on language models; a vision-language model runs context-scaling" in res.stderr
    assert not (tmp_path / "x").exists()


def _e2_spec(tmp_path: Path, name: str) -> Path:
    spec = yaml.safe_load((ROOT / "examples" / "e2_vlm" / f"{name}.yaml").read_text())
    # The example's 48 configurations on 8 samples, cut for the suite (same knobs, same model).
    spec["workload"]["args"].update(num_samples=2, calibration_samples=2)
    if name == "captioning":
        spec["workload"]["args"]["default_max_new_tokens"] = 6
    spec["strategy"]["size"] = 6
    spec["measure"] = {"warmup": 0, "repeats": 1}
    spec["output"] = str(tmp_path / f"e2_{name}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_e2_on_two_vlm_workloads_runs_resumes_and_compares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KNOBSCOPE_CACHE", str(tmp_path / "cache"))
    for name in ("qa", "captioning"):
        res = cli("run", str(_e2_spec(tmp_path, name)), "--no-progress")
        assert res.returncode == 0, res.stderr
    # Blocks ranked once by Block Influence per workload (its own images and prompts).
    assert len(list((tmp_path / "cache" / "importance").glob("block_influence-*.json"))) == 2
    res = cli("run", str(_e2_spec(tmp_path, "qa")), "--no-progress")
    assert "(this invocation ran 0)" in res.stdout.replace("\n", " ")
    out = tmp_path / "e2"
    res = cli("analyze", str(tmp_path / "e2_qa"), "--compare", str(tmp_path / "e2_captioning"), "--prefix", "e2", "--out", str(out))
    assert res.returncode == 0, res.stderr
    grid = json.loads((out / "e2_knob_grid_results.json").read_text())
    assert grid["knobs"] == ["vision_tokens", "top_k", "num_active_blocks"]
    assert {w: len(d["configurations"]) for w, d in grid["workloads"].items()} == {"qa": 6, "captioning": 6}
    assert all("vqa_accuracy_mean" in c["results"] for c in grid["workloads"]["qa"]["configurations"])
    assert all("cider_d" in c["results"] for c in grid["workloads"]["captioning"]["configurations"])
    fronts = json.loads((out / "e2_pareto_frontiers.json").read_text())
    assert fronts["comparison"]["common_configs"] == 6
    assert [o["column"] for o in fronts["workloads"]["captioning"]["objectives"]] == ["total_ms_p95", "cider_d"]
    coupling = json.loads((out / "e2_coupling_analysis.json").read_text())
    assert set(coupling["workloads"]) == {"qa", "captioning"}
    for name in ("e2_pareto_qa", "e2_pareto_captioning", "e2_coupling_proof", "e2_illustrative_cases"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 0
    # ... and reported like any run, the other workload beside it.
    res = cli("report", str(tmp_path / "e2_qa"), "--compare", str(tmp_path / "e2_captioning"), "--no-figures")
    assert res.returncode == 0, res.stderr
    html = (tmp_path / "e2_qa" / "report.html").read_text()
    assert "<section id='comparison'>" in html and "captioning" in html
