"""MoE top-k at run time: find a model's MoE layers, set experts per token, verify it.

Where top-k lives differs by family and by ``transformers`` version, so knobscope sets it on
every object that a forward pass may read, and :func:`count_active_experts` checks the effect
through hooks instead of trusting the attribute:

* ``transformers`` >= 5 (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE, ...): routing happens in a
  ``*TopKRouter`` module whose ``forward`` calls ``torch.topk(probs, self.top_k)``; that
  ``top_k`` is the one read at forward time. The enclosing sparse-MoE block's ``top_k`` /
  ``num_experts_per_tok`` (read by ``transformers`` 4) is set too, to keep them consistent.
* ``transformers`` 4 (no router class): the sparse-MoE block's ``top_k``.
* The Molmo / megablocks convention: ``block.ffn.args.top_k``.

Verification hooks the routers' outputs (the chosen expert indices, one row per token) and
the experts' inputs (the indices the experts actually run), and counts distinct experts per
token in every MoE layer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["MoELayer", "MoETopK", "find_moe_layers", "count_active_experts"]


@dataclass
class MoELayer:
    """One MoE layer: where its top-k is set and what to hook to check it.

    Attributes:
        name: the module path of the layer (its router, or the block that holds ``top_k``).
        targets: ``(object, attribute)`` pairs that hold the layer's experts-per-token.
        num_experts: routed experts in the layer.
        default_top_k: experts per token as loaded.
        router: the module whose output holds the chosen indices, if there is one.
        experts: the module that runs the experts (its second argument is the indices), if any.
    """

    name: str
    targets: list[tuple[Any, str]]
    num_experts: int
    default_top_k: int
    router: nn.Module | None = None
    experts: nn.Module | None = None
    owner: nn.Module | None = None  # the module whose submodules are hooked when there is no router
    kind: str = "router"

    @property
    def top_k(self) -> int:
        obj, attr = self.targets[0]
        return int(getattr(obj, attr))


def _int_attr(obj: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(obj, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def _experts_count(module: nn.Module) -> int | None:
    count = _int_attr(module, "num_experts", "num_local_experts", "moe_num_experts", "n_routed_experts")
    if count is None and isinstance(getattr(module, "weight", None), torch.Tensor) and module.weight.ndim == 2:
        count = int(module.weight.shape[0])  # a router's weight is (experts, hidden)
    return count


def find_moe_layers(model: nn.Module) -> list[MoELayer]:
    """Every MoE layer of ``model``, in module order (empty for a dense model)."""
    modules = dict(model.named_modules())
    layers: list[MoELayer] = []
    claimed: set[int] = set()
    for name, module in modules.items():
        if type(module).__name__.endswith("Router") and _int_attr(module, "top_k") is not None:
            parent_name = name.rpartition(".")[0]
            parent = modules.get(parent_name)
            targets: list[tuple[Any, str]] = [(module, "top_k")]
            if parent is not None:
                claimed.add(id(parent))
                targets += [(parent, a) for a in ("top_k", "num_experts_per_tok") if _int_attr(parent, a) is not None]
            experts = getattr(parent, "experts", None) if parent is not None else None
            count = _experts_count(module) or (_experts_count(experts) if experts is not None else None)
            if count is None:
                continue
            layers.append(MoELayer(name, targets, count, module.top_k, router=module,
                                   experts=experts if isinstance(experts, nn.Module) else None))  # fmt: skip
    for name, module in modules.items():
        if id(module) in claimed:
            continue
        args = getattr(module, "args", None)
        if args is not None and id(args) in claimed:  # a submodule sharing its layer's args (the router)
            continue
        if args is not None and _int_attr(args, "top_k") is not None and _experts_count(args):
            # Molmo / megablocks: block.ffn.args.top_k
            layers.append(MoELayer(name, [(args, "top_k")], _experts_count(args), args.top_k,  # type: ignore[arg-type]
                                   owner=module, kind="args"))  # fmt: skip
            claimed.update((id(module), id(args)))
        elif _int_attr(module, "top_k", "num_experts_per_tok") is not None and isinstance(getattr(module, "gate", None), nn.Linear):
            # transformers 4 sparse-MoE block: gate is a Linear router, top_k read in forward
            count = _experts_count(module) or int(module.gate.out_features)
            attrs = [a for a in ("top_k", "num_experts_per_tok") if _int_attr(module, a) is not None]
            layers.append(MoELayer(name, [(module, a) for a in attrs], count, int(getattr(module, attrs[0])),
                                   owner=module, kind="block"))  # fmt: skip
    return layers


@dataclass
class MoETopK:
    """Set experts per token on every MoE layer of a model; :meth:`restore` undoes it.

    Example::

        topk = MoETopK(model)
        topk.set(4)
        topk.restore()
    """

    model: nn.Module
    layers: list[MoELayer] = field(init=False)

    def __post_init__(self) -> None:
        self.layers = find_moe_layers(self.model)

    def __bool__(self) -> bool:
        return bool(self.layers)

    @property
    def num_experts(self) -> int:
        return min(layer.num_experts for layer in self.layers)

    @property
    def default_top_k(self) -> int:
        return self.layers[0].default_top_k

    def set(self, k: int) -> None:
        if not self.layers:
            raise ValueError("the model has no MoE layers, so top_k cannot be set")
        if not (isinstance(k, int) and 1 <= k <= self.num_experts):
            raise ValueError(f"top_k {k!r} is outside 1..{self.num_experts} (the experts per MoE layer)")
        for layer in self.layers:
            for obj, attr in layer.targets:
                setattr(obj, attr, k)
        config = getattr(self.model, "config", None)
        if config is not None and hasattr(config, "num_experts_per_tok"):
            config.num_experts_per_tok = k  # read by load-balancing losses and some versions' blocks

    def restore(self) -> None:
        for layer in self.layers:
            for obj, attr in layer.targets:
                setattr(obj, attr, layer.default_top_k)
        config = getattr(self.model, "config", None)
        if self.layers and config is not None and hasattr(config, "num_experts_per_tok"):
            config.num_experts_per_tok = self.layers[0].default_top_k


@dataclass
class ExpertCount:
    """Distinct experts per token seen in one MoE layer during a verification pass."""

    name: str
    tokens: int = 0
    min: int | None = None
    max: int | None = None
    total: int = 0
    source: str = ""

    def add(self, per_token: torch.Tensor, source: str) -> None:
        if per_token.numel() == 0:
            return
        self.tokens += int(per_token.numel())
        self.total += int(per_token.sum())
        lo, hi = int(per_token.min()), int(per_token.max())
        self.min = lo if self.min is None else min(self.min, lo)
        self.max = hi if self.max is None else max(self.max, hi)
        self.source = source

    @property
    def mean(self) -> float:
        return self.total / self.tokens if self.tokens else float("nan")


def _distinct_per_row(indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Distinct valid expert ids per row of an integer ``(tokens, k)`` index tensor."""
    idx = indices.reshape(-1, indices.shape[-1]).long()
    valid = (idx >= 0) & (idx < num_experts)  # some implementations pad with num_experts
    onehot = torch.zeros(idx.shape[0], num_experts + 1, dtype=torch.bool, device=idx.device)
    onehot.scatter_(1, torch.where(valid, idx, num_experts), True)
    return onehot[:, :num_experts].sum(dim=1)


def _indices_in(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point() and obj.dtype != torch.bool and obj.ndim >= 2:
            yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _indices_in(item)


def count_active_experts(layers: list[MoELayer], forward: Callable[[], Any]) -> list[ExpertCount]:
    """Run ``forward()`` with hooks and count the distinct experts each token used per layer.

    The experts module's index argument is preferred (the experts actually run); else the
    router's output indices; a layer with neither (megablocks, transformers 4 blocks) gets a
    count over every integer ``(tokens, k)`` tensor its submodules return.
    """
    counts = [ExpertCount(layer.name) for layer in layers]
    handles = []
    for layer, count in zip(layers, counts):
        if layer.experts is not None:
            def pre(module: nn.Module, args: tuple, kwargs: dict, layer=layer, count=count) -> None:
                index = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
                if isinstance(index, torch.Tensor):
                    count.add(_distinct_per_row(index, layer.num_experts), "experts input")
            handles.append(layer.experts.register_forward_pre_hook(pre, with_kwargs=True))
        else:
            if layer.router is not None:
                hooked = [layer.router]
            else:
                hooked = list(layer.owner.modules()) if layer.owner is not None else []
            for module in hooked:
                def post(module: nn.Module, args: tuple, output: Any, layer=layer, count=count) -> None:
                    for index in _indices_in(output):
                        if index.shape[-1] <= layer.num_experts:
                            count.add(_distinct_per_row(index, layer.num_experts), f"{type(module).__name__} output")
                handles.append(module.register_forward_hook(post))
    try:
        with torch.inference_mode():
            forward()
    finally:
        for handle in handles:
            handle.remove()
    return counts
