"""Plain Python values from numpy and pandas ones, written once (tables hold numpy scalars;
JSON, configs and messages want ``int``, ``float``, ``str``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["plain", "plain_config", "plain_key"]


def plain(value: Any, *, missing: bool = False) -> Any:
    """A numpy scalar as the Python scalar it holds; with ``missing``, NaN and infinities as None."""
    value = value.item() if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)) else value
    if missing and isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plain_config(row: Mapping[str, Any], knobs: Sequence[str]) -> dict[str, Any]:
    """``{knob: value}`` of one table row, in knob order."""
    return {k: plain(row[k]) for k in knobs}


def plain_key(row: Mapping[str, Any], knobs: Sequence[str]) -> tuple:
    """A row's knob values as a hashable tuple (its configuration's identity in a table)."""
    return tuple(plain(row[k]) for k in knobs)
