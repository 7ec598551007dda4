"""Shared by the timing benchmarks: the cost of one timed event, measured in isolation."""

from __future__ import annotations

import time

import torch

from knobscope.measure import StageTimer


def per_event_us(timer: StageTimer, n: int = 20000) -> float:
    """Microseconds one timed event (a hook's enter + exit) adds, through a hooked no-op module
    called ``n`` times inside a sample against the same module unhooked. Detaches every hook."""
    probe = torch.nn.Identity()
    timer.attach(probe, "probe")
    x = torch.zeros(1)
    with timer.sample():
        start = time.perf_counter()
        for _ in range(n):
            probe(x)
        hooked = (time.perf_counter() - start) / n
    timer.detach_all()
    start = time.perf_counter()
    for _ in range(n):
        probe(x)
    return (hooked - (time.perf_counter() - start) / n) * 1e6
