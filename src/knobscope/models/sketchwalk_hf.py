"""Run SketchWalk inside a Hugging Face model through transformers' attention interface.

No model code is edited: :func:`install_sketchwalk` registers an attention function named
``sketchwalk`` with ``AttentionInterface`` (and the SDPA mask builder under the same name with
``AttentionMaskInterface``) and switches the model to it. Every attention module then calls
it with its ``layer_idx``; the function keeps one :class:`SketchWalk` per model, resets its walk
state when a forward pass starts again from a lower layer, runs layers below ``skip_layers``
dense, and layers from there on block-sparse with the walk state passed from layer to layer.

Scope: prefill without a cached prefix and without padding (the seed's setting: perplexity
and long-context prefill). A call with a cached prefix (decode steps) or a padding mask runs
dense SDPA, and :attr:`SketchWalkRunner.dense_calls` counts those calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from knobscope.models.sketchwalk_attn import SketchWalk, SketchWalkConfig

__all__ = ["install_sketchwalk", "uninstall_sketchwalk", "SketchWalkRunner", "capture_qkv"]

NAME = "sketchwalk"


@dataclass
class SketchWalkRunner:
    """The state one model's attention calls share."""

    walk: SketchWalk
    previous_implementation: str
    last_layer: int = -1
    sparse_calls: int = 0
    dense_calls: int = 0
    selections: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    keep_selections: bool = False


def _sketchwalk_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs: Any) -> tuple[torch.Tensor, None]:  # fmt: skip
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    runner: SketchWalkRunner | None = getattr(module, "_knobscope_sketchwalk", None)
    layer = int(getattr(module, "layer_idx", 0))
    n = query.shape[2]
    # Without padding the last query row of a causal mask sees every key; padding hides some
    # keys from every row. Checking that one row is O(n), not O(n^2), per layer.
    last_row = attention_mask[..., -1, :] if attention_mask is not None else None
    padded = last_row is not None and not bool(last_row.all() if last_row.dtype == torch.bool else (last_row == 0).all())
    if runner is None or key.shape[2] != n or n < 2 or padded:
        if runner is not None:
            runner.dense_calls += 1
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    if layer <= runner.last_layer:
        runner.walk.reset()  # a new forward pass
    runner.last_layer = layer
    out = runner.walk.attend(layer, query, key, value, scale=scaling)
    if layer >= runner.walk.config.skip_layers:
        runner.sparse_calls += 1
        if runner.keep_selections and runner.walk.last_selection is not None:
            runner.selections[layer] = runner.walk.last_selection
    return out.transpose(1, 2).contiguous(), None


def install_sketchwalk(model: Any, config: SketchWalkConfig) -> SketchWalkRunner:
    """Switch ``model``'s attention to SketchWalk with ``config``; returns the shared runner."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    config.check()
    AttentionInterface.register(NAME, _sketchwalk_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    head_dim = getattr(model.config, "head_dim", None) or model.config.hidden_size // model.config.num_attention_heads
    previous = model.config._attn_implementation
    runner = SketchWalkRunner(SketchWalk(config, head_dim), previous)
    for module in model.modules():
        if hasattr(module, "layer_idx") and hasattr(module, "config"):
            module._knobscope_sketchwalk = runner
    model.set_attn_implementation(NAME)
    return runner


def uninstall_sketchwalk(model: Any, runner: SketchWalkRunner) -> None:
    """Put the model back on the attention it used before :func:`install_sketchwalk`."""
    for module in model.modules():
        if getattr(module, "_knobscope_sketchwalk", None) is runner:
            del module._knobscope_sketchwalk
    model.set_attn_implementation(runner.previous_implementation)


def capture_qkv(model: Any, input_ids: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run one forward pass and keep every layer's post-RoPE query, key and value.

    Returns ``{layer: (query, key, value)}`` with shapes (batch, heads, n, d) and
    (batch, kv_heads, n, d), as the attention function receives them.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    captured: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def capture(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        captured[int(getattr(module, "layer_idx", len(captured)))] = (query.clone(), key.clone(), value.clone())
        return sdpa_attention_forward(module, query, key, value, *args, **kwargs)

    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register("knobscope_capture", capture)
    AttentionMaskInterface.register("knobscope_capture", sdpa_mask)
    previous = model.config._attn_implementation
    model.set_attn_implementation("knobscope_capture")
    try:
        with torch.inference_mode():
            model(input_ids=input_ids, use_cache=False)
    finally:
        model.set_attn_implementation(previous)
    return captured
