"""The ``vlm`` workload: a vision-language model answering VQA questions or captioning images.

One model per worker (``AutoModelForImageTextToText`` + ``AutoProcessor``, or ``random:idefics3``:
see :mod:`knobscope.models.vlm`), knobs applied in place:

==================  ============================================================================
``max_crops``       at most this many image crops (tiles; the global view comes on top), reached
                    through the family's own processor setting (Idefics3: the longest edge; Molmo2 and
                    original Molmo, whose remote code runs with ``trust_remote_code: true``: max_crops;
                    Qwen-VL families resize instead of cropping and refuse this knob)
``vision_tokens``   at most this many vision tokens, the same way (Qwen-VL: ``max_pixels``, i.e.
                    tokens x (patch x merge)^2 pixels); the count reached is reported
``max_new_tokens``  output length
``num_active_blocks`` / ``block_selection``  N decoder blocks of the language model on: the
                    ``first`` N, or the N of highest ShortGPT Block Influence
                    (``block_influence``, ranked once on the workload's own images and prompts,
                    label-free, and cached)
``top_k``           experts per token of an MoE text backbone
==================  ============================================================================

Stages: ``preprocess`` (the processor: image resizing, splitting, tokenising), ``prefill`` (the
model's first forward pass) with ``vision_encoder`` and ``projector`` timed inside it by forward
hooks on the vision tower and the connector, and ``decode`` (one call per further token). The
LLM's share of the prefill is reported as ``llm_prefill_ms``. Token counts come from tensor
shapes: ``vision_tokens_actual`` (image tokens in the prompt), ``text_tokens``, ``crops``.

Quality: ``task: vqa`` scores each answer with the official VQA soft accuracy (``vqa_accuracy``);
``task: captions`` reports corpus CIDEr-D, BLEU-4 and ROUGE-L of the captions
(``Workload.summarize``), with pycocoevalcap's scorers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from knobscope.errors import WorkloadError
from knobscope.measure import StageTimer
from knobscope.metrics.captions import corpus_bleu4, score_captions
from knobscope.space import Space
from knobscope.workloads.base import Metric, Workload, WorkloadContext, parse_args

__all__ = ["VLMWorkload", "VLMArgs"]

BLOCK_SELECTIONS = ("first", "block_influence")


class VLMArgs(BaseModel):
    """Arguments of the ``vlm`` workload (the spec's ``workload.args``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("random:idefics3", description="a VLM checkpoint dir, a hub id, random:idefics3[:text=FAMILY,...], random:qwen_vl or random:molmo2")
    trust_remote_code: bool = Field(False, description="run the Python code a checkpoint ships (original Molmo: allenai/Molmo-7B-D-0924, MolmoE-1B, ...); only for checkpoints you trust")
    task: Literal["vqa", "captions"] = Field("vqa", description="vqa (soft accuracy) or captions (CIDEr-D, BLEU-4, ROUGE-L)")
    questions: str = Field("builtin:vqa", description="VQA v2 questions JSON, or builtin:vqa")
    annotations: str | None = Field(None, description="VQA v2 annotations JSON (the human answers) for `questions`")
    captions: str = Field("builtin:captions", description="COCO captions annotations JSON, or builtin:captions")
    images: str = Field("builtin:skimage", description="image directory, or builtin:skimage (the shipped set's images)")
    num_samples: int | None = Field(None, ge=1, description="use only the first N questions or images")
    vqa_prompt: str = Field("{question} Answer with one word or number.", description="the VQA prompt; {question} is replaced")
    caption_prompt: str = Field("Describe the image in one sentence.", description="the captioning prompt")
    default_max_new_tokens: int | None = Field(None, ge=1, description="when max_new_tokens is not a knob (default: vqa 8, captions 24)")
    block_selection: Literal["first", "block_influence"] = Field("first", description="used when block_selection is not a knob")
    calibration_samples: int = Field(8, ge=1, description="samples (images with their prompts) that rank blocks by block_influence")
    exact_tiling: bool = Field(False, description="resize each image to one row of max_crops tiles, so the processor makes exactly that many (seed 002 Exp1: tilings 1x1 ... 1xN)")
    ignore_eos: bool = Field(False, description="always generate max_new_tokens (scored up to the first EOS)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="auto: float32 on CPU, bfloat16 on CUDA")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU (default: torch's)")


class VLMWorkload(Workload):
    """Greedy generation with a vision-language model, timed per stage and scored on VQA or captions."""

    knobs = ("max_crops", "vision_tokens", "max_new_tokens", "num_active_blocks", "block_selection", "top_k")
    path_args = ("model", "questions", "annotations", "captions", "images")
    metrics = {
        "vqa_accuracy": Metric(True, "", "official VQA soft accuracy: min(matching annotators / 3, 1), averaged", range=(0.0, 1.0)),
        # per caption, pycocoevalcap's score inside the set (mean = the corpus score)
        "cider_d": Metric(True, "", "CIDEr-D of the caption (pycocoevalcap; mean: corpus CIDEr-D)", proportion=False),
        "rouge_l": Metric(True, "", "ROUGE-L of the caption (pycocoevalcap; mean: its ROUGE-L)", proportion=False, range=(0.0, 1.0)),
        "bleu4": Metric(True, "", "corpus BLEU-4 of the captions (pycocoevalcap), bootstrap interval over images", proportion=False, range=(0.0, 1.0)),
        "vision_tokens_actual": Metric(False, "tokens", "image tokens in the prompt (the count the vision_tokens budget reached)"),
        "text_tokens": Metric(False, "tokens", "prompt tokens that are not image tokens"),
        "crops": Metric(False, "crops", "image crops the processor made (tiles and the global view)"),
        "tokens_out": Metric(False, "tokens", "generated tokens"),
    }

    def __init__(self, **args: Any) -> None:
        from knobscope.datasets import load_captions, load_vqa

        self.args = parse_args(VLMArgs, args, "vlm")
        if self.args.task == "vqa":
            items = load_vqa(self.args.questions, self.args.annotations, self.args.images)
        else:
            items = load_captions(self.args.captions, self.args.images)
        self.items = items[: self.args.num_samples] if self.args.num_samples else items
        self.max_new_tokens = self.args.default_max_new_tokens or (8 if self.args.task == "vqa" else 24)
        self.max_crops: int | None = None
        self.vision_tokens: int | None = None
        self._importance: Any = None

    def check_values(self, space: Space) -> None:
        values = {name: space.knob(name).values for name in space.names}
        for knob in ("max_crops", "vision_tokens", "max_new_tokens", "num_active_blocks", "top_k"):
            bad = [v for v in values.get(knob, []) if isinstance(v, bool) or not isinstance(v, int) or v < 1]
            if bad:
                raise WorkloadError(f"{knob} value {bad[0]!r} is not possible: values must be whole numbers >= 1")
        bad = [v for v in values.get("block_selection", []) if v not in BLOCK_SELECTIONS]
        if bad:
            raise WorkloadError(f"block_selection value {bad[0]!r} is not possible for vlm; choose from "
                                f"{', '.join(BLOCK_SELECTIONS)} (accuracy_drop is the lm workload's)")  # fmt: skip

    # ---------------------------------------------------------------- setup
    def setup(self, ctx: WorkloadContext) -> None:
        import torch
        from PIL import Image

        from knobscope.models.block_mask import BlockMask, find_decoder_layers
        from knobscope.models.moe import MoETopK
        from knobscope.models.vlm import load_vlm

        if self.args.threads is not None:
            torch.set_num_threads(self.args.threads)
        self.device, self.log = ctx.device, ctx.log
        loaded = load_vlm(self.args.model, dtype=self.args.dtype, device=ctx.device, seed=ctx.seed,
                          trust_remote_code=self.args.trust_remote_code)  # fmt: skip
        self.loaded = loaded
        self.model, self.processor, self.family = loaded.model, loaded.processor, loaded.family
        text_model = self.family.text_model(self.model)
        self.blocks = BlockMask(find_decoder_layers(text_model))
        self.topk = MoETopK(text_model)
        ctx.timer.attach(self.family.vision_tower(self.model), "vision_encoder")
        ctx.timer.attach(self.family.projector(self.model), "projector")
        self.image_token_id = self.family.image_token_id(self.model, self.processor)
        tok = self.processor.tokenizer
        vocab = tok.get_vocab()
        self.eos_ids = {t for t in (tok.eos_token_id, vocab.get("<end_of_utterance>"), vocab.get("<|im_end|>")) if isinstance(t, int)}
        self.images = {str(it["image"]): Image.open(it["image"]).convert("RGB") for it in self.items}  # decoded once

    def check_space(self, space: Space) -> None:
        super().check_space(space)
        self.check_values(space)
        if not hasattr(self, "blocks"):
            return
        values = {name: space.knob(name).values for name in space.names}
        bad = [v for v in values.get("num_active_blocks", []) if v > len(self.blocks)]
        if bad:
            raise WorkloadError(f"num_active_blocks value {bad[0]!r} is not possible: the language model has "
                                f"{len(self.blocks)} blocks, so values must be integers in 1..{len(self.blocks)}")  # fmt: skip
        if self.args.exact_tiling and "max_crops" not in values:
            raise WorkloadError("exact_tiling: true needs the knob max_crops (the number of tiles in the row)")
        if ("max_crops" in values or self.args.exact_tiling) and not self.family.takes_crops:
            raise WorkloadError(f"knob max_crops: {self.args.model!r} ({self.family.name}) resizes images instead of "
                                "cropping them; use the knob vision_tokens")  # fmt: skip
        if "top_k" in values:
            if not self.topk:
                raise WorkloadError(f"knob top_k needs an MoE text backbone, but {self.args.model!r} has none "
                                    "(random:idefics3:text=qwen3_moe makes one)")  # fmt: skip
            bad = [v for v in values["top_k"] if v > self.topk.num_experts]
            if bad:
                raise WorkloadError(f"top_k value {bad[0]!r} is not possible: the MoE layers have {self.topk.num_experts} experts")

    def teardown(self) -> None:
        if hasattr(self, "blocks"):
            self.blocks.restore()
            self.topk.restore()

    # ---------------------------------------------------------------- configurations
    def samples(self) -> Sequence[Mapping[str, Any]]:
        return self.items

    def apply(self, config: Mapping[str, Any]) -> None:
        n = int(config.get("num_active_blocks", len(self.blocks)))
        if config.get("block_selection", self.args.block_selection) == "first":
            self.blocks.first_n(n)
        else:
            self.blocks.set_active(self.importance().top(n))
        if "top_k" in config:
            self.topk.set(int(config["top_k"]))
        self.max_new_tokens = int(config.get("max_new_tokens", self.args.default_max_new_tokens or self.max_new_tokens))
        self.max_crops = config.get("max_crops")
        self.vision_tokens = config.get("vision_tokens")

    def inputs(self, sample: Mapping[str, Any]) -> Any:
        """The processor's output for ``sample`` under the current crop / vision-token budget."""
        image = self.images[str(sample["image"])]
        if self.args.exact_tiling and self.max_crops:
            image = image.resize(self.family.tiling_size(self.processor, int(self.max_crops)))
        text = self.args.vqa_prompt.format(question=sample["question"]) if self.args.task == "vqa" else self.args.caption_prompt
        kwargs = self.family.processor_kwargs(self.processor, image.size, max_crops=self.max_crops,
                                              vision_tokens=self.vision_tokens)  # fmt: skip
        return self.processor(images=[[image]], text=[self.family.prompt(self.processor, text)], return_tensors="pt",
                              **kwargs).to(self.device)  # fmt: skip

    def generate(self, inputs: Any, stage: Any) -> list[int]:
        """Greedy decoding with a KV cache; ``stage(name)`` wraps the prefill and every decode step."""
        import torch

        generated: list[int] = []
        with torch.inference_mode():
            with stage("prefill"):
                logits, state = self.family.prefill(self.model, inputs)
                token = logits.argmax(dim=-1, keepdim=True)
            generated.append(int(token))
            while len(generated) < self.max_new_tokens:
                if not self.args.ignore_eos and generated[-1] in self.eos_ids:
                    break
                with stage("decode"):
                    token = self.family.decode(self.model, token, state).argmax(dim=-1, keepdim=True)
                generated.append(int(token))
        return generated

    def run(self, sample: Mapping[str, Any], timer: StageTimer) -> dict[str, Any]:
        from knobscope.metrics.vqa import vqa_soft_accuracy

        with timer.stage("preprocess"):
            inputs = self.inputs(sample)
        generated = self.generate(inputs, timer.stage)
        end = next((i for i, t in enumerate(generated) if t in self.eos_ids), len(generated))
        prediction = self.processor.tokenizer.decode(generated[:end], skip_special_tokens=True).strip()
        ids = inputs["input_ids"]
        vision = int((ids == self.image_token_id).sum())
        record: dict[str, Any] = {
            "vision_tokens_actual": vision, "text_tokens": int(ids.shape[1]) - vision,
            "crops": self.family.crops(inputs), "tokens_out": len(generated), "prediction": prediction,
            "llm_prefill_ms": timer.stage_ms("prefill") - timer.stage_ms("vision_encoder")
            - (0.0 if self.family.projector_inside_vision else timer.stage_ms("projector")),
        }  # fmt: skip
        if self.args.task == "vqa":
            record["vqa_accuracy"] = vqa_soft_accuracy(prediction, sample["answers"])
        if len(generated) == 1:
            record["decode_ms"] = 0.0  # no decode step ran; 0 keeps the column numeric
        return record

    def importance(self) -> Any:
        """Block Influence of the language model's blocks on the first ``calibration_samples``
        samples at the processor's default budget, from the disk cache or computed now. It reads
        the images and prompts only, never the answers or captions."""
        from knobscope.models.importance import BlockImportance, block_influence, cached_importance, importance_path
        from knobscope.space import identity_hash

        if self._importance is not None:
            return self._importance
        items = self.items[: self.args.calibration_samples]
        calibration = {"task": self.args.task, "samples": [str(it["id"]) for it in items],
                       "images": identity_hash([self.images[str(it["image"])].tobytes() for it in items]),
                       "prompt": self.args.vqa_prompt if self.args.task == "vqa" else self.args.caption_prompt,
                       "questions": [it.get("question", "") for it in items],
                       "dtype": str(next(self.model.parameters()).dtype)}  # fmt: skip
        path = importance_path(self.loaded.identity, "block_influence", identity_hash(calibration))

        def compute() -> BlockImportance:
            self.log.info("ranking %d blocks by block_influence on %d samples (once; cached in %s)",
                          len(self.blocks), len(items), path)  # fmt: skip
            saved = list(self.blocks.active)
            budget = self.max_crops, self.vision_tokens
            self.blocks.set_active(range(len(self.blocks)))
            self.max_crops = self.vision_tokens = None
            try:
                scores = block_influence(self.model, self.blocks.layers, [self.inputs(it) for it in items])
            finally:
                self.blocks.set_active(i for i, a in enumerate(saved) if a)
                self.max_crops, self.vision_tokens = budget
            return BlockImportance("block_influence", scores, model=self.loaded.identity, calibration=calibration)

        self._importance = cached_importance(path, compute, log=self.log)
        return self._importance

    # ---------------------------------------------------------------- per-configuration metrics
    def score_set(self, records: Sequence[dict[str, Any]]) -> None:
        if self.args.task == "captions":
            score_captions(records, {str(it["id"]): it["captions"] for it in self.items})

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        if self.args.task != "captions":
            return {}
        return {"bleu4": corpus_bleu4(records, {str(it["id"]): it["captions"] for it in self.items})}
