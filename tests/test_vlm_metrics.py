"""VQA soft accuracy and caption metrics on hand-computed cases and against pycocoevalcap's own
Java pipeline; the VQA v2 and COCO captions readers on the shipped set and on bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from knobscope.datasets import load_captions, load_vqa
from knobscope.errors import WorkloadError
from knobscope.metrics.captions import bleu4_interval, caption_scores, per_caption_scores, ptb_tokenize, scores_of_tokenized
from knobscope.metrics.vqa import normalize_vqa_answer, vqa_soft_accuracy


@pytest.mark.parametrize(
    ("prediction", "answers", "expected"),
    [
        ("Yes.", ["yes"] * 10, 1.0),  # the period goes, case goes; nine others match each time
        ("red", ["red"] * 2 + ["blue"] * 8, 0.6),  # (2 x 1/3 + 8 x 2/3) / 10
        ("two", ["2"] * 3 + ["3"] * 7, 0.9),  # number words become digits: (3 x 2/3 + 7 x 1) / 10
        ("The dog", ["dog"] * 4 + ["cat"] * 6, 1.0),  # articles go; 3 or more matches count fully
        ("a cat", ["cat"] + ["dog"] * 9, 0.3),  # one annotator: 9 x 1/3 + 1 x 0, over 10
        ("1,000", ["1000"] * 10, 1.0),  # a comma between digits: punctuation is removed, not spaced
        ("dog!", ["dog"] * 10, 0.0),  # "!" is not in the official punctuation list: no match
        ("dont", ["don’t"] * 10, 1.0),  # contractions restored with the official curly apostrophe
        ("blue", ["red"] * 10, 0.0),
    ],
)
def test_vqa_soft_accuracy_on_hand_computed_cases(prediction: str, answers: list[str], expected: float) -> None:
    assert vqa_soft_accuracy(prediction, answers) == pytest.approx(expected)


def test_vqa_normalisation_follows_the_official_code() -> None:
    assert normalize_vqa_answer("  The  Two\tdogs.\n") == "2 dogs"
    assert normalize_vqa_answer("it's (maybe) red") == "it s maybe red"  # ( ) next to spaces are removed, ' alone is spaced
    assert normalize_vqa_answer("yes/no") == "yes no"  # "/" alone becomes a space
    with pytest.raises(ValueError):
        vqa_soft_accuracy("x", [])


def test_caption_metrics_on_hand_computed_cases() -> None:
    refs = {"a": ["a man riding a wave on a surfboard", "a surfer rides a big wave"],
            "b": ["a cat sleeping on a red couch", "a small cat asleep on a sofa"]}  # fmt: skip
    same = caption_scores({"a": "a man riding a wave on a surfboard", "b": "a cat sleeping on a red couch"}, refs)
    assert same["bleu4"] == pytest.approx(1.0, abs=1e-6) and same["rouge_l"] == pytest.approx(1.0)
    unrelated = caption_scores({"a": "purple elephants dance", "b": "quantum tax forms"}, refs)
    assert unrelated == {"cider_d": 0.0, "bleu4": pytest.approx(0.0, abs=1e-6), "rouge_l": 0.0}
    with pytest.raises(ValueError, match="has no reference captions"):
        caption_scores({"c": "a dog"}, refs)


def test_per_caption_scores_average_to_the_corpus_score_and_bleu4_has_a_bootstrap_interval() -> None:
    refs = _shipped_captions()
    # a prediction per image: its first reference edited (some close, some not), scored against the rest
    preds = {k: (caps[0] if i % 3 else "a picture of something") + " today" for i, (k, caps) in enumerate(refs.items())}
    others = {k: caps[1:] for k, caps in refs.items()}
    corpus = caption_scores(preds, others)
    per = per_caption_scores(preds, others)
    assert set(per) == set(preds)
    for m in ("cider_d", "rouge_l"):
        values = [per[k][m] for k in preds]
        assert sum(values) / len(values) == pytest.approx(corpus[m], abs=1e-12)
        assert min(values) < corpus[m] < max(values)  # the captions differ: a spread to give an interval
    value, low, high = bleu4_interval(preds, others, resamples=300, seed=1)
    assert value == pytest.approx(corpus["bleu4"], abs=1e-12)
    assert low < value < high and high - low > 0.01
    assert bleu4_interval(preds, others, resamples=300, seed=1) == (value, low, high)  # seeded
    # half the captions: the interval is about sqrt(2) wider (a sampling interval, not a constant)
    half = dict(list(preds.items())[::2])
    _, lo2, hi2 = bleu4_interval(half, others, resamples=300, seed=1)
    assert hi2 - lo2 > 1.1 * (high - low)


def _shipped_captions() -> dict[str, list[str]]:
    return {it["id"]: it["captions"] for it in load_captions("builtin:captions")}


@pytest.mark.skipif(shutil.which("java") is None, reason="pycocoevalcap's own tokenizer runs Java, which is not installed")
def test_python_tokenizer_and_scores_equal_pycocoevalcaps_java_pipeline() -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = _shipped_captions()
    hard = ["Two dogs (a brown one) play!", "Can't you see? He won't go, they'll stay...", "A 3.5 m, 1,000 kg U.S. rocket.",
            "\"Stop\" says the sign -- nobody stops", "It's 5 o'clock; let's go, gonna wanna cannot", "Coins: 1, 2; 3!!",
            "She said 'hello' to the people' s friends", "A plate [fresh] {maybe} and/or salad: rice",
            "A dog runs. Then it sleeps.", "Mr. Smith et al. wrote e.g. this in Jan. 2020. Done.", "version 2. beta",
            "See fig. 3 and no. 5 today."]  # fmt: skip
    texts = [c for caps in refs.values() for c in caps] + hard
    java = PTBTokenizer().tokenize({i: [{"caption": t}] for i, t in enumerate(texts)})
    assert [java[i][0] for i in range(len(texts))] == [ptb_tokenize(t) for t in texts]
    # Scores of a prediction per image (its first reference, edited) against the other four.
    preds = {k: caps[0].replace("A ", "The ", 1) + " today" for k, caps in refs.items()}
    others = {k: caps[1:] for k, caps in refs.items()}
    ours = caption_scores(preds, others)
    gts = PTBTokenizer().tokenize({k: [{"caption": c} for c in v] for k, v in others.items()})
    res = PTBTokenizer().tokenize({k: [{"caption": v}] for k, v in preds.items()})
    assert ours == pytest.approx(scores_of_tokenized(gts, res), abs=1e-12)
    assert 0 < ours["cider_d"] and 0 < ours["bleu4"] < 1 and 0 < ours["rouge_l"] < 1


def test_the_shipped_sets_read_in_the_official_formats() -> None:
    vqa = load_vqa("builtin:vqa")
    assert len(vqa) == 30 and all(len(it["answers"]) == 10 and it["image"].is_file() for it in vqa)
    caps = load_captions("builtin:captions")
    assert len(caps) == 10 and all(len(it["captions"]) == 5 for it in caps)
    assert {it["image"] for it in vqa} == {it["image"] for it in caps}


def test_bad_data_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WorkloadError, match="image directory '/nowhere' does not exist"):
        load_captions("builtin:captions", images="/nowhere")
    wrong = tmp_path / "annotations.json"
    wrong.write_text(json.dumps({"questions": []}))
    with pytest.raises(WorkloadError, match="not in the expected format: it needs a list under 'annotations'"):
        load_captions(str(wrong))
    (tmp_path / "garbage.json").write_text("{nope")
    with pytest.raises(WorkloadError, match="is not JSON"):
        load_vqa(str(tmp_path / "garbage.json"), str(wrong))
    with pytest.raises(WorkloadError, match="image\\(s\\) missing"):
        load_captions("builtin:captions", images=str(tmp_path))
