"""Read the data sets knobscope ships or a user points to: QA items and plain text."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from knobscope.errors import WorkloadError

__all__ = ["load_qa", "load_text", "BUILTIN_QA", "BUILTIN_TEXT"]

BUILTIN_QA = {"builtin:qa": "qa.jsonl", "builtin:qa_calibration": "qa_calibration.jsonl"}
BUILTIN_TEXT = {"builtin:text": "text.txt"}


def _read(source: str, builtins: dict[str, str], what: str) -> str:
    if source in builtins:
        return resources.files("knobscope.data").joinpath(builtins[source]).read_text()
    path = Path(source)
    if not path.is_file():
        raise WorkloadError(f"{what} {source!r} does not exist; use {' or '.join(map(repr, builtins))} or a file")
    return path.read_text()


def load_qa(dataset: str) -> list[dict[str, Any]]:
    """QA items ``{"id", "question", "answers"}`` from a built-in set or a JSONL file.

    Built-ins: ``builtin:qa`` (130 factual questions with short answers) and
    ``builtin:qa_calibration`` (52 other questions, used to rank block importance).
    """
    text = _read(dataset, BUILTIN_QA, "dataset")
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            question, answers = item["question"], item["answers"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise WorkloadError(f"{dataset} line {n}: expected JSON with 'question' and 'answers'") from None
        answers = [answers] if isinstance(answers, str) else list(answers)
        items.append({"id": item.get("id", f"q{n}"), "question": question, "answers": answers})
    if not items:
        raise WorkloadError(f"dataset {dataset} holds no questions")
    return items


def load_text(source: str) -> str:
    """A plain-text corpus: ``builtin:text`` (~21K SmolLM2 tokens of the Python Language
    Reference, PSF licence; see ``knobscope/data/SOURCES.md``) or a UTF-8 text file."""
    text = _read(source, BUILTIN_TEXT, "text")
    if not text.strip():
        raise WorkloadError(f"text {source!r} is empty")
    return text
