from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import yaml

from conftest import PLUGINS, knobscope, write_spec
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
        ({"strategy": "nope"}, "unknown strategy 'nope'; valid names are: balanced, bayesian, boundary, custom_sparse, full, lhs, listed, nsga2, random, refine, stratified"),
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
    knobscope("run", str(spec), "--no-progress", check=True)
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
        proc = knobscope("run", str(bad_spec), "--no-progress")
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
        proc = knobscope(*args)
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
        proc = knobscope(*args)
        assert proc.returncode == 2 and "not a readable knobscope store" in proc.stderr, proc.stderr
    assert _digest(run / "results.db") == before


def test_strategies_and_sample_need_no_workload(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text(Path(__file__).resolve().parent.parent.joinpath("examples/exp5_grid.yaml").read_text())
    proc = knobscope("strategies", str(spec), check=True)
    for name, count in (("stratified", "27"), ("boundary", "45"), ("balanced", "36"), ("lhs", "60"), ("full", "240")):
        assert any(name in line and count in line for line in proc.stdout.splitlines()), name
    proc = knobscope("sample", str(spec), "--strategy", "stratified", "--format", "json", "--set", "top_k=4,32", check=True)
    import json

    configs = json.loads(proc.stdout)
    assert len(configs) == 18 and {c["top_k"] for c in configs} == {4, 32}
