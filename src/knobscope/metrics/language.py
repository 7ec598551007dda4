"""Language-model quality without labels: perplexity, and fidelity to a reference model.

Fidelity compares next-token distributions of a configuration against the full model on the
same text: top-1 agreement (share of positions where both pick the same token) and the KL
divergence ``KL(reference || configuration)`` in nats per token, averaged over positions.
All functions take logits of shape ``(positions, vocab)`` and return sums, so callers can
accumulate over chunks and divide once.
"""

from __future__ import annotations

import torch

__all__ = ["nll_sum", "top1_agreement_sum", "kl_sum"]


def nll_sum(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """Sum over positions of ``-log p(target)``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(-logp.gather(-1, targets.unsqueeze(-1)).sum())


def top1_agreement_sum(reference: torch.Tensor, logits: torch.Tensor) -> int:
    """Positions where the arg-max tokens agree."""
    return int((reference.argmax(dim=-1) == logits.argmax(dim=-1)).sum())


def kl_sum(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """Sum over positions of ``KL(softmax(reference) || softmax(logits))`` in nats."""
    ref = torch.log_softmax(reference.float(), dim=-1)
    cur = torch.log_softmax(logits.float(), dim=-1)
    return float((ref.exp() * (ref - cur)).sum())
