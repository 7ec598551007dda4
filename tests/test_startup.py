"""`import knobscope` and `knobscope --help` load no numerical library: registries name their
entries by import path and the CLI imports what a command needs when it runs."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("scipy", "optuna", "torch", "statsmodels", "ray", "pandas", "matplotlib", "transformers")

PROBE = f"""
import sys
import knobscope
from knobscope.cli import main
for argv in (["--help"], ["run", "--help"]):
    try:
        main(argv)
    except SystemExit:
        pass
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_import_and_help_load_no_numerical_library() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert "knobscope run" in proc.stdout or "Usage" in proc.stdout  # the help was printed
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout.strip().splitlines()[-1]


def test_names_resolve_on_first_use() -> None:
    import knobscope

    assert knobscope.Store.__module__ == "knobscope.store"
    assert knobscope.STRATEGIES.load("bayesian").__module__ == "knobscope.search"
    assert knobscope.EXECUTORS.load("local").__module__ == "knobscope.executors.local"
