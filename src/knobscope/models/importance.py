"""Which transformer blocks matter: importance scores for choosing the N blocks to keep.

Two methods, both giving one score per block (higher = more important = kept first):

``accuracy_drop``
    Skip each block alone and measure the task accuracy on a calibration set; the score is
    the baseline accuracy minus the accuracy without the block (the transformer-blocks knob
    of the seeds). Ties, common on a small calibration set, are broken by how much the
    negative log-likelihood of the reference answers rises without the block. Costs one
    calibration evaluation per block.
``block_influence``
    ShortGPT's Block Influence (Men et al., 2024): ``1 - mean cos(h_in, h_out)`` over the
    tokens of a calibration text, where ``h_in``/``h_out`` are a block's input and output
    hidden states. A block that barely changes the residual stream scores near 0. Costs one
    forward pass.

Scores are computed once per model and calibration set and kept as JSON under
``$KNOBSCOPE_CACHE/importance/`` (``knobscope inspect MODEL --importance METHOD`` prints them).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from knobscope.models.block_mask import BlockMask

__all__ = ["BlockImportance", "IMPORTANCE_METHODS", "block_influence", "accuracy_drop", "cached_importance"]

IMPORTANCE_METHODS = ("accuracy_drop", "block_influence")


@dataclass
class BlockImportance:
    """Importance of every block of one model on one calibration set.

    Attributes:
        method: ``accuracy_drop`` or ``block_influence``.
        scores: per block, higher is more important.
        tie_break: per block, a secondary score (``accuracy_drop``: NLL increase).
        baseline: the calibration metrics with every block active.
        model: the model's identity; calibration: what the scores were computed on.
    """

    method: str
    scores: list[float]
    tie_break: list[float] = field(default_factory=list)
    baseline: dict[str, float] = field(default_factory=dict)
    model: str = ""
    calibration: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    @property
    def order(self) -> list[int]:
        """Block indices, most important first (ties: secondary score, then lower index)."""
        tie = self.tie_break or [0.0] * len(self.scores)
        return sorted(range(len(self.scores)), key=lambda i: (-self.scores[i], -tie[i], i))

    def top(self, n: int) -> list[int]:
        """The ``n`` most important blocks, in model order."""
        if not 1 <= n <= len(self.scores):
            raise ValueError(f"num_active_blocks {n} is outside 1..{len(self.scores)}")
        return sorted(self.order[:n])

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"order": self.order}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockImportance:
        data = {k: v for k, v in data.items() if k != "order"}
        return cls(**data)


def _hidden_of(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def block_influence(model: nn.Module, layers: nn.ModuleList, batches: Sequence[Any]) -> list[float]:
    """ShortGPT Block Influence of every block over the tokens of ``batches``: input-id tensors,
    or mappings of model inputs (a VLM's processor output: pixels and the prompt's ids)."""
    sums = [0.0] * len(layers)
    tokens = [0] * len(layers)
    handles = []
    for index, layer in enumerate(layers):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any, index: int = index) -> None:
            h_in = kwargs.get("hidden_states", args[0] if args else None)
            h_out = _hidden_of(output)
            cos = torch.nn.functional.cosine_similarity(h_in.float(), h_out.float(), dim=-1)  # (B, T)
            sums[index] += float(cos.sum())
            tokens[index] += cos.numel()
        handles.append(layer.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.inference_mode():
            for batch in batches:
                inputs = dict(batch) if isinstance(batch, Mapping) else {"input_ids": batch}
                model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return [1.0 - s / t for s, t in zip(sums, tokens)]


def accuracy_drop(
    mask: BlockMask,
    evaluate: Callable[[], tuple[float, float]],
    *,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> tuple[list[float], list[float], dict[str, float]]:
    """Skip each block alone; return (accuracy drops, NLL increases, baseline).

    ``evaluate()`` returns ``(accuracy, mean NLL of the reference answers)`` for the mask's
    current state. The mask is left with every block active.
    """
    n = len(mask)
    mask.set_active(range(n))
    base_acc, base_nll = evaluate()
    drops, rises = [], []
    try:
        for index in range(n):
            mask.set_active(i for i in range(n) if i != index)
            acc, nll = evaluate()
            drops.append(base_acc - acc)
            rises.append(nll - base_nll)
            progress(index + 1, n)
    finally:
        mask.set_active(range(n))
    return drops, rises, {"accuracy": base_acc, "nll": base_nll}


def importance_path(model_identity: str, method: str, calibration_key: str) -> Path:
    from knobscope.models.loading import cache_root

    return cache_root() / "importance" / f"{method}-{model_identity}-{calibration_key}.json"


def cached_importance(
    path: Path, compute: Callable[[], BlockImportance], *, log: Any = None
) -> BlockImportance:
    """Read ``path`` if it holds scores, else ``compute()`` them and write them atomically."""
    if path.is_file():
        try:
            return BlockImportance.from_json(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, KeyError):
            if log is not None:
                log.warning("ignoring unreadable importance cache %s; recomputing", path)
    result = compute()
    result.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(result.to_json(), fh, indent=1)
    os.replace(tmp, path)
    if log is not None:
        log.info("block importance (%s) written to %s", result.method, path)
    return result
