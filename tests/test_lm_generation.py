"""The lm workload's long-form task (``task: generation``): the shipped prompts, a sweep on the real
SmolLM2 scored with corpus CIDEr-D / BLEU-4 / ROUGE-L, and bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import cli, write_spec
from knobscope.datasets import load_generation


def test_the_shipped_generation_set_has_60_prompts_with_3_references_each() -> None:
    items = load_generation("builtin:generation")
    assert len(items) >= 60 and len({it["id"] for it in items}) == len(items)
    assert all(len(it["references"]) >= 3 and len(set(it["references"])) == len(it["references"]) for it in items)
    assert len({it["prompt"] for it in items}) == len(items)


def test_a_qa_file_given_to_the_generation_task_is_one_line_and_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "What is 2+2?", "answers": ["4"]}) + "\n")
    spec = write_spec(tmp_path / "g.yaml", workload={"name": "lm", "args": {"task": "generation", "dataset": str(data)}},
                      knobs={"max_new_tokens": [4]})  # fmt: skip
    res = cli("run", str(spec), "--no-progress")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "line 1: expected JSON with 'prompt' and 'references' (task: generation)" in res.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.model
def test_a_generation_sweep_stores_corpus_scores_of_its_answers_with_intervals(tmp_path: Path) -> None:
    from knobscope.metrics.captions import caption_scores

    spec = write_spec(tmp_path / "g.yaml", workload={"name": "lm", "args": {"task": "generation"}},
                      knobs={"max_new_tokens": [4, 24]}, measure={"warmup": 0, "repeats": 1, "num_samples": 3})  # fmt: skip
    res = cli("run", str(spec), "--no-progress")
    assert res.returncode == 0, res.stderr
    refs = {it["id"]: it["references"] for it in load_generation("builtin:generation")}
    with sqlite3.connect(tmp_path / "run" / "results.db") as db:
        trials = db.execute("SELECT trial_id, config, summary FROM trials").fetchall()
        scores = {}
        for trial_id, config, summary in trials:
            records = [json.loads(r) for (r,) in db.execute("SELECT record FROM samples WHERE trial_id = ?", (trial_id,))]
            assert len(records) == 3 and all("accuracy" not in r for r in records)
            preds = {str(r["sample_id"]): r["prediction"] for r in records}
            expected = caption_scores(preds, {k: refs[k] for k in preds})
            # CIDEr-D and ROUGE-L per answer; their means are the corpus scores, exactly
            values = json.loads(summary)["values"]
            stored = {m: values[m]["value"] for m in expected}
            assert stored == pytest.approx(expected, abs=1e-12)
            assert all(isinstance(r["cider_d"], float) and isinstance(r["rouge_l"], float) for r in records)
            for m in expected:  # every score with its interval
                assert values[m]["ci_low"] <= stored[m] <= values[m]["ci_high"], (m, values[m])
            scores[json.loads(config)["max_new_tokens"]] = stored
    # Four tokens cannot say what the references say: every score is lower than with 24.
    assert all(scores[4][m] < scores[24][m] for m in ("cider_d", "rouge_l"))
