"""benchmarks/search_efficiency.py's --merge: the numbers behind the README's goal table are pooled
from invocations over different seeds, so the pooling must neither lose nor repeat a seed."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "search_efficiency.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("search_efficiency", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def result(seeds: list[int], reach: list[float]) -> dict:
    return {"reach": {"0.99": reach, "0.9": reach}, "ms": [float(s) for s in seeds], "curves": [[s] for s in seeds],
            "seeds": seeds, "budget": 60}  # fmt: skip


def write(path: Path, results: dict) -> Path:
    path.write_text(json.dumps(results))
    return path


def test_merge_pools_a_search_over_different_seeds_in_seed_order(bench, tmp_path: Path) -> None:
    late = write(tmp_path / "late.json", {"frontier": result([3, 2], [13, 12]), "optuna-gp": result([2, 3], [30, 31])})
    early = write(tmp_path / "early.json", {"frontier": result([0, 1], [10, 11])})
    merged = bench.merge_results([late, early])
    assert merged["frontier"]["seeds"] == [0, 1, 2, 3]
    assert merged["frontier"]["reach"]["0.99"] == [10, 11, 12, 13]  # each seed's result stays with its seed
    assert merged["frontier"]["ms"] == [0.0, 1.0, 2.0, 3.0] and merged["frontier"]["curves"] == [[0], [1], [2], [3]]
    assert merged["optuna-gp"]["seeds"] == [2, 3]  # a search in one file only is kept as it was


def test_merge_refuses_a_seed_twice_or_a_file_without_seeds(bench, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    a = write(tmp_path / "a.json", {"frontier": result([0, 1], [10, 11])})
    b = write(tmp_path / "b.json", {"frontier": result([1, 2], [11, 12])})
    with pytest.raises(SystemExit) as stop:
        bench.merge_results([a, b])
    assert stop.value.code == 2 and "seed 1 in both" in capsys.readouterr().err
    old = {"frontier": {k: v for k, v in result([5], [15]).items() if k != "seeds"}}
    with pytest.raises(SystemExit) as stop:
        bench.merge_results([a, write(tmp_path / "old.json", old)])
    assert stop.value.code == 2 and "does not record its seeds" in capsys.readouterr().err
