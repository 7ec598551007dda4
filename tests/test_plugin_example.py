"""The README's plugin example is a file that runs, and the README quotes it as it is."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import ROOT, cli, knobscope

EXAMPLE = ROOT / "examples" / "plugin" / "next_token.py"


def test_readme_quotes_the_plugin_example_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Your own model: a workload plugin", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert block.strip() and block.strip() in EXAMPLE.read_text()
    assert "class NextTokenLoss(Workload)" in block


@pytest.mark.model
def test_plugin_example_runs_and_reports_its_metric_with_intervals(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "examples" / "plugin" / "spec.yaml").read_text())
    spec["workload"]["name"] = f"{EXAMPLE}:NextTokenLoss"
    spec["workload"]["args"] = {"model": "random:llama:layers=2", "num_batches": 2}  # tiny and random: fast
    spec["knobs"] = {"batch_size": [1, 2], "context": [16, 32]}
    spec["output"] = str(tmp_path / "run")
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    knobscope("run", str(path), "--no-progress", check=True)
    table = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(table) == 4 and (table["status"] == "done").all()
    assert (table["tokens"] == table["batch_size"] * table["context"]).all()  # the knobs took effect
    assert {"nll", "nll_ci_low", "nll_ci_high", "forward_ms_mean", "loss_ms_mean"} <= set(table.columns)
    again = cli("run", str(path), "--no-progress", check=True)
    assert "nothing to run: all 4 trials" in again.stderr
