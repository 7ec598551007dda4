"""Skip transformer blocks at run time with a mask, without removing them from the model.

:class:`BlockMask` wraps the ``forward`` of every decoder block. An inactive block returns its
input hidden states unchanged (the block acts as the identity on the residual stream) and
never touches the KV cache. The mask can change between configurations with no reloading;
:meth:`BlockMask.restore` puts the original ``forward`` methods back.

OLMo-style blocks (original Molmo's remote code) keep a ``(keys, values)`` tuple per block and
return ``(hidden_states, present)``; a skipped one returns a placeholder ``present`` of the same
one-number-per-token shape.

KV-cache note: the Hugging Face ``DynamicCache`` keeps one entry per layer index, and the
model reads the cached length (positions, mask sizes) from layer 0. So a skipped block still
appends a placeholder of shape ``(batch, 1, new_tokens, 1)`` to its own cache entry: every
layer's cached length stays right, whichever blocks are skipped (block 0 included), at a cost of
one number per token instead of ``2 * heads * head_dim``. A mask must stay fixed for a whole
generation (the cache of a skipped block holds no keys). Caches that preallocate their
buffers (``StaticCache``) cannot take a placeholder, so skipping a block is refused there.
"""

from __future__ import annotations

import inspect
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
        mask.set_active([1, 3, 5])  # any non-empty subset
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
        tuple_cache = "layer_past" in inspect.signature(original).parameters

        def forward(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if self.active[index]:
                return original(hidden_states, *args, **kwargs)
            if tuple_cache:
                return hidden_states, _tuple_cache_placeholder(hidden_states, kwargs)
            _keep_cache_length(self.layers[index], index, hidden_states, kwargs)
            # transformers >= 5 blocks return the tensor; older ones a tuple whose first item it is.
            return hidden_states if _returns_tensor(original) else (hidden_states,)

        return forward

    def set_active(self, indices: Iterable[int]) -> None:
        chosen = set(indices)
        bad = sorted(i for i in chosen if not 0 <= i < len(self.layers))
        if bad:
            raise ValueError(f"block index {bad[0]} is out of range 0..{len(self.layers) - 1}")
        if not chosen:
            raise ValueError("at least one block must stay active")
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


def _keep_cache_length(layer: nn.Module, index: int, hidden_states: torch.Tensor, kwargs: dict[str, Any]) -> None:
    """Append a one-number-per-token placeholder to a skipped block's KV-cache entry."""
    # The keyword changed across transformers versions: cache (5.24+), past_key_values, past_key_value.
    cache = next((kwargs[k] for k in ("cache", "past_key_values", "past_key_value") if kwargs.get(k) is not None), None)
    if cache is None or not hasattr(cache, "update"):
        return
    from transformers.cache_utils import DynamicCache

    if not isinstance(cache, DynamicCache):
        raise ValueError(
            f"block {index} is skipped but the KV cache is a {type(cache).__name__}, whose preallocated "
            "buffers cannot hold a placeholder; use a DynamicCache (the default) or keep every block active"
        )
    layer_idx = getattr(getattr(layer, "self_attn", None), "layer_idx", index)
    batch, new_tokens = hidden_states.shape[0], hidden_states.shape[1]
    placeholder = hidden_states.new_zeros(batch, 1, new_tokens, 1)
    cache.update(placeholder, placeholder, layer_idx)


def _tuple_cache_placeholder(hidden_states: torch.Tensor, kwargs: dict[str, Any]) -> Any:
    """A skipped block's ``present`` for OLMo-style blocks (original Molmo's remote code): they
    take ``layer_past=(keys, values)`` and return ``(hidden_states, present)``, and the model
    reads the cached length from block 0's keys, so the placeholder grows by one number per token."""
    if not kwargs.get("use_cache"):
        return None
    past = kwargs.get("layer_past")
    new = hidden_states.new_zeros(hidden_states.shape[0], 1, hidden_states.shape[1], 1)
    keys = new if past is None else torch.cat([past[0], new], dim=-2)
    return keys, keys


def _returns_tensor(forward: Any) -> bool:
    annotation = getattr(forward, "__annotations__", {}).get("return")
    return annotation is None or "tuple" not in str(annotation).lower()
