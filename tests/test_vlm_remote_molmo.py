"""Original Molmo checkpoints: remote code (``trust_remote_code``) written for transformers 4, with
its own processor call and tuple KV caches. The checkpoint here is built from
``fixtures/remote_molmo`` (a stand-in with Molmo's interface, see its README) and loaded the way a
real one is: from a directory, through ``auto_map``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from conftest import assert_vision_token_budgets_hold, cli, write_spec
from knobscope.measure import StageTimer
from knobscope.workloads.base import WorkloadContext
from knobscope.workloads.vlm import VLMWorkload

pytest.importorskip("skimage", reason="the shipped VQA/caption set reads the images scikit-image ships")
pytestmark = pytest.mark.model

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "remote_molmo"


def build_checkpoint(directory: Path) -> Path:
    """A checkpoint directory as Molmo's: remote code named in ``auto_map``, weights, tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from knobscope.models.loading import load_causal_lm

    directory.mkdir(parents=True)
    for code in FIXTURE.glob("*.py"):
        shutil.copy(code, directory)
    tokenizer = load_causal_lm("smollm2", structure_only=True).tokenizer
    tokenizer.add_special_tokens({"additional_special_tokens": ["<im_start>", "<im_end>", "<im_patch>", "<im_col>", "<|image|>"]})
    tokenizer.save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps({
        "architectures": ["MolmoForCausalLM"], "model_type": "molmo", "vocab_size": len(tokenizer),
        "auto_map": {"AutoConfig": "config_molmo.MolmoConfig", "AutoModelForCausalLM": "modeling_molmo.MolmoForCausalLM"},
    }))  # fmt: skip
    processor = {"auto_map": {"AutoProcessor": "preprocessing_molmo.MolmoProcessor"}, "processor_class": "MolmoProcessor"}
    (directory / "processor_config.json").write_text(json.dumps(processor))
    (directory / "preprocessor_config.json").write_text(json.dumps({
        **processor, "base_image_input_size": [32, 32], "image_patch_size": 8, "overlap_margins": [0, 0], "max_crops": 6}))  # fmt: skip
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(directory, trust_remote_code=True)
    AutoModelForCausalLM.from_config(config, trust_remote_code=True).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("remote") / "molmo")


@pytest.fixture(scope="module")
def molmo(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLMWorkload]:
    workload = VLMWorkload(model=str(checkpoint), trust_remote_code=True, num_samples=4)
    timer = StageTimer("cpu")
    workload.setup(WorkloadContext("cpu", 0, timer, tmp_path_factory.mktemp("molmo_run")))
    workload.timer = timer  # type: ignore[attr-defined]
    yield workload
    timer.detach_all()
    workload.teardown()


def test_it_loads_through_its_own_code_as_the_molmo_family(molmo: VLMWorkload, checkpoint: Path) -> None:
    from knobscope.models.vlm import is_vlm_source

    assert is_vlm_source(str(checkpoint))  # read from config.json, no code run
    assert molmo.family.name == "molmo" and type(molmo.model).__name__ == "MolmoForCausalLM"
    assert len(molmo.blocks) == 3  # the language model's blocks, not the vision backbone's layers
    assert molmo.image_token_id == molmo.processor.tokenizer.convert_tokens_to_ids("<im_patch>")


def test_max_crops_and_vision_tokens_follow_its_own_processor(molmo: VLMWorkload) -> None:
    sample = molmo.samples()[3]  # a landscape image
    image = molmo.images[str(sample["image"])]
    counts = []
    for k in (1, 2, 4, 6):
        molmo.apply({"max_crops": k, "max_new_tokens": 1})
        inputs = molmo.inputs(sample)
        tokens = int((inputs["input_ids"] == molmo.image_token_id).sum())
        direct = molmo.processor.processor.process(text="x", images=[image], max_crops=k)  # the checkpoint's processor
        assert tokens == int((direct["input_ids"] == molmo.image_token_id).sum())
        assert molmo.family.crops(inputs) == direct["images"].shape[0] <= k + 1  # k crops at most and the global view
        counts.append(tokens)
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert_vision_token_budgets_hold(molmo, sample, (12, 20, 28))
    for budget in (12, 20, 28):
        more = molmo.family.processor_kwargs(molmo.processor, image.size, max_crops=None, vision_tokens=budget)["max_crops"] + 1
        assert molmo.processor.image_tokens(image.size, more) > budget  # one crop more would break the budget
    molmo.args = molmo.args.model_copy(update={"exact_tiling": True})
    try:
        for tiles in (1, 2, 3):  # seed 002's tilings 1x1 ... 1x3
            molmo.apply({"max_crops": tiles})
            assert molmo.family.crops(molmo.inputs(sample)) == tiles + 1
    finally:
        molmo.args = molmo.args.model_copy(update={"exact_tiling": False})
    molmo.apply({})


@pytest.mark.parametrize("active", [None, [0, 2], [1]])
def test_decoding_on_its_tuple_cache_equals_recomputing_with_blocks_skipped(molmo: VLMWorkload, active: list[int] | None) -> None:
    molmo.apply({"max_crops": 2})
    molmo.blocks.set_active(active if active is not None else range(len(molmo.blocks)))
    inputs = molmo.inputs(molmo.samples()[0])
    ids = inputs["input_ids"]
    with torch.inference_mode():
        logits, state = molmo.family.prefill(molmo.model, inputs)
        for _ in range(4):
            token = logits.argmax(dim=-1, keepdim=True)
            ids = torch.cat([ids, token], dim=1)
            logits = molmo.family.decode(molmo.model, token, state)
            full = molmo.model(**{**inputs, "input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool)})
            torch.testing.assert_close(logits, full.logits[:, -1, :], rtol=1e-4, atol=1e-4)
    assert state["length"] == ids.shape[1]
    molmo.apply({})


def test_stages_add_up_and_block_influence_ranks_its_language_blocks(molmo: VLMWorkload, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("KNOBSCOPE_CACHE", str(tmp_path))
    molmo.apply({"max_crops": 4, "max_new_tokens": 4})
    with molmo.timer.sample() as timing:  # type: ignore[attr-defined]
        record = molmo.run(molmo.samples()[0], molmo.timer)  # type: ignore[attr-defined]
    s = timing.stages_ms
    assert s["preprocess"] + s["prefill"] + s.get("decode", 0.0) + timing.other_ms == pytest.approx(timing.total_ms)
    assert 0 < s["projector"] <= s["vision_encoder"] <= s["prefill"]  # the projector runs inside the backbone
    assert record["llm_prefill_ms"] >= 0 and record["crops"] <= 5
    molmo.apply({"num_active_blocks": 2, "block_selection": "block_influence"})
    scores = molmo.importance().scores
    assert len(scores) == 3 and molmo.blocks.num_active == 2
    assert [i for i, on in enumerate(molmo.blocks.active) if on] == sorted(sorted(range(3), key=lambda i: -scores[i])[:2])
    molmo.apply({})


def test_a_sweep_runs_and_without_trust_remote_code_nothing_runs(checkpoint: Path, tmp_path: Path) -> None:
    import pandas as pd

    knobs = {"max_crops": [1, 3], "num_active_blocks": [1, 3], "max_new_tokens": [2]}
    refused = write_spec(tmp_path / "refused.yaml", workload={"name": "vlm", "args": {"model": str(checkpoint)}}, knobs=knobs,
                         output=str(tmp_path / "refused"))  # fmt: skip
    res = cli("run", str(refused), "--no-progress")
    lines = [line for line in res.stderr.splitlines() if line.strip() and "torchvision" not in line]
    assert res.returncode == 2 and len(lines) == 1 and "trust_remote_code: true" in lines[0], res.stderr
    assert "modeling_molmo.py" in lines[0] and not (tmp_path / "refused").exists()
    spec = write_spec(tmp_path / "spec.yaml", workload={"name": "vlm", "args": {"model": str(checkpoint), "trust_remote_code": True,
                                                                               "num_samples": 4}},
                      knobs=knobs, output=str(tmp_path / "run"))  # fmt: skip
    assert cli("run", str(spec), "--no-progress").returncode == 0
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert (table["status"] == "done").all() and len(table) == 4
    crops = table.groupby("max_crops")["crops_mean"].first()  # over square and landscape images
    assert crops[1] == 2 and crops[3] > 2
