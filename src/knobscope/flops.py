"""FLOP counting with ``torch.utils.flop_counter``, completed where it counts zero or fails.

* Attention: ``FlopCounterMode`` knows the CUDA kernels of ``scaled_dot_product_attention``
  (flash, memory-efficient, cuDNN) but not the CPU one, and before torch 2.12 its formula
  refused grouped-query shapes (fewer key/value heads than query heads, as transformers passes
  them with ``enable_gqa=True``): every trial of a GQA model failed with ``sdpa_flop_count:
  query/key/value shapes are incompatible`` on an H100 under torch 2.11. knobscope counts all
  four operators with its own formula (``QK^T`` and ``PV`` over the query heads, each key/value
  head shared by its group; causal masking not discounted, as torch's), for every torch version.
* Grouped matmul: ``transformers`` 5 runs MoE experts with ``torch._grouped_mm`` (one matmul
  per expert over the tokens routed to it). Every row of the left operand meets one group's
  ``K x N`` matrix, so the count is ``2 x rows x K x N``; it grows with top-k as it should.

The formulas go to ``FlopCounterMode(custom_mapping=...)``, so torch's own registry is left alone.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils import flop_counter

__all__ = ["attention_flops", "flop_counter_mode"]

ATTENTION_OPS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention")  # fmt: skip


def attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                    **kwargs: Any) -> int:  # fmt: skip
    """FLOPs of ``softmax(Q K^T) V`` for ``(batch, heads, seq, dim)`` shapes, grouped-query
    attention included (key/value heads divide the query heads)."""
    b, h_q, s_q, d_q = query_shape
    b_k, h_kv, s_k, d_k = key_shape
    b_v, h_v, s_v, d_v = value_shape
    if not (b == b_k == b_v and h_kv == h_v and d_q == d_k and s_k == s_v) or h_kv == 0 or h_q % h_kv:
        raise ValueError(f"attention shapes do not fit: query {tuple(query_shape)}, key {tuple(key_shape)}, "
                         f"value {tuple(value_shape)}")  # fmt: skip
    return 2 * b * h_q * s_q * s_k * (d_q + d_v)


def _grouped_mm_flops(a_shape: Any, b_shape: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return 2 * math.prod(a_shape[:-1]) * a_shape[-1] * b_shape[-1]


def _formulas() -> dict[Any, Callable[..., int]]:
    named = {**dict.fromkeys(ATTENTION_OPS, attention_flops), "_grouped_mm": _grouped_mm_flops,
             "_scaled_grouped_mm": _grouped_mm_flops}  # fmt: skip
    return {op: formula for name, formula in named.items() if (op := getattr(torch.ops.aten, name, None)) is not None}


@contextlib.contextmanager
def flop_counter_mode() -> Iterator[flop_counter.FlopCounterMode]:
    """A ``FlopCounterMode`` (no display) that also counts CPU and grouped-query attention and
    grouped matmuls."""
    with flop_counter.FlopCounterMode(display=False, custom_mapping=_formulas()) as counter:
        yield counter
