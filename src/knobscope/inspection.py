"""``knobscope inspect MODEL``: what a model is made of and what knobscope can do with it.

The structure report covers seed 002's inspection tools in one place: parameter counts
(``quick_inspect_structure``), the decoder blocks the block mask acts on, the MoE layers and
where their top-k lives (``inspect_moe_layer``), and the stages knobscope can time. The
top-k check (``verify_moe_topk``) counts the experts each token actually used, per layer.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from knobscope.models.block_mask import find_decoder_layers
from knobscope.models.moe import count_active_experts, find_moe_layers

__all__ = ["describe_model", "verify_top_k"]


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _path_of(model: nn.Module, target: nn.Module) -> str:
    return next((name for name, m in model.named_modules() if m is target), "?")


def describe_model(model: nn.Module, source: str) -> dict[str, Any]:
    """A JSON-ready description of ``model``'s structure."""
    from knobscope.workloads.lm import ATTENTION_NAMES, FFN_NAMES

    layers = find_decoder_layers(model)
    first = layers[0]
    attention = next((n for n in ATTENTION_NAMES if isinstance(getattr(first, n, None), nn.Module)), None)
    ffn = next((n for n in FFN_NAMES if isinstance(getattr(first, n, None), nn.Module)), None)
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    config = getattr(model, "config", None)
    moe = find_moe_layers(model)
    stages = ["tokenize", "prefill", "decode", "total", "other"]
    if attention or ffn:
        stages += [f"{phase}_{part}" for phase in ("prefill", "decode") for part, name in (("attention", attention), ("ffn", ffn)) if name]
    return {
        "source": source,
        "class": type(model).__name__,
        "dtype": str(next(model.parameters()).dtype),
        "parameters": {
            "total": _params(model),
            "embedding": _params(embed) if embed is not None else None,
            "lm_head_tied": head is not None and embed is not None and head.weight is embed.weight,
            "blocks": _params(layers),
            "per_block": _params(first),
        },
        "config": {k: getattr(config, k, None) for k in ("hidden_size", "num_attention_heads", "num_key_value_heads",
                   "intermediate_size", "vocab_size", "max_position_embeddings")},  # fmt: skip
        "blocks": {
            "path": _path_of(model, layers),
            "count": len(layers),
            "class": type(first).__name__,
            "attention": attention,
            "ffn": ffn,
            "knobs": ["num_active_blocks", "block_selection"],
        },
        "moe": {
            "layers": len(moe),
            "experts": sorted({layer.num_experts for layer in moe}),
            "default_top_k": sorted({layer.default_top_k for layer in moe}),
            "top_k_set_on": sorted({f"{type(obj).__name__}.{attr}" for layer in moe for obj, attr in layer.targets}),
            "first_layers": [layer.name for layer in moe[:3]],
            "expert_parameters_per_layer": _params(moe[0].experts) if moe and moe[0].experts is not None else None,
        },
        "stages": stages,
    }


def verify_top_k(model: nn.Module, input_ids: Any, k: int) -> dict[str, Any]:
    """Set top-k to ``k``, run one forward pass, and count the experts each token used per layer."""
    from knobscope.models.moe import MoETopK

    topk = MoETopK(model)
    if not topk:
        raise ValueError(f"{type(model).__name__} has no MoE layers, so there is no top-k to verify")
    topk.set(k)
    try:
        counts = count_active_experts(topk.layers, lambda: model(input_ids=input_ids, use_cache=False))
    finally:
        topk.restore()
    layers = [{"layer": c.name, "tokens": c.tokens, "min": c.min, "mean": c.mean, "max": c.max, "seen_at": c.source,
               "ok": c.tokens > 0 and c.min == c.max == k} for c in counts]  # fmt: skip
    return {"top_k": k, "layers": layers, "ok": all(layer["ok"] for layer in layers)}
