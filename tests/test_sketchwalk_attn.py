"""SketchWalk attention: exactness when every block is selected, selection rules, validation."""

from __future__ import annotations

import math

import pytest
import torch

from knobscope.models.sketchwalk_attn import (
    SketchWalk,
    SketchWalkConfig,
    block_scores,
    dense_causal_attention,
    fwht,
    select_blocks,
    sketch_projection,
)


def _qkv(n: int, heads: int = 9, kv_heads: int = 3, dim: int = 64, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(1, heads, n, dim, generator=gen), torch.randn(1, kv_heads, n, dim, generator=gen),
            torch.randn(1, kv_heads, n, dim, generator=gen))  # fmt: skip


@pytest.mark.parametrize(("n", "block"), [(256, 64), (300, 64), (97, 16), (130, 128), (5, 8)])
@pytest.mark.parametrize(("sketch_dim", "exponent", "srht", "heads"),
                         [(16, 1, True, "shared"), (64, 8, True, "per_kv_head"), (128, 16, True, "shared"), (32, 4, False, "per_kv_head")])  # fmt: skip
def test_equals_dense_attention_when_tau_covers_every_block(n, block, sketch_dim, exponent, srht, heads) -> None:
    q, k, v = _qkv(n)
    cfg = SketchWalkConfig(block_size=block, sketch_dim=sketch_dim, top_k_blocks=math.ceil(n / block),
                           sparsity_exponent=exponent, skip_layers=1, use_srht=srht, head_selection=heads)  # fmt: skip
    walk = SketchWalk(cfg, 64)
    walk.reset()
    reference = dense_causal_attention(q, k, v)
    for layer in range(3):  # a dense layer, then two that carry the walk state
        out = walk.attend(layer, q, k, v)
        assert out.shape == reference.shape
        torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


def test_fewer_blocks_change_the_output_and_keep_sink_and_diagonal() -> None:
    n, block = 1024, 64
    q, k, v = _qkv(n)
    walk = SketchWalk(SketchWalkConfig(block_size=block, top_k_blocks=4, skip_layers=0), 64)
    walk.reset()
    out = walk.attend(0, q, k, v)
    indices, valid = walk.last_selection
    assert indices.shape == (1, 1, n // block, 4)  # (batch, one selection for all heads, query blocks, tau)
    for i in range(n // block):
        chosen = set(indices[0, 0, i][valid[0, 0, i]].tolist())
        assert 0 in chosen and i in chosen and max(chosen) <= i  # sink, diagonal, nothing from the future
        assert len(chosen) == min(4, i + 1)
    cos = torch.nn.functional.cosine_similarity(out.flatten(), dense_causal_attention(q, k, v).flatten(), dim=0)
    assert cos < 0.999  # it really is sparse on unstructured data


def test_walk_state_stays_normalised_over_many_layers() -> None:
    q, k, v = _qkv(512)
    for dtype in ("fp32", "fp16"):
        walk = SketchWalk(SketchWalkConfig(block_size=32, top_k_blocks=4, skip_layers=0, walk_state_dtype=dtype), 64)
        walk.reset()
        for layer in range(30):
            walk.attend(layer, q, k, v)
        rows = walk.walk.float().sum(dim=-1)
        assert torch.isfinite(walk.walk.float()).all(), dtype
        torch.testing.assert_close(rows, torch.ones_like(rows), rtol=1e-2, atol=1e-2)


def test_block_scores_are_block_causal_distributions() -> None:
    q, k, _ = _qkv(200)
    cfg = SketchWalkConfig(block_size=32, sketch_dim=16)
    scores = block_scores(q, k, cfg, sketch_projection(64, 16, seed=cfg.hadamard_seed))
    assert scores.shape == (1, 7, 7)
    assert torch.all(scores.triu(1) == 0)
    torch.testing.assert_close(scores.sum(-1), torch.ones(1, 7))
    idx, valid = select_blocks(scores, 3)
    assert valid[0, 0].tolist() == [True, False, False]  # block 0 sees only itself


def test_hadamard_sketch_preserves_norms_and_is_reproducible() -> None:
    x = torch.randn(8, 64)
    torch.testing.assert_close(fwht(fwht(x)), x, rtol=1e-5, atol=1e-5)
    full = sketch_projection(64, 64, seed=3)
    torch.testing.assert_close(full.T @ full, torch.eye(64), rtol=1e-4, atol=1e-4)  # k = d: orthogonal
    assert torch.equal(sketch_projection(64, 32, seed=3), sketch_projection(64, 32, seed=3))
    assert not torch.equal(sketch_projection(64, 32, seed=3), sketch_projection(64, 32, seed=4))
    assert sketch_projection(64, 128, seed=3).shape == (64, 128)  # k > d pads the transform


@pytest.mark.parametrize(
    ("config", "seq_len", "rule"),
    [
        (SketchWalkConfig(sketch_dim=4), 4096, r"k >= log2\(b\)"),
        (SketchWalkConfig(top_k_blocks=0), None, "tau >= 1"),
        (SketchWalkConfig(sparsity_exponent=0.5), None, "s >= 1"),
        (SketchWalkConfig(block_size=0), None, "B >= 1"),
        (SketchWalkConfig(skip_layers=-1), None, "N >= 0"),
    ],
)
def test_bad_configurations_are_rejected_with_the_rule(config, seq_len, rule) -> None:
    with pytest.raises(ValueError, match=rule):
        config.check(seq_len)


@pytest.mark.model
def test_inside_smollm2_through_the_attention_interface() -> None:
    from knobscope.datasets import load_text
    from knobscope.models.loading import load_causal_lm
    from knobscope.models.sketchwalk_hf import install_sketchwalk, uninstall_sketchwalk

    loaded = load_causal_lm("smollm2")
    model = loaded.model
    ids = torch.tensor([loaded.tokenizer(load_text("builtin:text"))["input_ids"][:700]])  # 11 blocks, the last partial

    def logits() -> torch.Tensor:
        with torch.inference_mode():
            return model(input_ids=ids, use_cache=False).logits[0].float()

    dense = logits()
    runner = install_sketchwalk(model, SketchWalkConfig(block_size=64, top_k_blocks=11))
    assert model.config._attn_implementation == "sketchwalk"
    every_block = logits()
    assert (runner.sparse_calls, runner.dense_calls) == (28, 0)  # 30 layers, the first 2 dense
    uninstall_sketchwalk(model, runner)
    runner = install_sketchwalk(model, SketchWalkConfig(block_size=64, top_k_blocks=3))
    sparse = logits()
    uninstall_sketchwalk(model, runner)
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(every_block, dense, rtol=1e-3, atol=2e-4)
    nll = lambda out: torch.nn.functional.cross_entropy(out[:-1], ids[0, 1:]).item()  # noqa: E731
    assert nll(dense) < nll(sparse) < nll(dense) + 1.0  # sparse costs some perplexity, not all of it
    torch.testing.assert_close(logits(), dense)  # uninstalled: the model is dense again


def test_capture_qkv_returns_every_layers_attention_inputs() -> None:
    from knobscope.models.loading import load_causal_lm
    from knobscope.models.sketchwalk_hf import capture_qkv

    model = load_causal_lm("random:llama:layers=3").model
    ids = torch.randint(0, 1000, (1, 40))
    captured = capture_qkv(model, ids)
    assert sorted(captured) == [0, 1, 2]
    q, k, v = captured[1]
    assert q.shape == (1, 4, 40, 16) and k.shape == v.shape == (1, 2, 40, 16)  # hidden 64, 4 heads, 2 KV heads
    assert model.config._attn_implementation == "sdpa"  # put back
    # Dense attention on the captured tensors reproduces what the model computed: SketchWalk with
    # every block selected agrees with it too.
    walk = SketchWalk(SketchWalkConfig(block_size=8, sketch_dim=8, top_k_blocks=5, skip_layers=0), 16)
    walk.reset()
    torch.testing.assert_close(walk.attend(1, q, k, v), dense_causal_attention(q, k, v), rtol=1e-4, atol=1e-5)


def _masked_reference(q, k, v, indices, valid, block):
    """Dense attention restricted to the selected blocks: the definition, computed naively."""
    batch, heads, n, dim = q.shape
    kv_heads = k.shape[1]
    blocks = math.ceil(n / block)
    if indices.ndim == 3:
        indices, valid = indices[:, None], valid[:, None]
    allowed = torch.zeros(batch, indices.shape[1], blocks, blocks, dtype=torch.bool)
    for b in range(batch):
        for s in range(indices.shape[1]):
            for row in range(blocks):
                allowed[b, s, row, indices[b, s, row][valid[b, s, row]]] = True
    tokens = allowed.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)[:, :, :n, :n]
    tokens &= torch.ones(n, n, dtype=torch.bool).tril()
    per_head = tokens.repeat_interleave(kv_heads // tokens.shape[1], dim=1).repeat_interleave(heads // kv_heads, dim=1)
    k, v = k.repeat_interleave(heads // kv_heads, dim=1), v.repeat_interleave(heads // kv_heads, dim=1)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(dim)).masked_fill(~per_head, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("kernel", ["batched", "flex"])
@pytest.mark.parametrize("heads", ["shared", "per_kv_head"])
@pytest.mark.parametrize(("n", "block", "tau"), [(300, 32, 3), (512, 64, 5), (200, 16, 7)])
def test_sparse_output_equals_attention_restricted_to_the_selected_blocks(kernel: str, heads: str, n: int, block: int,
                                                                          tau: int) -> None:  # fmt: skip
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(2, 6, n, 32, generator=gen)  # batch 2: selections differ per batch element
    k, v = torch.randn(2, 2, n, 32, generator=gen), torch.randn(2, 2, n, 32, generator=gen)
    walk = SketchWalk(SketchWalkConfig(block_size=block, sketch_dim=16, top_k_blocks=tau, skip_layers=0,
                                       head_selection=heads, query_chunk_blocks=3, sparse_kernel=kernel), 32)  # fmt: skip
    walk.reset()
    out = walk.attend(0, q, k, v)
    indices, valid = walk.last_selection
    assert not torch.equal(indices[0], indices[1])
    torch.testing.assert_close(out, _masked_reference(q, k, v, indices, valid, block), rtol=1e-4, atol=1e-5)


def test_flex_tiles_divide_the_block_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """FlexAttention's Triton kernel refuses a block mask whose block its tiles do not divide
    (an H100's default in bfloat16 at head dimension 64 is 128 x 128: B = 64 would fail)."""
    from torch._inductor.choices import InductorChoices
    from torch._inductor.template_heuristics.triton import FlexConfig

    from knobscope.models.sketchwalk_attn import flex_kernel_options

    assert flex_kernel_options(40, 64, torch.bfloat16, "cpu") is None  # the CPU kernel takes any block
    monkeypatch.setattr(InductorChoices, "get_flex_attention_fwd_configs", lambda *a: [FlexConfig(128, 128, 3, 4)])
    flex_kernel_options.cache_clear()  # it caches what torch's heuristics said
    assert flex_kernel_options(128, 64, torch.bfloat16, "cuda") is None  # the defaults divide it
    assert flex_kernel_options(64, 64, torch.bfloat16, "cuda") == {"BLOCK_M": 64, "BLOCK_N": 64}
    assert flex_kernel_options(32, 64, torch.bfloat16, "cuda") == {"BLOCK_M": 32, "BLOCK_N": 32}
    assert flex_kernel_options(192, 64, torch.bfloat16, "cuda") == {"BLOCK_M": 64, "BLOCK_N": 64}
    monkeypatch.setattr(InductorChoices, "get_flex_attention_fwd_configs", lambda *a: [FlexConfig(128, 64, 3, 8)])
    flex_kernel_options.cache_clear()  # it caches what torch's heuristics said
    assert flex_kernel_options(64, 128, torch.bfloat16, "cuda") == {"BLOCK_M": 64, "BLOCK_N": 64}
    assert flex_kernel_options(48, 128, torch.bfloat16, "cuda") == {"BLOCK_M": 16, "BLOCK_N": 16}
    with pytest.raises(ValueError, match="multiple of 16.*B = 40"):
        flex_kernel_options(40, 64, torch.bfloat16, "cuda")

    def unreadable(*_):
        raise AttributeError("another torch")

    monkeypatch.setattr(InductorChoices, "get_flex_attention_fwd_configs", unreadable)
    flex_kernel_options.cache_clear()  # it caches what torch's heuristics said
    # the defaults unknown (they might be 128 x 128): tiles that divide B, named explicitly
    assert flex_kernel_options(64, 64, torch.bfloat16, "cuda") == {"BLOCK_M": 64, "BLOCK_N": 64}
    assert flex_kernel_options(128, 64, torch.bfloat16, "cuda") == {"BLOCK_M": 64, "BLOCK_N": 64}
    assert flex_kernel_options(32, 64, torch.bfloat16, "cuda") == {"BLOCK_M": 32, "BLOCK_N": 32}
    flex_kernel_options.cache_clear()


def test_flex_leaves_room_for_one_compiled_kernel_per_shape() -> None:
    """Past torch.compile's recompile limit FlexAttention would run eagerly, materialising every
    score; within the kernel's call the limit is raised and hitting it is an error."""
    import torch._dynamo.config as dynamo

    from knobscope.models.sketchwalk_attn import _recompile_room

    limit = getattr(dynamo, "recompile_limit", None) or dynamo.cache_size_limit
    with _recompile_room():
        inside = getattr(dynamo, "recompile_limit", None) or dynamo.cache_size_limit
        fail = getattr(dynamo, "fail_on_recompile_limit_hit", getattr(dynamo, "fail_on_cache_limit_hit", True))
    assert inside >= 64 > limit and fail is True
    assert (getattr(dynamo, "recompile_limit", None) or dynamo.cache_size_limit) == limit


def test_compiled_flex_kernel_matches_and_a_new_selection_does_not_recompile() -> None:
    """The compiled kernel (what runs on CUDA), here compiled on CPU: equal to the batched kernel,
    and a new selection of the same shape (a new mask function closing over new tensors) reuses
    the compiled kernel instead of compiling again."""
    from torch._dynamo.utils import counters

    from knobscope.models.sketchwalk_attn import block_sparse_attention, flex_block_sparse_attention

    q, k, v = _qkv(640, heads=4, kv_heads=2, dim=32)
    walk = SketchWalk(SketchWalkConfig(block_size=64, sketch_dim=16, top_k_blocks=3, skip_layers=0), 32)
    walk.reset()
    selections = []
    for layer in range(2):
        walk.attend(layer, q * (1 + layer), k, v)
        selections.append(walk.last_selection)
    assert not torch.equal(selections[0][0], selections[1][0])
    captured = []
    for indices, valid in selections:
        out = flex_block_sparse_attention(q, k, v, indices, valid, 64, compiled=True)
        captured.append(counters["stats"]["unique_graphs"])
        torch.testing.assert_close(out, block_sparse_attention(q, k, v, indices, valid, 64), rtol=1e-4, atol=1e-5)
    assert captured[0] >= 1 and captured[1] == captured[0]


def test_compiled_sketch_step_selects_what_the_eager_one_does_without_compiling_per_layer() -> None:
    """The sketch, walk and selection as one compiled graph (what runs on CUDA), compiled here on
    CPU: the same walk state and blocks layer after layer; one graph without a previous walk
    state and one with it, reused by every later layer."""
    from torch._dynamo.utils import counters

    q, k, v = _qkv(700, heads=4, kv_heads=2, dim=32, seed=3)
    outs = {}
    graphs = []
    for kernel in ("eager", "compiled"):
        walk = SketchWalk(SketchWalkConfig(block_size=32, sketch_dim=16, top_k_blocks=4, skip_layers=1,
                                           sketch_kernel=kernel), 32)  # fmt: skip
        walk.reset()
        outs[kernel] = []
        for layer in range(5):
            out = walk.attend(layer, q * (1 + 0.3 * layer), k, v)
            outs[kernel].append((out, walk.walk, *walk.last_selection) if walk.last_selection else (out,))
            graphs.append(counters["stats"]["unique_graphs"])
    for eager, compiled in zip(outs["eager"], outs["compiled"], strict=True):
        for a, b in zip(eager, compiled, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.equal(outs["eager"][1][2], outs["eager"][4][2])  # the selection moved with the layers
    assert graphs[7] - graphs[5] == 2 and graphs[9] == graphs[7]  # layer 1: first graph; 2: second; 3, 4: reused


def test_auto_kernel_is_flex_on_cuda_where_its_kernel_tiles_the_block_and_batched_elsewhere() -> None:
    from knobscope.models.sketchwalk_attn import sparse_kernel

    auto = SketchWalkConfig()
    assert auto.sparse_kernel == "auto"
    assert sparse_kernel(auto, "cuda") == "flex" and sparse_kernel(auto, "cpu") == "batched"
    assert sparse_kernel(SketchWalkConfig(block_size=40), "cuda") == "batched"  # no tile of 16 or more divides 40
    assert sparse_kernel(SketchWalkConfig(sparse_kernel="batched"), "cuda") == "batched"
    assert sparse_kernel(SketchWalkConfig(sparse_kernel="flex"), "cpu") == "flex"
    from knobscope.models.sketchwalk_attn import sketch_kernel

    assert sketch_kernel(auto, "cuda") == "compiled" and sketch_kernel(auto, "cpu") == "eager"
    assert sketch_kernel(SketchWalkConfig(sketch_kernel="compiled"), "cpu") == "compiled"
