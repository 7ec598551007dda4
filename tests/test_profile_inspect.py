"""``knobscope profile`` and ``knobscope inspect`` end to end, on tiny random models (fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import cli

MOE = "random:olmoe:experts=16,top_k=2,layers=2"


def _png_ok(path: Path) -> None:
    assert path.is_file()
    with Image.open(path) as img:
        dpi = img.info.get("dpi", (0, 0))
        assert round(dpi[0]) == 300 and img.width >= 1800, (dpi, img.size)
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 10  # something was drawn


def test_moe_topk_preset_writes_the_unified_json_and_the_figure(tmp_path: Path) -> None:
    out = tmp_path / "exp2"
    proc = cli("profile", "moe-topk", "--model", MOE, "--num-samples", "2", "--max-new-tokens", "3",
                     "--out", str(out), "--no-progress", check=True)  # fmt: skip
    assert "top_k = [1, 2, 4, 8, 16]" in proc.stdout  # the seed's values up to the 16 experts
    data = json.loads((out / "exp2_moe_topk_results.json").read_text())
    assert set(data) == {"summary", "all_samples"}
    assert sorted(row["top_k"] for row in data["summary"]) == [1, 2, 4, 8, 16]
    assert len(data["all_samples"]) == 5 * 2
    sample = data["all_samples"][0]
    for key in ("sample_id", "top_k", "prefill_ms", "decode_ms", "total_ms", "tokens_in", "tokens_out", "prefill_ffn_ms"):
        assert key in sample, key
    row = data["summary"][0]
    assert {"prefill_ms_p95", "decode_per_call_ms_mean", "top1_agreement", "kl_divergence"} <= set(row)
    full = next(r for r in data["summary"] if r["top_k"] == 2)  # the model's own top-k is the reference
    assert full["top1_agreement"] == 1.0
    _png_ok(out / "figures" / "exp2_moe_topk.png")


def test_output_tokens_and_flops_presets(tmp_path: Path) -> None:
    out = tmp_path / "exp4"
    cli("profile", "output-tokens", "--model", "random:llama:layers=2", "--num-samples", "2",
              "--max-new-tokens", "1", "--max-new-tokens", "4", "--max-new-tokens", "12",
              "--out", str(out), "--no-progress", check=True)  # fmt: skip
    data = json.loads((out / "exp4_output_tokens_scaling_results.json").read_text())
    assert {(s["max_new_tokens"], s["tokens_out"]) for s in data["all_samples"]} == {(1, 1), (4, 4), (12, 12)}
    _png_ok(out / "figures" / "exp4_output_tokens_scaling.png")

    out = tmp_path / "exp5"
    proc = cli("profile", "flops-scaling", "--model", MOE, "--num-samples", "1", "--max-new-tokens", "2",
                     "--out", str(out), "--no-progress", check=True)  # fmt: skip
    assert "GFLOP counted" in proc.stdout
    rows = json.loads((out / "flops_scaling_table.json").read_text())
    assert [r["top_k"] for r in rows] == [1, 8]
    assert rows[1]["gflops_total_ratio"] == pytest.approx(rows[1]["gflops_theoretical_ratio"], rel=0.02)
    assert rows[1]["gflops_total_ratio"] > 1.5
    _png_ok(out / "figures" / "exp5_flops_scaling_ratios.png")


def test_inspect_and_verify_top_k() -> None:
    proc = cli("inspect", "random:mixtral:experts=8,layers=2", "--verify-topk", "1", "--verify-topk", "3", check=True)
    assert "MoE: 2 layers, experts [8], default top_k [2]" in proc.stdout
    assert "MixtralTopKRouter.top_k" in proc.stdout
    assert "from random:mixtral:experts=8,layers=2" in proc.stdout  # printed as typed, no emoji
    assert proc.stdout.count(": OK") == 2
    proc = cli("inspect", "random:qwen2_moe:experts=8,layers=2", "--verify-topk", "4", "--json", check=True)
    result = json.loads(proc.stdout)
    assert result["verify_topk"][0]["ok"] and {row["max"] for row in result["verify_topk"][0]["layers"]} == {4}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "moe-topk", "--model", "random:llama:layers=2", "--num-samples", "1"], "preset moe-topk needs an MoE model"),
        (["profile", "warp-speed"], "unknown profile preset 'warp-speed'"),
        (["profile", "blocks-mask", "--model", "random:llama:layers=2", "--num-active-blocks", "7"], "num_active_blocks value 7 is not possible"),
        (["inspect", "random:olmoe:experts=8,layers=2", "--verify-topk", "9"], "--verify-topk 9 is outside 1..8"),
        (["inspect", "random:llama:layers=2", "--verify-topk", "2"], "has no MoE layers"),
        (["inspect", "random:gpt9"], "unknown random model family 'gpt9'"),
        (["inspect", "/nonexistent/model"], "model '/nonexistent/model' is not a directory"),
        (["inspect", "random:llama", "--importance", "vibes"], "--importance 'vibes' is unknown"),
    ],
)
def test_bad_profile_and_inspect_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = cli(*args, "--out", str(tmp_path / "run")) if args[0] == "profile" and "--out" not in args else cli(*args)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_phase_bars_count_missing_stages_as_zero_and_decode_per_token() -> None:
    import pandas as pd

    from knobscope.figures.profile import phase_bars

    samples = pd.DataFrame([
        # two samples: one stopped at the first token (no decode stage at all), one decoded 4 tokens
        {"top_k": 1, "prefill_ms": 10.0, "prefill_attention_ms": 4.0, "tokens_out": 1, "total_ms": 11.0},
        {"top_k": 1, "prefill_ms": 20.0, "prefill_attention_ms": 6.0, "decode_ms": 40.0, "decode_attention_ms": 8.0,
         "tokens_out": 5, "total_ms": 61.0},
    ])  # fmt: skip
    bars = phase_bars(samples, ["top_k"]).iloc[0]
    assert bars["prefill"] == 15.0 and bars["prefill_attention"] == 5.0
    assert bars["decode"] == 10.0  # 40 ms over 4 decode steps, not 40 / 2 samples
    assert bars["decode_attention"] == 2.0 and bars["decode_ffn"] == 0.0
    assert bars["total_per_sample"] == 36.0
