"""Original Molmo checkpoints (allenai/Molmo-7B-D-0924, Molmo-7B-O, MolmoE-1B, ...): the model and
processor are Python code shipped inside the checkpoint (``trust_remote_code``), written for
transformers 4, with its own conventions:

* the processor's entry point is ``processor.process(text=..., images=[...], max_crops=N)``, one
  example at a time, unbatched; it writes the prompt as ``User: ... Assistant:`` and puts the
  image's tokens (``<im_start>``, ``<im_patch>`` x N, ``<im_col>``, ``<im_end>``) first;
* the model keeps a tuple ``(keys, values)`` per block (``model.transformer.blocks``), and a
  decode step needs the full-length attention mask and the token's position;
* the vision stages are ``model.vision_backbone`` (ViT, pooling, projector) and its
  ``image_projector``; MolmoE's experts are a sparse-MoE block with a ``gate`` router and
  ``top_k``, or megablocks' ``block.ffn.args.top_k``, both found by :mod:`knobscope.models.moe`
  (not run: no MolmoE code at hand).

:func:`load_remote_model` also bridges one change of transformers 5: its loader needs what
``post_init()`` computes, and this remote code never calls it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from knobscope.models.vision_family import VisionFamily

__all__ = ["MolmoFamily", "MolmoProcessorAdapter", "load_remote_model"]

IMAGE_PATCH = "<im_patch>"


class MolmoFamily(VisionFamily):
    """Original Molmo (remote code): the image is cut into at most ``max_crops`` overlapping crops
    of ``base_image_input_size`` pixels plus one low-resolution view; each 2x2 window of ViT
    patches is pooled into one ``<im_patch>`` token."""

    name = "molmo"
    model_types = ("molmo",)
    projector_inside_vision = True  # vision_backbone runs ViT, pooling and projector in one forward
    remote_code = True

    def vision_tower(self, model: Any) -> Any:
        return model.model.vision_backbone

    def projector(self, model: Any) -> Any:
        return model.model.vision_backbone.image_projector

    def text_model(self, model: Any) -> Any:
        return model.model.transformer  # blocks, embeddings, output layer: not the ViT's blocks

    def image_token_id(self, model: Any, processor: Any) -> int:
        return int(processor.tokenizer.convert_tokens_to_ids(IMAGE_PATCH))

    def crops(self, inputs: Any) -> int:
        return int(inputs["images"].shape[1])  # (batch, crops and the low-resolution view, patches, pixels)

    def processor_kwargs(self, processor: Any, size: tuple[int, int], *, max_crops: int | None,
                         vision_tokens: int | None) -> dict[str, Any]:  # fmt: skip
        return self.max_crops_setting(lambda k: processor.image_tokens(size, k), max_crops, vision_tokens)

    def tiling_size(self, processor: Any, tiles: int) -> tuple[int, int]:
        ip = processor.image_processor
        crop = int(ip.base_image_input_size[0])
        margin = (ip.overlap_margins[0] + ip.overlap_margins[1]) * ip.image_patch_size  # crops overlap by this much
        return tiles * (crop - margin) + margin, crop

    def prompt(self, processor: Any, text: str) -> str:
        return text  # process() writes "User: ... Assistant:" and places the image itself

    def prefill(self, model: Any, inputs: Any) -> tuple[Any, Any]:
        out = model(**inputs, use_cache=True, last_logits_only=True)
        return out.logits[:, -1, :], {"past": out.past_key_values, "length": int(inputs["input_ids"].shape[1])}

    def decode(self, model: Any, token: Any, state: Any) -> Any:
        import torch

        length = state["length"]
        mask = torch.ones((token.shape[0], length + 1), dtype=torch.bool, device=token.device)
        position = torch.full((token.shape[0], 1), length, dtype=torch.long, device=token.device)
        out = model(input_ids=token, attention_mask=mask, position_ids=position, past_key_values=state["past"], use_cache=True)
        state["past"], state["length"] = out.past_key_values, length + 1
        return out.logits[:, -1, :]


class MolmoProcessorAdapter:
    """Molmo's remote processor behind the call every family's processor answers:
    ``processor(images=[[image]], text=[prompt], return_tensors="pt", max_crops=N)`` returns a
    batch of one (``input_ids``, ``images``, ``image_masks``, ``image_input_idx`` and an
    all-ones ``attention_mask``)."""

    chat_template = None

    def __init__(self, processor: Any) -> None:
        self.processor = processor
        self.image_processor, self.tokenizer = processor.image_processor, processor.tokenizer
        self.image_tokens = lru_cache(maxsize=1024)(self._image_tokens)

    def __call__(self, images: Any, text: list[str], return_tensors: str = "pt", **kwargs: Any) -> Any:
        import torch
        from transformers import BatchFeature

        if len(text) != 1:
            raise ValueError("Molmo's processor takes one example at a time")
        flat = [im for group in images for im in (group if isinstance(group, list) else [group])]
        out = self.processor.process(text=text[0], images=flat, **kwargs)
        batch = {name: value.unsqueeze(0) for name, value in out.items()}
        batch["attention_mask"] = torch.ones_like(batch["input_ids"], dtype=torch.bool)
        return BatchFeature(batch)

    def _image_tokens(self, size: tuple[int, int], max_crops: int) -> int:
        """``<im_patch>`` tokens the processor makes of an image of ``size`` (width, height)."""
        from PIL import Image

        out = self.processor.process(text="", images=[Image.new("RGB", size)], max_crops=max_crops)
        return int((out["input_ids"] == self.tokenizer.convert_tokens_to_ids(IMAGE_PATCH)).sum())


def load_remote_model(source: str, config: Any, dtype: Any) -> Any:
    """The checkpoint's own model class (``auto_map``) loaded with its weights. Remote code
    written for transformers 4 never calls ``post_init()``, whose attributes the transformers 5
    loader reads, and defines ``tie_weights()`` without the arguments it is now called with; a
    subclass supplies both (``post_init`` without re-initialising: every weight is loaded next)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    auto_map = getattr(config, "auto_map", {}) or {}
    ref = auto_map.get("AutoModelForImageTextToText") or auto_map.get("AutoModelForCausalLM")
    if ref is None:
        raise ValueError(f"its config's auto_map names no model class (has: {', '.join(auto_map) or 'nothing'})")
    remote = get_class_from_dynamic_module(ref, source)

    class Transformers5Compatible(remote):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if not hasattr(self, "all_tied_weights_keys"):
                self.init_weights = lambda: None  # instance attribute: post_init must not re-initialise
                try:
                    self.post_init()
                finally:
                    del self.init_weights

        def tie_weights(self, *args: Any, **kwargs: Any) -> Any:
            return super().tie_weights()

    Transformers5Compatible.__name__ = Transformers5Compatible.__qualname__ = remote.__name__
    return Transformers5Compatible.from_pretrained(source, config=config, dtype=dtype)
