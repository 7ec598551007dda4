"""Short-answer QA scoring: SQuAD-style normalisation, exact match, contains-answer."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

__all__ = ["normalize_answer", "exact_match", "contains_answer"]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation})


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (as SQuAD's evaluator)."""
    text = text.lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals a normalised reference answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def contains_answer(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if a normalised reference answer appears as whole words in the normalised prediction."""
    pred = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(a)} " in pred for a in answers if normalize_answer(a)))
