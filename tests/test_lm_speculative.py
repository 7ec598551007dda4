"""Self-speculative decoding in the ``lm`` workload: drafts from fewer blocks of the same model or
from the prompt, verified in one pass of the full model with the KV cache rolled back."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import cli, write_spec
from knobscope.models.speculative_lm import lookup_proposals, parse_drafter, speculative_greedy, truncate_cache


def test_prompt_lookup_proposes_what_followed_the_last_ngram() -> None:
    tokens = [5, 6, 7, 8, 9, 1, 6, 7]
    assert lookup_proposals(tokens, 3) == [8, 9, 1]  # "6 7" was followed by 8 9 1
    assert lookup_proposals([1, 2, 3, 4], 2) == []  # nothing repeats
    assert lookup_proposals([4, 1, 2, 3, 1, 2, 3], 2, ngram=3) == [1, 2]  # the latest earlier "1 2 3", then 1 2


def test_drafter_values() -> None:
    assert parse_drafter("lookup", 30) == ("lookup", None)
    assert parse_drafter("blocks:20", 30) == ("blocks", 20)
    for bad in ("blocks:30", "blocks:0", "blocks", "medusa"):
        with pytest.raises(ValueError, match="spec_draft value"):
            parse_drafter(bad, 30)


def test_truncate_cache_keeps_the_first_positions() -> None:
    import torch
    from transformers import DynamicCache

    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 7, 4), torch.zeros(1, 2, 7, 4), 0)
    truncate_cache(cache, 5)
    assert cache.get_seq_length() == 5
    truncate_cache(cache, 9)  # longer than it is: unchanged
    assert cache.get_seq_length() == 5


@pytest.fixture(scope="module")
def lm() -> object:
    from knobscope.workloads.lm import LMWorkload
    from knobscope.workloads.base import WorkloadContext
    from knobscope.measure import StageTimer

    w = LMWorkload(block_selection="first")
    w.setup(WorkloadContext(device="cpu", seed=0, timer=StageTimer(), run_dir=Path("/nonexistent")))
    return w


@pytest.mark.model
@pytest.mark.parametrize("drafter", ["lookup", "blocks:22"])
def test_exact_verification_gives_plain_greedys_tokens(lm: object, drafter: str) -> None:
    import torch

    w = lm
    w.apply({"spec_draft": drafter, "spec_k": 4, "max_new_tokens": 20})  # type: ignore[attr-defined]
    for item in w.items[:2]:  # type: ignore[attr-defined]
        ids = torch.tensor([w._encode(item["question"] + " Explain.", None)])  # type: ignore[attr-defined]
        plain = w._greedy(ids, lambda s: __import__("contextlib").nullcontext(), 20, True)  # type: ignore[attr-defined]
        spec, stats = speculative_greedy(w.model, ids, max_new_tokens=20, k=4, drafter=w.drafter,  # type: ignore[attr-defined]
                                         draft_blocks=w.draft_blocks, set_blocks=w.blocks.set_active,  # type: ignore[attr-defined]
                                         all_blocks=w.target_blocks, ignore_eos=True)  # type: ignore[attr-defined]  # fmt: skip
        assert spec == plain, (drafter, item["question"])
        assert stats.rounds < 20 or stats.accepted == 0  # fewer verification passes than tokens whenever drafts land
        assert stats.proposed >= stats.accepted and len(spec) == 20
    assert all(w.blocks.active)  # type: ignore[attr-defined]  # the draft's mask never leaks out


@pytest.mark.model
def test_a_lenient_threshold_accepts_at_least_as_much_and_quality_is_measured(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "s.yaml", workload={"name": "lm", "args": {"block_selection": "first"}},
                      knobs={"spec_draft": ["blocks:24"], "spec_k": [4], "spec_threshold": [0.0, 0.05], "max_new_tokens": [16]},
                      measure={"warmup": 0, "repeats": 1, "num_samples": 3})  # fmt: skip
    res = cli("run", str(spec), "--no-progress")
    assert res.returncode == 0, res.stderr
    with sqlite3.connect(tmp_path / "run" / "results.db") as db:
        rows = [(json.loads(c), json.loads(r)) for c, r in db.execute("SELECT t.config, s.record FROM samples s JOIN trials t USING (trial_id)")]
    by = {(c["spec_threshold"], r["sample_id"]): r for c, r in rows}
    for (threshold, sid), r in by.items():
        assert {"acceptance_rate", "accepted_per_round", "speedup", "tokens_per_s", "plain_tokens_per_s", "token_agreement", "accuracy"} <= set(r)
        assert r["speedup"] == pytest.approx((r["prefill_ms"] + r["decode_ms"]) / (r["spec_prefill_ms"] + r["draft_ms"] + r["verify_ms"]))
        if threshold == 0.0:
            assert r["token_agreement"] == 1.0  # exact: plain greedy's answer
        else:
            assert r["acceptance_rate"] >= by[(0.0, sid)]["acceptance_rate"]


@pytest.mark.parametrize(
    ("knobs", "message"),
    [({"spec_draft": ["blocks:x"]}, "spec_draft value 'blocks:x' is not possible"),
     ({"spec_k": [0]}, "spec_k value 0 is not possible"),
     ({"spec_threshold": [1.5]}, "spec_threshold value 1.5 is not possible")],
)
def test_bad_speculative_knobs_are_one_line_and_exit_2(tmp_path: Path, knobs: dict, message: str) -> None:
    spec = write_spec(tmp_path / "s.yaml", workload={"name": "lm"}, knobs=knobs)
    res = cli("run", str(spec), "--no-progress")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert message in res.stderr and not (tmp_path / "run").exists()
