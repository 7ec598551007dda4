"""Patch-transformer forecasters for the ``forecast`` workload: a target, a stochastic draft
distilled from it, their training (seeded, cached), and the seasonal-naive baseline.

The target has Timer-XL's shape at small scale: a decoder-only transformer over patches of
``patch_len`` steps; each position's output is the next patch. The draft is the same
architecture scaled down (width and depth by ``draft_scale``) whose head predicts a mean and a
log-variance per step; it is distilled from the target with a Gaussian negative log-likelihood
(seed 003's stochastic draft), optionally with noise added to the teacher's outputs.

Both work on one series at a time in *instance-normalised* space: a window is normalised by
the mean and standard deviation of its context (as Timer-XL's ``use_norm``), on top of the
global z-scoring with the training split's statistics in which errors are reported.

A user's own pair plugs in through :class:`ForecasterPair`: any ``torch.nn.Module`` that maps
patches ``(B, N, P)`` to the next patch at every position ``(B, N, P)`` as target, and one that
returns ``(mean, variance)`` of that shape as draft.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ForecasterConfig", "ForecasterPair", "PatchTransformer", "train_pair", "cached_pair", "seasonal_naive",
           "split_series", "CACHE_DIR"]  # fmt: skip

CACHE_DIR = Path.home() / ".cache" / "knobscope" / "forecasters"
_VERSION = 1  # bump when training changes, so old caches are not reused


@dataclass(frozen=True)
class ForecasterConfig:
    """Architecture and training of a target/draft pair (everything the cache key covers)."""

    patch_len: int = 7
    context_patches: int = 8
    horizon_patches: int = 8
    d_model: int = 256
    layers: int = 4
    heads: int = 4
    d_ff: int = 1024
    draft_scale: float = 0.25
    train_steps: int = 300
    draft_steps: int = 2000
    batch_size: int = 32
    lr: float = 1e-3
    teacher_noise: float = 0.0
    seed: int = 0

    @property
    def max_patches(self) -> int:
        # a verification pass sees the context, the patches so far and up to 8 draft patches
        return self.context_patches + self.horizon_patches + 8

    def draft_shape(self) -> dict[str, int]:
        s = self.draft_scale
        heads = max(1, round(self.heads * s))
        d_model = max(heads * 4, int(round(self.d_model * s / heads)) * heads)
        return {"d_model": d_model, "layers": max(1, round(self.layers * s)), "heads": heads,
                "d_ff": max(8, round(self.d_ff * s))}  # fmt: skip


def _torch() -> Any:
    import torch

    return torch


def _module_class() -> Any:
    torch = _torch()
    nn = torch.nn

    class PatchTransformer(nn.Module):
        """Decoder-only transformer over patches: ``(B, N, P)`` -> next patch at every position,
        ``(B, N, P)`` (``stochastic``: a ``(mean, variance)`` pair)."""

        def __init__(self, patch_len: int, d_model: int, layers: int, heads: int, d_ff: int, max_patches: int,
                     stochastic: bool = False) -> None:  # fmt: skip
            super().__init__()
            self.patch_len, self.stochastic, self.max_patches = patch_len, stochastic, max_patches
            self.embed = nn.Linear(patch_len, d_model)
            self.position = nn.Embedding(max_patches, d_model)
            block = nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout=0.0, activation="gelu", batch_first=True,
                                               norm_first=True)  # fmt: skip
            self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, patch_len * (2 if stochastic else 1))
            # PyTorch's fused encoder-layer kernel (its inference fast path) needs an even number
            # of heads; without it, decoding takes the functional path below.
            self.fused = heads % 2 == 0

        def forward(self, patches: Any) -> Any:
            n = patches.shape[1]
            if n > self.max_patches:
                raise ValueError(f"{n} patches exceed the model's {self.max_patches} positions")
            h = self.embed(patches) + self.position.weight[:n]
            if self.fused or self.training or torch.is_grad_enabled():
                mask = nn.Transformer.generate_square_subsequent_mask(n, device=patches.device, dtype=h.dtype)
                h = self.blocks(h, mask=mask, is_causal=True)
            else:
                h = self._inference_blocks(h)
            out = self.head(self.norm(h))
            if not self.stochastic:
                return out
            mean, log_var = out.split(self.patch_len, dim=-1)
            return mean, torch.exp(log_var.clamp(-12.0, 8.0))

        def _inference_blocks(self, h: Any) -> Any:
            """The encoder blocks' computation (pre-norm, causal, GELU) as a dozen functional calls
            per block, for models the fused kernel cannot take (an odd head count, as the 1-head
            draft). At batch 1 a call is mostly per-module Python overhead: ``nn.TransformerEncoder``'s
            Python path takes 0.41 ms for the draft's block, this 0.21-0.24 ms, same result."""
            f = torch.nn.functional
            batch, n, width = h.shape
            for layer in self.blocks.layers:
                attn = layer.self_attn
                heads = attn.num_heads
                x = f.layer_norm(h, (width,), layer.norm1.weight, layer.norm1.bias, layer.norm1.eps)
                q, k, v = f.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(batch, n, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
                y = f.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(batch, n, width)
                h = h + f.linear(y, attn.out_proj.weight, attn.out_proj.bias)
                x = f.layer_norm(h, (width,), layer.norm2.weight, layer.norm2.bias, layer.norm2.eps)
                h = h + f.linear(f.gelu(f.linear(x, layer.linear1.weight, layer.linear1.bias)), layer.linear2.weight, layer.linear2.bias)
            return h

    return PatchTransformer


def PatchTransformer(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - a class made on first use (torch imported lazily)
    return _module_class()(*args, **kwargs)


@dataclass
class ForecasterPair:
    """A target and a draft, with what training reported.

    Attributes:
        target: ``(B, N, P)`` patches -> next-patch means ``(B, N, P)``.
        draft: ``(B, N, P)`` -> ``(mean, variance)``, each ``(B, N, P)``.
        report: training and evaluation facts (times, parameters, test errors).
    """

    target: Any
    draft: Any
    patch_len: int
    report: dict[str, Any] = field(default_factory=dict)


def split_series(values: np.ndarray, train: float = 0.7, val: float = 0.1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chronological train / validation / test split (ETT's 70/10/20 by default)."""
    n = len(values)
    a, b = int(n * train), int(n * (train + val))
    return values[:a], values[a:b], values[b:]


def _instance_norm(x: Any, context_steps: int) -> tuple[Any, Any, Any]:
    mean = x[:, :context_steps].mean(dim=1, keepdim=True)
    std = x[:, :context_steps].std(dim=1, keepdim=True, unbiased=False) + 1e-5
    return (x - mean) / std, mean, std


def _batches(series: np.ndarray, cfg: ForecasterConfig, rng: np.random.Generator) -> Callable[[], Any]:
    torch = _torch()
    length = (cfg.context_patches + cfg.horizon_patches) * cfg.patch_len
    if len(series) < length + 1:
        raise ValueError(f"the training split has {len(series)} steps; a training window needs {length}")
    data = torch.tensor(series, dtype=torch.float32)

    def draw() -> Any:
        starts = torch.from_numpy(rng.integers(0, len(series) - length + 1, size=cfg.batch_size))
        x = torch.stack([data[s : s + length] for s in starts.tolist()])
        x, _, _ = _instance_norm(x, cfg.context_patches * cfg.patch_len)
        return x.view(cfg.batch_size, -1, cfg.patch_len)

    return draw


def train_pair(train_series: np.ndarray, cfg: ForecasterConfig, *, log: Callable[[str], None] = lambda s: None) -> ForecasterPair:
    """Train the target on next-patch MSE, then distil the draft from it (Gaussian NLL), seeded."""
    torch = _torch()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    draw = _batches(train_series, cfg, rng)
    target = PatchTransformer(cfg.patch_len, cfg.d_model, cfg.layers, cfg.heads, cfg.d_ff, cfg.max_patches)
    draft = PatchTransformer(cfg.patch_len, **cfg.draft_shape(), max_patches=cfg.max_patches, stochastic=True)
    report: dict[str, Any] = {"target_parameters": sum(p.numel() for p in target.parameters()),
                              "draft_parameters": sum(p.numel() for p in draft.parameters()),
                              "draft_shape": cfg.draft_shape()}  # fmt: skip

    def fit(model: Any, steps: int, loss_of: Callable[[Any], Any], name: str) -> float:
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
        started, last = time.perf_counter(), float("nan")
        model.train()
        for step in range(steps):
            loss = loss_of(draw())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            last = float(loss.detach())
            if (step + 1) % max(1, steps // 5) == 0:
                log(f"training {name}: step {step + 1}/{steps}, loss {last:.4f}")
        model.eval()
        report[f"{name}_train_s"] = time.perf_counter() - started
        report[f"{name}_final_loss"] = last
        return last

    fit(target, cfg.train_steps, lambda x: torch.nn.functional.mse_loss(target(x[:, :-1]), x[:, 1:]), "target")
    for p in target.parameters():
        p.requires_grad_(False)

    def distil(x: Any) -> Any:
        with torch.no_grad():
            teacher = target(x[:, :-1])
            if cfg.teacher_noise > 0:
                teacher = teacher + cfg.teacher_noise * torch.randn_like(teacher)
        mean, var = draft(x[:, :-1])
        return torch.nn.functional.gaussian_nll_loss(mean, teacher, var)

    fit(draft, cfg.draft_steps, distil, "draft")
    for p in draft.parameters():
        p.requires_grad_(False)
    return ForecasterPair(target, draft, cfg.patch_len, report)


def cache_key(series: np.ndarray, cfg: ForecasterConfig) -> str:
    torch = _torch()
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(series, dtype=np.float64).tobytes())
    h.update(json.dumps({**asdict(cfg), "version": _VERSION, "torch": torch.__version__.split("+")[0]}, sort_keys=True).encode())
    return h.hexdigest()[:16]


def cached_pair(
    train_series: np.ndarray,
    cfg: ForecasterConfig,
    *,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> ForecasterPair:
    """:func:`train_pair`, trained once per (series, configuration, seed) and cached."""
    torch = _torch()
    directory = cache_dir or CACHE_DIR
    path = directory / f"{cache_key(train_series, cfg)}.pt"
    if path.exists():
        state = torch.load(path, weights_only=True)
        target = PatchTransformer(cfg.patch_len, cfg.d_model, cfg.layers, cfg.heads, cfg.d_ff, cfg.max_patches)
        draft = PatchTransformer(cfg.patch_len, **cfg.draft_shape(), max_patches=cfg.max_patches, stochastic=True)
        target.load_state_dict(state["target"])
        draft.load_state_dict(state["draft"])
        for m in (target, draft):
            m.eval().requires_grad_(False)
        report = json.loads(state["report"])
        report["cached"] = str(path)
        return ForecasterPair(target, draft, cfg.patch_len, report)
    log(f"training the forecaster pair (cached afterwards in {path})")
    pair = train_pair(train_series, cfg, log=log)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"target": pair.target.state_dict(), "draft": pair.draft.state_dict(),
                "report": json.dumps(pair.report)}, tmp)  # fmt: skip
    tmp.replace(path)
    return pair


def seasonal_naive(context: np.ndarray, steps: int, season: int) -> np.ndarray:
    """The last ``season`` steps of the context, repeated over the horizon."""
    last = context[-season:]
    return np.resize(last, steps) if len(last) else np.zeros(steps)


def normalise_window(window: Any, context_steps: int) -> tuple[Any, Any, Any]:
    """A window ``(B, T)`` normalised by its context's mean and std, with those statistics."""
    return _instance_norm(window, context_steps)


def rmse(a: np.ndarray, b: np.ndarray) -> float:
    return math.sqrt(float(np.mean((a - b) ** 2)))
