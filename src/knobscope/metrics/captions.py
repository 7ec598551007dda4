"""Caption metrics: CIDEr-D, BLEU-4 and ROUGE-L with pycocoevalcap's own scorers.

The scorers are pycocoevalcap's (``Cider``, which is CIDEr-D: IDF from the references, n-grams
up to 4, Gaussian length penalty with sigma 6, clipped counts, x10; ``Bleu(4)``, corpus-level;
``Rouge``, ROUGE-L with beta 1.2, averaged over captions). Only the tokenizer is replaced.
pycocoevalcap's ``PTBTokenizer`` runs Stanford CoreNLP in Java; :func:`ptb_tokenize` does the
same in Python: lower-case, Penn Treebank splitting of punctuation and clitics, then the
punctuation tokens pycocoevalcap drops. ``tests/test_caption_metrics.py`` shows on test
captions that the tokens and the scores equal pycocoevalcap's Java pipeline wherever Java is
installed.

CIDEr-D and BLEU-4 are corpus statistics: the IDF, and BLEU's clipped counts and brevity
penalty, come from every caption at once. So a workload reports them from
``Workload.summarize`` over all its records, not as a mean of per-sample values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

__all__ = ["ptb_tokenize", "caption_scores", "CAPTION_METRICS"]

CAPTION_METRICS = ("cider_d", "bleu4", "rouge_l")

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
    if not predictions:
        raise ValueError("caption_scores needs at least one prediction")
    missing = [k for k in predictions if not references.get(k)]
    if missing:
        raise ValueError(f"caption {missing[0]!r} has no reference captions")
    res = {k: [ptb_tokenize(v)] for k, v in predictions.items()}
    gts = {k: [ptb_tokenize(r) for r in references[k]] for k in predictions}
    return scores_of_tokenized(gts, res)


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
