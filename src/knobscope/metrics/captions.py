"""Caption metrics: CIDEr-D, BLEU-4 and ROUGE-L with pycocoevalcap's own scorers.

The scorers are pycocoevalcap's (``Cider``, which is CIDEr-D: IDF from the references, n-grams
up to 4, Gaussian length penalty with sigma 6, clipped counts, x10; ``Bleu(4)``, corpus-level;
``Rouge``, ROUGE-L with beta 1.2, averaged over captions). Only the tokenizer is replaced.
pycocoevalcap's ``PTBTokenizer`` runs Stanford CoreNLP in Java; :func:`ptb_tokenize` does the
same in Python: lower-case, Penn Treebank splitting of punctuation and clitics, then the
punctuation tokens pycocoevalcap drops. ``tests/test_caption_metrics.py`` shows on test
captions that the tokens and the scores equal pycocoevalcap's Java pipeline wherever Java is
installed.

CIDEr-D's IDF and BLEU's clipped counts and brevity penalty come from every caption at once.
Still, pycocoevalcap's corpus CIDEr-D and ROUGE-L are the *mean of per-caption scores* (the
IDF taken from all the references of the set): :func:`per_caption_scores` returns those
per-caption scores, so a workload stores them per sample (``Workload.score_set``) and their
mean, with its interval over the samples like any other mean's, equals the corpus score
exactly. Corpus BLEU-4 is a ratio of summed counts, not a mean; :func:`bleu4_interval` gives it
a bootstrap interval over the captions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["ptb_tokenize", "caption_scores", "per_caption_scores", "bleu4_interval", "score_captions", "corpus_bleu4", "CAPTION_METRICS", "PER_CAPTION_METRICS"]

CAPTION_METRICS = ("cider_d", "bleu4", "rouge_l")
PER_CAPTION_METRICS = ("cider_d", "rouge_l")  # corpus score = mean of per-caption scores

# pycocoevalcap's tokenizer drops these tokens after Penn Treebank tokenization. Its list also
# names -LRB-, -RRB-, -LCB- and -RCB-, but upper-case: after -lowerCase they never match, so the
# lower-case bracket tokens stay in its output, and in ours.
_DROPPED = {"''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"}
# Penn Treebank splitting (after Stanford's PTBTokenizer and the Treebank sed script).
_RULES = [
    (re.compile(r'^"'), " `` "),
    (re.compile(r"(``)"), r" \1 "),
    (re.compile(r'([ (\[{<])"'), r"\1 `` "),
    (re.compile(r"\.\.\."), " ... "),
    (re.compile(r"[;@#$%&]"), r" \g<0> "),
    (re.compile(r"([^\.])(\.)([\]\)}>\"']*)\s*$"), r"\1 \2\3 "),
    (re.compile(r"[?!]+"), r" \g<0> "),
    (re.compile(r"(\s)'(?=[a-z0-9])"), r"\1 ` "),  # an opening single quote
    (re.compile(r"([^'])' "), r"\1 ' "),
    (re.compile(r"[\]\[\(\)\{\}<>]"), r" \g<0> "),
    (re.compile(r"--"), r" -- "),
    (re.compile(r'"'), " '' "),
    (re.compile(r"(\S)('')"), r"\1 \2 "),
    (re.compile(r"([^' ])('[sS]|'[mM]|'[dD]|') "), r"\1 \2 "),
    (re.compile(r"([^' ])('ll|'LL|'re|'RE|'ve|'VE|n't|N'T) "), r"\1 \2 "),
    (re.compile(r"\b(can)(not)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(d)('ye)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(gim)(me)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(gon)(na)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(got)(ta)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(lem)(me)\b", re.I), r"\1 \2"),
    (re.compile(r"\b(wan)(na)\b", re.I), r"\1 \2"),
]
_COMMA = re.compile(r",(?!\d)|(?<!\d),")  # a comma is split off unless it sits inside a number
_COLON = re.compile(r":(?!\d)|(?<!\d):")
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


# Words whose final period PTBTokenizer keeps inside a line (abbreviations).
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "etc", "al", "inc", "ltd", "co", "corp", "no", "mt", "ft",
    "fig", "figs", "vol", "pp", "ed", "approx", "dept", "est", "ave", "blvd", "rd",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "gen", "gov", "sen", "rep",
}  # fmt: skip


def _split_periods(tokens: list[str]) -> list[str]:
    """A period ending a word inside the line is split off, as at the line's end, unless the
    word is an abbreviation (``mr.``, ``e.g.``, ``u.s.``: a known word, periods inside, or a single
    letter, an initial). Stanford's list of abbreviations is longer than ours; the captions we test
    on agree token for token."""
    out = []
    for t in tokens:
        stem = t[:-1]
        word = stem.isalpha() and len(stem) > 1 and stem not in _ABBREVIATIONS
        if t.endswith(".") and "." not in stem and (word or stem.isdigit()):
            out += [stem, "."]
        else:
            out.append(t)
    return out


def ptb_tokenize(text: str) -> str:
    """``text`` as pycocoevalcap's PTBTokenizer leaves it: lower-cased Penn Treebank tokens
    without punctuation, joined by single spaces."""
    s = " " + text.replace("\n", " ").lower() + " "
    s = _COMMA.sub(" , ", s)
    s = _COLON.sub(" : ", s)
    for pattern, repl in _RULES:
        s = pattern.sub(repl, s)
    tokens = [_BRACKETS.get(t, t) for t in _split_periods(s.split())]
    return " ".join(t for t in tokens if t not in _DROPPED)


def caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """Corpus CIDEr-D, BLEU-4 and ROUGE-L of ``predictions`` (id -> caption) against
    ``references`` (id -> reference captions), with pycocoevalcap's scorers.

    Raises:
        ValueError: an id without references, or no predictions.
    """
    gts, res = _tokenized(predictions, references)
    return scores_of_tokenized(gts, res)


def _tokenized(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    if not predictions:
        raise ValueError("caption scores need at least one prediction")
    missing = [k for k in predictions if not references.get(k)]
    if missing:
        raise ValueError(f"caption {missing[0]!r} has no reference captions")
    res = {k: [ptb_tokenize(v)] for k, v in predictions.items()}
    gts = {k: [ptb_tokenize(r) for r in references[k]] for k in predictions}
    return gts, res


def scores_of_tokenized(gts: Mapping[str, list[str]], res: Mapping[str, list[str]]) -> dict[str, float]:
    """The three scores of already tokenized captions (pycocoevalcap's input format)."""
    import contextlib
    import io

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = dict(gts), dict(res)
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its ratios
        bleu, _ = Bleu(4).compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    return {"cider_d": float(cider), "bleu4": float(bleu[3]), "rouge_l": float(rouge)}


def per_caption_scores(predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """Each caption's CIDEr-D and ROUGE-L inside the set ``predictions`` (id -> caption): the
    per-image scores pycocoevalcap averages into its corpus CIDEr-D and ROUGE-L (the IDF from the
    whole set's references), so their mean is :func:`caption_scores`' value."""
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    gts, res = _tokenized(predictions, references)
    _, cider = Cider().compute_score(gts, res)
    _, rouge = Rouge().compute_score(gts, res)
    return {k: {"cider_d": float(c), "rouge_l": float(r)} for k, c, r in zip(gts, cider, rouge, strict=True)}


def bleu4_interval(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Corpus BLEU-4 and its percentile-bootstrap interval over the captions: ``(value, low,
    high)``. Each replicate is pycocoevalcap's corpus BLEU-4 (``BleuScorer``, option "closest" as
    its ``Bleu(4)`` uses) of a resample of the captions with their references."""
    import numpy as np
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    gts, res = _tokenized(predictions, references)
    full = BleuScorer(n=4)
    for k in gts:
        full += (res[k][0], gts[k])
    value = _bleu4_of(full)
    rng = np.random.default_rng(seed)
    n = len(full.ctest)
    replicates = []
    for _ in range(resamples):
        picks = rng.integers(0, n, size=n)
        part = BleuScorer(n=4)
        part.crefs = [full.crefs[i] for i in picks]
        part.ctest = [full.ctest[i] for i in picks]
        replicates.append(_bleu4_of(part))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return value, float(min(low, value)), float(max(high, value))

def _bleu4_of(scorer: Any) -> float:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        scores, _ = scorer.compute_score(option="closest")  # what pycocoevalcap's Bleu(4) asks for
    return float(scores[3])


def score_captions(records: Sequence[dict[str, Any]], references: Mapping[str, Sequence[str]]) -> None:
    """Add each record's ``cider_d`` and ``rouge_l`` (:func:`per_caption_scores`), in place.
    ``records`` are one pass over the evaluation set: their ``prediction`` by ``sample_id``."""
    predictions = {str(r["sample_id"]): str(r.get("prediction", "")) for r in records}
    scores = per_caption_scores(predictions, {k: references[k] for k in predictions if k in references})
    for r in records:
        r.update(scores[str(r["sample_id"])])


def corpus_bleu4(records: Sequence[Mapping[str, Any]], references: Mapping[str, Sequence[str]], *, seed: int = 0) -> Any:
    """Corpus BLEU-4 of the records' predictions (a sample's first) as an
    :class:`~knobscope.intervals.Estimate` with its bootstrap interval over the samples."""
    from knobscope.intervals import Estimate

    predictions: dict[str, str] = {}
    for r in records:
        predictions.setdefault(str(r["sample_id"]), str(r.get("prediction", "")))
    value, low, high = bleu4_interval(predictions, {k: references[k] for k in predictions if k in references}, seed=seed)
    return Estimate(value, low, high, "percentile bootstrap over the samples (corpus BLEU-4 of each resample)")
