"""FLOP counting with ``torch.utils.flop_counter``, completed for two ops it counts as zero.

* CPU attention: ``FlopCounterMode`` knows the CUDA kernels of
  ``scaled_dot_product_attention`` (flash, memory-efficient, cuDNN) but not the CPU one. The
  same formula (``sdpa_flop_count``: ``QK^T`` and ``PV``, causal masking not discounted, as on
  CUDA) is registered for ``aten._scaled_dot_product_flash_attention_for_cpu``.
* Grouped matmul: ``transformers`` 5 runs MoE experts with ``torch._grouped_mm`` (one matmul
  per expert over the tokens routed to it). Every row of the left operand meets one group's
  ``K x N`` matrix, so the count is ``2 x rows x K x N``; it grows with top-k as it should.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch.utils import flop_counter

__all__ = ["flop_counter_mode"]

_registered = False


def _cpu_sdpa_flops(query, key, value, *args, out_val=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
    return flop_counter.sdpa_flop_count(query.shape, key.shape, value.shape)


def _grouped_mm_flops(mat_a, mat_b, *args, out_val=None, **kwargs) -> int:  # type: ignore[no-untyped-def]
    rows = mat_a.numel() // mat_a.shape[-1]
    return 2 * rows * mat_a.shape[-1] * mat_b.shape[-1]


def _register_missing() -> None:
    global _registered
    if _registered:
        return
    for name, formula in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_sdpa_flops),
                          ("_grouped_mm", _grouped_mm_flops), ("_scaled_grouped_mm", _grouped_mm_flops)):  # fmt: skip
        op = getattr(torch.ops.aten, name, None)
        if op is not None and op not in flop_counter.flop_registry:
            flop_counter.register_flop_formula(op, get_raw=True)(formula)
    _registered = True


@contextlib.contextmanager
def flop_counter_mode() -> Iterator[flop_counter.FlopCounterMode]:
    """A ``FlopCounterMode`` (no display) that also counts CPU attention and grouped matmuls."""
    _register_missing()
    with flop_counter.FlopCounterMode(display=False) as counter:
        yield counter
