"""Self-speculative greedy decoding of a causal LM: drafts from the same model with fewer active
blocks, or from the prompt (prompt lookup), verified by the full model in one forward pass.

A round: the drafter proposes up to ``k`` tokens; the full model reads the last accepted token
and the proposals in one pass (its KV cache then holds them all); proposals are accepted from
the left while the full model agrees — its greedy token equals the proposal (``threshold`` 0:
exact, the output equals plain greedy decoding token for token), or it gives the proposal at
least ``threshold`` probability (lenient) — and the full model's own token at the first
disagreement (or after the last proposal) comes for free. The KV cache is rolled back to the
accepted tokens. The block drafter keeps its own cache (its skipped blocks hold placeholders),
rolled back the same way.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from knobscope.measure import Stage, no_stage
from knobscope.models.loading import cache_keyword

__all__ = ["speculative_greedy", "LMSpecStats", "parse_drafter", "lookup_proposals", "truncate_cache"]



@dataclass
class LMSpecStats:
    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    draft_calls: int = 0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else float("nan")

    @property
    def accepted_per_round(self) -> float:
        return self.accepted / self.rounds if self.rounds else float("nan")


def parse_drafter(value: Any, num_blocks: int) -> tuple[str, int | None]:
    """``spec_draft`` -> ``("none" | "lookup" | "blocks", blocks)``. Values: ``none``, ``lookup``
    (prompt lookup), ``blocks:N`` (the model with N active blocks)."""
    text = str(value)
    if text in ("none", "lookup"):
        return text, None
    head, _, n = text.partition(":")
    if head == "blocks" and n.isdigit() and 1 <= int(n) < num_blocks:
        return "blocks", int(n)
    raise ValueError(
        f"spec_draft value {value!r} is not possible: use 'none', 'lookup' or 'blocks:N' with N in 1..{num_blocks - 1} "
        f"(the draft's active blocks; the model has {num_blocks})"
    )


def truncate_cache(cache: Any, length: int) -> None:
    """Keep the first ``length`` positions of a ``DynamicCache`` (its ``crop`` changed meaning
    across transformers versions: an absolute length before, tokens to remove now)."""
    current = cache.get_seq_length()
    if current <= length:
        return
    if "tokens_to_remove" in inspect.signature(cache.crop).parameters:
        cache.crop(length - current)
    else:
        cache.crop(length)


def lookup_proposals(tokens: Sequence[int], k: int, ngram: int = 3) -> list[int]:
    """Prompt lookup: the ``k`` tokens that followed the latest earlier occurrence of the last
    ``ngram`` tokens (shorter n-grams when none occurs); none when nothing matches."""
    for n in range(min(ngram, len(tokens) - 1), 0, -1):
        tail = list(tokens[-n:])
        for start in range(len(tokens) - n - 1, -1, -1):
            if list(tokens[start : start + n]) == tail:
                follow = list(tokens[start + n : start + n + k])
                if follow:
                    return follow
    return []


def speculative_greedy(
    model: Any,
    input_ids: Any,
    *,
    max_new_tokens: int,
    k: int,
    drafter: str,
    draft_blocks: Iterable[int] | None = None,
    set_blocks: Callable[[Iterable[int]], None] | None = None,
    all_blocks: Iterable[int] = (),
    threshold: float = 0.0,
    eos_ids: Iterable[int] = (),
    ignore_eos: bool = False,
    stage: Stage = no_stage,
) -> tuple[list[int], LMSpecStats]:
    """Greedy decoding of ``max_new_tokens`` tokens with self-speculation (module docstring).

    ``set_blocks`` switches the model's active blocks (the draft's ``draft_blocks``, then
    ``all_blocks`` for the full model)."""
    import torch
    from transformers import DynamicCache

    eos = set(eos_ids)
    full, draft_set = list(all_blocks), list(draft_blocks or [])
    stats = LMSpecStats()
    prompt = input_ids[0].tolist()
    with torch.inference_mode():
        cache, kw = DynamicCache(config=model.config), cache_keyword(model)
        with stage("spec_prefill"):
            out = model(input_ids=input_ids, **{kw: cache}, use_cache=True, logits_to_keep=1)
            generated = [int(out.logits[0, -1].argmax())]
        draft_cache, draft_seen = None, 0
        if drafter == "blocks":
            draft_cache = DynamicCache(config=model.config)
        while len(generated) < max_new_tokens and (ignore_eos or generated[-1] not in eos):
            stats.rounds += 1
            room = max_new_tokens - len(generated)
            sequence = prompt + generated
            known = len(sequence) - 1  # positions the full model's cache holds (the last token not yet fed)
            with stage("draft"):
                if drafter == "lookup":
                    proposals = lookup_proposals(sequence, min(k, room))
                else:
                    assert set_blocks is not None and draft_cache is not None
                    set_blocks(draft_set)
                    try:
                        proposals = []
                        pending = sequence[draft_seen:]
                        for _ in range(min(k, room)):
                            ids = torch.tensor([pending], device=input_ids.device)
                            logits = model(input_ids=ids, **{kw: draft_cache}, use_cache=True, logits_to_keep=1).logits
                            stats.draft_calls += 1
                            draft_seen += len(pending)
                            token = int(logits[0, -1].argmax())
                            proposals.append(token)
                            pending = [token]
                    finally:
                        set_blocks(full)
            with stage("verify"):
                ids = torch.tensor([[generated[-1], *proposals]], device=input_ids.device)
                logits = model(input_ids=ids, **{kw: cache}, use_cache=True).logits[0]
                chosen = logits.argmax(dim=-1).tolist()
                accepted = 0
                for i, token in enumerate(proposals):
                    agree = chosen[i] == token
                    if not agree and threshold > 0:
                        agree = float(torch.softmax(logits[i].float(), dim=-1)[token]) >= threshold
                    if not agree:
                        break
                    accepted += 1
                new = proposals[:accepted] + [chosen[accepted]]
                truncate_cache(cache, known + 1 + accepted)
                if draft_cache is not None:
                    draft_seen = min(draft_seen, known + 1 + accepted)
                    truncate_cache(draft_cache, draft_seen)
            stats.proposed += len(proposals)
            stats.accepted += accepted
            for token in new:
                if len(generated) >= max_new_tokens or (not ignore_eos and generated[-1] in eos):
                    break
                generated.append(token)
    return generated, stats
