"""Speculative decoding of a patch forecaster with a stochastic draft (seed 003, STRIDE-style).

A round: the draft proposes ``k`` patches autoregressively, each sampled from its own Gaussian
``q = N(mean_q, var_q)``; the target scores all of them in *one* forward pass over the context
plus the proposals (its output at each position is its next-patch mean ``mean_p``, taken as
``p = N(mean_p, sigma^2)`` with ``sigma = spec_sigma``); then each proposal in turn is accepted
or the round ends:

* ``lenient`` (seed 003's rule): accept with probability
  ``min(1, exp(min(log p(x) - log q(x), 20)) * max(spec_accept_bias, 1))``; a rejected patch is
  replaced by a sample of ``p``. A bias above 1 accepts more than the exact rule would.
* ``exact``: accept with ``min(1, p(x) / q(x))``; a rejected patch is replaced by a sample of the
  residual ``max(0, p - q)`` (normalised), drawn by rejection from ``p``. The output is then
  distributed as the target's own sampled rollout, whatever the draft.

When every proposal is accepted, the verification pass's last output gives one more patch (a
sample of ``p``) for free. The context grows by the patches produced (no sliding window), so
the verification pass sees exactly the contexts a target-only rollout sees.

Noise and acceptance draws come from two separate generators, so a draft identical to the
target (acceptance 1) produces exactly the target-only sampled rollout's patches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from knobscope.measure import Stage, no_stage

__all__ = ["target_rollout", "speculative_rollout", "SpeculativeStats", "gaussian_log_ratio", "gaussian_log_ratios", "IdenticalDraft",
           "RULES", "predicted_speedup"]  # fmt: skip

RULES = ("lenient", "exact")
LOG_RATIO_CLAMP = 20.0  # seed 003 clamps the log-ratio from above before exponentiating
MAX_RESIDUAL_DRAWS = 1000



@dataclass
class SpeculativeStats:
    """What one speculative rollout did."""

    rounds: int = 0
    attempted: int = 0
    accepted: int = 0
    draft_calls: int = 0
    verify_calls: int = 0
    residual_fallbacks: int = 0  # exact rule: residual draws that ran out (a target sample used)

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.attempted if self.attempted else float("nan")

    @property
    def accepted_per_round(self) -> float:
        return self.accepted / self.rounds if self.rounds else float("nan")


def gaussian_log_ratio(x: Any, mean_p: Any, sigma: float, mean_q: Any, var_q: Any) -> float:
    """``log N(x; mean_p, sigma^2) - log N(x; mean_q, var_q)``, summed over the patch."""
    return float(gaussian_log_ratios(x, mean_p, sigma, mean_q, var_q).sum())


def gaussian_log_ratios(x: Any, mean_p: Any, sigma: float, mean_q: Any, var_q: Any) -> Any:
    """:func:`gaussian_log_ratio` of every patch at once: summed over the last dimension (the
    steps of a patch), so ``(1, K, P)`` proposals give ``(1, K)`` log-ratios in one computation."""
    import torch

    lp = -((x - mean_p) ** 2) / (2 * sigma**2) - math.log(sigma)
    lq = -((x - mean_q) ** 2) / (2 * var_q) - 0.5 * torch.log(var_q)
    return (lp - lq).sum(dim=-1)


class IdenticalDraft:
    """The target used as its own draft with variance ``sigma^2`` (a check: acceptance 1)."""

    def __init__(self, target: Any, sigma: float) -> None:
        self.target, self.sigma = target, sigma

    def __call__(self, patches: Any) -> tuple[Any, Any]:
        import torch

        mean = self.target(patches)
        return mean, torch.full_like(mean, self.sigma**2)


def _sample(mean: Any, std: Any, gen: Any) -> Any:
    import torch

    return mean + std * torch.randn(mean.shape, generator=gen, dtype=mean.dtype, device=mean.device)


def target_rollout(target: Any, context: Any, patches: int, *, sigma: float = 0.0, noise: Any = None,
                   stage: Stage = no_stage, name: str = "target_only") -> Any:  # fmt: skip
    """``patches`` next patches from the target alone, ``(1, patches, P)``: its means
    (``sigma`` 0, the point forecast) or samples of ``N(mean, sigma^2)``."""
    import torch

    seq = context
    with stage(name):
        for _ in range(patches):
            mean = target(seq)[:, -1:]
            x = mean if sigma == 0 else _sample(mean, sigma, noise)
            seq = torch.cat([seq, x], dim=1)
    return seq[:, context.shape[1] :]


def speculative_rollout(
    target: Any,
    draft: Any,
    context: Any,
    patches: int,
    *,
    k: int,
    sigma: float,
    bias: float = 1.0,
    rule: Literal["lenient", "exact"] = "lenient",
    noise: Any = None,
    accept: Any = None,
    stage: Stage = no_stage,
) -> tuple[Any, SpeculativeStats]:
    """``patches`` next patches by speculative decoding (see the module docstring), with stats."""
    import torch

    if rule not in RULES:
        raise ValueError(f"unknown acceptance rule {rule!r}; rules: {', '.join(RULES)}")
    stats = SpeculativeStats()
    seq = context
    produced = 0
    while produced < patches:
        stats.rounds += 1
        kk = min(k, patches - produced)  # never draft past the horizon
        proposals, q_means, q_vars = [], [], []
        with stage("draft"):
            ctx = seq
            for _ in range(kk):
                mean_q, var_q = draft(ctx)
                mean_q, var_q = mean_q[:, -1:], var_q[:, -1:]
                x = _sample(mean_q, var_q.sqrt(), noise)
                proposals.append(x)
                q_means.append(mean_q)
                q_vars.append(var_q)
                ctx = torch.cat([ctx, x], dim=1)
            stats.draft_calls += kk
        with stage("verify"):
            first = seq.shape[1] - 1  # the output at this position predicts the first proposal
            p_means = target(ctx)[:, first : first + kk + 1]
            stats.verify_calls += 1
        with stage("accept"):
            new = []
            # every proposal's log-ratio in one computation (the uniforms are still drawn one
            # by one, up to the first rejection, so the random stream is what it was)
            log_ratios = gaussian_log_ratios(torch.cat(proposals, dim=1), p_means[:, :kk], sigma, torch.cat(q_means, dim=1),
                                             torch.cat(q_vars, dim=1)).sum(dim=0).tolist()  # fmt: skip
            for i in range(kk):
                stats.attempted += 1
                mean_p = p_means[:, i : i + 1]
                log_ratio = log_ratios[i]
                if rule == "lenient":
                    alpha = min(1.0, math.exp(min(log_ratio, LOG_RATIO_CLAMP)) * max(bias, 1.0))
                else:
                    alpha = math.exp(min(log_ratio, 0.0))
                u = float(torch.rand((), generator=accept))
                if u <= alpha:
                    stats.accepted += 1
                    new.append(proposals[i])
                    continue
                if rule == "lenient":
                    new.append(_sample(mean_p, sigma, noise))
                else:
                    new.append(_residual_sample(mean_p, sigma, q_means[i], q_vars[i], noise, accept, stats))
                break
            else:  # every proposal accepted: the verification pass's last output is one more patch
                new.append(_sample(p_means[:, kk : kk + 1], sigma, noise))
            seq = torch.cat([seq, *new], dim=1)
            produced += len(new)
    return seq[:, context.shape[1] : context.shape[1] + patches], stats


def _residual_sample(mean_p: Any, sigma: float, mean_q: Any, var_q: Any, noise: Any, accept: Any,
                     stats: SpeculativeStats) -> Any:  # fmt: skip
    """A sample of ``max(0, p - q)`` (normalised): ``y ~ p`` kept with probability ``1 - q(y)/p(y)``."""
    import torch

    y = mean_p
    for _ in range(MAX_RESIDUAL_DRAWS):
        y = _sample(mean_p, sigma, noise)
        keep = 1.0 - math.exp(min(-gaussian_log_ratio(y, mean_p, sigma, mean_q, var_q), 0.0))
        if float(torch.rand((), generator=accept)) < keep:
            return y
    stats.residual_fallbacks += 1
    return y


def predicted_speedup(acceptance: float, k: int, draft_ms: float, verify_ms: float, target_ms: float) -> float:
    """The capped-geometric law: a round yields ``(1 - a^(k+1)) / (1 - a)`` patches on average
    (acceptances independent with probability ``a``) at the cost of ``k`` draft calls and one
    verification; target-only pays ``target_ms`` per patch."""
    if not (0 <= acceptance <= 1) or k < 1:
        return float("nan")
    patches = k + 1 if acceptance >= 1 else (1 - acceptance ** (k + 1)) / (1 - acceptance)
    cost = k * draft_ms + verify_ms
    return patches * target_ms / cost if cost > 0 else float("nan")
