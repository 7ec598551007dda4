from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from conftest import PLUGINS, cli, write_spec
from knobscope.errors import ExpressionError, SpecError
from knobscope.expressions import Expression
from knobscope.spec import parse_set_option, parse_spec

BASE = {"name": "x", "knobs": {"a": [1, 2]}}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"bogus": 1}, "unknown key 'bogus'; allowed keys here: name, description, workload"),
        ({"knobs": {"a": []}}, "knob 'a' has an empty value list"),
        ({"knobs": {"a": {"values": [1, 2], "default": 3}}}, "default 3 is not one of its values [1, 2]"),
        ({"knobs": {"a": {"range": [2, 12], "step": 2, "dflt": 4}}}, "unknown key 'dflt'; allowed keys: range, step, default"),
        ({"knobs": {"a": {"range": [2, 1]}}}, "range [2, 1] is empty"),
        ({"knobs": {"a": "oops"}}, "knob 'a' is 'oops'; a knob is a list of values"),
        ({"knobs": {"a": [1, 1]}}, "lists a value twice"),
        ({"strategy": "nope"}, "unknown strategy 'nope'; valid names are: balanced, bayesian, boundary, custom_sparse, frontier, full, lhs, listed, nsga2, random, refine, stratified"),
        ({"strategy": {"name": "lhs", "size": 0}}, "strategy 'lhs' option 'size'"),
        ({"constraints": ["b < 3"]}, "uses unknown name 'b'; known names: a"),
        ({"constraints": ["a.__class__"]}, "uses Attribute, which is not allowed"),
        ({"measure": {"warmup": -1}}, "measure.warmup"),
        ({"objectives": {"lat": "down"}}, "objectives.lat: Input should be 'min' or 'max'"),
        ({"name": ""}, "name"),
    ],
)
def test_malformed_specs_name_the_bad_value(patch: dict, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(BASE | patch, source="s.yaml", require_workload=False)
    assert message in str(info.value)
    assert str(info.value).startswith("s.yaml: ")
    assert "\n" not in str(info.value)


def test_expressions_are_evaluated_without_eval() -> None:
    assert Expression.parse("ceil(n / b) if n > 0 else 0").evaluate({"n": 100, "b": 32}) == 4
    assert Expression.parse("a in [1, 2] and not b").evaluate({"a": 2, "b": False}) is True
    for bad in ("__import__('os')", "(lambda: 1)()", "[x for x in a]", "open('f')", "a[0]"):
        with pytest.raises(ExpressionError):
            Expression.parse(bad)


def test_range_knobs_keep_integer_and_float_values() -> None:
    spec = parse_spec(
        {"name": "x", "knobs": {"k": {"range": [2, 12], "step": 2, "default": 4}, "s": {"range": [0.1, 0.5], "step": 0.1}}},
        require_workload=False,
    )
    assert spec.space.knob("k").values == (2, 4, 6, 8, 10, 12)
    assert spec.space.knob("s").values == (0.1, 0.2, 0.3, 0.4, 0.5)


def test_set_option_parsing() -> None:
    assert parse_set_option(["top_k=4,16,32", "mode=a,b", "x=0.5"]) == {"top_k": [4, 16, 32], "mode": ["a", "b"], "x": [0.5]}
    for bad in ("top_k", "top_k=", "=1", "top_k=1,,2"):
        with pytest.raises(SpecError, match="--set"):
            parse_set_option([bad])


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_bad_input_is_one_line_exit_2_and_leaves_the_store_intact(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec.yaml", knobs={"n": [16], "reps": [1]})
    cli("run", str(spec), "--no-progress", check=True)
    db = tmp_path / "run" / "results.db"
    before = _digest(db)

    bad_spec = tmp_path / "bad.yaml"
    cases = {
        "unknown key": yaml.safe_dump(yaml.safe_load(spec.read_text()) | {"knobz": 1}),
        "bad yaml": "name: [unclosed\n",
        "default outside values": spec.read_text().replace("n:\n  - 16", "n:\n    values: [16]\n    default: 99"),
        "unknown workload": spec.read_text().replace(f"{PLUGINS}:MatmulWorkload", "nosuch"),
        "missing plugin class": spec.read_text().replace("MatmulWorkload", "Nope"),
        "knob the workload lacks": spec.read_text().replace("reps:", "top_k:"),
    }
    for label, text in cases.items():
        bad_spec.write_text(text)
        proc = cli("run", str(bad_spec), "--no-progress")
        assert proc.returncode == 2, (label, proc.stdout, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("knobscope"), (label, proc.stderr)
        assert "Traceback" not in proc.stderr

    arg_cases = [
        ("run", str(spec), "--strategy", "nope"),
        ("run", str(spec), "--set", "n=1,,2"),
        ("run", str(spec), "--set", "m=1"),
        ("run", str(spec), "--shard", "4/4"),
        ("run", str(spec), "--bogus"),
        ("sample", str(spec), "--format", "xml"),
        ("export", str(tmp_path / "run"), "--format", "xls"),
        ("export", str(tmp_path / "nowhere")),
        ("run", str(tmp_path / "missing.yaml")),
    ]
    for args in arg_cases:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
    assert _digest(db) == before


def test_corrupt_store_is_reported_and_left_untouched(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.db").write_bytes(b"this is not sqlite" * 100)
    before = _digest(run / "results.db")
    spec = write_spec(tmp_path / "spec.yaml")
    for args in (("run", str(spec), "--no-progress"), ("export", str(run)), ("show", str(run))):
        proc = cli(*args)
        assert proc.returncode == 2 and "not a readable knobscope store" in proc.stderr, proc.stderr
    assert _digest(run / "results.db") == before


def test_strategies_and_sample_need_no_workload(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(Path(__file__).resolve().parent.parent.joinpath("examples/exp5_grid.yaml").read_text())
    proc = cli("strategies", str(spec), check=True)
    for name, count in (("stratified", "27"), ("boundary", "45"), ("balanced", "36"), ("lhs", "60"), ("full", "240")):
        assert any(name in line and count in line for line in proc.stdout.splitlines()), name
    proc = cli("sample", str(spec), "--strategy", "stratified", "--format", "json", "--set", "top_k=4,32", check=True)
    import json

    configs = json.loads(proc.stdout)
    assert len(configs) == 18 and {c["top_k"] for c in configs} == {4, 32}


# -- defects found when the project was tried as a new user would (issue 12) -------------------


def test_a_store_damaged_in_its_middle_is_one_line_for_every_command_and_left_byte_identical(tmp_path: Path) -> None:
    import random

    spec = write_spec(tmp_path / "spec.yaml", workload={"name": f"{PLUGINS}:MatmulWorkload", "args": {"num_samples": 8}})
    assert cli("run", str(spec), "--no-progress").returncode == 0
    db = tmp_path / "run" / "results.db"
    data = bytearray(db.read_bytes())
    assert len(data) >= 4 * 4096  # several pages, so the middle is not the header
    middle = len(data) // 2
    data[middle : middle + 4096] = random.Random(0).randbytes(4096)
    db.write_bytes(bytes(data))
    before = _digest(db)
    for args in (("run", str(spec), "--no-progress"), ("export", str(tmp_path / "run")), ("show", str(tmp_path / "run")),
                 ("analyze", str(tmp_path / "run")), ("report", str(tmp_path / "run"))):  # fmt: skip
        res = cli(*args)
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and str(db) in lines[0] and "damaged" in lines[0], (args, res.stderr)
        assert _digest(db) == before, args


def test_a_foreign_sqlite_file_is_refused_before_anything_is_written_to_it(tmp_path: Path) -> None:
    import sqlite3

    run = tmp_path / "run"
    run.mkdir()
    conn = sqlite3.connect(run / "results.db")  # rollback-journal mode: switching it to WAL would change its header
    conn.execute("CREATE TABLE recipes (name TEXT)")
    conn.execute("INSERT INTO recipes VALUES ('bread')")
    conn.commit()
    conn.close()
    before = _digest(run / "results.db")
    for args in (("show", str(run)), ("export", str(run)), ("run", str(write_spec(tmp_path / "spec.yaml")), "--no-progress")):
        res = cli(*args)
        assert res.returncode == 2 and "not a knobscope store" in res.stderr and "recipes" in res.stderr, res.stderr
    assert _digest(run / "results.db") == before
    assert sorted(p.name for p in run.iterdir()) == ["results.db"]  # no -wal or -shm either


@pytest.mark.parametrize(
    ("knobs", "workload", "message"),
    [
        ({"nap_ms": [1, 2]}, "KnownStages", "knob name 'nap_ms' ends in _ms"),
        ({"a": [1], "b": [1], "c": [1], "quality": [1, 2]}, "KnownQualityWorkload", "knob 'quality' has the name of a metric"),
        ({"n": [16], "status": [1]}, "MatmulWorkload", "knob name 'status' is a column knobscope reports itself"),
    ],
)
def test_a_knob_named_like_a_measurement_is_refused(tmp_path: Path, knobs: dict, workload: str, message: str) -> None:
    spec = write_spec(tmp_path / "spec.yaml", knobs=knobs, workload={"name": f"{PLUGINS}:{workload}", "args": {}})
    res = cli("run", str(spec), "--no-progress")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--set", "num_active_blocks=ten"], "num_active_blocks value 'ten' is not possible"),
        (["--set", "num_active_blok=2"], "num_active_blok"),
    ],
)
def test_bad_knob_values_are_reported_before_the_model_loads_and_create_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: list[str], message: str
) -> None:
    import knobscope.models.loading as loading

    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(loading, "load_causal_lm", no_loading)
    spec = write_spec(tmp_path / "spec.yaml", workload={"name": "lm", "args": {"model": "random:llama:layers=2"}},
                      knobs={"num_active_blocks": [1, 2]})  # fmt: skip
    res = cli("run", str(spec), "--no-progress", *change)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()


def test_relative_paths_in_a_spec_are_read_from_the_spec_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from knobscope.spec import load_spec
    from knobscope.workers import build_workload

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PLUGINS, project / "my_workloads.py")
    (project / "questions.jsonl").write_text('{"question": "2+2?", "answers": ["4"]}\n{"question": "Sky?", "answers": ["blue"]}\n')
    spec = write_spec(project / "spec.yaml", workload={"name": "my_workloads.py:MatmulWorkload", "args": {"num_samples": 1}},
                      knobs={"n": [16], "reps": [1]}, output=str(tmp_path / "run"))  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli("run", str(spec), "--no-progress").returncode == 0
    # A data path argument, the same way (the lm workload reads its questions when built).
    lm = write_spec(project / "lm.yaml", workload={"name": "lm", "args": {"dataset": "questions.jsonl"}},
                    knobs={"max_new_tokens": [1]})  # fmt: skip
    assert len(build_workload(load_spec(lm)).samples()) == 2
    # A plugin file that is not there: the error names the directory searched.
    missing = write_spec(project / "missing.yaml", workload={"name": "nope.py:W", "args": {}})
    res = cli("run", str(missing), "--no-progress")
    assert res.returncode == 2 and "'nope.py' not found in" in res.stderr and str(project) in res.stderr, res.stderr


def test_a_profile_whose_every_trial_failed_prints_the_failures_and_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from knobscope.workloads.lm import LMWorkload

    def broken(self: object, sample: object, timer: object) -> None:
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(LMWorkload, "run", broken)
    res = cli("profile", "output-tokens", "--model", "random:llama:layers=2", "--num-samples", "1",
              "--max-new-tokens", "1", "--max-new-tokens", "2", "--out", str(tmp_path / "run"), "--no-progress")  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert sum(line.startswith("failed") for line in lines) == 2 and "illegal memory access" in lines[0], res.stderr
    assert lines[-1].startswith("knobscope: error: profile output-tokens: no configuration was measured"), res.stderr
