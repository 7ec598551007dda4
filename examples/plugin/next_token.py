"""A knobscope plugin workload, the one the README quotes: next-token loss of a causal LM on text.

Knobs: ``batch_size`` (sequences per forward pass) and ``context`` (tokens per sequence). Each
sample is one batch of consecutive windows of the text. Stages: ``forward`` (timed by forward
hooks on the model, which needs no edits) and ``loss``; the rest of a sample is ``other``.

    knobscope run examples/plugin/spec.yaml      # from the repository root
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from knobscope import Metric, StageTimer, Workload, WorkloadContext
from knobscope.datasets import load_text
from knobscope.models.loading import load_causal_lm


class NextTokenLoss(Workload):
    knobs = ("batch_size", "context")
    metrics = {
        "nll": Metric(higher_is_better=False, unit="nats/token", description="mean next-token loss"),
        "tokens": Metric(higher_is_better=True, unit="tokens", description="tokens scored per sample"),
    }

    def __init__(self, model: str = "smollm2", text: str = "builtin:text", num_batches: int = 4) -> None:
        self.model_name, self.text, self.num_batches = model, text, num_batches

    def setup(self, ctx: WorkloadContext) -> None:  # once per worker: load the model on ctx.device
        loaded = load_causal_lm(self.model_name, device=ctx.device, seed=ctx.seed)
        self.model, self.device = loaded.model, ctx.device
        self.ids = torch.tensor(loaded.tokenizer(load_text(self.text), add_special_tokens=False)["input_ids"])
        ctx.timer.attach(self.model, "forward")  # stage timing through forward hooks

    def samples(self) -> list[int]:
        return list(range(self.num_batches))

    def apply(self, config: Mapping[str, Any]) -> None:  # in place: no reloading between configurations
        self.batch_size, self.context = int(config["batch_size"]), int(config["context"])

    def run(self, sample: int, timer: StageTimer) -> dict[str, float]:
        span = self.batch_size * (self.context + 1)
        start = sample * span % (len(self.ids) - span)
        batch = self.ids[start : start + span].view(self.batch_size, self.context + 1).to(self.device)  # (B, T + 1)
        with torch.inference_mode():
            logits = self.model(input_ids=batch[:, :-1]).logits  # (B, T, vocab); the hook times it
            with timer.stage("loss"):
                nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        return {"nll": float(nll), "tokens": float(self.batch_size * self.context)}
