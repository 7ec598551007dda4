"""``sketchwalk``: SketchWalk block-sparse attention against dense attention (seed 004).

Each sample is one stack of attention layers' queries, keys and values at ``seq_len``
tokens. Per sample both arms run on the same tensors, one after the other:

- ``dense``: :func:`~torch.nn.functional.scaled_dot_product_attention` (causal) on every layer;
- ``sketchwalk``: SketchWalk with the configuration's knobs, layer after layer with the walk
  state carried between them (layers below ``skip_layers`` dense), timed in two sub-stages,
  ``sketch`` (block scores, walk, selection) and ``sparse_attention`` (the block-sparse product);
  on CUDA these two are the device's time between events, so the arm is not synchronised at
  every layer (the dense arm never is), while ``sketchwalk`` itself is wall time like ``dense``.

Data (``data``):

- ``smollm2``: real post-RoPE Q/K/V captured from SmolLM2 (every layer, through transformers'
  attention interface) on consecutive windows of the shipped text, up to its 8192-token
  context. Captured once per window and length, outside the timed stages (the tensors of one
  length are kept at a time, so a trial's peak memory does not depend on the ones before it).
- ``synthetic``: seed 004's ``create_synthetic_attention_data`` (batch 2, 8 heads, head dim
  128 by default): Gaussian queries and keys with planted structure — every query leans
  towards the first token (an attention sink), its own neighbourhood, and a few "heavy" key
  blocks shared by all layers (what block selection should find). ``structure: 0`` gives
  pure Gaussian data, where attention is nearly uniform and no sparse method can be exact.

Per-sample metrics: ``dense_ms``/``sketchwalk_ms`` (and the sub-stages), ``speedup`` (dense
time / SketchWalk time), ``cosine`` (mean over sparse layers of the cosine similarity of the
output against dense) and ``cosine_min``, ``finite`` (1 when no output is NaN/Inf), the
attention's working memory per arm (``dense_peak_mb``, ``sketchwalk_peak_mb``: the peak above
what was in use when the arm started — CUDA peak allocated, or on CPU the RSS high-water mark
after returning freed heap to the OS — less the layers' outputs, which both arms keep alike)
and ``memory_ratio``, and the selection's
actual sparsity: ``pair_sparsity`` (1 - query-key pairs computed / the n(n+1)/2 of dense causal
attention), ``selected_block_sparsity`` (1 - selected / causal block pairs) and
``speedup_bound`` (the pairs ratio: the speedup if time followed the work).

Per configuration: seed 004's derived quantities (``num_blocks`` b = ceil(n/B),
``theoretical_sparsity`` 1 - min(1, tau*B/n), ``block_sparsity`` 1 - min(1, tau/b),
``complexity_factor`` (tau*B/h)/n); ``edge_cases_ok`` (seed 004's checklist: the attention on
sequence lengths 1, 2, B-1, B, B+1 and tau*B+1 is finite and, where tau covers every block,
equal to dense); with ``perplexity: true``, SmolLM2's perplexity on the text with SketchWalk
inside every layer from ``skip_layers`` (``perplexity``), beside the dense model's
(``perplexity_dense``, once per run) and their ratio (``perplexity_ratio``).

Configurations are checked before anything runs: B >= 1, k >= 1, tau >= 1, s >= 1, N >= 0 and
k >= log2(b) at the configuration's sequence length (seed 004's validation checklist).
"""

from __future__ import annotations

import ctypes
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from knobscope.errors import WorkloadError
from knobscope.measure import PeakMemory, StageTimer
from knobscope.models.loading import DEFAULT_MODEL
from knobscope.space import Space
from knobscope.workloads.base import Metric, Workload, WorkloadContext, parse_args, require_inductor

__all__ = ["SketchWalkWorkload", "SketchWalkArgs", "synthetic_qkv", "KNOB_FIELDS"]

# Knob name -> SketchWalkConfig field (the seed's names; ``seq_len`` is the data's length).
KNOB_FIELDS = {
    "block_size": "block_size",
    "sketch_dim": "sketch_dim",
    "top_k_blocks": "top_k_blocks",
    "sparsity_exponent": "sparsity_exponent",
    "skip_layers": "skip_layers",
    "hadamard_seed": "hadamard_seed",
    "walk_state_dtype": "walk_state_dtype",
    "use_srht": "use_srht",
    "head_selection": "head_selection",
    "use_walk": "use_walk",
    "query_chunk_blocks": "query_chunk_blocks",
    "sparse_kernel": "sparse_kernel",
    "sketch_kernel": "sketch_kernel",
}
SMOLLM2_CONTEXT = 8192


class SketchWalkArgs(BaseModel):
    """Arguments of the ``sketchwalk`` workload (the spec's ``workload.args``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: Literal["smollm2", "synthetic"] = Field("synthetic", description="smollm2: real Q/K/V captured from `model` (SmolLM2 by default); synthetic: seed 004's")
    seq_len: int = Field(4096, ge=1, description="tokens per sample, used when seq_len is not a knob")
    windows: int = Field(2, ge=1, description="samples: text windows (smollm2) or random draws (synthetic)")
    layers: int | None = Field(None, ge=1, description="attention layers per sample (smollm2: the first L; default all 30)")
    model: str = Field(DEFAULT_MODEL, description="model whose Q/K/V are captured and whose perplexity is measured")
    gguf_file: str | None = Field(None, description="GGUF file inside `model`")
    text: str = Field("builtin:text", description="text corpus for the windows and for perplexity")
    batch_size: int = Field(2, ge=1, description="synthetic: batch (seed 004: 2)")
    num_heads: int = Field(8, ge=1, description="synthetic: query heads (seed 004: 8)")
    num_kv_heads: int | None = Field(None, ge=1, description="synthetic: key/value heads (default: num_heads)")
    head_dim: int = Field(128, ge=1, description="synthetic: head dimension (seed 004: 128)")
    synthetic_layers: int = Field(4, ge=1, description="synthetic: layers per sample (the walk runs over them)")
    structure: float = Field(1.0, ge=0, description="synthetic: strength of the planted sink/local/heavy-block structure")
    heavy_blocks: int = Field(4, ge=0, description="synthetic: heavy key blocks planted per sample")
    perplexity: bool = Field(False, description="perplexity of the model on `text` with SketchWalk inside")
    perplexity_tokens: int | None = Field(None, ge=2, description="tokens per perplexity window (default: seq_len, at most 8192)")
    perplexity_windows: int = Field(1, ge=1, description="text windows scored for perplexity")
    edge_cases: bool = Field(True, description="check seed 004's edge sequence lengths once per configuration")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="dtype of Q/K/V and the model")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads on CPU (default: torch's)")


def synthetic_qkv(*, batch: int, heads: int, kv_heads: int, seq_len: int, head_dim: int, layers: int,
                  structure: float, heavy_blocks: int, seed: int, span: int = 64,
                  heavy_at: Sequence[int] | None = None) -> list[tuple[Any, Any, Any]]:  # fmt: skip
    """Seed 004's synthetic attention data, one ``(query, key, value)`` per layer.

    Gaussian entries with planted structure of strength ``structure``: key 0 and a few heavy
    key blocks (the same in every layer, as retrieval heads agree across depth) carry a
    shared direction that every query leans towards, and queries and keys drift slowly with
    position, so nearby tokens attend to each other. ``structure=0`` is pure Gaussian. Heavy
    spans are ``span`` tokens long, whatever the block size being tested; ``heavy_at`` places
    them (span indices) instead of drawing ``heavy_blocks`` at random.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    blocks = max(1, math.ceil(seq_len / span))
    heavy = torch.randperm(blocks, generator=gen)[: min(heavy_blocks, blocks)] if heavy_at is None else torch.tensor(heavy_at)
    out = []
    for _ in range(layers):
        q = torch.randn(batch, heads, seq_len, head_dim, generator=gen)
        k = torch.randn(batch, kv_heads, seq_len, head_dim, generator=gen)
        v = torch.randn(batch, kv_heads, seq_len, head_dim, generator=gen)
        if structure > 0:
            sink = torch.randn(head_dim, generator=gen)
            sink = sink / sink.norm() * math.sqrt(head_dim)
            q += 0.5 * structure * sink
            k[:, :, 0] += structure * sink
            for b in heavy.tolist():
                k[:, :, b * span : (b + 1) * span] += 0.5 * structure * sink
            # A slow random walk over positions shared by queries and keys: locality.
            drift = torch.randn(seq_len, head_dim, generator=gen).cumsum(0) / math.sqrt(span)
            drift = drift - drift.mean(0)
            q += structure * drift / drift.norm(dim=-1, keepdim=True).clamp_min(1e-6) * math.sqrt(head_dim) * 0.5
            k += structure * drift / drift.norm(dim=-1, keepdim=True).clamp_min(1e-6) * math.sqrt(head_dim) * 0.5
        out.append((q, k, v))
    return out


class _ArmMemory:
    """Peak memory of one arm above what was in use when it started.

    CUDA: peak allocated bytes. CPU: the RSS high-water mark (reset through
    ``/proc/self/clear_refs``) above the resident set, after ``malloc_trim`` has returned freed
    heap to the OS so the arm's allocations show up in the resident set.
    """

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak = PeakMemory(device)
        self._trim: Callable[[int], int] | None = None
        try:
            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except OSError:
            pass

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)

    def start(self) -> float | None:
        """Reset the peak; returns the memory in use now (None where the peak cannot be reset)."""
        self._sync()
        if self._trim is not None and not self.device.startswith("cuda"):
            self._trim(0)
        self.peak.reset()
        return self.peak.current_mb() if self.peak.resettable else None

    def peak_above(self, base: float | None) -> float:
        if base is None:
            return float("nan")
        self._sync()
        return self.peak.peak_mb() - base


class SketchWalkWorkload(Workload):
    """SketchWalk against dense SDPA on captured or synthetic Q/K/V; optionally inside SmolLM2."""

    knobs = ("seq_len", *KNOB_FIELDS)
    path_args = ("model", "text")
    metrics = {
        "speedup": Metric(True, "x", "dense attention time / SketchWalk time on the same Q/K/V"),
        "cosine": Metric(True, "", "mean over sparse layers of cos(SketchWalk output, dense output)", range=(-1.0, 1.0)),
        "cosine_min": Metric(True, "", "worst layer's cosine similarity against dense", range=(-1.0, 1.0)),
        "finite": Metric(True, "", "1 when every output is finite (no NaN/Inf)"),
        "dense_peak_mb": Metric(False, "MiB", "working memory of dense attention (peak above the start, less outputs)"),
        "sketchwalk_peak_mb": Metric(False, "MiB", "working memory of SketchWalk (peak above the start, less outputs)"),
        "memory_ratio": Metric(False, "", "SketchWalk peak memory / dense peak memory"),
        "pair_sparsity": Metric(True, "", "1 - query-key pairs computed / n(n+1)/2", range=(0.0, 1.0)),
        "selected_block_sparsity": Metric(True, "", "1 - selected / causal (query block, key block) pairs", range=(0.0, 1.0)),
        "speedup_bound": Metric(True, "x", "dense causal pairs / pairs SketchWalk computes"),
        "num_blocks": Metric(False, "", "b = ceil(n / B)"),
        "theoretical_sparsity": Metric(True, "", "1 - min(1, tau * B / n)", range=(0.0, 1.0)),
        "block_sparsity": Metric(True, "", "1 - min(1, tau / b)", range=(0.0, 1.0)),
        "complexity_factor": Metric(False, "", "(tau * B / h) / n"),
        "edge_cases_ok": Metric(True, "", "1 when the edge sequence lengths pass (finite; exact when tau covers all)"),
        "perplexity": Metric(False, "", "model perplexity on the text with SketchWalk inside"),
        "perplexity_dense": Metric(False, "", "the same model's perplexity with dense attention"),
        "perplexity_ratio": Metric(False, "", "perplexity / perplexity_dense"),
    }

    def __init__(self, **args: Any) -> None:
        self.args = parse_args(SketchWalkArgs, args, "sketchwalk")
        self._qkv: dict[tuple[int, int], list[tuple[Any, Any, Any]]] = {}
        self._ppl_dense: dict[int, float] = {}
        self.loaded: Any = None
        self.seq_len = self.args.seq_len

    # ---------------------------------------------------------------- setup and checks
    def setup(self, ctx: WorkloadContext) -> None:
        import torch

        if self.args.threads is not None:
            torch.set_num_threads(self.args.threads)
        self.device, self.seed, self.log = ctx.device, ctx.seed, ctx.log
        self.dtype = getattr(torch, self.args.dtype)
        self.memory = _ArmMemory(ctx.device)
        if self.args.data == "smollm2" or self.args.perplexity:
            from knobscope.models.loading import load_causal_lm

            self.loaded = load_causal_lm(self.args.model, gguf_file=self.args.gguf_file, dtype=self.args.dtype,
                                         device=ctx.device, seed=ctx.seed, log=ctx.log)  # fmt: skip
            cfg = self.loaded.model.config
            self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
            self.num_heads = cfg.num_attention_heads
            self.context = int(getattr(cfg, "max_position_embeddings", SMOLLM2_CONTEXT))
            self.num_layers = cfg.num_hidden_layers
        if self.args.data == "synthetic":
            self.head_dim, self.num_heads = self.args.head_dim, self.args.num_heads
            self.num_layers = self.args.synthetic_layers
            self.context = 1 << 30

    @property
    def layers(self) -> int:
        return min(self.args.layers or self.num_layers, self.num_layers)

    def check_space(self, space: Space) -> None:
        """Every configuration must pass seed 004's checklist at its sequence length (and, for
        the ``flex`` kernel on CUDA, have a block its GPU kernel can tile)."""
        from knobscope.models.sketchwalk_attn import flex_kernel_options

        super().check_space(space)
        if not hasattr(self, "context"):
            return  # knob names only (before setup)
        lengths = space.knob("seq_len").values if "seq_len" in space.names else [self.args.seq_len]
        bad = [n for n in lengths if not (isinstance(n, int) and 1 <= n <= self.context)]
        if bad:
            where = f"{self.args.model}'s context" if self.args.data == "smollm2" else "the limit"
            raise WorkloadError(f"seq_len value {bad[0]!r} is not possible: it must be an integer in 1..{self.context} ({where})")
        for config in space.product():
            cfg = self.sketchwalk_config(config)
            try:
                cfg.check(int(config.get("seq_len", self.args.seq_len)))
            except (ValueError, TypeError) as exc:
                raise WorkloadError(
                    f"configuration {dict(config)} is not valid: {exc}; remove the value, or add a spec constraint such "
                    "as 'sketch_dim >= log2(ceil(seq_len / block_size))' so such configurations are skipped"
                ) from None
            if cfg.sketch_kernel == "compiled":
                require_inductor(self.device, "sketch_kernel compiled")
            if cfg.sparse_kernel == "flex" and str(self.device).startswith("cuda"):
                try:
                    flex_kernel_options(cfg.block_size, self.head_dim, self.dtype, "cuda")
                except ValueError as exc:
                    raise WorkloadError(f"configuration {dict(config)} is not possible here: {exc}; remove the value, "
                                        "or use sparse_kernel batched for it") from None  # fmt: skip
            if cfg.skip_layers > self.layers:
                raise WorkloadError(f"skip_layers value {cfg.skip_layers} is more than the {self.layers} layers a sample has")

    def sketchwalk_config(self, config: Mapping[str, Any]) -> Any:
        from knobscope.models.sketchwalk_attn import SketchWalkConfig

        values = {field: config[knob] for knob, field in KNOB_FIELDS.items() if knob in config}
        try:
            return SketchWalkConfig(**values)
        except TypeError as exc:
            raise WorkloadError(f"configuration {dict(config)}: {exc}") from None

    # ---------------------------------------------------------------- data
    def samples(self) -> Sequence[Mapping[str, Any]]:
        return [{"id": f"window{i}", "window": i} for i in range(self.args.windows)]

    def _text_ids(self) -> list[int]:
        from knobscope.datasets import load_text

        if not hasattr(self, "_ids"):
            self._ids = self.loaded.tokenizer(load_text(self.args.text), add_special_tokens=False)["input_ids"]
        return self._ids

    def _window(self, index: int, length: int) -> list[int]:
        """Consecutive windows of the text; a text shorter than needed wraps around."""
        ids = self._text_ids()
        start = (index * length) % len(ids)
        need = start + length
        return (ids * (need // len(ids) + 1))[start:need]

    def qkv(self, window: int, seq_len: int) -> list[tuple[Any, Any, Any]]:
        """The layers' (query, key, value) of one sample (captured or generated once per length).

        Only one sequence length's tensors are kept: those of other lengths would count in every
        later trial's peak memory (on an H100 a 4K trial reported 1,752 MiB after 16K and 64K
        trials, more than the 16K trial's own 1,152 MiB)."""
        key = (window, seq_len)
        for other in [k for k in self._qkv if k[1] != seq_len]:
            del self._qkv[other]
        if key not in self._qkv:
            import torch

            if self.args.data == "smollm2":
                from knobscope.models.sketchwalk_hf import capture_qkv

                self.log.info("capturing SmolLM2 Q/K/V: window %d, %d tokens", window, seq_len)
                ids = torch.tensor([self._window(window, seq_len)], device=self.device)
                captured = capture_qkv(self.loaded.model, ids)
                self._qkv[key] = [captured[i] for i in sorted(captured)[: self.layers]]
            else:
                a = self.args
                data = synthetic_qkv(batch=a.batch_size, heads=a.num_heads, kv_heads=a.num_kv_heads or a.num_heads,
                                     seq_len=seq_len, head_dim=a.head_dim, layers=a.synthetic_layers,
                                     structure=a.structure, heavy_blocks=a.heavy_blocks,
                                     seed=self.seed * 1000 + window)  # fmt: skip
                self._qkv[key] = [(q.to(self.device, self.dtype), k.to(self.device, self.dtype), v.to(self.device, self.dtype))
                                  for q, k, v in data]  # fmt: skip
        return self._qkv[key]

    # ---------------------------------------------------------------- configurations
    def apply(self, config: Mapping[str, Any]) -> None:
        from knobscope.models.sketchwalk_attn import SketchWalk, sketch_kernel, sparse_kernel

        self.config = dict(config)
        self.cfg = self.sketchwalk_config(config)
        self.seq_len = int(config.get("seq_len", self.args.seq_len))
        self.walk = SketchWalk(self.cfg, self.head_dim)
        device = str(self.device).split(":")[0]
        if self.cfg.sparse_kernel == "auto" or self.cfg.sketch_kernel == "auto":  # say what auto chose, in the run log
            self.log.info("sketchwalk on %s, B=%d: sparse_kernel %s, sketch_kernel %s", device, self.cfg.block_size,
                          sparse_kernel(self.cfg, device), sketch_kernel(self.cfg, device))  # fmt: skip
        for sample in self.samples():  # capture or generate outside the timed samples
            self.qkv(sample["window"], self.seq_len)

    def run(self, sample: Mapping[str, Any], timer: StageTimer) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        from knobscope.models.sketchwalk_attn import dense_causal_attention, selection_pairs

        layers = self.qkv(sample["window"], self.seq_len)
        scale = 1.0 / math.sqrt(self.head_dim)
        with torch.inference_mode():
            base = self.memory.start()
            with timer.stage("dense"):
                dense = [dense_causal_attention(q, k, v, scale=scale) for q, k, v in layers]
            outputs_mb = sum(o.numel() * o.element_size() for o in dense) / 2**20  # kept by both arms alike
            dense_peak = self.memory.peak_above(base) - outputs_mb
            sparse: list[Any] = []
            selections: list[tuple[Any, Any]] = []
            base = self.memory.start()
            # on CUDA the per-layer sub-stages are timed by events: a synchronisation at each
            # would stall the host's queueing in this arm only, and the dense arm has none
            per_layer = lambda name: timer.stage(name, device_time=True)  # noqa: E731
            with timer.stage("sketchwalk"):
                self.walk.reset()
                for i, (q, k, v) in enumerate(layers):
                    sparse.append(self.walk.attend(i, q, k, v, scale=scale, stage=per_layer))
                    if i >= self.cfg.skip_layers and self.walk.last_selection is not None:
                        selections.append(self.walk.last_selection)
            sparse_peak = self.memory.peak_above(base) - outputs_mb
            sparse_layers = range(self.cfg.skip_layers, len(layers))
            cosines = [float(F.cosine_similarity(sparse[i].flatten().double(), dense[i].flatten().double(), dim=0))
                       for i in sparse_layers]  # fmt: skip
            finite = all(bool(torch.isfinite(o).all()) for o in sparse)
        dense_ms, sparse_ms = timer.stage_ms("dense"), timer.stage_ms("sketchwalk")
        n, block = self.seq_len, self.cfg.block_size
        dense_pairs = n * (n + 1) / 2 * len(layers)
        sparse_pairs = dense_pairs / len(layers) * self.cfg.skip_layers if self.cfg.skip_layers else 0.0
        blocks = math.ceil(n / block)
        chosen = causal = 0.0
        for indices, valid in selections:
            pairs, selected = selection_pairs(indices, valid, n, block)
            sparse_pairs += pairs
            chosen += selected
            causal += blocks * (blocks + 1) / 2
        return {
            "speedup": dense_ms / sparse_ms if sparse_ms > 0 else float("nan"),
            "cosine": sum(cosines) / len(cosines) if cosines else 1.0,
            "cosine_min": min(cosines) if cosines else 1.0,
            "finite": float(finite),
            "dense_peak_mb": dense_peak,
            "sketchwalk_peak_mb": sparse_peak,
            "memory_ratio": sparse_peak / dense_peak if dense_peak > 0 else float("nan"),
            "pair_sparsity": 1 - sparse_pairs / dense_pairs,
            "selected_block_sparsity": 1 - chosen / causal if causal else 0.0,
            "speedup_bound": dense_pairs / sparse_pairs if sparse_pairs else float("nan"),
        }

    # ---------------------------------------------------------------- per configuration
    def summarize(self, records: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        n, cfg = self.seq_len, self.cfg
        blocks = math.ceil(n / cfg.block_size)
        out = {
            "num_blocks": float(blocks),
            "theoretical_sparsity": 1 - min(1.0, cfg.top_k_blocks * cfg.block_size / n),
            "block_sparsity": 1 - min(1.0, cfg.top_k_blocks / blocks),
            "complexity_factor": cfg.top_k_blocks * cfg.block_size / self.num_heads / n,
        }
        if self.args.edge_cases:
            out["edge_cases_ok"] = float(self.edge_cases_ok())
        if self.args.perplexity:
            out |= self.perplexity()
        return out

    def edge_cases_ok(self) -> bool:
        """Seed 004's "test edge cases": lengths 1, 2, B-1, B, B+1, tau*B+1 give finite outputs,
        equal to dense attention (within 1e-4) where tau covers every block."""
        import torch

        from knobscope.models.sketchwalk_attn import SketchWalk, dense_causal_attention

        # Six lengths on CPU: a compiled sketch would compile for each (correctness, not speed)
        cfg = dataclasses.replace(self.cfg, sketch_kernel="eager")
        gen = torch.Generator().manual_seed(self.seed)
        heads, kv = self._heads()
        walk = SketchWalk(cfg, self.head_dim)
        block = cfg.block_size
        for n in sorted({1, 2, max(block - 1, 1), block, block + 1, cfg.top_k_blocks * block + 1}):
            q = torch.randn(1, heads, n, self.head_dim, generator=gen)
            k, v = torch.randn(1, kv, n, self.head_dim, generator=gen), torch.randn(1, kv, n, self.head_dim, generator=gen)
            walk.reset()
            with torch.inference_mode():
                outs = [walk.attend(layer, q, k, v) for layer in range(cfg.skip_layers + 2)]
                if not all(bool(torch.isfinite(o).all()) for o in outs):
                    return False
                if math.ceil(n / block) <= cfg.top_k_blocks:
                    ref = dense_causal_attention(q, k, v)
                    if not all(torch.allclose(o, ref, atol=1e-4, rtol=1e-4) for o in outs):
                        return False
        return True

    def _heads(self) -> tuple[int, int]:
        """(query heads, key/value heads) of the data."""
        if self.args.data == "synthetic":
            return self.args.num_heads, self.args.num_kv_heads or self.args.num_heads
        cfg = self.loaded.model.config
        return cfg.num_attention_heads, getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads

    def perplexity(self) -> dict[str, float]:
        """Perplexity with SketchWalk inside the model, beside the dense model's (cached)."""
        from knobscope.models.sketchwalk_hf import install_sketchwalk, uninstall_sketchwalk

        length = min(self.args.perplexity_tokens or self.seq_len, self.context)
        if length not in self._ppl_dense:
            self._ppl_dense[length] = self._perplexity(length)
        runner = install_sketchwalk(self.loaded.model, self.cfg)
        try:
            ppl = self._perplexity(length)
        finally:
            uninstall_sketchwalk(self.loaded.model, runner)
        dense = self._ppl_dense[length]
        return {"perplexity": ppl, "perplexity_dense": dense, "perplexity_ratio": ppl / dense}

    def _perplexity(self, length: int) -> float:
        """Perplexity over ``perplexity_windows`` windows of ``length`` tokens; the LM head runs
        on chunks of positions, so 8192 tokens never hold a full (n, vocab) logits tensor."""
        import torch

        from knobscope.metrics.language import nll_sum

        model = self.loaded.model
        head = model.get_output_embeddings()
        nll, count = 0.0, 0
        started = time.perf_counter()
        with torch.inference_mode():
            for w in range(self.args.perplexity_windows):
                ids = torch.tensor([self._window(w, length + 1)], device=self.device)
                hidden = model.model(input_ids=ids[:, :-1], use_cache=False).last_hidden_state[0]
                for start in range(0, hidden.shape[0], 512):
                    logits = head(hidden[start : start + 512])
                    nll += nll_sum(logits, ids[0, 1 + start : 1 + start + 512])
                count += hidden.shape[0]
        self.log.info("perplexity over %d x %d tokens in %.1f s", self.args.perplexity_windows, length,
                      time.perf_counter() - started)  # fmt: skip
        return math.exp(nll / count)

    def teardown(self) -> None:
        self._qkv.clear()

