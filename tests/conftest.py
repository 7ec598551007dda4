from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = ROOT / "tests" / "plugins.py"


def write_spec(path: Path, **overrides: object) -> Path:
    spec = {
        "name": "t",
        "workload": {"name": f"{PLUGINS}:MatmulWorkload", "args": {"num_samples": 2}},
        "knobs": {"n": [16, 32, 48], "reps": [1, 2]},
        "strategy": "full",
        "measure": {"warmup": 0, "repeats": 1},
        "output": str(path.parent / "run"),
    }
    spec.update(overrides)
    path.write_text(yaml.safe_dump(spec))
    return path


def knobscope(*args: str, check: bool = False, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess, as a user would."""
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.run(
        [sys.executable, "-m", "knobscope.cli", *args], capture_output=True, text=True, env=env, **kw  # type: ignore[call-overload]
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"knobscope {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    return write_spec(tmp_path / "spec.yaml")


@dataclass
class CliResult:
    """What :func:`cli` returns; named like :class:`subprocess.CompletedProcess`."""

    returncode: int
    stdout: str
    stderr: str


def cli(*args: str, check: bool = False) -> CliResult:
    """Run the CLI in this process, as :func:`knobscope` does in a subprocess but without the
    interpreter start-up: for exit codes, messages and results. Keep :func:`knobscope` where
    a process matters (signals, several processes, a fresh interpreter)."""
    import contextlib
    import io

    from knobscope.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    result = CliResult(code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"knobscope {args} failed ({code}):\n{result.stdout}\n{result.stderr}")
    return result


def assert_vision_token_budgets_hold(workload: Any, sample: Any, budgets: Iterable[int]) -> None:
    """A set-up ``vlm`` workload (with its ``timer``) run on ``sample`` under each vision-token
    budget reports at most that many vision tokens."""
    for budget in budgets:
        workload.apply({"vision_tokens": budget, "max_new_tokens": 1})
        with workload.timer.sample():
            record = workload.run(sample, workload.timer)
        assert record["vision_tokens_actual"] <= budget, (budget, record["vision_tokens_actual"])
