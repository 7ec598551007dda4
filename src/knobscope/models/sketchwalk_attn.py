"""SketchWalk: sketch-based block-sparse attention, computed block-sparse for real.

"Scout Before You Attend: Sketch-and-Walk Sparse Attention for Efficient LLM Inference"
(ICML 2026). Per layer, for a causal prefill of ``n`` tokens in blocks of ``B``:

1. *Sketch.* Queries and keys are averaged over heads and mean-pooled per block (the last
   block may be partial), then projected from ``head_dim`` to ``k`` dimensions with a
   subsampled randomized Hadamard transform (random signs, normalised fast Walsh-Hadamard
   transform, ``k`` coordinates kept, scaled by ``sqrt(d/k)``; ``use_srht=False``: a Gaussian
   projection). Block scores are ``softmax(Q~ K~^T / sqrt(k))`` under a block-causal mask,
   raised to the power ``s`` and renormalised per row.
2. *Walk.* A walk state carried from layer to layer: the previous state times this layer's
   block-score matrix, renormalised per row (so it cannot underflow over many layers).
3. *Attend.* Each query block attends to ``tau`` key blocks: the sink block 0 and its own
   (diagonal) block always, then the highest walk-state scores. Only those key/value blocks
   are gathered and multiplied, so the work is ``~ tau * B / n`` of dense attention; inside
   the diagonal block attention is token-level causal. The first ``tau`` query blocks, which
   select every earlier block, are one dense causal call.

Two kernels compute step 3 (``sparse_kernel``; ``auto``, the default, takes ``flex`` on CUDA
where FlexAttention is there and its GPU kernel can tile the block, ``batched`` elsewhere):
``batched`` gathers the selected blocks and
runs one fused SDPA call per chunk of ``query_chunk_blocks`` query blocks (its kernel launches
grow with the number of query blocks); ``flex`` runs PyTorch's FlexAttention with a block mask
built from the selection, one kernel for the whole layer where it is compiled (on CUDA). On CPU
``flex`` is FlexAttention's eager reference, which evaluates the mask over every query-key pair:
a check of the GPU path, not a fast one.

The first ``skip_layers`` layers stay dense and do not touch the walk state.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F

__all__ = [
    "SketchWalkConfig",
    "sketch_projection",
    "fwht",
    "block_scores",
    "select_blocks",
    "block_sparse_attention",
    "flex_block_sparse_attention",
    "flex_kernel_options",
    "flex_block_lists",
    "SketchWalk",
    "sketch_step",
    "sparse_kernel",
    "sketch_kernel",
    "dense_causal_attention",
    "dense_repeats_kv",
    "selection_pairs",
]


@dataclass(frozen=True)
class SketchWalkConfig:
    """Hyperparameters (seed 004's names in brackets)."""

    block_size: int = 64  # B
    sketch_dim: int = 64  # k
    top_k_blocks: int = 16  # tau
    sparsity_exponent: float = 8  # s
    skip_layers: int = 2  # N
    hadamard_seed: int = 42
    walk_state_dtype: Literal["fp32", "fp16"] = "fp32"
    use_srht: bool = True
    head_selection: Literal["shared", "per_kv_head"] = "shared"  # one block selection for all heads, or one per KV head
    use_walk: bool = True  # False: select from each layer's own block scores (an ablation of the walk)
    # Query blocks per batched matmul: bounds working memory, not the result. On a GPU larger
    # chunks launch fewer kernels (issue 15: 256 instead of 16 was 2.3-5.7x faster at 64K-128K).
    query_chunk_blocks: int = 16
    sparse_kernel: Literal["auto", "batched", "flex"] = "auto"  # see the module's docstring
    # The sketch, walk and selection as eager PyTorch (57 operators a layer, most a kernel
    # launch on a GPU) or one torch.compile'd graph; auto: compiled on CUDA only.
    sketch_kernel: Literal["auto", "eager", "compiled"] = "auto"

    def check(self, seq_len: int | None = None) -> None:
        """Raise ``ValueError`` naming the rule a configuration breaks (seed 004's checklist)."""
        if self.block_size < 1:
            raise ValueError(f"block_size B = {self.block_size} breaks B >= 1")
        if self.sketch_dim < 1:
            raise ValueError(f"sketch_dim k = {self.sketch_dim} breaks k >= 1")
        if self.top_k_blocks < 1:
            raise ValueError(f"top_k_blocks tau = {self.top_k_blocks} breaks tau >= 1")
        if self.sparsity_exponent < 1:
            raise ValueError(f"sparsity_exponent s = {self.sparsity_exponent} breaks s >= 1")
        if self.skip_layers < 0:
            raise ValueError(f"skip_layers N = {self.skip_layers} breaks N >= 0")
        if self.query_chunk_blocks < 1:
            raise ValueError(f"query_chunk_blocks = {self.query_chunk_blocks} breaks query_chunk_blocks >= 1")
        if self.sparse_kernel not in ("auto", "batched", "flex"):
            raise ValueError(f"sparse_kernel {self.sparse_kernel!r} is not batched or flex, nor auto")
        if self.sparse_kernel == "flex" and _flex_attention() is None:
            raise ValueError(f"sparse_kernel flex needs FlexAttention with BlockMask.from_kv_blocks(seq_lengths=...), "
                             f"which this torch ({torch.__version__}) lacks")
        if self.sketch_kernel not in ("auto", "eager", "compiled"):
            raise ValueError(f"sketch_kernel {self.sketch_kernel!r} is not auto, eager or compiled")
        if self.head_selection not in ("shared", "per_kv_head"):
            raise ValueError(f"head_selection {self.head_selection!r} is not shared or per_kv_head")
        if self.walk_state_dtype not in ("fp32", "fp16"):
            raise ValueError(f"walk_state_dtype {self.walk_state_dtype!r} is not fp32 or fp16")
        if seq_len is not None:
            blocks = math.ceil(seq_len / self.block_size)
            if blocks > 1 and self.sketch_dim < math.log2(blocks):
                raise ValueError(
                    f"sketch_dim k = {self.sketch_dim} breaks k >= log2(b) = log2(ceil({seq_len}/{self.block_size})) "
                    f"= {math.log2(blocks):.2f}"
                )

    @property
    def state_dtype(self) -> torch.dtype:
        return torch.float32 if self.walk_state_dtype == "fp32" else torch.float16


def fwht(x: torch.Tensor) -> torch.Tensor:
    """Normalised fast Walsh-Hadamard transform along the last dimension (a power of 2)."""
    n = x.shape[-1]
    if n & (n - 1):
        raise ValueError(f"fwht needs a power-of-2 length, got {n}")
    shape = x.shape
    y = x.reshape(-1, n)
    h = 1
    while h < n:
        y = y.view(-1, n // (2 * h), 2, h)
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = torch.stack((a + b, a - b), dim=2)
        h *= 2
    return (y.reshape(shape) / math.sqrt(n)).to(x.dtype)


def sketch_projection(head_dim: int, sketch_dim: int, *, seed: int, use_srht: bool = True) -> torch.Tensor:
    """The ``(head_dim, sketch_dim)`` matrix that maps a block representative to its sketch.

    SRHT: ``x -> sqrt(d'/k) * (FWHT(pad(x) * signs))[idx]`` with ``d' = next power of 2 >=
    max(head_dim, k)``; it preserves inner products in expectation. Built once per
    configuration by transforming the identity, so applying it is one small matmul.
    """
    gen = torch.Generator().manual_seed(seed)
    if not use_srht:
        return torch.randn(head_dim, sketch_dim, generator=gen) / math.sqrt(sketch_dim)
    width = 1 << (max(head_dim, sketch_dim) - 1).bit_length()  # next power of 2
    signs = torch.randint(0, 2, (width,), generator=gen).float() * 2 - 1
    keep = torch.randperm(width, generator=gen)[:sketch_dim]
    basis = torch.eye(width)[:head_dim] * signs  # rows: the padded unit vectors with signs
    return fwht(basis)[:, keep] * math.sqrt(width / sketch_dim)


def _pool_blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    """(batch, n, d) -> (batch, b, d): the mean of each block's tokens (last block partial)."""
    batch, n, d = x.shape
    blocks = math.ceil(n / block)
    padded = F.pad(x, (0, 0, 0, blocks * block - n))
    sums = padded.view(batch, blocks, block, d).sum(dim=2)
    counts = torch.full((blocks,), float(block), device=x.device, dtype=x.dtype)
    counts[-1] = n - (blocks - 1) * block
    return sums / counts[None, :, None]


def block_scores(query: torch.Tensor, key: torch.Tensor, config: SketchWalkConfig, projection: torch.Tensor) -> torch.Tensor:
    """Sketched block attention ``(batch * S, b, b)``, rows summing to 1, block-causal.

    ``query``: (batch, heads, n, d); ``key``: (batch, kv_heads, n, d). ``S`` is 1 with
    ``head_selection="shared"`` (queries and keys averaged over all heads, as in the paper) or
    kv_heads with ``"per_kv_head"`` (queries averaged within each key/value head's group).
    """
    batch, heads, n, dim = query.shape
    kv_heads = key.shape[1]
    if config.head_selection == "per_kv_head":
        q_avg = query.float().view(batch, kv_heads, heads // kv_heads, n, dim).mean(dim=2).reshape(-1, n, dim)
        k_avg = key.float().reshape(-1, n, dim)
    else:
        q_avg, k_avg = query.float().mean(dim=1), key.float().mean(dim=1)
    q = _pool_blocks(q_avg, config.block_size)  # (batch*S, b, d)
    k = _pool_blocks(k_avg, config.block_size)
    proj = projection.to(q.device)  # a no-op where SketchWalk keeps it on the device
    logits = (q @ proj) @ (k @ proj).transpose(1, 2) / math.sqrt(config.sketch_dim)  # (batch, b, b)
    blocks = logits.shape[-1]
    future = torch.ones(blocks, blocks, dtype=torch.bool, device=logits.device).triu(1)
    probs = torch.softmax(logits.masked_fill(future, float("-inf")), dim=-1)
    sharpened = probs.pow(config.sparsity_exponent)
    return sharpened / sharpened.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(sharpened.dtype).tiny)


def select_blocks(walk: torch.Tensor, top_k_blocks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per query block, the ``tau`` key blocks to attend: sink and diagonal first, then the best.

    Returns ``(indices, valid)``, both ``(batch, b, min(tau, b))``; ``valid`` is False where a
    query block has fewer than ``tau`` causal key blocks (those slots are masked out).
    """
    batch, blocks, _ = walk.shape
    tau = min(top_k_blocks, blocks)
    scores = walk.float().clone()
    rows = torch.arange(blocks, device=walk.device)
    future = rows[None, :] > rows[:, None]
    scores = scores.masked_fill(future, float("-inf"))
    scores[:, :, 0] = float("inf")  # the sink block
    scores[:, rows, rows] = float("inf")  # the diagonal block
    top, indices = torch.topk(scores, tau, dim=-1)
    return indices, top > float("-inf")


def block_sparse_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    indices: torch.Tensor,
    valid: torch.Tensor,
    block: int,
    *,
    scale: float | None = None,
    chunk: int = 16,
) -> torch.Tensor:
    """Causal attention of each query block to its selected key blocks only.

    ``query``: (batch, heads, n, d); ``key``/``value``: (batch, kv_heads, n, d) with heads a
    multiple of kv_heads (grouped-query attention); ``indices``/``valid``: (batch, b, tau) for
    one selection shared by all heads, or (batch, kv_heads, b, tau) for one per key/value head.
    Returns (batch, heads, n, d). Work and memory per chunk of query blocks: ``tau * B`` keys
    per query instead of up to ``n``. The indices of one row are distinct (as
    :func:`select_blocks` gives them); leading query blocks whose valid slots cover all their
    causal key blocks are computed as one dense causal call on that prefix.
    """
    batch, heads, n, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    blocks = math.ceil(n / block)
    pad = blocks * block - n
    scale = 1.0 / math.sqrt(dim) if scale is None else scale
    q = F.pad(query, (0, 0, 0, pad)).reshape(batch, kv_heads, group, blocks, block, dim)
    k = F.pad(key, (0, 0, 0, pad)).contiguous().view(batch, kv_heads, blocks, block, dim)
    v = F.pad(value, (0, 0, 0, pad)).contiguous().view(batch, kv_heads, blocks, block, dim)
    tau = indices.shape[-1]
    out = torch.empty(batch, kv_heads, blocks, group, block, dim, dtype=query.dtype, device=query.device)
    # Query blocks become the "heads" axis of one fused SDPA call per chunk; the query heads
    # sharing a key/value head are stacked along the query length, so each selected key block
    # is gathered once per key/value head.
    q = q.permute(0, 1, 3, 2, 4, 5)  # (batch, kv_heads, blocks, group, B, d)
    offsets = torch.arange(block, device=query.device)
    k_rows, v_rows = k.view(batch, kv_heads, blocks, block * dim), v.view(batch, kv_heads, blocks, block * dim)
    # indices/valid: (batch, S, b, tau) with S = 1 (one selection for all heads) or kv_heads.
    if indices.ndim == 3:
        indices, valid = indices[:, None], valid[:, None]
    shared = indices.shape[1] == 1
    # Query blocks that selected every causal key block (the first tau ones, with SketchWalk's
    # selection) are plain causal attention on a prefix: one dense causal SDPA computes them
    # without the masked-out padding slots a fixed tau-wide gather would multiply.
    expected = torch.arange(1, min(tau, blocks) + 1, device=valid.device)  # causal key blocks of query block j
    full = (valid[:, :, : len(expected)].sum(dim=-1) == expected).all(dim=0).all(dim=0)
    first = int(full.long().cumprod(0).sum())  # the leading run of such blocks
    if first:
        prefix = min(first * block, n)
        head = dense_causal_attention(query[:, :, :prefix], key[:, :, :prefix], value[:, :, :prefix], scale=scale)
        head = F.pad(head, (0, 0, 0, first * block - prefix)).view(batch, kv_heads, group, first, block, dim)
        out[:, :, :first] = head.permute(0, 1, 3, 2, 4, 5)
    for start in range(first, blocks, chunk):
        stop = min(start + chunk, blocks)
        c = stop - start
        query_pos = (torch.arange(start, stop, device=query.device)[:, None] * block + offsets).view(1, c, block, 1)
        # One batch element at a time: a selection (and so a mask) belongs to one element, and
        # a mask shared by all heads broadcasts over them instead of being copied per head.
        for i in range(batch):
            idx = indices[i, :, start:stop]  # (S, c, tau)
            # index_select copies whole (B x d) blocks; a gather with an expanded index would
            # read one index per element and costs more than the attention itself.
            if shared:
                ks = k_rows[i].index_select(1, idx[0].reshape(-1))
                vs = v_rows[i].index_select(1, idx[0].reshape(-1))
            else:
                ks = torch.stack([k_rows[i, h].index_select(0, idx[h].reshape(-1)) for h in range(kv_heads)])
                vs = torch.stack([v_rows[i, h].index_select(0, idx[h].reshape(-1)) for h in range(kv_heads)])
            ks = ks.view(kv_heads, c, tau * block, dim)
            vs = vs.view(kv_heads, c, tau * block, dim)
            qs = q[i, :, start:stop].reshape(kv_heads, c, group * block, dim)
            key_pos = (idx[..., None] * block + offsets).view(idx.shape[0], c, 1, tau * block)
            allowed = (key_pos <= query_pos) & (key_pos < n)  # causal inside the diagonal block; no padding keys
            allowed &= valid[i, :, start:stop].repeat_interleave(block, dim=-1)[:, :, None, :]
            # An additive float mask, built once and broadcast over the key/value heads (SDPA
            # would otherwise convert a boolean mask at full size on every call).
            bias = torch.zeros(allowed.shape, dtype=qs.dtype, device=qs.device).masked_fill_(~allowed, float("-inf"))
            bias = bias.repeat(1, 1, group, 1) if group > 1 else bias  # (S, c, group*B, tau*B)
            o = F.scaled_dot_product_attention(qs, ks, vs, attn_mask=bias, scale=scale)
            out[i, :, start:stop] = o.view(kv_heads, c, group, block, dim)
    out = out.permute(0, 1, 3, 2, 4, 5)  # (batch, kv_heads, group, blocks, B, d)
    return out.reshape(batch, heads, blocks * block, dim)[:, :, :n]


def _flex_attention(device_type: str = "cpu", *, compiled: bool | None = None) -> Callable[..., torch.Tensor] | None:
    """FlexAttention (None where this torch lacks it, or lacks ``BlockMask.from_kv_blocks``'s
    ``seq_lengths``): compiled on CUDA, where that makes it one fused kernel, and eager
    elsewhere (its reference implementation; on CPU the compiled kernel was slower still,
    224 ms against 117 ms for the batched kernel at 4K tokens, SmolLM2's heads).
    ``compiled`` overrides the choice (the tests compile it on CPU)."""
    eager = _flex_eager()
    if eager is None or not (device_type == "cuda" if compiled is None else compiled):
        return eager
    return _compiled(eager)


@functools.cache
def _flex_eager() -> Callable[..., torch.Tensor] | None:
    """This torch's FlexAttention, or None; looked up once (it is asked at every layer)."""
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention
    except ImportError:
        return None
    import inspect

    if "seq_lengths" not in inspect.signature(BlockMask.from_kv_blocks).parameters:
        return None  # a block mask for a length that is not a multiple of the block needs it
    return flex_attention


@functools.cache
def _compiled(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One ``torch.compile`` wrapper per function (a new wrapper would compile again), for
    fixed shapes: one compiled version per shape, each as fast as it can be."""
    return torch.compile(fn, dynamic=False)


@functools.cache
def _forward_only() -> dict[str, bool]:
    """``BlockMask.from_kv_blocks`` also builds the transposed (query-block) lists a backward pass
    needs, a sort per layer that inference never reads; torches that can skip it are told to."""
    try:
        import inspect

        from torch.nn.attention.flex_attention import BlockMask

        return {"compute_q_blocks": False} if "compute_q_blocks" in inspect.signature(BlockMask.from_kv_blocks).parameters else {}
    except ImportError:
        return {}


def flex_block_lists(indices: torch.Tensor, valid: torch.Tensor, blocks: int) -> tuple[torch.Tensor, ...]:
    """A selection ``(batch, H, b, tau)`` as FlexAttention's block lists: ``(chosen, partial
    counts, partial blocks, full counts, full blocks)``, where ``chosen`` is the ``(batch, H, b,
    b)`` selected-block matrix, the diagonal blocks are partial (token-level causal) and the
    selected earlier blocks full; per query block, the count and the listed blocks first."""
    # invalid slots go to a spare column
    chosen = torch.zeros(*indices.shape[:-1], blocks + 1, dtype=torch.bool, device=indices.device)
    chosen.scatter_(-1, indices.masked_fill(~valid, blocks), True)
    chosen = chosen[..., :blocks].contiguous()
    diagonal = torch.eye(blocks, dtype=torch.bool, device=indices.device)

    def ordered(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        order = torch.argsort((~mask).to(torch.int8), dim=-1, stable=True)
        return mask.sum(dim=-1, dtype=torch.int32), order.to(torch.int32)

    return (chosen, *ordered(chosen & diagonal), *ordered(chosen & ~diagonal))


def flex_block_sparse_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, indices: torch.Tensor,
                                valid: torch.Tensor, block: int, *, scale: float | None = None,
                                compiled: bool | None = None) -> torch.Tensor:  # fmt: skip
    """:func:`block_sparse_attention` through FlexAttention: the same arguments and result.

    The block mask lists, per query block, its selected earlier blocks as *full* blocks (no
    per-element mask inside) and its diagonal block as a *partial* one (token-level causal). The
    mask function also looks the selection up, so the eager reference path, which applies only
    the mask function, gives the same result as the compiled kernel, which visits only the
    listed blocks."""
    import warnings

    from torch.nn.attention.flex_attention import BlockMask

    batch, heads, n, _ = query.shape
    kv_heads = key.shape[1]
    blocks = math.ceil(n / block)
    if indices.ndim == 3:  # one selection for all heads: a mask head dimension of 1 broadcasts
        indices, valid = indices[:, None], valid[:, None]
    elif indices.shape[1] not in (1, heads):  # one per key/value head: the mask's heads are the query heads
        indices = indices.repeat_interleave(heads // kv_heads, dim=1)
        valid = valid.repeat_interleave(heads // kv_heads, dim=1)
    compiled = query.device.type == "cuda" if compiled is None else compiled
    lists = _compiled(flex_block_lists) if compiled else flex_block_lists
    with _recompile_room() if compiled else contextlib.nullcontext():
        chosen, partial_num, partial_idx, full_num, full_idx = lists(indices, valid, blocks)
    single = chosen.shape[1] == 1

    def selected_causal(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
        return (q >= kv) & chosen[b, 0 if single else h, q // block, kv // block]

    mask = BlockMask.from_kv_blocks(partial_num, partial_idx, full_num, full_idx, BLOCK_SIZE=block,
                                    mask_mod=selected_causal, seq_lengths=(n, n), **_forward_only())  # fmt: skip
    attend = _flex_attention(query.device.type, compiled=compiled)
    assert attend is not None  # SketchWalkConfig.check refuses flex without it
    options = flex_kernel_options(block, query.shape[-1], query.dtype, query.device.type)
    with warnings.catch_warnings(), _recompile_room() if compiled else contextlib.nullcontext():
        warnings.filterwarnings("ignore", message=".*flex_attention.*without torch.compile.*")  # eager on CPU: on purpose
        return attend(query, key, value, block_mask=mask, scale=scale, enable_gqa=heads != kv_heads,
                      kernel_options=options)  # fmt: skip


@functools.cache  # asked at every layer; reading torch's heuristics builds objects each time
def flex_kernel_options(block: int, head_dim: int, dtype: torch.dtype, device_type: str) -> dict[str, int] | None:
    """The tile sizes FlexAttention's GPU kernel needs for a block mask of ``block`` tokens.

    The Triton kernel walks the block mask in tiles of BLOCK_M queries by BLOCK_N keys and
    refuses a mask whose block is not a multiple of both ("Q and KV block size must be divisible
    by BLOCK_M and BLOCK_N"); its default tiles on an H100 in bfloat16 are 128 x 128 for head
    dimension 64, so SketchWalk's default B = 64 would fail there. The default tiles are halved
    until they divide ``block`` (smaller tiles need less shared memory, so they always fit);
    None where the defaults divide it, or off CUDA (the CPU kernel takes any block). Where
    torch's defaults cannot be read, 64 x 64 tiles (halved as needed) are named explicitly.
    Raises ``ValueError`` where no tile of at least 16 (the smallest matrix-multiply tile)
    divides ``block``."""
    if device_type != "cuda":
        return None
    if block % 16:
        raise ValueError(f"sparse_kernel flex on CUDA needs block_size B a multiple of 16 (its smallest kernel tile), "
                         f"got B = {block}")  # fmt: skip
    try:
        from torch._inductor.choices import InductorChoices

        default = InductorChoices().get_flex_attention_fwd_configs(head_dim, dtype, device_type)[-1]
        tiles = [int(getattr(default, "block_m", None) or default[0]), int(getattr(default, "block_n", None) or default[1])]
        if all(block % t == 0 for t in tiles):
            return None
    except Exception:  # an internal API another torch may lack: name tiles that surely divide
        tiles = [64, 64]
    for i, t in enumerate(tiles):
        while block % t:
            t //= 2
        tiles[i] = t
    return {"BLOCK_M": tiles[0], "BLOCK_N": tiles[1]}


@contextlib.contextmanager
def _recompile_room(limit: int = 64):  # type: ignore[no-untyped-def]
    """Room for one compiled FlexAttention per shape in a sweep. torch.compile keeps 8 versions
    of a function by default and then runs it *eagerly*, which for FlexAttention on a GPU
    materialises every query-key score (at 64K tokens, far beyond memory). Each (sequence
    length, block size, heads) is one version; raise the limit, and make hitting it an error
    rather than a silent fallback."""
    import torch._dynamo.config as config

    names = [name for name in ("recompile_limit", "cache_size_limit") if hasattr(config, name)]
    patch = {names[0]: max(limit, getattr(config, names[0]))} if names else {}
    for name in ("fail_on_recompile_limit_hit", "fail_on_cache_limit_hit"):
        if hasattr(config, name):
            patch[name] = True
            break
    with config.patch(**patch):
        yield


def dense_causal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *, scale: float | None = None,
                           repeat_kv: bool | None = None) -> torch.Tensor:  # fmt: skip
    """The reference: ``scaled_dot_product_attention`` (causal), with grouped-query heads.

    ``repeat_kv`` (default: :func:`dense_repeats_kv` for the tensors' device and dtype) repeats
    the key/value heads to the query heads' count instead of passing ``enable_gqa``."""
    gqa = query.shape[1] != key.shape[1]
    if gqa and (dense_repeats_kv(query.device.type, query.dtype) if repeat_kv is None else repeat_kv):
        group = query.shape[1] // key.shape[1]
        key, value, gqa = key.repeat_interleave(group, dim=1), value.repeat_interleave(group, dim=1), False
    return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scale, enable_gqa=gqa)


def dense_repeats_kv(device_type: str, dtype: torch.dtype) -> bool:
    """Whether the dense reference repeats grouped key/value heads. On CUDA in float32 no fused
    kernel takes ``enable_gqa``, and PyTorch fell back to its math path on an H100 (issue 15: at
    16K, 49 ms and +21.9 GB instead of 10 ms and +36 MiB with K/V repeated; 64K ran out of
    memory), which made SketchWalk's speedup look 1.37x where bfloat16 gave 0.38x. The CPU
    kernel and CUDA's half-precision flash kernel take grouped heads as they are."""
    return device_type != "cpu" and dtype == torch.float32


def sparse_kernel(config: SketchWalkConfig, device_type: str) -> str:
    """The kernel ``config.sparse_kernel`` means on ``device_type``: ``auto`` is ``flex`` on CUDA
    (one compiled kernel per layer, whose launches do not grow with the query blocks, where the
    batched kernel's did: issue 15) where FlexAttention is there and a tile of at least 16
    divides the block, else ``batched`` (on CPU the faster of the two)."""
    if config.sparse_kernel != "auto":
        return config.sparse_kernel
    flex = device_type == "cuda" and config.block_size % 16 == 0 and _flex_attention("cuda") is not None
    return "flex" if flex else "batched"


def sketch_kernel(config: SketchWalkConfig, device_type: str) -> str:
    """The kernel ``config.sketch_kernel`` means on ``device_type``: ``auto`` is ``compiled`` on
    CUDA (one graph instead of ~57 launches a layer) and ``eager`` elsewhere (compiling takes
    seconds per shape where the sketch is a few per cent of a layer)."""
    if config.sketch_kernel != "auto":
        return config.sketch_kernel
    return "compiled" if device_type == "cuda" else "eager"


def sketch_step(query: torch.Tensor, key: torch.Tensor, walk: torch.Tensor | None, projection: torch.Tensor,
                config: SketchWalkConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """One sparse layer's sketch, walk and selection: ``(walk, indices, valid)``.

    ``walk`` is the state the previous sparse layer left (None at the first one, or without the
    walk); the new state is it times this layer's block scores, renormalised per row."""
    scores = block_scores(query, key, config, projection).to(config.state_dtype)
    if walk is not None:
        scores = torch.bmm(walk, scores)
        scores = scores / scores.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(scores.dtype).tiny)
    indices, valid = select_blocks(scores, config.top_k_blocks)
    return scores, indices, valid


class SketchWalk:
    """SketchWalk over the layers of one forward pass.

    Call :meth:`reset` at the start of a forward pass, then :meth:`attend` once per layer in
    order. Layers below ``skip_layers`` run dense; the walk state starts at the first sparse
    layer. ``last_selection`` keeps the indices chosen by the latest sparse layer.
    """

    def __init__(self, config: SketchWalkConfig, head_dim: int) -> None:
        config.check()
        self.config = config
        self.projection = sketch_projection(head_dim, config.sketch_dim, seed=config.hadamard_seed, use_srht=config.use_srht)
        # Kept on the layers' device: copying it from pageable host memory at every layer would
        # make the host wait for the GPU's queue each time.
        self._projections: dict[torch.device, torch.Tensor] = {}
        self.walk: torch.Tensor | None = None
        self.last_selection: tuple[torch.Tensor, torch.Tensor] | None = None

    def reset(self) -> None:
        self.walk = None
        self.last_selection = None

    def attend(self, layer: int, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *,
               scale: float | None = None,
               stage: Callable[[str], AbstractContextManager[None]] | None = None) -> torch.Tensor:  # fmt: skip
        """One layer's attention output ``(batch, heads, n, d)``.

        ``stage(name)``, when given, wraps the two steps of a sparse layer: ``sketch`` (block
        scores, walk, selection) and ``sparse_attention`` (the block-sparse product), so a
        :class:`~knobscope.measure.StageTimer` can time them separately.
        """
        cfg = self.config
        if layer < cfg.skip_layers:
            return dense_causal_attention(query, key, value, scale=scale)
        stage = stage or (lambda name: contextlib.nullcontext())
        with stage("sketch"):
            if query.device not in self._projections:
                self._projections[query.device] = self.projection.to(query.device)
            groups = 1 if cfg.head_selection == "shared" else key.shape[1]
            blocks = math.ceil(query.shape[2] / cfg.block_size)
            previous = self.walk
            if previous is None or previous.shape != (query.shape[0] * groups, blocks, blocks) or not cfg.use_walk:
                previous = None
            projection = self._projections[query.device]
            if sketch_kernel(cfg, query.device.type) == "compiled":
                with _recompile_room():
                    self.walk, indices, valid = _compiled(sketch_step)(query, key, previous, projection, cfg)
            else:
                self.walk, indices, valid = sketch_step(query, key, previous, projection, cfg)
            indices = indices.view(query.shape[0], groups, *indices.shape[1:])
            valid = valid.view(query.shape[0], groups, *valid.shape[1:])
        self.last_selection = (indices, valid)
        with stage("sparse_attention"):
            if sparse_kernel(cfg, query.device.type) == "flex":
                return flex_block_sparse_attention(query, key, value, indices, valid, cfg.block_size, scale=scale)
            return block_sparse_attention(query, key, value, indices, valid, cfg.block_size, scale=scale,
                                          chunk=cfg.query_chunk_blocks)  # fmt: skip


def selection_pairs(indices: torch.Tensor, valid: torch.Tensor, seq_len: int, block: int) -> tuple[float, float]:
    """(causal query-key pairs a selection attends, selected (query block, key block) pairs),
    averaged over batch and selection groups: every query of a block against every key of
    each selected earlier block, and the causal half of its own (diagonal) block. When the
    selection covers every causal block this is dense causal attention's ``n(n+1)/2``."""
    blocks = indices.shape[-2]
    rows = torch.full((blocks,), float(block), device=valid.device)
    rows[-1] = seq_len - (blocks - 1) * block
    own = torch.arange(blocks, device=valid.device)[:, None]
    diagonal = valid & (indices == own)
    earlier = valid & ~diagonal
    widths = torch.where(earlier, rows[indices.clamp_max(blocks - 1)], torch.zeros((), device=valid.device))
    pairs = (rows * widths.sum(dim=-1) + diagonal.any(dim=-1) * rows * (rows + 1) / 2).sum(dim=-1)
    return float(pairs.mean()), float(valid.float().sum(dim=(-1, -2)).mean())
