"""Vision-language models: loading, and the image-size mechanism each family really reads.

Sources (like :func:`knobscope.models.loading.load_causal_lm`):
    a checkpoint directory or hub id: ``AutoModelForImageTextToText`` + ``AutoProcessor``;
    ``random:idefics3[:text=FAMILY,layers=..,experts=..,top_k=..]``: a tiny randomly initialised
        Idefics3 (SmolVLM's architecture), with its real image processor and processor, SmolLM2's
        tokenizer plus the image tokens, and a text backbone of any ``random:`` language family
        (``text=qwen3_moe`` makes a tiny MoE VLM). Quality is meaningless; every code path is real.
    ``random:qwen_vl[:layers=..,hidden=..]``: a tiny randomly initialised Qwen2.5-VL with its real
        image processor (see :class:`QwenImageTextProcessor` for the processor).
    ``random:molmo2[:layers=..,vision_layers=..]``: a tiny randomly initialised Molmo2 with its real
        image processor's crop geometry and token layout (see :class:`Molmo2ImageTextProcessor`).
    an original Molmo checkpoint (remote code, ``trust_remote_code=True``): see :mod:`knobscope.models.molmo`.

A :class:`VisionFamily` knows, for one architecture, where the vision tower and the projector
are (the stages are timed with forward hooks on them, no model edits) and how a crop budget or a
vision-token budget becomes the processor's own setting. Families: :data:`VLM_FAMILIES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knobscope.errors import WorkloadError
from knobscope.models.loading import checkpoint_identity
from knobscope.models.molmo import MolmoFamily, MolmoProcessorAdapter, load_remote_model
from knobscope.models.vision_family import VisionFamily
from knobscope.space import identity_hash

__all__ = ["LoadedVLM", "VisionFamily", "Idefics3Family", "QwenVLFamily", "Molmo2Family", "VLM_FAMILIES", "load_vlm",
           "is_vlm_source"]  # fmt: skip


class Idefics3Family(VisionFamily):
    """Idefics3 and SmolVLM (v1): the image is resized so its longest edge is
    ``size["longest_edge"]``, then split into tiles of ``max_image_size["longest_edge"]`` (plus
    one global view when there is more than one tile); each tile becomes ``image_seq_len`` tokens."""

    name = "idefics3"
    model_types = ("idefics3",)

    def vision_tower(self, model: Any) -> Any:
        return model.model.vision_model

    def projector(self, model: Any) -> Any:
        return model.model.connector

    def text_model(self, model: Any) -> Any:
        return model.model.text_model

    def crops(self, inputs: Any) -> int:
        return int(inputs["pixel_values"].shape[1])  # (batch, crops, channels, height, width)

    def tiling_size(self, processor: Any, tiles: int) -> tuple[int, int]:
        tile = int(processor.image_processor.max_image_size["longest_edge"])
        return tiles * tile, tile

    @staticmethod
    def crops_at(size: tuple[int, int], longest: int, tile: int) -> int:
        """Crops the processor makes of an image of ``size`` resized to ``longest`` (tiles + global)."""
        width, height = size
        scale = longest / max(width, height)
        w, h = max(1, round(width * scale)), max(1, round(height * scale))
        tiles = math.ceil(w / tile) * math.ceil(h / tile)
        return tiles + 1 if tiles > 1 else 1

    def processor_kwargs(self, processor: Any, size: tuple[int, int], *, max_crops: int | None,
                         vision_tokens: int | None) -> dict[str, Any]:  # fmt: skip
        if max_crops is None and vision_tokens is None:
            return {}  # no budget: the processor's own settings
        tile = int(processor.image_processor.max_image_size["longest_edge"])
        per_crop = int(processor.image_seq_len)
        best = tile
        for k in range(1, 64):  # longest edge = k tiles
            crops = self.crops_at(size, k * tile, tile)
            tiles = crops - 1 if crops > 1 else 1
            if (max_crops is not None and tiles > max_crops) or (vision_tokens is not None and crops * per_crop > vision_tokens):
                break
            best = k * tile
        return {"size": {"longest_edge": best}, "do_image_splitting": best > tile}


class QwenVLFamily(VisionFamily):
    """Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3-VL-MoE: no crops; the image is resized to at most
    ``size["longest_edge"]`` pixels (the processor's ``max_pixels``), cut into ``patch_size``
    patches, and each ``merge_size`` x ``merge_size`` block of patches becomes one token."""

    name = "qwen_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
    projector_inside_vision = True
    takes_crops = False

    def vision_tower(self, model: Any) -> Any:
        return model.model.visual

    def projector(self, model: Any) -> Any:
        return model.model.visual.merger

    def text_model(self, model: Any) -> Any:
        return model.model.language_model

    def processor_kwargs(self, processor: Any, size: tuple[int, int], *, max_crops: int | None,
                         vision_tokens: int | None) -> dict[str, Any]:  # fmt: skip
        if vision_tokens is None:
            return {}
        ip = processor.image_processor
        per_token = (int(ip.patch_size) * int(ip.merge_size)) ** 2  # pixels one token covers
        longest = vision_tokens * per_token
        shortest = min(int(ip.size["shortest_edge"]), longest)
        return {"size": {"shortest_edge": shortest, "longest_edge": longest}}

    def prompt(self, processor: Any, text: str) -> str:
        if getattr(processor, "chat_template", None):
            return super().prompt(processor, text)
        return f"<|vision_start|><|image_pad|><|vision_end|>{text}"


class Molmo2Family(VisionFamily):
    """Molmo2 (seed 000's own family): the image is cut into at most ``max_crops`` overlapping
    crops of ``size`` pixels (the processor's ``max_crops``), plus one low-resolution view; the
    adapter pools each ``pooling_size`` window of patches into one token."""

    name = "molmo2"
    model_types = ("molmo2",)

    def vision_tower(self, model: Any) -> Any:
        return model.model.vision_tower

    def projector(self, model: Any) -> Any:
        return model.model.multi_modal_projector

    def text_model(self, model: Any) -> Any:
        return model.model.language_model

    def crops(self, inputs: Any) -> int:
        return int(inputs["image_num_crops"].sum())  # the crops and the low-resolution view

    @staticmethod
    def tokens_at(processor: Any, size: tuple[int, int], max_crops: int) -> int:
        """Image patch tokens the processor makes of an image of ``size`` (width, height)."""
        width, height = size
        return int(processor.image_processor.get_number_of_image_patches(height, width, {"max_crops": max_crops}))

    def processor_kwargs(self, processor: Any, size: tuple[int, int], *, max_crops: int | None,
                         vision_tokens: int | None) -> dict[str, Any]:  # fmt: skip
        return self.max_crops_setting(lambda k: self.tokens_at(processor, size, k), max_crops, vision_tokens)

    def tiling_size(self, processor: Any, tiles: int) -> tuple[int, int]:
        ip = processor.image_processor
        crop = ip.size["height"] if isinstance(ip.size, dict) else ip.size.height
        margin = (ip.overlap_margins[0] + ip.overlap_margins[1]) * ip.patch_size  # crops overlap by this much
        return tiles * (crop - margin) + margin, crop

    def prompt(self, processor: Any, text: str) -> str:
        if getattr(processor, "chat_template", None):
            return super().prompt(processor, text)
        return f"<|image|>{text}"


VLM_FAMILIES: dict[str, VisionFamily] = {f.name: f for f in (Idefics3Family(), QwenVLFamily(), Molmo2Family(), MolmoFamily())}


@dataclass
class LoadedVLM:
    model: Any
    processor: Any
    family: VisionFamily
    source: str
    identity: str  # stable across moves of the checkpoint: keys caches (block importance)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer


def is_vlm_source(source: str) -> bool:
    """Whether ``source`` names a vision-language model (``random:idefics3``, ``random:qwen_vl``,
    ``random:molmo2``, or a checkpoint whose config has a vision part or is an original Molmo's).
    Reads a local config only; a hub id is looked up (the hub is asked only for ids that are not
    local). Never runs a checkpoint's own code."""
    import json

    from knobscope.models.loading import DEFAULT_MODEL

    if source.startswith("random:"):
        return source.split(":")[1] in VLM_FAMILIES
    if source == DEFAULT_MODEL or source.endswith(".gguf"):
        return False  # the packaged language model: no hub round trip for it
    path = Path(source)
    if path.exists():
        config = path / "config.json"
        try:
            return config.is_file() and _is_vlm_config(json.loads(config.read_text()))
        except (OSError, ValueError):
            return False  # the lm loader says what is wrong with it
    from transformers import PretrainedConfig

    try:
        return _is_vlm_config(PretrainedConfig.get_config_dict(source)[0])
    except (OSError, ValueError):
        return False  # not a checkpoint transformers reads: the lm loader says why


def _is_vlm_config(config: dict[str, Any]) -> bool:
    return "vision_config" in config or config.get("model_type") in MolmoFamily.model_types


def load_vlm(source: str, *, dtype: str = "auto", device: str = "cpu", seed: int = 0,
             trust_remote_code: bool = False) -> LoadedVLM:  # fmt: skip
    """Load a vision-language model and its processor; raises WorkloadError with one line for a
    source that is not one (a text-only model included), or whose code ships inside the
    checkpoint (original Molmo) when ``trust_remote_code`` is not given."""
    import torch

    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    torch_dtype = getattr(torch, dtype)
    if source.startswith("random:"):
        torch.manual_seed(seed)
        model, processor, family = _random_vlm(source)
        model = model.to(dtype=torch_dtype, device=device).eval()
        return LoadedVLM(model, processor, family, source, identity_hash([source, seed, dtype]))
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        raw = PretrainedConfig.get_config_dict(source)[0]
        # Code runs only for a model type transformers does not know (a known one ignores auto_map).
        if raw.get("auto_map") and raw.get("model_type") not in CONFIG_MAPPING and not trust_remote_code:
            refs = [r for v in raw["auto_map"].values() for r in (v if isinstance(v, list) else [v]) if isinstance(r, str)]
            code = sorted({ref.split("--")[-1].split(".")[0] + ".py" for ref in refs})
            raise WorkloadError(f"model {source!r} runs Python code it ships ({', '.join(code)}); if you trust it, "
                                "set trust_remote_code: true in the workload's args")  # fmt: skip
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise WorkloadError(f"model {source!r} cannot be read: {str(exc).splitlines()[0]}") from None
    family = next((f for f in VLM_FAMILIES.values() if config.model_type in f.model_types), None)
    if family is None:
        kind = "a text-only model" if not hasattr(config, "vision_config") else f"a {config.model_type!r} model"
        raise WorkloadError(f"model {source!r} is {kind}; the vlm workload takes these families: "
                            f"{', '.join(sorted(t for f in VLM_FAMILIES.values() for t in f.model_types))}")  # fmt: skip
    if getattr(family, "remote_code", False):
        try:
            model = load_remote_model(source, config, torch_dtype)
        except (OSError, ValueError, ImportError) as exc:
            raise WorkloadError(f"model {source!r}: its own code cannot be loaded: {str(exc).splitlines()[0]}") from None
        processor: Any = MolmoProcessorAdapter(AutoProcessor.from_pretrained(source, trust_remote_code=True))
    else:
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=torch_dtype)
        processor = AutoProcessor.from_pretrained(source)
    model = model.to(device).eval()
    path = Path(source)
    return LoadedVLM(model, processor, family, source, checkpoint_identity(path) if path.is_dir() else identity_hash([source]))


def _random_vlm(source: str) -> tuple[Any, Any, VisionFamily]:
    from knobscope.models.loading import RANDOM_FAMILIES

    _, _, rest = source.partition(":")
    family, _, options = rest.partition(":")
    if family not in VLM_FAMILIES:
        raise WorkloadError(f"unknown random VLM family {family!r}; families: {', '.join(VLM_FAMILIES)}")
    text_family, text_options, vision_options = "llama", {}, {}
    for item in filter(None, options.split(",")):
        key, _, value = item.partition("=")
        if key == "text":
            if value not in RANDOM_FAMILIES:
                raise WorkloadError(f"random VLM option text={value!r}: text families are {', '.join(RANDOM_FAMILIES)}")
            text_family = value
        elif key in ("layers", "hidden", "heads", "kv_heads", "intermediate", "experts", "top_k") and value.isdigit():
            text_options[key] = int(value)
        elif key in VISION_OPTIONS and value.isdigit() and family in ("idefics3", "molmo2"):
            vision_options[key] = int(value)
        else:
            raise WorkloadError(f"random VLM option {item!r}: use text=FAMILY, layers/hidden/heads/kv_heads/"
                                "intermediate/experts/top_k=N, or (idefics3, molmo2) vision_layers/vision_hidden/vision_heads=N")  # fmt: skip
    if family == "molmo2":
        if text_family != "llama":
            raise WorkloadError("random:molmo2 has Molmo2's own text model; drop text=")
        return _random_molmo2(text_options, vision_options)
    if family == "qwen_vl":
        if text_family != "llama":
            raise WorkloadError("random:qwen_vl has Qwen2.5-VL's own text model; drop text=")
        return _random_qwen_vl(text_options)
    return _random_idefics3(text_family, text_options, vision_options)


VISION_OPTIONS = ("vision_layers", "vision_hidden", "vision_heads")


def _random_idefics3(text_family: str, text_options: dict[str, int], vision: dict[str, int]) -> tuple[Any, Any, VisionFamily]:
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    from knobscope.models.loading import load_causal_lm, random_config

    tokenizer = load_causal_lm("smollm2", structure_only=True).tokenizer
    image_tokens = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    tokenizer.add_special_tokens({"additional_special_tokens": image_tokens + [
        f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]})  # fmt: skip
    tile, patch, scale = 64, 16, 2  # tiny: 64-pixel tiles of 16-pixel patches, 4 tokens per tile
    image_processor = Idefics3ImageProcessorPil(size={"longest_edge": 4 * tile}, max_image_size={"longest_edge": tile},
                                                do_image_splitting=True)  # fmt: skip
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                  image_seq_len=(tile // patch) ** 2 // scale**2)  # fmt: skip
    text_config = random_config(text_family, text_options, tokenizer)
    config = Idefics3Config(
        vision_config={"hidden_size": vision.get("vision_hidden", 32), "num_hidden_layers": vision.get("vision_layers", 2),
                       "num_attention_heads": vision.get("vision_heads", 2),
                       "intermediate_size": 4 * vision["vision_hidden"] if "vision_hidden" in vision else 64, "image_size": tile, "patch_size": patch},
        text_config=text_config.to_dict(), scale_factor=scale, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )  # fmt: skip
    return Idefics3ForConditionalGeneration(config), processor, VLM_FAMILIES["idefics3"]


class QwenImageTextProcessor:
    """What ``Qwen2_5_VLProcessor`` does for one image, composed from its image processor and a
    tokenizer: the image processor resizes and patches the image (it reads ``size``), and the
    prompt's ``<|image_pad|>`` is repeated once per merged patch. Used for ``random:qwen_vl``:
    transformers builds the real processor only with a video processor, which needs torchvision,
    which this machine's CPU torch cannot load. Real checkpoints use ``AutoProcessor``."""

    chat_template = None

    def __init__(self, image_processor: Any, tokenizer: Any) -> None:
        self.image_processor, self.tokenizer = image_processor, tokenizer

    def __call__(self, images: Any, text: list[str], return_tensors: str = "pt", **kwargs: Any) -> Any:
        from transformers import BatchFeature

        flat = [im for group in images for im in (group if isinstance(group, list) else [group])]
        vision = self.image_processor(images=flat, return_tensors=return_tensors, **kwargs)
        merge = int(self.image_processor.merge_size) ** 2
        counts = iter(int(g.prod()) // merge for g in vision["image_grid_thw"])
        prompts = []
        for t in text:
            while "<|image_pad|>" in t and "<|placeholder|>" not in t.split("<|image_pad|>", 1)[0]:
                t = t.replace("<|image_pad|>", "<|placeholder|>" * next(counts), 1)
            prompts.append(t.replace("<|placeholder|>", "<|image_pad|>"))
        encoded = self.tokenizer(prompts, return_tensors=return_tensors)
        return BatchFeature({**encoded, **vision})


def _random_qwen_vl(text_options: dict[str, int]) -> tuple[Any, Any, VisionFamily]:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    from knobscope.models.loading import load_causal_lm

    tokenizer = load_causal_lm("smollm2", structure_only=True).tokenizer
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                                                                "<|video_pad|>"]})  # fmt: skip
    hidden = text_options.get("hidden", 64)
    heads = text_options.get("heads", 4)
    half = hidden // heads // 2  # rotary frequencies per head, split over (time, height, width)
    config = Qwen2_5_VLConfig(
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": hidden,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 56,
                       "fullatt_block_indexes": [1]},
        text_config={"vocab_size": len(tokenizer), "hidden_size": hidden, "num_hidden_layers": text_options.get("layers", 2),
                     "num_attention_heads": heads, "num_key_value_heads": text_options.get("kv_heads", 2),
                     "intermediate_size": text_options.get("intermediate", 2 * hidden), "max_position_embeddings": 8192,
                     "rope_scaling": {"type": "mrope", "mrope_section": [half - 2 * (half // 3), half // 3, half // 3]}},
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
    )  # fmt: skip
    image_processor = Qwen2VLImageProcessorPil(patch_size=14, merge_size=2, temporal_patch_size=2,
                                               size={"shortest_edge": 4 * 28 * 28, "longest_edge": 256 * 28 * 28})  # fmt: skip
    return Qwen2_5_VLForConditionalGeneration(config), QwenImageTextProcessor(image_processor, tokenizer), VLM_FAMILIES["qwen_vl"]


def _molmo2_image_processor(**kwargs: Any) -> Any:
    """Molmo2's own image processor (its crop geometry, patches and pooling indices) with its two
    torchvision calls, a bilinear resize without antialiasing and a normalisation, done by the
    torch functions torchvision calls for tensors; torchvision cannot load on this machine."""
    import torch
    from torch.nn import functional as F
    from transformers.models.molmo2.image_processing_molmo2 import Molmo2ImageProcessor

    class Molmo2ImageProcessorTorch(Molmo2ImageProcessor):
        def resize(self, image: Any, size: Any, resample: Any = None, antialias: bool = True, **_: Any) -> Any:
            return F.interpolate(image, size=(size.height, size.width), mode="bilinear", align_corners=False, antialias=antialias)

        def normalize(self, image: Any, mean: Any, std: Any, inplace: bool = False, **_: Any) -> Any:
            mean = torch.as_tensor(mean, dtype=image.dtype, device=image.device).view(-1, 1, 1)
            std = torch.as_tensor(std, dtype=image.dtype, device=image.device).view(-1, 1, 1)
            return (image - mean) / std

    return Molmo2ImageProcessorTorch(**kwargs)


class Molmo2ImageTextProcessor:
    """What ``Molmo2Processor`` does for images, composed from its image processor, its own token
    layout (``Molmo2Processor.replace_image_token``: the low-resolution view, then the crops' patch
    rows with column tokens) and a tokenizer. Used for ``random:molmo2``: transformers builds the
    real processor only when it can check the video processor's class, which needs torchvision."""

    chat_template = None
    image_use_col_tokens = True
    use_single_crop_col_tokens = None
    use_single_crop_start_token = True

    def __init__(self, image_processor: Any, tokenizer: Any) -> None:
        from transformers.models.molmo2.processing_molmo2 import Molmo2Processor

        self.image_processor, self.tokenizer = image_processor, tokenizer
        self._layout = Molmo2Processor.replace_image_token  # the real layout, read with this object's settings

    def __call__(self, images: Any, text: list[str], return_tensors: str = "pt", **kwargs: Any) -> Any:
        from transformers import BatchFeature

        flat = [im for group in images for im in (group if isinstance(group, list) else [group])]
        vision = self.image_processor(images=flat, return_tensors=return_tensors, **kwargs)
        bos = self.tokenizer.bos_token or self.tokenizer.eos_token
        index, prompts = 0, []
        for t in text:
            head, *rest = t.split("<|image|>")
            for part in rest:
                head += self._layout(self, vision, index) + part
                index += 1
            prompts.append(head if head.startswith(bos) else bos + head)  # as Molmo2Processor does
        return BatchFeature({**self.tokenizer(prompts, return_tensors=return_tensors), **vision})


def _random_molmo2(text_options: dict[str, int], vision: dict[str, int]) -> tuple[Any, Any, VisionFamily]:
    from transformers import Molmo2Config, Molmo2ForConditionalGeneration

    from knobscope.models.loading import load_causal_lm

    tokenizer = load_causal_lm("smollm2", structure_only=True).tokenizer
    special = ["<|image|>", "<|video|>", "<im_patch>", "<im_col>", "<im_start>", "<low_res_im_start>", "<frame_start>",
               "<im_end>", "<frame_end>", "<im_low>"]  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": special})
    ids = dict(zip(special, tokenizer.convert_tokens_to_ids(special)))
    crop, patch = 84, 14  # tiny: 84-pixel crops of 6 x 6 patches, overlapping by one patch each side, pooled 2 x 2
    image_processor = _molmo2_image_processor(size={"height": crop, "width": crop}, patch_size=patch, pooling_size=[2, 2],
                                              overlap_margins=[1, 1], max_crops=8)  # fmt: skip
    v_hidden, v_heads = vision.get("vision_hidden", 32), vision.get("vision_heads", 2)
    hidden, heads = text_options.get("hidden", 64), text_options.get("heads", 4)
    config = Molmo2Config(
        vision_config={"hidden_size": v_hidden, "intermediate_size": 2 * v_hidden, "num_hidden_layers": vision.get("vision_layers", 2),
                       "num_attention_heads": v_heads, "num_key_value_heads": v_heads, "head_dim": v_hidden // v_heads,
                       "image_size": [crop, crop], "patch_size": patch},
        adapter_config={"vision_feature_layer": [-1], "hidden_size": v_hidden, "num_attention_heads": v_heads,
                        "num_key_value_heads": v_heads, "head_dim": v_hidden // v_heads, "intermediate_size": 2 * hidden,
                        "text_hidden_size": hidden},
        text_config={"hidden_size": hidden, "num_attention_heads": heads, "num_key_value_heads": text_options.get("kv_heads", 2),
                     "head_dim": hidden // heads, "vocab_size": len(tokenizer), "additional_vocab_size": 0,
                     "num_hidden_layers": text_options.get("layers", 2), "intermediate_size": text_options.get("intermediate", 2 * hidden),
                     "max_position_embeddings": 8192},
        image_start_token_id=ids["<im_start>"], low_res_image_start_token_id=ids["<low_res_im_start>"],
        image_end_token_id=ids["<im_end>"], image_patch_id=ids["<im_patch>"], frame_start_token_id=ids["<frame_start>"],
        frame_end_token_id=ids["<frame_end>"],
    )  # fmt: skip
    return Molmo2ForConditionalGeneration(config), Molmo2ImageTextProcessor(image_processor, tokenizer), VLM_FAMILIES["molmo2"]
