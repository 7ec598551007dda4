"""What one vision-language architecture exposes: where its vision stages are (timed with forward
hooks, no model edits), how a crop or vision-token budget becomes its processor's own setting,
and how its prompt is prefilled and decoded one token at a time with a KV cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from knobscope.errors import WorkloadError

__all__ = ["VisionFamily"]


class VisionFamily:
    """How one VLM architecture exposes its vision stages and its image-size knob."""

    name: str = ""
    model_types: tuple[str, ...] = ()
    # Whether the projector runs inside the vision tower's forward (its time is then part of the
    # vision encoder's, and the LLM's share of the prefill must not subtract it twice).
    projector_inside_vision: bool = False
    takes_crops: bool = True  # False: the family resizes instead of cropping (no max_crops knob)

    def vision_tower(self, model: Any) -> Any:
        raise NotImplementedError

    def projector(self, model: Any) -> Any:
        raise NotImplementedError

    def text_model(self, model: Any) -> Any:
        raise NotImplementedError

    def processor_kwargs(self, processor: Any, size: tuple[int, int], *, max_crops: int | None,
                         vision_tokens: int | None) -> dict[str, Any]:  # fmt: skip
        """Keyword arguments for ``processor(...)`` that keep an image of ``size`` (width,
        height) within ``max_crops`` crops and/or ``vision_tokens`` vision tokens (the most the
        budget allows); with neither, none (the processor's own settings)."""
        raise NotImplementedError

    @staticmethod
    def max_crops_setting(tokens_at: Callable[[int], int], max_crops: int | None,
                          vision_tokens: int | None) -> dict[str, Any]:  # fmt: skip
        """For a processor that reads ``max_crops`` itself (Molmo, Molmo2): the most crops, up
        to ``max_crops`` (64 without it), whose image tokens (``tokens_at(k)``) stay within
        ``vision_tokens``; at least 1, which may exceed a budget below one crop's tokens.
        Allowing more crops never gives fewer tokens, so a bisection finds it (a handful of
        ``tokens_at`` calls: Molmo's runs its processor)."""
        if max_crops is None and vision_tokens is None:
            return {}
        low, high = 1, max_crops or 64
        if vision_tokens is not None:
            while low < high:
                middle = (low + high + 1) // 2
                if tokens_at(middle) <= vision_tokens:
                    low = middle
                else:
                    high = middle - 1
        return {"max_crops": high}

    def crops(self, inputs: Any) -> int:
        """How many image crops the processor made (tiles and global views)."""
        return 1

    def tiling_size(self, processor: Any, tiles: int) -> tuple[int, int]:
        """(width, height) of an image the processor cuts into exactly one row of ``tiles``
        tiles (seed 002's Exp1 tilings 1x1 ... 1xN)."""
        raise WorkloadError(f"the {self.name} family resizes images instead of cutting them into tiles")

    def prompt(self, processor: Any, text: str) -> str:
        """The prompt with one image, in the checkpoint's chat format when it has one."""
        template = getattr(processor, "chat_template", None)
        if template:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            return processor.apply_chat_template(messages, add_generation_prompt=True)
        return f"<image>{text}"

    def image_token_id(self, model: Any, processor: Any) -> int:
        """The prompt token that stands for one vision token (counted to report vision tokens)."""
        return int(model.config.image_token_id)

    # Decoding. The workload times these calls as its prefill and decode stages, so they do the
    # model's work and nothing else. A family whose model keeps its cache another way (remote
    # code with transformers-4 tuple caches) overrides both.
    def prefill(self, model: Any, inputs: Any) -> tuple[Any, Any]:
        """Run the prompt, image included; return the last position's logits (batch, vocab) and
        the state :meth:`decode` continues from."""
        from transformers import DynamicCache

        from knobscope.models.loading import cache_keyword

        cache, keyword = DynamicCache(config=model.config.text_config), cache_keyword(model)
        out = model(**inputs, **{keyword: cache}, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :], {"cache": cache, "keyword": keyword, "mask": inputs["attention_mask"]}

    def decode(self, model: Any, token: Any, state: Any) -> Any:
        """Run one generated token (batch, 1) on the cache in ``state``; return its logits."""
        import torch

        state["mask"] = torch.cat([state["mask"], state["mask"].new_ones((state["mask"].shape[0], 1))], dim=1)
        out = model(input_ids=token, attention_mask=state["mask"], **{state["keyword"]: state["cache"]}, use_cache=True)
        return out.logits[:, -1, :]
