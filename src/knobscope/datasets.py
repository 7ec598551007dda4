"""Read the data sets knobscope ships or a user points to: QA items, long-form generation prompts
with reference texts, plain text, and images with questions (VQA v2 format) or captions (COCO
captions format)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from knobscope.errors import WorkloadError

__all__ = ["load_qa", "load_generation", "load_text", "load_vqa", "load_captions", "load_series", "image_dir", "BUILTIN_QA",
           "BUILTIN_GENERATION", "BUILTIN_TEXT"]  # fmt: skip

BUILTIN_QA = {"builtin:qa": "qa.jsonl", "builtin:qa_calibration": "qa_calibration.jsonl"}
BUILTIN_GENERATION = {"builtin:generation": "generation.jsonl"}
BUILTIN_TEXT = {"builtin:text": "text.txt"}


def _read(source: str, builtins: dict[str, str], what: str) -> str:
    if source in builtins:
        return resources.files("knobscope.data").joinpath(builtins[source]).read_text()
    path = Path(source)
    if not path.is_file():
        raise WorkloadError(f"{what} {source!r} does not exist; use {' or '.join(map(repr, builtins))} or a file")
    return path.read_text()


def _jsonl_pairs(dataset: str, builtins: dict[str, str], keys: tuple[str, str], hint: str) -> list[tuple[int, dict, Any, list]]:
    """``(line number, item, item[keys[0]], item[keys[1]] as a list)`` of every line of a JSONL
    set; a line without both keys is one clear error naming the line."""
    text = _read(dataset, builtins, "dataset")
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            first, many = item[keys[0]], item[keys[1]]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise WorkloadError(f"{dataset} line {n}: expected JSON with {keys[0]!r} and {keys[1]!r}{hint}") from None
        rows.append((n, item, first, [many] if isinstance(many, str) else list(many)))
    return rows


def load_qa(dataset: str) -> list[dict[str, Any]]:
    """QA items ``{"id", "question", "answers"}`` from a built-in set or a JSONL file.

    Built-ins: ``builtin:qa`` (130 factual questions with short answers) and
    ``builtin:qa_calibration`` (52 other questions, used to rank block importance).
    """
    items = [{"id": item.get("id", f"q{n}"), "question": question, "answers": answers}
             for n, item, question, answers in _jsonl_pairs(dataset, BUILTIN_QA, ("question", "answers"), "")]  # fmt: skip
    if not items:
        raise WorkloadError(f"dataset {dataset} holds no questions")
    return items


def load_generation(dataset: str) -> list[dict[str, Any]]:
    """Long-form prompts ``{"id", "prompt", "references"}`` from a built-in set or a JSONL file.

    Built-in: ``builtin:generation`` (65 prompts asking to describe or explain something in a
    sentence or two, three reference texts each, written for knobscope; scored like captions).
    """
    items = []
    for n, item, prompt, references in _jsonl_pairs(dataset, BUILTIN_GENERATION, ("prompt", "references"), " (task: generation)"):
        if not references or not all(isinstance(r, str) and r.strip() for r in references):
            raise WorkloadError(f"{dataset} line {n}: 'references' must be one or more non-empty texts")
        items.append({"id": str(item.get("id", f"g{n}")), "prompt": prompt, "references": references})
    if not items:
        raise WorkloadError(f"dataset {dataset} holds no prompts")
    return items


def load_text(source: str) -> str:
    """A plain-text corpus: ``builtin:text`` (~21K SmolLM2 tokens of the Python Language
    Reference, PSF licence; see ``knobscope/data/SOURCES.md``) or a UTF-8 text file."""
    text = _read(source, BUILTIN_TEXT, "text")
    if not text.strip():
        raise WorkloadError(f"text {source!r} is empty")
    return text


# -- images: VQA v2 and COCO captions formats ----------------------------------------------------

BUILTIN_VQA = ("builtin:vqa", "vlm/vqa_questions.json", "vlm/vqa_annotations.json")
BUILTIN_CAPTIONS = ("builtin:captions", "vlm/captions.json")
BUILTIN_IMAGES = "builtin:skimage"  # the images scikit-image ships in skimage/data


def image_dir(source: str | Path) -> Path:
    """An image directory: a path, or ``builtin:skimage`` (the images scikit-image ships)."""
    if str(source) == BUILTIN_IMAGES:
        try:
            import skimage
        except ImportError:
            raise WorkloadError(f"images {BUILTIN_IMAGES!r} need scikit-image: pip install 'knobscope[vlm]'") from None
        return Path(skimage.__file__).parent / "data"
    path = Path(source)
    if not path.is_dir():
        raise WorkloadError(f"image directory {str(source)!r} does not exist")
    return path


def _json(path: str | Path, what: str, key: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise WorkloadError(f"{what} file {str(path)!r} does not exist")
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"{what} file {str(path)!r} is not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise WorkloadError(f"{what} file {str(path)!r} is not in the expected format: it needs a list under {key!r}")
    return data


def _image_files(data: dict[str, Any], images: Path) -> dict[int, Path]:
    """image id -> file, from the file's ``images`` list (COCO's; empty when it has none)."""
    if isinstance(data.get("images"), list):
        return {int(im["id"]): images / im["file_name"] for im in data["images"]}
    return {}


def load_vqa(questions: str, annotations: str | None = None, images: str = BUILTIN_IMAGES,
             *, pattern: str = "COCO_{data_subtype}_{image_id:012d}.jpg") -> list[dict[str, Any]]:  # fmt: skip
    """VQA v2 items ``{"id", "image", "question", "answers" (ten), "answer_type"}`` from a questions
    file and its annotations file (the official format), images from ``images``; ``builtin:vqa``
    is the shipped set. An image is named by the files' ``images`` list if they have one, else
    by ``pattern`` (the COCO naming the official set uses)."""
    if questions == BUILTIN_VQA[0]:
        root = resources.files("knobscope.data")
        questions, annotations = str(root.joinpath(BUILTIN_VQA[1])), str(root.joinpath(BUILTIN_VQA[2]))
    if annotations is None:
        raise WorkloadError("a VQA set needs its annotations file (the human answers) next to the questions file")
    qs = _json(questions, "VQA questions", "questions")
    ann = _json(annotations, "VQA annotations", "annotations")
    folder = image_dir(images)
    files = _image_files(qs, folder)
    by_id = {a["question_id"]: a for a in ann["annotations"]}
    items = []
    for q in qs["questions"]:
        try:
            a = by_id[q["question_id"]]
            image = files.get(int(q["image_id"])) or folder / pattern.format(
                data_subtype=qs.get("data_subtype", ""), image_id=int(q["image_id"]))
            items.append({"id": f"q{q['question_id']}", "image": image, "question": q["question"],
                          "answers": [x["answer"] for x in a["answers"]], "answer_type": a.get("answer_type", "")})  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise WorkloadError(f"VQA question {q.get('question_id', q)!r}: not in the expected format ({exc!r})") from None
    _check_images(items, folder)
    return items


def load_captions(annotations: str, images: str = BUILTIN_IMAGES) -> list[dict[str, Any]]:
    """COCO captions items ``{"id", "image", "captions"}`` (one per image, all its reference
    captions) from a captions annotations file (the official format); ``builtin:captions`` is
    the shipped set."""
    if annotations == BUILTIN_CAPTIONS[0]:
        annotations = str(resources.files("knobscope.data").joinpath(BUILTIN_CAPTIONS[1]))
    data = _json(annotations, "COCO captions", "annotations")
    if not isinstance(data.get("images"), list):
        raise WorkloadError(f"COCO captions file {annotations!r} is not in the expected format: it needs a list under 'images'")
    folder = image_dir(images)
    files = _image_files(data, folder)
    refs: dict[int, list[str]] = {}
    try:
        for a in data["annotations"]:
            refs.setdefault(int(a["image_id"]), []).append(str(a["caption"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise WorkloadError(f"COCO captions file {annotations!r}: an annotation is not in the expected format ({exc!r})") from None
    items = [{"id": f"img{i}", "image": files[i], "captions": refs[i]} for i in sorted(files) if i in refs]
    if not items:
        raise WorkloadError(f"COCO captions file {annotations!r} holds no captioned image")
    _check_images(items, folder)
    return items


def _check_images(items: list[dict[str, Any]], folder: Path) -> None:
    missing = [it["image"] for it in items if not Path(it["image"]).is_file()]
    if missing:
        raise WorkloadError(f"{len(missing)} image(s) missing from {str(folder)!r}, e.g. {Path(missing[0]).name!r}")


# vega_datasets' Seattle daily weather, 2012-2015 (NOAA observations): 1,461 days
BUILTIN_SERIES = {"builtin:seattle_weather": ("seattle-weather.csv", "temp_max")}


def load_series(source: str, column: str | None = None) -> tuple[Any, str]:
    """One numeric column of a time series as float64 values, with its name.

    ``source``: ``builtin:seattle_weather`` (daily maximum temperature in Seattle, 2012-2015,
    from ``vega_datasets``), or an ETT-format CSV (a ``date`` column plus numeric columns, as
    ETTh1). ``column`` defaults to the built-in's (``temp_max``), else ``OT`` (ETT's target) when
    present, else the last numeric column.
    """
    import numpy as np
    import pandas as pd

    if source in BUILTIN_SERIES:
        try:
            import vega_datasets
        except ImportError:
            raise WorkloadError(f"series {source!r} needs vega_datasets: pip install 'knobscope[forecast]'") from None
        filename, default_column = BUILTIN_SERIES[source]
        path: Any = resources.files(vega_datasets).joinpath("_data", filename)
        column = column or default_column
    else:
        path = Path(source)
        if not path.is_file():
            raise WorkloadError(f"series {source!r} does not exist; use {' or '.join(map(repr, BUILTIN_SERIES))} or a CSV file")
    try:
        with resources.as_file(path) if not isinstance(path, Path) else _same(path) as p:
            frame = pd.read_csv(p)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise WorkloadError(f"series {source!r} is not a CSV file: {str(exc).splitlines()[0]}") from None
    numeric = [c for c in frame.columns if c != "date" and pd.api.types.is_numeric_dtype(frame[c])]
    if not numeric:
        raise WorkloadError(f"series {source!r} has no numeric column (columns: {', '.join(map(str, frame.columns))})")
    name = column if column is not None else ("OT" if "OT" in numeric else numeric[-1])
    if name not in numeric:
        raise WorkloadError(f"series {source!r} has no numeric column {name!r}; numeric columns: {', '.join(numeric)}")
    values = frame[name].to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values))[0])
        raise WorkloadError(f"series {source!r} column {name!r} has a missing or non-finite value at row {bad + 1}")
    return values, name


class _same:
    """``resources.as_file`` for a path that already is one."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, *exc: Any) -> None:
        return None
