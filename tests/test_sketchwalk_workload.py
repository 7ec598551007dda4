"""The ``sketchwalk`` workload: seed 004's metrics, checks and derived quantities, on synthetic
data and on Q/K/V captured from SmolLM2."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import cli, write_spec
from knobscope.models.sketchwalk_attn import SketchWalk, SketchWalkConfig
from knobscope.workloads.sketchwalk import synthetic_qkv

SYNTHETIC = {"data": "synthetic", "seq_len": 300, "windows": 1, "batch_size": 1, "num_heads": 4, "num_kv_heads": 2,
             "head_dim": 32, "synthetic_layers": 3}  # fmt: skip


def _run(tmp_path: Path, args: dict, knobs: dict, **extra) -> pd.DataFrame:
    spec = write_spec(tmp_path / "spec.yaml", workload={"name": "sketchwalk", "args": args}, knobs=knobs, **extra)
    cli("run", str(spec), "--no-progress", check=True)
    return pd.read_csv(tmp_path / "run" / "results.csv")


def test_metrics_on_synthetic_data(tmp_path: Path) -> None:
    # 300 tokens in blocks of 64: b = 5, the last block partial. tau = 5 covers every block.
    df = _run(tmp_path, SYNTHETIC, {"block_size": [64], "sketch_dim": [16], "top_k_blocks": [2, 5], "skip_layers": [1]})
    sparse, full = (df[df.top_k_blocks == t].iloc[0] for t in (2, 5))
    assert full.cosine_mean == pytest.approx(1.0, abs=1e-6) and full.cosine_min_mean == pytest.approx(1.0, abs=1e-6)
    assert full.pair_sparsity_mean == pytest.approx(0.0, abs=1e-9) and full.speedup_bound_mean == pytest.approx(1.0)
    assert sparse.cosine_mean < 0.9999 and 0 < sparse.pair_sparsity_mean < 1 and sparse.speedup_bound_mean > 1
    # Seed 004's derived quantities, exactly.
    assert sparse.num_blocks == 5 and sparse.theoretical_sparsity == pytest.approx(1 - 2 * 64 / 300)
    assert sparse.block_sparsity == pytest.approx(1 - 2 / 5) and sparse.complexity_factor == pytest.approx(2 * 64 / 4 / 300)
    assert full.theoretical_sparsity == 0 and full.block_sparsity == 0
    # Block pairs: tau=2 keeps 1 + 2 + 2 + 2 + 2 of the 15 causal (query block, key block) pairs.
    assert sparse.selected_block_sparsity_mean == pytest.approx(1 - 9 / 15)
    for row in (sparse, full):
        assert row.finite_mean == 1 and row.edge_cases_ok == 1
        assert row.dense_ms_mean > 0 and row.sketchwalk_ms_mean > 0 and row.sketch_ms_mean > 0
        assert row.speedup_mean == pytest.approx(row.dense_ms_mean / row.sketchwalk_ms_mean, rel=1e-9)
        assert math.isfinite(row.dense_peak_mb_mean) and math.isfinite(row.sketchwalk_peak_mb_mean)


@pytest.mark.parametrize(
    ("knobs", "rule"),
    [
        ({"block_size": [32], "sketch_dim": [2]}, "k >= log2(b)"),  # 4096/32 = 128 blocks: k must be >= 7
        ({"top_k_blocks": [0]}, "tau >= 1"),
        ({"sparsity_exponent": [0.5]}, "s >= 1"),
        ({"block_size": [0]}, "B >= 1"),
        ({"skip_layers": [-1]}, "N >= 0"),
        ({"walk_state_dtype": ["bf16"]}, "walk_state_dtype"),
        ({"query_chunk_blocks": [0]}, "query_chunk_blocks >= 1"),
        ({"sparse_kernel": ["triton"]}, "sparse_kernel 'triton' is not batched or flex"),
        ({"sketch_kernel": ["fast"]}, "sketch_kernel 'fast' is not auto, eager or compiled"),
    ],
)
def test_bad_configurations_are_rejected_before_running(tmp_path: Path, knobs: dict, rule: str) -> None:
    spec = write_spec(tmp_path / "spec.yaml", workload={"name": "sketchwalk", "args": {**SYNTHETIC, "seq_len": 4096}},
                      knobs=knobs)  # fmt: skip
    proc = cli("run", str(spec), "--no-progress")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert rule in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing created, so no trial started


def test_chunk_and_kernel_are_knobs_that_change_how_not_what(tmp_path: Path) -> None:
    df = _run(tmp_path, {**SYNTHETIC, "seq_len": 512}, {"block_size": [16], "sketch_dim": [16], "top_k_blocks": [4],
                                                          "query_chunk_blocks": [1, 32], "sparse_kernel": ["batched", "flex"]})  # fmt: skip
    assert sorted(zip(df.sparse_kernel, df.query_chunk_blocks)) == [("batched", 1), ("batched", 32), ("flex", 1), ("flex", 32)]
    # the same selection and output: a chunk only groups the query blocks of one batched
    # product, and FlexAttention attends to the same blocks
    assert df.cosine_mean.max() - df.cosine_mean.min() < 1e-5, df.cosine_mean
    assert df.speedup_bound_mean.nunique() == 1 and df.pair_sparsity_mean.nunique() == 1


def test_flex_on_cuda_refuses_a_block_its_kernel_cannot_tile(tmp_path: Path) -> None:
    from knobscope.errors import WorkloadError
    from knobscope.measure import StageTimer
    from knobscope.space import Knob, Space
    from knobscope.workloads.base import WorkloadContext
    from knobscope.workloads.sketchwalk import SketchWalkWorkload

    w = SketchWalkWorkload(**SYNTHETIC)
    w.setup(WorkloadContext("cpu", 0, StageTimer("cpu"), tmp_path))
    flex_at = lambda *blocks: Space((Knob("block_size", blocks), Knob("sketch_dim", (16,)), Knob("sparse_kernel", ("flex",))))  # noqa: E731
    w.check_space(flex_at(40, 64))  # the CPU kernel takes any block
    w.device = "cuda"  # the check alone: no GPU needed
    w.check_space(flex_at(32, 64))
    with pytest.raises(WorkloadError, match=r"multiple of 16 \(its smallest kernel tile\), got B = 40; remove"):
        w.check_space(flex_at(40, 64))


def test_a_sequence_lengths_qkv_leave_when_another_length_comes(tmp_path: Path) -> None:
    from knobscope.measure import StageTimer
    from knobscope.workloads.base import WorkloadContext
    from knobscope.workloads.sketchwalk import SketchWalkWorkload

    w = SketchWalkWorkload(**{**SYNTHETIC, "windows": 2})
    w.setup(WorkloadContext("cpu", 0, StageTimer("cpu"), tmp_path))
    w.apply({"seq_len": 256})
    first = w.qkv(0, 256)
    w.apply({"seq_len": 128})
    # kept, they would count in the peak memory of every later trial
    assert sorted(w._qkv) == [(0, 128), (1, 128)]
    w.apply({"seq_len": 256})
    torch.testing.assert_close(w.qkv(0, 256), first)  # generated again, the same tensors (seeded)


def test_dense_reference_repeats_grouped_kv_heads_only_where_no_kernel_takes_them() -> None:
    from knobscope.models.sketchwalk_attn import dense_causal_attention, dense_repeats_kv

    gen = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(1, 6, 70, 16, generator=gen), torch.randn(1, 2, 70, 16, generator=gen), torch.randn(1, 2, 70, 16, generator=gen)
    torch.testing.assert_close(dense_causal_attention(q, k, v, repeat_kv=True), dense_causal_attention(q, k, v, repeat_kv=False))
    assert dense_repeats_kv("cuda", torch.float32)  # PyTorch's math fallback: 49 ms and +21.9 GB at 16K on an H100
    assert not dense_repeats_kv("cuda", torch.bfloat16) and not dense_repeats_kv("cpu", torch.float32)


def test_a_constraint_skips_what_the_checklist_would_reject(tmp_path: Path) -> None:
    df = _run(tmp_path, {**SYNTHETIC, "seq_len": 512}, {"block_size": [16, 64], "sketch_dim": [4, 16]},
              constraints=["sketch_dim >= log2(ceil(seq_len / block_size))"], constants={"seq_len": 512})  # fmt: skip
    # 512/16 = 32 blocks needs k >= 5: (16, 4) is skipped, the other three run.
    assert sorted(zip(df.block_size, df.sketch_dim)) == [(16, 16), (64, 4), (64, 16)]


def covered_mass(structure: float) -> tuple[float, float]:
    """(attention mass of the blocks SketchWalk selects, of sink + diagonal + random blocks)."""
    data = synthetic_qkv(batch=1, heads=4, kv_heads=4, seq_len=2048, head_dim=64, layers=3, structure=structure,
                         heavy_blocks=3, seed=0)  # fmt: skip
    walk = SketchWalk(SketchWalkConfig(block_size=64, sketch_dim=32, top_k_blocks=6, skip_layers=0), 64)
    walk.reset()
    for layer, (q, k, v) in enumerate(data):
        walk.attend(layer, q, k, v)
    indices, _ = walk.last_selection
    q, k, _ = data[-1]
    future = torch.full((2048, 2048), float("-inf")).triu(1)
    probs = torch.softmax(q @ k.transpose(-1, -2) / 8 + future, dim=-1).mean(dim=1)[0]  # (n, n), mean over heads
    mass = probs.view(32, 64, 32, 64).sum(dim=-1).mean(dim=1)  # (query block, key block): mass per query
    gen = torch.Generator().manual_seed(0)
    rows = range(12, 32)  # 4 free slots (sink and diagonal are forced) among 11+ earlier blocks
    chosen = sum(float(mass[r, indices[0, 0, r]].sum()) for r in rows) / len(rows)
    drawn = sum(float(mass[r, 0] + mass[r, r] + mass[r, torch.randperm(r - 1, generator=gen)[:4] + 1].sum())
                for r in rows) / len(rows)  # fmt: skip
    return chosen, drawn


def test_selection_covers_the_attention_mass_of_planted_structure() -> None:
    chosen, drawn = covered_mass(1.0)
    assert chosen > 2 * drawn  # measured: 0.66 against 0.30
    # On pure Gaussian data (structure 0) no block stands out: selection is no better than chance.
    chosen, drawn = covered_mass(0.0)
    assert chosen == pytest.approx(drawn, abs=0.03)


@pytest.mark.model
def test_real_smollm2_qkv_and_perplexity_inside_the_model(tmp_path: Path) -> None:
    args = {"data": "smollm2", "seq_len": 256, "windows": 1, "layers": 4, "perplexity": True}
    df = _run(tmp_path, args, {"block_size": [32], "top_k_blocks": [3, 8], "sketch_dim": [16]})
    sparse, full = (df[df.top_k_blocks == t].iloc[0] for t in (3, 8))
    assert full.cosine_mean == pytest.approx(1.0, abs=1e-5) and full.perplexity_ratio == pytest.approx(1.0, abs=1e-4)
    assert 0.5 < sparse.cosine_mean < 0.99999 and sparse.perplexity > full.perplexity
    assert sparse.perplexity_dense == pytest.approx(full.perplexity_dense)  # the dense reference is computed once
    assert full.perplexity_dense < 100  # SmolLM2 reads the text sensibly


def test_seq_len_beyond_the_models_context_is_refused(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", workload={"name": "sketchwalk", "args": {**SYNTHETIC, "data": "smollm2"}},
                      knobs={"seq_len": [1024, 16384]})  # fmt: skip
    proc = cli("run", str(spec), "--no-progress")
    assert proc.returncode == 2 and "seq_len value 16384" in proc.stderr and "8192" in proc.stderr


def test_quickstart_table_script_reads_a_run(tmp_path: Path) -> None:
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    configs = [{"block_size": 64, "sketch_dim": 64, "top_k_blocks": 16, "sparsity_exponent": 8},
               {"block_size": 128, "sketch_dim": 32, "top_k_blocks": 8, "sparsity_exponent": 16}]  # fmt: skip
    _run(tmp_path, {**SYNTHETIC, "seq_len": 1536}, {"block_size": [64, 128], "sketch_dim": [32, 64],
         "top_k_blocks": [8, 16], "sparsity_exponent": [8, 16]}, strategy={"name": "listed", "configs": configs})  # fmt: skip
    spec = importlib.util.spec_from_file_location("table", root / "examples" / "sketchwalk" / "table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.table(tmp_path / "run")
    rows = [line for line in text.splitlines() if line.startswith("| Default") or line.startswith("| High Speed")]
    assert len(rows) == 2
    default = rows[0].split("|")
    assert default[2].strip() == "1536" and default[7].strip() == "~80%" and default[8].strip() == "33%"  # 1 - 16*64/1536
