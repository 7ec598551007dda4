"""The vlm workload on a tiny randomly initialised Idefics3 (SmolVLM's architecture): the crop and
vision-token knobs against the model's own processor, stages that add up, the greedy loop against
generate(), sweeps on both tasks, an MoE text backbone, and bad input."""

from __future__ import annotations

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


def _loaded(tmp: Path, **args: object) -> Iterator[VLMWorkload]:
    """A set-up workload with its timer (``workload.timer``), torn down after the module."""
    workload = VLMWorkload(**args)
    timer = StageTimer("cpu")
    workload.setup(WorkloadContext("cpu", 0, timer, tmp))
    workload.timer = timer  # type: ignore[attr-defined]
    yield workload
    timer.detach_all()
    workload.teardown()


@pytest.fixture(scope="module")
def vlm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLMWorkload]:
    yield from _loaded(tmp_path_factory.mktemp("vlm"), num_samples=6)


def _tiles(crops: int) -> int:
    return crops - 1 if crops > 1 else 1


def test_max_crops_is_the_most_tiles_the_processor_makes_within_the_budget(vlm: VLMWorkload) -> None:
    tile = vlm.processor.image_processor.max_image_size["longest_edge"]
    per_crop = vlm.processor.image_seq_len
    for sample in (vlm.samples()[0], vlm.samples()[3]):  # a square image and a landscape one
        image = vlm.images[str(sample["image"])]
        for budget in (1, 2, 4, 9):
            vlm.apply({"max_crops": budget})
            inputs = vlm.inputs(sample)
            crops = int(inputs["pixel_values"].shape[1])
            assert _tiles(crops) <= budget, (image.size, budget, crops)
            vision = int((inputs["input_ids"] == vlm.image_token_id).sum())
            assert vision == crops * per_crop  # the count the model's own processor produced
            # The processor itself, one tile-size step larger, would break the budget: the most was taken.
            longest = vlm.family.processor_kwargs(vlm.processor, image.size, max_crops=budget, vision_tokens=None)["size"]["longest_edge"]
            bigger = vlm.processor(images=[[image]], text=["<image>x"], return_tensors="pt",
                                   size={"longest_edge": longest + tile}, do_image_splitting=True)  # fmt: skip
            assert _tiles(int(bigger["pixel_values"].shape[1])) > budget


def test_vision_tokens_is_a_budget_the_reported_count_stays_within(vlm: VLMWorkload) -> None:
    sample = vlm.samples()[0]
    counts = []
    for target in (4, 20, 40, 100):
        vlm.apply({"vision_tokens": target, "max_new_tokens": 1})
        with vlm.timer.sample():  # type: ignore[attr-defined]
            record = vlm.run(sample, vlm.timer)  # type: ignore[attr-defined]
        assert record["vision_tokens_actual"] <= target
        counts.append(record["vision_tokens_actual"])
    assert counts == sorted(counts) and counts[0] < counts[-1]
    vlm.apply({})


def test_stages_add_up_and_vision_stages_sit_inside_the_prefill(vlm: VLMWorkload) -> None:
    vlm.apply({"max_crops": 4, "max_new_tokens": 4})
    for sample in vlm.samples()[:3]:
        with vlm.timer.sample() as timing:  # type: ignore[attr-defined]
            record = vlm.run(sample, vlm.timer)  # type: ignore[attr-defined]
        assert timing.top_level == {"preprocess", "prefill", "decode"}
        s = timing.stages_ms
        assert s["preprocess"] + s["prefill"] + s["decode"] + timing.other_ms == pytest.approx(timing.total_ms)
        assert s["vision_encoder"] + s["projector"] <= s["prefill"] and record["llm_prefill_ms"] >= 0
        assert len(timing.calls_ms["decode"]) == record["tokens_out"] - 1 and record["tokens_out"] <= 4
        assert 0.0 <= record["vqa_accuracy"] <= 1.0


def _assert_greedy_loop_matches_generate(workload: VLMWorkload, sample: object, tokens: int) -> None:
    """The workload's timed greedy loop gives the tokens ``model.generate`` gives (EOS ignored)."""
    workload.apply({"max_crops": 4, "max_new_tokens": tokens})
    workload.args = workload.args.model_copy(update={"ignore_eos": True})
    try:
        inputs = workload.inputs(sample)  # type: ignore[arg-type]
        ours = workload.generate(inputs, lambda name: torch.no_grad())
        with torch.inference_mode():
            ref = workload.model.generate(**inputs, max_new_tokens=tokens, do_sample=False, min_new_tokens=tokens)
    finally:
        workload.args = workload.args.model_copy(update={"ignore_eos": False})
    assert ours == ref[0, inputs["input_ids"].shape[1]:].tolist()


def test_the_greedy_loop_matches_generate(vlm: VLMWorkload) -> None:
    _assert_greedy_loop_matches_generate(vlm, vlm.samples()[3], 6)


def test_block_influence_ranks_the_language_model_blocks_once_and_selects_the_top_n(
    vlm: VLMWorkload, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from knobscope.models.importance import block_influence

    monkeypatch.setenv("KNOBSCOPE_CACHE", str(tmp_path))
    monkeypatch.setattr(vlm, "_importance", None)
    monkeypatch.setattr(vlm, "args", vlm.args.model_copy(update={"calibration_samples": 2}))
    n = len(vlm.blocks)
    vlm.apply({"num_active_blocks": n - 1, "block_selection": "block_influence"})
    ranking = vlm.importance()
    assert len(ranking.scores) == n and ranking.calibration["samples"] == [str(s["id"]) for s in vlm.samples()[:2]]
    assert list(vlm.blocks.active) == [i in ranking.top(n - 1) for i in range(n)]
    # The scores are ShortGPT's on the processor's inputs (pixels included), computed by hand here.
    vlm.blocks.set_active(range(n))
    assert ranking.scores == pytest.approx(block_influence(vlm.model, vlm.blocks.layers,
                                                           [vlm.inputs(s) for s in vlm.samples()[:2]]))  # fmt: skip
    assert len(list((tmp_path / "importance").glob("block_influence-*.json"))) == 1
    # A second workload object reads the cache rather than ranking again.
    vlm._importance = None
    monkeypatch.setattr("knobscope.models.importance.block_influence", lambda *a: pytest.fail("ranked twice"))
    assert vlm.importance().scores == ranking.scores
    vlm.apply({})


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLMWorkload]:
    yield from _loaded(tmp_path_factory.mktemp("qwen"), model="random:qwen_vl", num_samples=3)


def test_qwen_vision_tokens_follow_its_image_processor(qwen: VLMWorkload) -> None:
    sample = qwen.samples()[0]
    image = qwen.images[str(sample["image"])]
    ip = qwen.processor.image_processor
    for budget in (16, 64, 256):
        qwen.apply({"vision_tokens": budget, "max_new_tokens": 2})
        with qwen.timer.sample() as timing:  # type: ignore[attr-defined]
            record = qwen.run(sample, qwen.timer)  # type: ignore[attr-defined]
        # The image processor called directly with a max_pixels of budget x 28 x 28: its patch grid, merged 2x2.
        pixels = {"shortest_edge": min(ip.size["shortest_edge"], budget * 28 * 28), "longest_edge": budget * 28 * 28}
        grid = ip(images=[image], return_tensors="pt", size=pixels)["image_grid_thw"][0]
        assert record["vision_tokens_actual"] == int(grid.prod()) // 4 <= budget and record["crops"] == 1
        s = timing.stages_ms
        assert s["projector"] <= s["vision_encoder"] <= s["prefill"]  # the merger runs inside the vision tower
        assert record["llm_prefill_ms"] == pytest.approx(s["prefill"] - s["vision_encoder"])
    qwen.args = qwen.args.model_copy(update={"ignore_eos": True})
    try:
        qwen.apply({"vision_tokens": 64, "max_new_tokens": 5})
        inputs = qwen.inputs(sample)
        ours = qwen.generate(inputs, lambda name: torch.no_grad())
        with torch.inference_mode():
            ref = qwen.model.generate(**inputs, max_new_tokens=5, do_sample=False, min_new_tokens=5)
    finally:
        qwen.args = qwen.args.model_copy(update={"ignore_eos": False})
    assert ours == ref[0, inputs["input_ids"].shape[1]:].tolist()  # the same tokens, multimodal rope included
    with pytest.raises(Exception, match="resizes images instead of cropping"):
        from knobscope.space import Knob, Space

        qwen.check_space(Space((Knob("max_crops", (1, 2)),)))


def _spec(tmp_path: Path, args: dict, knobs: dict) -> Path:
    return write_spec(tmp_path / "spec.yaml", workload={"name": "vlm", "args": args}, knobs=knobs,
                      measure={"warmup": 0, "repeats": 1})  # fmt: skip


def test_a_vqa_sweep_and_a_captioning_sweep_store_their_quality(tmp_path: Path) -> None:
    import pandas as pd

    (tmp_path / "vqa").mkdir()
    vqa = _spec(tmp_path / "vqa", {"num_samples": 3}, {"max_crops": [1, 4], "max_new_tokens": [2]})
    assert cli("run", str(vqa), "--no-progress").returncode == 0
    table = pd.read_csv(tmp_path / "vqa" / "run" / "results.csv")
    assert (table["status"] == "done").all() and len(table) == 2
    assert {"vqa_accuracy", "vqa_accuracy_ci_low", "vision_encoder_ms_mean", "projector_ms_mean", "crops_mean"} <= set(table.columns)
    assert table.set_index("max_crops")["vision_tokens_actual_mean"][1] < table.set_index("max_crops")["vision_tokens_actual_mean"][4]
    (tmp_path / "cap").mkdir()
    cap = _spec(tmp_path / "cap", {"task": "captions", "num_samples": 3}, {"max_new_tokens": [3]})
    assert cli("run", str(cap), "--no-progress").returncode == 0
    row = pd.read_csv(tmp_path / "cap" / "run" / "results.csv").iloc[0]
    assert row["status"] == "done" and all(0 <= row[m] for m in ("cider_d", "bleu4", "rouge_l"))


def test_top_k_on_an_moe_text_backbone(tmp_path: Path) -> None:
    workload = VLMWorkload(model="random:idefics3:text=qwen3_moe,experts=4,top_k=2,layers=2", num_samples=1)
    timer = StageTimer("cpu")
    workload.setup(WorkloadContext("cpu", 0, timer, tmp_path))
    try:
        assert workload.topk and workload.topk.num_experts == 4
        for k in (1, 3):
            workload.apply({"top_k": k, "max_new_tokens": 2})
            assert all(layer.top_k == k for layer in workload.topk.layers)
            with timer.sample():
                assert workload.run(workload.samples()[0], timer)["tokens_out"] >= 1
    finally:
        timer.detach_all()
        workload.teardown()


@pytest.mark.parametrize(
    ("args", "knobs", "message"),
    [
        ({"images": "/no/such/dir"}, {"max_crops": [1]}, "image directory '/no/such/dir' does not exist"),
        ({"questions": "QUESTIONS", "annotations": "QUESTIONS"}, {"max_crops": [1]}, "needs a list under 'annotations'"),
        ({"model": "random:llama"}, {"max_crops": [1]}, "unknown random VLM family 'llama'"),
        ({}, {"max_crops": [0, 2]}, "max_crops value 0 is not possible"),
        ({}, {"top_k": [1]}, "knob top_k needs an MoE text backbone"),
        ({}, {"block_selection": ["accuracy_drop"]}, "block_selection value 'accuracy_drop' is not possible for vlm"),
    ],
)
def test_bad_vlm_input_is_one_line_and_exit_2(tmp_path: Path, args: dict, knobs: dict, message: str) -> None:
    from knobscope.datasets import BUILTIN_VQA

    from importlib import resources

    questions = str(resources.files("knobscope.data").joinpath(BUILTIN_VQA[1]))
    args = {k: (questions if v == "QUESTIONS" else v) for k, v in args.items()}
    res = cli("run", str(_spec(tmp_path, args, knobs)), "--no-progress")
    lines = [line for line in res.stderr.splitlines() if line.strip() and "torchvision" not in line]
    assert res.returncode == 2 and len(lines) == 1 and message in lines[0], res.stderr
    assert not (tmp_path / "run").exists()


def test_a_text_only_checkpoint_is_refused(tmp_path: Path) -> None:
    from knobscope.errors import WorkloadError
    from knobscope.models.loading import load_causal_lm
    from knobscope.models.vlm import load_vlm

    load_causal_lm("random:llama:layers=1", structure_only=False).model.save_pretrained(tmp_path / "llama")
    with pytest.raises(WorkloadError, match="is a text-only model; the vlm workload takes these families: idefics3"):
        load_vlm(str(tmp_path / "llama"))


def test_seed_000_exp5_runs_on_a_moe_vlm_and_is_analysed_like_any_run(tmp_path: Path) -> None:
    import yaml

    from conftest import ROOT

    spec = yaml.safe_load((ROOT / "examples" / "exp5.yaml").read_text())
    spec["workload"]["args"]["num_samples"] = 2  # the example's 6 questions, cut for the suite
    spec["measure"] = {"warmup": 0, "repeats": 1}
    spec["output"] = str(tmp_path / "run")
    path = tmp_path / "exp5.yaml"
    path.write_text(yaml.safe_dump(spec))
    res = cli("run", str(path), "--no-progress")
    assert res.returncode == 0, res.stderr
    assert "36 done, 0 failed" in res.stdout  # balanced: 3 x 4 x 3 of the 6 x 8 x 5 grid
    analysed = cli("analyze", str(tmp_path / "run"))
    assert analysed.returncode == 0 and "frontier" in analysed.stdout.lower(), analysed.stderr
    reported = cli("report", str(tmp_path / "run"))
    assert reported.returncode == 0 and (tmp_path / "run" / "report.html").is_file(), reported.stderr
    again = cli("run", str(path), "--no-progress")
    assert "this invocation ran 0" in again.stdout  # resumable: nothing measured twice


def test_random_idefics3_takes_a_vision_encoder_size() -> None:
    from knobscope.errors import WorkloadError
    from knobscope.models.vlm import load_vlm

    vision = load_vlm("random:idefics3:vision_hidden=48,vision_layers=1,vision_heads=2").model.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size) == (48, 1, 2, 192)
    with pytest.raises(WorkloadError, match="random VLM option 'vision_layers=1'"):
        load_vlm("random:qwen_vl:vision_layers=1")


@pytest.fixture(scope="module")
def molmo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLMWorkload]:
    yield from _loaded(tmp_path_factory.mktemp("molmo2"), model="random:molmo2", num_samples=4)


def test_molmo2_max_crops_and_vision_tokens_follow_its_image_processor(molmo: VLMWorkload) -> None:
    ip = molmo.processor.image_processor
    sample = molmo.samples()[3]  # a landscape image
    width, height = molmo.images[str(sample["image"])].size
    counts = []
    for k in (1, 2, 4, 8):
        molmo.apply({"max_crops": k, "max_new_tokens": 1})
        inputs = molmo.inputs(sample)
        tokens = int((inputs["input_ids"] == molmo.image_token_id).sum())
        grid, crops = ip.get_image_grid_and_crops(height, width, {"max_crops": k})  # the processor's own arithmetic
        assert tokens == ip.get_number_of_image_patches(height, width, {"max_crops": k})
        assert molmo.family.crops(inputs) == crops <= k + 1  # at most k crops and the low-resolution view
        counts.append(tokens)
    assert counts == sorted(counts) and counts[0] < counts[-1]
    assert_vision_token_budgets_hold(molmo, sample, (20, 60, 120))
    for tiles in range(1, 7):  # seed 002's tilings 1x1 ... 1x6
        molmo.apply({"max_crops": tiles})
        molmo.args = molmo.args.model_copy(update={"exact_tiling": True})
        try:
            assert molmo.family.crops(molmo.inputs(sample)) == tiles + 1
        finally:
            molmo.args = molmo.args.model_copy(update={"exact_tiling": False})
    molmo.apply({})


def test_molmo2_stages_add_up_and_the_greedy_loop_matches_generate(molmo: VLMWorkload) -> None:
    molmo.apply({"max_crops": 4, "max_new_tokens": 5})
    with molmo.timer.sample() as timing:  # type: ignore[attr-defined]
        record = molmo.run(molmo.samples()[0], molmo.timer)  # type: ignore[attr-defined]
    s = timing.stages_ms
    assert s["preprocess"] + s["prefill"] + s.get("decode", 0.0) + timing.other_ms == pytest.approx(timing.total_ms)
    assert 0 < s["vision_encoder"] and 0 < s["projector"] and s["vision_encoder"] + s["projector"] <= s["prefill"]
    assert record["llm_prefill_ms"] >= 0
    _assert_greedy_loop_matches_generate(molmo, molmo.samples()[1], 5)


def test_is_vlm_source_reads_local_configs_and_never_asks_the_hub_for_the_packaged_model(tmp_path: Path,
                                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import transformers

    from knobscope.models.vlm import is_vlm_source

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", lambda *a, **k: pytest.fail("asked the hub"))
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "config.json").write_text(json.dumps({"model_type": "idefics3", "vision_config": {}}))
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert is_vlm_source(str(tmp_path / "vlm")) and not is_vlm_source(str(tmp_path / "lm"))
    assert not is_vlm_source("smollm2") and is_vlm_source("random:molmo2") and not is_vlm_source("random:olmoe")
