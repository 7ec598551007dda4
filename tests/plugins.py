"""Plugin workloads used by the tests (loaded as ``tests/plugins.py:Class``, like a user's)."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from knobscope import Metric, StageTimer, Workload


class MatmulWorkload(Workload):
    """Real work: multiply two n x n matrices ``reps`` times (stage ``matmul``), then reduce."""

    knobs = ("n", "reps")
    metrics = {"checksum": Metric(higher_is_better=True)}

    def __init__(self, num_samples: int = 3, fail_on_n: int | None = None) -> None:
        self.num = num_samples
        self.fail_on_n = fail_on_n
        self.n, self.reps = 32, 1

    def setup(self, ctx: Any) -> None:
        self.rng = np.random.default_rng(ctx.seed)

    def samples(self) -> list[int]:
        return list(range(self.num))

    def apply(self, config: Mapping[str, Any]) -> None:
        if config.get("n") == self.fail_on_n:
            raise RuntimeError(f"CUDA out of memory (simulated for n={self.fail_on_n})")
        self.n, self.reps = int(config.get("n", 32)), int(config.get("reps", 1))

    def run(self, sample: int, timer: StageTimer) -> dict[str, float]:
        a = self.rng.standard_normal((self.n, self.n))
        with timer.stage("matmul"):
            for _ in range(self.reps):
                a = a @ a.T / self.n
        with timer.stage("reduce"):
            checksum = float(np.abs(a).sum())
        return {"checksum": checksum, "pid": os.getpid()}


class KnownStages(Workload):
    """Stages of known length (sleep is the ground truth here): stage a sleeps knob ``a_sleep``
    milliseconds, then stage b ``b_sleep``, then 1 ms untimed."""

    knobs = ("a_sleep", "b_sleep")

    def __init__(self, num_samples: int = 5) -> None:
        self.num = num_samples

    def samples(self) -> list[int]:
        return list(range(self.num))

    def apply(self, config: Mapping[str, Any]) -> None:
        self.a, self.b = config["a_sleep"] / 1e3, config["b_sleep"] / 1e3

    def run(self, sample: int, timer: StageTimer) -> dict[str, float]:
        with timer.stage("a"):
            time.sleep(self.a)
        with timer.stage("b"):
            time.sleep(self.b)
        time.sleep(0.001)
        return {}


class KnownQualityWorkload(Workload):
    """Quality is a known function of knobs a, b, c; cost is real work that adds up over the knobs.

    ``form="separable"``: quality = log(a) + sqrt(b) + c / 4 (no knob changes another's effect).
    ``form="interaction"``: quality = log(a) * sqrt(b) + c / 4 (the effect of b depends on a).
    Cost: 20 (a + b + c) small matrix products, timed in stage ``work``; the work is additive in the
    knobs, and ``matmuls`` reports it exactly. Measured latency follows it only up to machine
    noise and clock changes under sustained load, which can show as small real interactions.
    """

    knobs = ("a", "b", "c")
    metrics = {
        "quality": Metric(higher_is_better=True, unit="score", description="known function of a, b, c"),
        "matmuls": Metric(higher_is_better=False, unit="products", description="matrix products done: 20 (a + b + c)"),
    }

    def __init__(self, form: str = "separable", num_samples: int = 2) -> None:
        if form not in ("separable", "interaction"):
            raise ValueError(f"form {form!r}: use separable or interaction")
        self.form, self.num = form, num_samples
        self.m = np.random.default_rng(0).standard_normal((48, 48))

    def samples(self) -> list[int]:
        return list(range(self.num))

    def apply(self, config: Mapping[str, Any]) -> None:
        self.a, self.b, self.c = (float(config[k]) for k in ("a", "b", "c"))

    def run(self, sample: int, timer: StageTimer) -> dict[str, float]:
        x = self.m
        with timer.stage("work"):
            matmuls = int(self.a + self.b + self.c) * 20
            for _ in range(matmuls):
                x = np.tanh(x @ self.m)
        if self.form == "separable":
            quality = np.log(self.a) + np.sqrt(self.b) + self.c / 4
        else:
            quality = np.log(self.a) * np.sqrt(self.b) + self.c / 4
        return {"quality": float(quality), "matmuls": float(matmuls)}


class NoisyKnown(Workload):
    """Known true values plus seeded noise, per sample: the ground truth for interval coverage.

    ``cost = a + b + interaction * (a - 2) * (b - 2)`` (a pure interaction on a grid centred at
    2) and ``quality = a - b / 2``, each plus Gaussian noise
    of standard deviation ``noise`` (cost) and ``quality_noise``, drawn from a generator seeded
    by (seed, invocation, a, b, sample, how often that sample ran), so a rerun draws the same
    numbers while every further measurement of a configuration (another pass, a later
    ``refine-measurements``: the invocation is counted in the run directory) draws new noise, as
    a real measurement would. No real work: these metrics are not timings, so the analysis can
    be checked against the truth exactly.
    """

    knobs = ("a", "b")
    metrics = {
        "cost": Metric(higher_is_better=False, unit="units", description="a + b plus noise"),
        "quality": Metric(higher_is_better=True, unit="units", description="a - b/2 plus noise"),
    }

    def __init__(self, num_samples: int = 10, noise: float = 1.0, quality_noise: float = 0.0,
                 interaction: float = 0.0, seed: int = 0) -> None:  # fmt: skip
        self.num, self.noise, self.quality_noise = num_samples, noise, quality_noise
        self.interaction, self.seed = interaction, seed
        self.calls: dict[tuple[float, float, int], int] = {}
        self.invocation = 0

    def setup(self, ctx: Any) -> None:
        marker = ctx.run_dir / ".noisy_known_invocations"
        marker.parent.mkdir(parents=True, exist_ok=True)  # setup runs before the sweep creates it
        self.invocation = int(marker.read_text()) if marker.exists() else 0
        marker.write_text(str(self.invocation + 1))

    def samples(self) -> list[int]:
        return list(range(self.num))

    def apply(self, config: Mapping[str, Any]) -> None:
        self.a, self.b = float(config["a"]), float(config["b"])

    @staticmethod
    def truth(a: float, b: float, interaction: float = 0.0) -> tuple[float, float]:
        return a + b + interaction * (a - 2) * (b - 2), a - b / 2

    def run(self, sample: int, timer: StageTimer) -> dict[str, float]:
        key = (self.a, self.b, sample)
        n = self.calls[key] = self.calls.get(key, -1) + 1
        rng = np.random.default_rng([self.seed, self.invocation, int(self.a * 1000), int(self.b * 1000), sample, n])
        cost, quality = self.truth(self.a, self.b, self.interaction)
        with timer.stage("work"):
            pass
        return {"cost": cost + rng.normal(0, self.noise), "quality": quality + rng.normal(0, self.quality_noise)}


class BusySpell(Workload):
    """The same work for every configuration (a 2 ms sleep), but calls ``spell_start`` up to
    ``spell_start + spell_calls`` of this process take 20 ms more: a busy spell of the machine
    of known length, the ground truth that no configuration is faster than another."""

    knobs = ("x",)
    metrics = {"constant": Metric(higher_is_better=True, description="always 1")}

    def __init__(self, num_samples: int = 4, spell_start: int = 12, spell_calls: int = 12) -> None:
        self.num, self.start, self.length = num_samples, spell_start, spell_calls
        self.calls = 0

    def samples(self) -> list[int]:
        return list(range(self.num))

    def apply(self, config: Mapping[str, Any]) -> None:
        pass

    def run(self, sample: int, timer: StageTimer) -> dict[str, float]:
        busy = self.start <= self.calls < self.start + self.length
        self.calls += 1
        with timer.stage("work"):
            time.sleep(0.022 if busy else 0.002)
        return {"constant": 1.0}


class HostAndDevice(Workload):
    """Two stages of known kind: ``compute`` multiplies torch matrices (the time is in PyTorch
    operators), ``host`` sleeps in Python between two tiny operators (a stage that waits on the
    host). ``host_wait`` sets how long (milliseconds)."""

    knobs = ("host_wait",)
    metrics = {"checksum": Metric(higher_is_better=True)}

    def __init__(self, num_samples: int = 2, n: int = 192) -> None:
        import torch

        self.num = num_samples
        self.a = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
        self.host_s = 0.01

    def samples(self) -> list[int]:
        return list(range(self.num))

    def apply(self, config: Mapping[str, Any]) -> None:
        self.host_s = float(config["host_wait"]) / 1e3

    def run(self, sample: int, timer: StageTimer) -> dict[str, float]:
        with timer.stage("compute"):
            b = self.a
            for _ in range(20):
                b = (b @ self.a).tanh()
        with timer.stage("host"):
            c = b.sum()
            time.sleep(self.host_s)
            c = c + 1
        return {"checksum": float(c)}
