"""Seed 002's profiling experiments 1-5 as ready-made sweeps (``knobscope profile PRESET``).

Each preset is one knob swept with the seed's default values on the ``lm`` workload, run
through the ordinary runner (so it resumes, stores every sample and can be analysed like any
run), then exported as ``expN_<name>_results.json`` in the unified ``{summary, all_samples}``
format and drawn as the seed's stacked-bar latency breakdown at 300 DPI.

| preset | seed experiment | knob | default values |
|---|---|---|---|
| ``context-scaling`` | Exp1 (text: prompt length) | ``input_tokens`` | 64 128 256 512 1024 2048 |
| ``moe-topk`` | Exp2 | ``top_k`` | 1 2 4 8 16 32 (up to the experts) |
| ``blocks-mask`` | Exp3 | ``num_active_blocks`` | 1 .. all blocks |
| ``output-tokens`` | Exp4 | ``max_new_tokens`` | 1 5 10 20 50 100 200 |
| ``flops-scaling`` | Exp5 | ``top_k`` (MoE) or ``num_active_blocks`` | 1 8 / N/4 N/2 N |

On a vision-language model (``--model random:idefics3`` or a VLM checkpoint) ``context-scaling``
is the seed's own Exp1: the ``vlm`` workload with ``max_crops`` 1 ... 12, each image resized to one
row of that many tiles (tilings 1x1 ... 1x12), drawn as vision encoder + projector + LLM prefill.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from knobscope.errors import SpecError, WorkloadError
from knobscope.spec import ExperimentSpec, parse_spec

__all__ = ["Preset", "PRESETS", "VLM_PRESETS", "ModelShape", "model_shape", "build_spec", "preset_files"]


@dataclass(frozen=True)
class ModelShape:
    """What the default knob values of a preset depend on."""

    num_blocks: int
    num_experts: int | None
    default_top_k: int | None
    max_positions: int


@dataclass(frozen=True)
class Preset:
    """One profiling experiment.

    Attributes:
        number, stem: the seed's ``exp{number}_{stem}_results.json``.
        knob: the swept knob; defaults: its default values for a model.
        args: workload arguments the experiment needs (e.g. forced output length).
        layout: ``phases`` (prefill and decode subplots), ``stacked_log`` (one stacked bar
            per value, log scale) or ``vision`` (the prefill split into vision encoder,
            projector and LLM prefill), as the seed draws each experiment.
        workload: ``lm`` or ``vlm``.
    """

    number: int
    stem: str
    knob: str
    defaults: Callable[[ModelShape], list[int]]
    args: Mapping[str, Any] = field(default_factory=dict)
    layout: str = "phases"
    description: str = ""
    workload: str = "lm"

    @property
    def results_name(self) -> str:
        return f"exp{self.number}_{self.stem}_results.json"


def _topk_defaults(shape: ModelShape) -> list[int]:
    if shape.num_experts is None:
        raise WorkloadError("preset moe-topk needs an MoE model; pass --model (e.g. a Mixtral/OLMoE checkpoint or random:olmoe)")
    return [k for k in (1, 2, 4, 8, 16, 32) if k <= shape.num_experts]


def _flops_defaults(shape: ModelShape) -> list[int]:
    if shape.num_experts is not None:
        return [k for k in (1, 8) if k <= shape.num_experts]
    n = shape.num_blocks
    return sorted({max(1, n // 4), max(1, n // 2), n})


PRESETS: dict[str, Preset] = {
    "context-scaling": Preset(
        1, "context_scaling", "input_tokens",
        lambda s: [v for v in (64, 128, 256, 512, 1024, 2048) if v <= s.max_positions - 16],
        {"breakdown": True, "default_max_new_tokens": 16},
        description="prompt length in tokens vs prefill (time to first token) and decode latency",
    ),
    "moe-topk": Preset(
        2, "moe_topk", "top_k", _topk_defaults, {"breakdown": True, "fidelity": True},
        description="MoE experts per token vs prefill and decode latency",
    ),
    "blocks-mask": Preset(
        3, "transformer_blocks_mask", "num_active_blocks", lambda s: list(range(1, s.num_blocks + 1)),
        {"breakdown": True, "fidelity": True},
        description="active transformer blocks (first N, mask not early exit) vs prefill and decode latency",
    ),
    "output-tokens": Preset(
        4, "output_tokens_scaling", "max_new_tokens", lambda s: [1, 5, 10, 20, 50, 100, 200],
        {"ignore_eos": True}, layout="stacked_log",
        description="forced output tokens vs decode and total latency",
    ),
    "flops-scaling": Preset(
        5, "flops_scaling", "top_k", _flops_defaults, {"count_flops": True, "ignore_eos": True},
        description="theoretical vs counted FLOPs vs measured latency (top_k 1 vs 8 on MoE models)",
    ),
}  # fmt: skip


# The presets a vision-language model runs (seed 002's Exp1 is about vision tokens).
VLM_PRESETS: dict[str, Preset] = {
    "context-scaling": Preset(
        1, "context_scaling", "max_crops", lambda s: list(range(1, 13)),
        {"exact_tiling": True, "default_max_new_tokens": 1},
        layout="vision", workload="vlm",
        description="image crops (tilings 1x1 ... 1x12) vs vision encoder, projector and LLM prefill latency",
    ),
}  # fmt: skip


def preset_for(name: str, *, vlm: bool) -> Preset:
    """Preset ``name`` for a language model, or for a vision-language one (``vlm``)."""
    if name not in PRESETS:
        raise SpecError(f"unknown profile preset {name!r}; presets: {', '.join(PRESETS)}")
    if vlm:
        if name not in VLM_PRESETS:
            raise SpecError(f"profile preset {name!r} runs on language models; a vision-language model runs "
                            f"{', '.join(VLM_PRESETS)}")  # fmt: skip
        return VLM_PRESETS[name]
    return PRESETS[name]


def model_shape(model: Any) -> ModelShape:
    """Blocks, experts and context length of a loaded Hugging Face model."""
    from knobscope.models.block_mask import find_decoder_layers
    from knobscope.models.moe import find_moe_layers

    moe = find_moe_layers(model)
    return ModelShape(
        num_blocks=len(find_decoder_layers(model)),
        num_experts=min(layer.num_experts for layer in moe) if moe else None,
        default_top_k=moe[0].default_top_k if moe else None,
        max_positions=int(getattr(model.config, "max_position_embeddings", 1 << 20)),
    )


def swept_knob(preset: Preset, shape: ModelShape | None) -> str:
    if preset.stem == "flops_scaling" and shape is not None and shape.num_experts is None:
        return "num_active_blocks"  # a dense model: scale depth instead of experts
    return preset.knob


def build_spec(
    name: str,
    shape: ModelShape | None,
    *,
    model: str,
    out: Path,
    num_samples: int,
    values: Mapping[str, Sequence[Any]] | None = None,
    workload_args: Mapping[str, Any] | None = None,
    warmup: int = 1,
    seed: int = 0,
    device: str = "auto",
) -> ExperimentSpec:
    """The experiment spec of preset ``name``; ``values`` overrides or adds knob lists. ``shape``
    None: the model is a vision-language one (:data:`VLM_PRESETS`)."""
    preset = preset_for(name, vlm=shape is None)
    knob = swept_knob(preset, shape)
    knobs: dict[str, Any] = {}
    values = dict(values or {})
    main = list(values.pop(knob, None) or preset.defaults(shape))  # type: ignore[arg-type]  # VLM defaults ignore it
    knobs[knob] = {"values": main}
    for other, vals in values.items():
        if vals:
            knobs[other] = {"values": list(vals)}
    args = {"model": model, **preset.args, **dict(workload_args or {})}
    raw = {
        "name": f"exp{preset.number}_{preset.stem}",
        "description": preset.description,
        "workload": {"name": preset.workload, "args": args},
        "knobs": knobs,
        "strategy": "full",
        "measure": {"warmup": warmup, "repeats": 1, "num_samples": num_samples, "seed": seed, "device": device},
        "output": str(out),
    }
    return parse_spec(raw, source=f"profile {name}")


def preset_files(name: str, out: Path) -> tuple[Path, Path]:
    """(results JSON, figure) paths of preset ``name`` in run directory ``out``."""
    preset = PRESETS[name]  # a VLM preset has the same number and stem
    return out / preset.results_name, out / "figures" / f"exp{preset.number}_{preset.stem}.png"


def write_results(name: str, out: Path) -> Path:
    """Export the run in ``out`` as the seed's ``expN_<name>_results.json``."""
    from knobscope.results import export

    path, _ = preset_files(name, out)
    export(out, "json", out=path)
    return path


def flops_table(table: Any, knob: str) -> list[dict[str, Any]]:
    """Seed 002 Exp5: per value, FLOPs (estimated and counted) and latency, each also as a ratio
    to the first value, so theoretical and measured scaling sit side by side."""
    rows = table.sort_values(knob)
    base = rows.iloc[0]
    out = []
    for _, row in rows.iterrows():
        entry = {knob: row[knob]}
        for column in ("gflops_theoretical", "gflops_total", "prefill_ms_mean", "decode_per_call_ms_mean", "total_ms_mean"):
            if column in row and row[column] == row[column]:
                entry[column] = float(row[column])
                entry[f"{column}_ratio"] = float(row[column]) / float(base[column]) if base[column] else float("nan")
        out.append(entry)
    return out
