"""Every spec key a user can write is documented in docs/spec.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from knobscope.strategies import STRATEGIES
from knobscope.workloads.lm import LMArgs
from knobscope.workloads.vlm import VLMArgs
from knobscope.workloads.forecast import ForecastArgs, ForecastWorkload
from knobscope.workloads.sketchwalk import KNOB_FIELDS, SketchWalkArgs, SketchWalkWorkload

DOC = (Path(__file__).resolve().parent.parent / "docs" / "spec.md").read_text()


@pytest.mark.parametrize("model", [LMArgs, SketchWalkArgs, VLMArgs, ForecastArgs])
def test_every_workload_argument_is_documented(model) -> None:
    missing = [name for name in model.model_fields if f"`{name}`" not in DOC]
    assert not missing, f"docs/spec.md lacks {model.__name__} arguments {missing}"


def test_every_strategy_and_option_is_documented() -> None:
    for name in STRATEGIES.names():
        assert f"`{name}`" in DOC, f"strategy {name} is not in docs/spec.md"
        options = STRATEGIES.load(name).Options.model_fields
        missing = [o for o in options if f"`{o}`" not in DOC]
        assert not missing, f"strategy {name}'s options {missing} are not in docs/spec.md"


def test_forecast_knobs_and_metrics_are_documented() -> None:
    for name in (*ForecastWorkload.knobs, *ForecastWorkload.metrics):
        assert f"`{name}`" in DOC, f"{name} is not in docs/spec.md"


def test_sketchwalk_knobs_and_metrics_are_documented() -> None:
    for name in ("seq_len", *KNOB_FIELDS, *SketchWalkWorkload.metrics):
        assert f"`{name}`" in DOC, f"{name} is not in docs/spec.md"


def test_every_run_option_and_executor_is_in_the_readme() -> None:
    import typer

    from knobscope.cli import app
    from knobscope.executors import EXECUTORS

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    run = typer.main.get_command(app).commands["run"]  # type: ignore[attr-defined]
    options = [opt for param in run.params for opt in param.opts if opt.startswith("--")]
    missing = [opt for opt in options if opt not in readme]
    assert not missing, f"README.md lacks knobscope run options {missing}"
    assert [name for name in EXECUTORS.names() if f"`{name}`" not in readme] == []


ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT) for folder in ("examples", "benchmarks")
                                        for p in (ROOT / folder).rglob("*.yaml")), ids=str)  # fmt: skip
def test_every_shipped_spec_loads(path: Path) -> None:
    """A shipped spec that stopped matching the spec's rules would fail only when someone runs it
    (the GPU specs under benchmarks/gpu only where a GPU is lent)."""
    import yaml

    from knobscope.spec import load_spec

    # a spec without a workload is read by 'knobscope strategies' and 'sample' (knobs only)
    spec = load_spec(ROOT / path, require_workload="workload" in yaml.safe_load((ROOT / path).read_text()))
    assert spec.space.grid_size >= 1


@pytest.mark.parametrize("script", ["benchmarks/gpu/issue15.sh", "benchmarks/gpu/issue11.sh", "benchmarks/gpu/common.sh",
                                    "benchmarks/gpu/prepare.sh"])
def test_gpu_scripts_parse_and_name_files_that_exist(script: str) -> None:
    """The GPU script runs only where a GPU is lent (rarely, and with minutes to spare): a syntax
    error or a renamed file must show here first. (``DEVICE=cpu`` rehearses it whole, ~2 min.)"""
    import re
    import subprocess

    assert subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True).returncode == 0
    named = set(re.findall(r"benchmarks/[\w/.-]+\.(?:py|yaml|sh)", (ROOT / script).read_text()))
    assert named and all((ROOT / path).is_file() for path in named), named
