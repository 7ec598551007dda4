"""FLOP counting (``knobscope.flops``): attention with grouped-query heads on every SDPA operator,
the CUDA ones included (their formulas are checked on CPU through the counter's registry)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from knobscope.flops import ATTENTION_OPS, attention_flops, flop_counter_mode

# SmolLM2's heads: 9 query heads share 3 key/value heads
Q, KV = (1, 9, 16, 64), (1, 3, 16, 64)
EXPECTED = 2 * 1 * 9 * 16 * 16 * (64 + 64)  # QK^T and PV over the 9 query heads


def test_grouped_query_attention_on_cpu_counts_as_the_repeated_heads() -> None:
    q, k, v = torch.randn(Q), torch.randn(KV), torch.randn(KV)
    with flop_counter_mode() as gqa:
        F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    with flop_counter_mode() as repeated:
        F.scaled_dot_product_attention(q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), is_causal=True)
    assert gqa.get_total_flops() == repeated.get_total_flops() == EXPECTED


@pytest.mark.parametrize("name", ATTENTION_OPS)
def test_every_sdpa_operator_takes_grouped_query_shapes(name: str) -> None:
    # torch 2.11's formula for the CUDA kernels raised "query/key/value shapes are incompatible" here
    op = getattr(torch.ops.aten, name, None)
    if op is None:
        pytest.skip(f"this torch has no aten.{name}")
    with flop_counter_mode() as counter:
        formula = counter.flop_registry[op]
    q, k, v = (torch.empty(s, device="meta") for s in (Q, KV, KV))
    assert formula(q, k, v, 0.0, True, out_val=None) == EXPECTED


def test_attention_shapes_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="attention shapes do not fit"):
        attention_flops((1, 9, 16, 64), (1, 4, 16, 64), (1, 4, 16, 64))  # 4 does not divide 9
    with pytest.raises(ValueError, match="attention shapes do not fit"):
        attention_flops((1, 9, 16, 64), (1, 3, 16, 32), (1, 3, 16, 64))
