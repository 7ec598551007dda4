"""MoE top-k on tiny randomly initialised models of the real transformers classes.

No MoE checkpoint can be downloaded here, so each family is built from a small config. The
routing code is the installed transformers' own, which is what the verification checks.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from knobscope.flops import flop_counter_mode
from knobscope.inspection import verify_top_k
from knobscope.models.loading import load_causal_lm
from knobscope.models.moe import MoETopK, count_active_experts, find_moe_layers

FAMILIES = ["mixtral", "qwen2_moe", "qwen3_moe", "olmoe"]


@pytest.fixture(scope="module", params=FAMILIES)
def moe_model(request: pytest.FixtureRequest):
    loaded = load_causal_lm(f"random:{request.param}:experts=16,top_k=2,layers=3")
    ids = loaded.tokenizer("The quick brown fox jumps over the lazy dog. " * 4, return_tensors="pt")["input_ids"]
    return request.param, loaded.model, ids


def test_top_k_set_is_what_the_experts_run(moe_model) -> None:
    family, model, ids = moe_model
    topk = MoETopK(model)
    assert len(topk.layers) == 3 and topk.num_experts == 16 and topk.default_top_k == 2
    for k in (1, 3, 8, 16):
        topk.set(k)
        counts = count_active_experts(topk.layers, lambda: model(input_ids=ids, use_cache=False))
        assert [(c.min, c.max) for c in counts] == [(k, k)] * 3, (family, k)
        assert all(c.tokens == ids.shape[1] for c in counts)
    topk.restore()
    check = verify_top_k(model, ids, 5)
    assert check["ok"] and {row["min"] for row in check["layers"]} == {5}
    assert topk.layers[0].top_k == 2  # verify_top_k leaves the model as it was


def test_verification_catches_a_top_k_the_forward_pass_does_not_read(moe_model) -> None:
    family, model, ids = moe_model
    layers = find_moe_layers(model)
    router = layers[0].targets[0][0]
    assert type(router).__name__.endswith("TopKRouter")  # transformers 5 reads top_k here
    # Setting only the sparse-MoE block's attribute (what transformers 4 read) changes nothing now.
    block = next(m for m in model.modules() if hasattr(m, "gate") and getattr(m, "gate") is router)
    block.top_k = 6
    counts = count_active_experts(layers, lambda: model(input_ids=ids, use_cache=False))
    assert all(c.max == 2 for c in counts), family
    block.top_k = 2


def test_counted_flops_follow_top_k_and_the_estimate(moe_model) -> None:
    family, model, ids = moe_model
    topk = MoETopK(model)
    flops = {}
    for k in (1, 8):
        topk.set(k)
        with torch.inference_mode(), flop_counter_mode() as counter:
            model(input_ids=ids, use_cache=False)
        flops[k] = counter.get_total_flops()
        experts = sum(counter.get_flop_counts()["Global"].get(op, 0) for op in counter.get_flop_counts()["Global"]
                      if "grouped_mm" in str(op))  # fmt: skip
        flops[f"experts{k}"] = experts
    topk.restore()
    if flops["experts1"]:  # grouped-mm experts: their FLOPs scale exactly with k
        assert flops["experts8"] == 8 * flops["experts1"], family
    assert flops[8] > flops[1], family


def test_dense_model_and_bad_values_are_refused() -> None:
    dense = load_causal_lm("random:llama:layers=2").model
    assert find_moe_layers(dense) == []
    with pytest.raises(ValueError, match="no MoE layers"):
        MoETopK(dense).set(2)
    moe = load_causal_lm("random:olmoe:experts=8,layers=2").model
    with pytest.raises(ValueError, match=r"outside 1\.\.8"):
        MoETopK(moe).set(9)


class _MegablocksRouter(nn.Module):
    def __init__(self, args: SimpleNamespace, hidden: int) -> None:
        super().__init__()
        self.args = args
        self.layer = nn.Linear(hidden, args.moe_num_experts, bias=False)

    def forward(self, x: torch.Tensor):
        scores = self.layer(x).softmax(-1)
        weights, indices = torch.topk(scores, self.args.top_k, dim=-1)  # reads args.top_k at call time
        return scores, weights, indices


class _MolmoFFN(nn.Module):
    """The Molmo / megablocks layout: ``block.ffn.args.top_k`` and a router returning indices."""

    def __init__(self, hidden: int = 16, experts: int = 8) -> None:
        super().__init__()
        self.args = SimpleNamespace(top_k=2, moe_num_experts=experts)
        self.router = _MegablocksRouter(self.args, hidden)
        self.w = nn.Parameter(torch.randn(experts, hidden, hidden) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, weights, indices = self.router(x)
        return x + torch.einsum("tk,tkhd,td->th", weights, self.w[indices], x)


def test_molmo_convention_block_ffn_args_top_k() -> None:
    model = nn.Module()
    model.blocks = nn.ModuleList(nn.Module() for _ in range(2))
    for block in model.blocks:
        block.ffn = _MolmoFFN()
    x = torch.randn(10, 16)
    layers = find_moe_layers(model)
    assert [layer.name for layer in layers] == ["blocks.0.ffn", "blocks.1.ffn"]
    topk = MoETopK(model)
    topk.set(5)
    assert all(block.ffn.args.top_k == 5 for block in model.blocks)
    counts = count_active_experts(layers, lambda: [b.ffn(x) for b in model.blocks])
    assert [(c.min, c.max) for c in counts] == [(5, 5), (5, 5)]
    topk.restore()
    assert model.blocks[0].ffn.args.top_k == 2
