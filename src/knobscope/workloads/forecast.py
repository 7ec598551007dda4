"""``forecast``: speculative decoding of a time-series forecaster with a stochastic draft (seed 003).

Each sample is one window of the series' test split: ``context_patches`` patches of
``patch_len`` steps in, ``horizon_patches`` patches out. Per sample, side by side:

- ``target_only``: the target's own autoregressive rollout (its means: the point forecast);
- speculative decoding with the configuration's knobs (:mod:`knobscope.models.speculative_forecast`),
  timed in three stages, ``draft``, ``verify`` and ``accept``.

Knobs: ``spec_k`` (draft length), ``spec_sigma`` (the target's assumed standard deviation, in the
window's normalised units), ``spec_accept_bias`` (seed 003's leniency, >= 1) and ``spec_rule``
(``lenient``, seed 003's rule; ``exact``, distribution-preserving).

Per-sample metrics: ``acceptance_rate``, ``accepted_per_round``, ``rounds``, ``mse``/``mae`` of the
speculative forecast and ``target_mse``/``target_mae`` of the target-only one on the same window,
``mse_ratio`` (speculative / target-only), ``naive_mse`` (seasonal naive), ``speculative_ms``
(draft + verify + accept), ``speedup`` (target-only time / speculative time, measured in the same
sample) and ``predicted_speedup`` (the capped-geometric law from this sample's acceptance and its
measured per-call costs). Errors are in the units of the series z-scored with the training split's
mean and standard deviation (as ETT results are reported).

Models: a target (a decoder-only patch transformer, Timer-XL's shape at small scale) and a
stochastic draft a quarter of its width and depth, distilled from it, trained here on the
series' training split on first use and cached (:mod:`knobscope.models.forecaster`); or the
user's own pair (``models: file.py:function``, returning ``(target, draft)`` modules).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from knobscope.errors import WorkloadError
from knobscope.measure import StageTimer
from knobscope.space import Space
from knobscope.workloads.base import Metric, Workload, WorkloadContext, parse_args

__all__ = ["ForecastWorkload", "ForecastArgs", "DEFAULT_KNOBS"]

DEFAULT_KNOBS = {"spec_k": 3, "spec_sigma": 0.25, "spec_accept_bias": 1.0, "spec_rule": "lenient"}


class ForecastArgs(BaseModel):
    """Arguments of the ``forecast`` workload (the spec's ``workload.args``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    series: str = Field("builtin:seattle_weather", description="builtin:seattle_weather (daily, vega_datasets) or an ETT-format CSV (`date` + numeric columns)")
    column: str | None = Field(None, description="the column forecast (default: the built-in's, else `OT`, else the last numeric column)")
    patch_len: int = Field(7, ge=1, description="steps per patch (one token of the forecaster)")
    context_patches: int = Field(8, ge=1, description="patches of context per window")
    horizon_patches: int = Field(8, ge=1, description="patches forecast per window")
    windows: int = Field(24, ge=1, description="samples: windows evenly spaced over the test split")
    season: int | None = Field(None, ge=1, description="period of the seasonal-naive baseline (default: patch_len)")
    draft: Literal["trained", "target"] = Field("trained", description="trained: the distilled stochastic draft; target: the target itself with variance spec_sigma^2 (a check: acceptance 1)")
    models: str | None = Field(None, description="your own pair: 'file.py:function' returning (target, draft) torch modules")
    d_model: int = Field(256, ge=4, description="target width")
    layers: int = Field(4, ge=1, description="target transformer blocks")
    heads: int = Field(4, ge=1, description="target attention heads")
    d_ff: int = Field(1024, ge=4, description="target feed-forward width")
    draft_scale: float = Field(0.25, gt=0, le=1, description="draft width and depth as a share of the target's")
    train_steps: int = Field(300, ge=1, description="target training steps (batches of batch_size windows; more overfits the 1,022 training days)")
    draft_steps: int = Field(2000, ge=1, description="draft distillation steps")
    batch_size: int = Field(32, ge=1, description="training windows per step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (one-cycle)")
    teacher_noise: float = Field(0.0, ge=0, description="std of noise added to the target's outputs when distilling the draft")
    train_seed: int = Field(0, description="seed of training (the cache key includes it)")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU (default: torch's)")


class ForecastWorkload(Workload):
    """Target-only against speculative rollouts of a patch forecaster, per test window."""

    knobs = ("spec_k", "spec_sigma", "spec_accept_bias", "spec_rule")
    path_args = ("series", "models")
    metrics = {
        "acceptance_rate": Metric(True, "", "accepted draft patches / proposed", proportion=False, range=(0.0, 1.0)),
        "accepted_per_round": Metric(True, "patches", "draft patches accepted per verification round"),
        "rounds": Metric(False, "rounds", "verification rounds to forecast the horizon"),
        "mse": Metric(False, "", "MSE of the speculative forecast (z-scored units)", proportion=False),
        "mae": Metric(False, "", "MAE of the speculative forecast (z-scored units)", proportion=False),
        "target_mse": Metric(False, "", "MSE of the target-only forecast on the same window", proportion=False),
        "target_mae": Metric(False, "", "MAE of the target-only forecast on the same window", proportion=False),
        "mse_ratio": Metric(False, "", "speculative MSE / target-only MSE", proportion=False),
        "naive_mse": Metric(False, "", "MSE of the seasonal-naive forecast on the same window", proportion=False),
        "speedup": Metric(True, "x", "target-only time / speculative time, same sample"),
        "predicted_speedup": Metric(True, "x", "capped-geometric law from this sample's acceptance and per-call costs"),
        "residual_fallbacks": Metric(False, "draws", "exact rule: residual samples that fell back to a target sample"),
    }

    def __init__(self, **args: Any) -> None:
        self.args = parse_args(ForecastArgs, args, "forecast")
        from knobscope.datasets import load_series

        self.values, self.column = load_series(self.args.series, self.args.column)
        self._split()
        self.config: dict[str, Any] = dict(DEFAULT_KNOBS)

    def _split(self) -> None:
        import numpy as np

        from knobscope.models.forecaster import split_series

        a = self.args
        train, _, test = split_series(self.values)
        self.mean, self.std = float(train.mean()), float(train.std()) or 1.0
        self.train = (train - self.mean) / self.std
        self.test = (test - self.mean) / self.std
        self.context_steps, self.horizon_steps = a.context_patches * a.patch_len, a.horizon_patches * a.patch_len
        need = self.context_steps + self.horizon_steps
        if need > len(self.test):
            raise WorkloadError(
                f"a window needs {need} steps ({a.context_patches} context + {a.horizon_patches} horizon patches of "
                f"{a.patch_len}), more than the {len(self.test)} steps of the test split (the last 20% of {self.args.series!r})"
            )
        if need + 1 > len(train):
            raise WorkloadError(f"the training split of {self.args.series!r} ({len(train)} steps) is shorter than one window ({need})")
        self.starts = sorted({int(s) for s in np.linspace(0, len(self.test) - need, self.args.windows)})

    # ---------------------------------------------------------------- checks and setup
    def check_values(self, space: Space) -> None:
        for name in space.names:
            for v in space.knob(name).values:
                if name == "spec_k" and not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 8):
                    raise WorkloadError(f"spec_k value {v!r} is not possible: it must be an integer in 1..8 (draft patches per round)")
                if name == "spec_sigma" and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
                    raise WorkloadError(f"spec_sigma value {v!r} is not possible: it must be a number > 0")
                if name == "spec_accept_bias" and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1):
                    raise WorkloadError(f"spec_accept_bias value {v!r} is not possible: it must be a number >= 1 (1: no leniency)")
                if name == "spec_rule" and v not in ("lenient", "exact"):
                    raise WorkloadError(f"spec_rule value {v!r} is not possible: use 'lenient' (seed 003's rule) or 'exact'")

    def setup(self, ctx: WorkloadContext) -> None:
        import torch

        if self.args.threads is not None:
            torch.set_num_threads(self.args.threads)
        self.device, self.seed, self.log = ctx.device, ctx.seed, ctx.log
        if self.args.models:
            self.target, self.draft = self._user_models()
            self.report: dict[str, Any] = {"models": self.args.models}
        else:
            from knobscope.models.forecaster import ForecasterConfig, cached_pair

            a = self.args
            cfg = ForecasterConfig(patch_len=a.patch_len, context_patches=a.context_patches, horizon_patches=a.horizon_patches,
                                   d_model=a.d_model, layers=a.layers, heads=a.heads, d_ff=a.d_ff, draft_scale=a.draft_scale,
                                   train_steps=a.train_steps, draft_steps=a.draft_steps, batch_size=a.batch_size, lr=a.lr,
                                   teacher_noise=a.teacher_noise, seed=a.train_seed)  # fmt: skip
            pair = cached_pair(self.train, cfg, log=self._progress)
            self.target, self.draft, self.report = pair.target, pair.draft, pair.report
        self.target.to(self.device).eval()
        self.draft.to(self.device).eval()
        self._baseline: dict[int, dict[str, float]] = {}
        self._windows = {i: self._window(s) for i, s in enumerate(self.starts)}

    def _progress(self, text: str) -> None:
        """Training takes minutes on first use: say so on the terminal as well as in the run's log."""
        import sys

        self.log.info(text)
        print(f"forecast: {text}", file=sys.stderr, flush=True)

    def _user_models(self) -> tuple[Any, Any]:
        from knobscope.workloads import load_callable

        factory = load_callable(self.args.models, "models")
        out = factory(patch_len=self.args.patch_len)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise WorkloadError(f"models {self.args.models!r} must return (target, draft) modules, got {type(out).__name__}")
        return out

    def _window(self, start: int) -> dict[str, Any]:
        import torch

        from knobscope.models.forecaster import normalise_window

        raw = torch.tensor(self.test[start : start + self.context_steps + self.horizon_steps], dtype=torch.float32)[None]
        normed, mean, std = normalise_window(raw, self.context_steps)
        context = normed[:, : self.context_steps].reshape(1, self.args.context_patches, self.args.patch_len)
        return {"context": context.to(self.device), "truth": raw[0, self.context_steps :], "mean": mean, "std": std,
                "history": self.test[start : start + self.context_steps]}  # fmt: skip

    def samples(self) -> Sequence[Mapping[str, Any]]:
        return [{"id": f"window{i}", "window": i, "start": s} for i, s in enumerate(self.starts)]

    def apply(self, config: Mapping[str, Any]) -> None:
        self.config = {**DEFAULT_KNOBS, **config}

    # ---------------------------------------------------------------- one window
    def _forecast(self, w: Mapping[str, Any], patches: Any) -> Any:
        return patches.reshape(-1).cpu() * w["std"][0] + w["mean"][0]

    def run(self, sample: Mapping[str, Any], timer: StageTimer) -> dict[str, Any]:
        import numpy as np
        import torch

        from knobscope.models.forecaster import seasonal_naive
        from knobscope.models.speculative_forecast import IdenticalDraft, predicted_speedup, speculative_rollout, target_rollout

        w = self._windows[sample["window"]]
        c = self.config
        k, sigma = int(c["spec_k"]), float(c["spec_sigma"])
        draft = IdenticalDraft(self.target, sigma) if self.args.draft == "target" else self.draft
        # Seeded per sample and configuration: repeats of a sample draw the same numbers.
        noise = torch.Generator(device=self.device).manual_seed(self.seed * 7919 + sample["window"])
        accept = torch.Generator().manual_seed(self.seed * 7919 + sample["window"] + 1)
        horizon = self.args.horizon_patches
        with torch.inference_mode():
            point = target_rollout(self.target, w["context"], horizon, stage=timer.stage)
            patches, stats = speculative_rollout(self.target, draft, w["context"], horizon, k=k, sigma=sigma,
                                                 bias=float(c["spec_accept_bias"]), rule=c["spec_rule"], noise=noise,
                                                 accept=accept, stage=timer.stage)  # fmt: skip
        truth = w["truth"]
        spec, base = self._forecast(w, patches), self._forecast(w, point)
        mse, target_mse = float(((spec - truth) ** 2).mean()), float(((base - truth) ** 2).mean())
        naive = seasonal_naive(w["history"], self.horizon_steps, self.args.season or self.args.patch_len)
        target_ms = timer.stage_ms("target_only")
        spec_ms = sum(timer.stage_ms(s) for s in ("draft", "verify", "accept"))
        return {
            "acceptance_rate": stats.acceptance_rate,
            "accepted_per_round": stats.accepted_per_round,
            "rounds": stats.rounds,
            "mse": mse,
            "mae": float((spec - truth).abs().mean()),
            "target_mse": target_mse,
            "target_mae": float((base - truth).abs().mean()),
            "mse_ratio": mse / target_mse if target_mse > 0 else float("nan"),
            "naive_mse": float(np.mean((naive - truth.numpy()) ** 2)),
            "speculative_ms": spec_ms,
            "speedup": target_ms / spec_ms if spec_ms > 0 else float("nan"),
            "predicted_speedup": predicted_speedup(
                stats.acceptance_rate, k, timer.stage_ms("draft") / max(stats.draft_calls, 1),
                timer.stage_ms("verify") / max(stats.verify_calls, 1), target_ms / horizon,
            ),
            "residual_fallbacks": stats.residual_fallbacks,
        }

    # ---------------------------------------------------------------- per configuration
    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("target_parameters", "draft_parameters", "target_train_s", "draft_train_s"):
            if isinstance(self.report.get(key), (int, float)) and not math.isnan(float(self.report[key])):
                out[key] = float(self.report[key])
        return out
