"""Skip transformer blocks at run time with a mask, without removing them from the model.

:class:`BlockMask` wraps the ``forward`` of every decoder block. An inactive block returns its
input hidden states unchanged (the block acts as the identity on the residual stream) and
never touches the KV cache. The mask can change between configurations with no reloading;
:meth:`BlockMask.restore` puts the original ``forward`` methods back.

KV-cache note: the Hugging Face ``DynamicCache`` keeps one entry per layer index, and the
model reads the cached length from layer 0. A mask that is fixed for a whole generation keeps
the cache consistent: active layers update their own entries, skipped layers have none. Layer
0 must stay active for that reason; masks that skip it are rejected.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["BlockMask", "find_decoder_layers"]


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's stack of decoder blocks: the largest ``ModuleList`` of identical modules.

    Works for ``model.model.layers`` (Llama, Mistral, Qwen, OLMoE, Mixtral), ``transformer.h``
    (GPT-2), ``gpt_neox.layers`` and similar layouts without naming them.
    """
    best: nn.ModuleList | None = None
    best_params = -1
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) >= 2:
            if len({type(m) for m in module}) != 1:
                continue
            params = sum(p.numel() for p in module.parameters())
            if params > best_params:
                best, best_params = module, params
    if best is None:
        raise ValueError(f"no stack of decoder blocks found in {type(model).__name__}")
    return best


class BlockMask:
    """A run-time on/off switch per decoder block.

    Example::

        mask = BlockMask(find_decoder_layers(model))
        mask.first_n(12)            # blocks 0..11 run, 12.. are identity
        mask.set_active([0, 3, 5])  # any subset containing block 0
        mask.restore()
    """

    def __init__(self, layers: nn.ModuleList) -> None:
        self.layers = layers
        self.active = [True] * len(layers)
        self._originals: list[Any] = []
        for index, layer in enumerate(layers):
            original = layer.forward
            self._originals.append(original)
            layer.forward = self._masked(index, original)  # instance attribute shadows the class method

    def __len__(self) -> int:
        return len(self.layers)

    def _masked(self, index: int, original: Any) -> Any:
        def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self.active[index]:
                return original(hidden_states, *args, **kwargs)
            # transformers >= 5 blocks return the tensor; older ones a tuple whose first item it is.
            return hidden_states if _returns_tensor(original) else (hidden_states,)

        return forward

    def set_active(self, indices: Iterable[int]) -> None:
        chosen = set(indices)
        bad = sorted(i for i in chosen if not 0 <= i < len(self.layers))
        if bad:
            raise ValueError(f"block index {bad[0]} is out of range 0..{len(self.layers) - 1}")
        if 0 not in chosen:
            raise ValueError("block 0 must stay active (the KV cache reads its length from layer 0)")
        self.active = [i in chosen for i in range(len(self.layers))]

    def first_n(self, n: int) -> None:
        if not 1 <= n <= len(self.layers):
            raise ValueError(f"num_active_blocks {n} is outside 1..{len(self.layers)}")
        self.set_active(range(n))

    @property
    def num_active(self) -> int:
        return sum(self.active)

    def restore(self) -> None:
        for layer, original in zip(self.layers, self._originals):
            layer.forward = original
        self.active = [True] * len(self.layers)


def _returns_tensor(forward: Any) -> bool:
    annotation = getattr(forward, "__annotations__", {}).get("return")
    return annotation is None or "tuple" not in str(annotation).lower()
