"""The ``forecast`` workload: speculative decoding of a patch forecaster with a stochastic draft
(seed 003) — the rollouts' guarantees, training and its cache, the ETT reader, the sweep through
the CLI, a user's own pair, and bad input."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli, write_spec
from knobscope.datasets import load_series
from knobscope.models.forecaster import ForecasterConfig, PatchTransformer, cached_pair, seasonal_naive
from knobscope.models.speculative_forecast import (
    IdenticalDraft,
    gaussian_log_ratio,
    predicted_speedup,
    speculative_rollout,
    target_rollout,
)

TINY = {"d_model": 16, "layers": 2, "heads": 2, "d_ff": 32, "train_steps": 30, "draft_steps": 30, "windows": 3, "threads": 1}


def _models(patch: int = 4, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    target = PatchTransformer(patch, 16, 2, 2, 32, max_patches=32).eval()
    draft = PatchTransformer(patch, 8, 1, 1, 16, max_patches=32, stochastic=True).eval()
    return target, draft


def _gens(seed: int) -> tuple[torch.Generator, torch.Generator]:
    return torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed + 1)


@pytest.mark.parametrize("rule", ["lenient", "exact"])
def test_a_draft_identical_to_the_target_is_always_accepted_and_reproduces_the_target_rollout(rule: str) -> None:
    target, _ = _models()
    context = torch.randn(1, 5, 4, generator=torch.Generator().manual_seed(3))
    sigma = 0.3
    with torch.inference_mode():
        noise, _ = _gens(11)
        alone = target_rollout(target, context, 7, sigma=sigma, noise=noise)
        noise, accept = _gens(11)
        spec, stats = speculative_rollout(target, IdenticalDraft(target, sigma), context, 7, k=3, sigma=sigma, rule=rule,
                                          noise=noise, accept=accept)  # fmt: skip
    assert stats.acceptance_rate == 1.0 and stats.attempted == stats.accepted
    assert stats.rounds == 2 and stats.verify_calls == 2  # 3 drafted + 1 free patch per round: 7 patches in 2 rounds
    assert spec.shape == alone.shape == (1, 7, 4)
    torch.testing.assert_close(spec, alone, atol=1e-5, rtol=1e-5)


def test_the_log_ratio_is_that_of_the_two_gaussians() -> None:
    x, mp, mq, vq = torch.tensor([0.3, -0.2]), torch.tensor([0.0, 0.1]), torch.tensor([0.5, -0.4]), torch.tensor([0.2, 0.5])
    sigma = 0.4
    expected = float(sum(torch.distributions.Normal(mp, sigma).log_prob(x) - torch.distributions.Normal(mq, vq.sqrt()).log_prob(x)))
    assert gaussian_log_ratio(x, mp, sigma, mq, vq) == pytest.approx(expected, rel=1e-5)


def test_acceptance_rises_with_the_bias_and_with_it_the_patches_per_round() -> None:
    target, draft = _models(seed=1)
    contexts = [torch.randn(1, 5, 4, generator=torch.Generator().manual_seed(i)) for i in range(25)]
    rates, per_round = {}, {}
    for bias in (1.0, 5.0, 50.0):
        acc = att = acc_rounds = rounds = 0
        with torch.inference_mode():
            for i, c in enumerate(contexts):
                noise, accept = _gens(100 + i)
                _, s = speculative_rollout(target, draft, c, 6, k=3, sigma=0.5, bias=bias, noise=noise, accept=accept)
                acc, att, acc_rounds, rounds = acc + s.accepted, att + s.attempted, acc_rounds + s.accepted, rounds + s.rounds
        rates[bias], per_round[bias] = acc / att, acc_rounds / rounds
    assert rates[1.0] < rates[5.0] < rates[50.0], rates
    assert per_round[1.0] < per_round[50.0]


def test_the_exact_rule_keeps_the_targets_distribution_whatever_the_draft() -> None:
    # One patch of 2 steps, many draws: the speculative samples must be N(target mean, sigma^2)
    # although the (random, unrelated) draft proposes from elsewhere.
    target, draft = _models(patch=2, seed=2)
    context = torch.randn(1, 3, 2, generator=torch.Generator().manual_seed(5))
    sigma = 0.5
    with torch.inference_mode():
        mean = target(context)[0, -1]
        _, q_var = draft(context)
        draws, lenient = [], []
        accepted = attempted = 0
        for i in range(300):
            noise, accept = _gens(1000 + i)
            x, s = speculative_rollout(target, draft, context, 1, k=1, sigma=sigma, rule="exact", noise=noise, accept=accept)
            draws.append(x[0, 0])
            accepted, attempted = accepted + s.accepted, attempted + s.attempted
            noise, accept = _gens(1000 + i)
            y, _ = speculative_rollout(target, draft, context, 1, k=1, sigma=sigma, bias=1e6, noise=noise, accept=accept)
            lenient.append(y[0, 0])
    draws_t, lenient_t = torch.stack(draws), torch.stack(lenient)
    assert 0 < accepted < attempted  # the draft is accepted sometimes, not always: both paths ran
    se = sigma / np.sqrt(len(draws))
    assert torch.all((draws_t.mean(0) - mean).abs() < 4 * se), (draws_t.mean(0), mean)
    assert torch.all((draws_t.std(0) - sigma).abs() < 0.1 * sigma), draws_t.std(0)
    # a huge bias accepts (nearly) every draft sample: the draft's wider spread leaks through
    assert bool((q_var.sqrt()[0, -1] > 1.5 * sigma).all())
    assert bool((lenient_t.std(0) > 1.3 * sigma).all()), lenient_t.std(0)


def test_predicted_speedup_is_the_capped_geometric_law() -> None:
    # a = 0.5, k = 3: (1 - 0.5^4) / 0.5 = 1.875 patches per round for 3 x 1 ms + 10 ms
    assert predicted_speedup(0.5, 3, 1.0, 10.0, 10.0) == pytest.approx(1.875 * 10 / 13)
    assert predicted_speedup(1.0, 2, 1.0, 10.0, 10.0) == pytest.approx(3 * 10 / 12)


def test_training_is_seeded_cached_and_learns(tmp_path: Path) -> None:
    values, name = load_series("builtin:seattle_weather")
    assert name == "temp_max" and len(values) == 1461
    series = (values - values.mean()) / values.std()
    cfg = ForecasterConfig(patch_len=7, context_patches=4, horizon_patches=2, d_model=16, layers=1, heads=2, d_ff=32,
                           train_steps=40, draft_steps=40, batch_size=16)  # fmt: skip
    torch.set_num_threads(1)
    pair = cached_pair(series, cfg, cache_dir=tmp_path)
    assert "cached" not in pair.report and len(list(tmp_path.glob("*.pt"))) == 1
    again = cached_pair(series, cfg, cache_dir=tmp_path)
    assert again.report["cached"].endswith(".pt")
    for a, b in zip(pair.target.state_dict().values(), again.target.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    x = torch.tensor(series[:42], dtype=torch.float32).view(1, 6, 7)
    with torch.inference_mode():
        m, v = again.draft(x)
    assert m.shape == v.shape == (1, 6, 7) and bool((v > 0).all())
    # the draft learnt the target: closer to it than to an untrained draft of the same shape
    fresh = PatchTransformer(7, **cfg.draft_shape(), max_patches=cfg.max_patches, stochastic=True)
    with torch.inference_mode():
        t = again.target(x)
        assert float(((m - t) ** 2).mean()) < float(((fresh(x)[0] - t) ** 2).mean())


@pytest.mark.parametrize(("width", "layers", "heads", "stochastic"), [(64, 1, 1, True), (48, 2, 3, False)])
def test_the_inference_path_computes_what_the_encoder_modules_compute(width: int, layers: int, heads: int, stochastic: bool) -> None:
    torch.manual_seed(0)
    model = PatchTransformer(7, width, layers, heads, 4 * width, 24, stochastic=stochastic).eval()
    patches = torch.randn(2, 13, 7)
    with torch.enable_grad():  # the nn.TransformerEncoder path, as in training
        reference = model(patches)
    assert not model.fused  # an odd head count: PyTorch's fused kernel cannot run it
    with torch.inference_mode():  # the functional path decoding takes
        fast = model(patches)
    for a, b in zip(reference if stochastic else (reference,), fast if stochastic else (fast,)):
        torch.testing.assert_close(a.detach(), b, rtol=1e-5, atol=1e-5)


def test_seasonal_naive_repeats_the_last_season() -> None:
    assert seasonal_naive(np.array([1.0, 2, 3, 4, 5]), 5, 2).tolist() == [4, 5, 4, 5, 4]


def _ett(path: Path, rows: int = 400, numeric: bool = True) -> Path:
    t = np.arange(rows)
    with path.open("w") as f:
        f.write("date,HUFL,OT\n" if numeric else "date,label\n")
        for i in t:
            f.write(f"2016-07-01 {i % 24:02d}:00:00," + (f"{np.sin(i / 4):.4f},{np.cos(i / 6):.4f}\n" if numeric else "x\n"))
    return path


def test_a_sweep_through_the_cli_reads_an_ett_csv_and_stores_every_metric(tmp_path: Path) -> None:
    csv = _ett(tmp_path / "ETTh1.csv")
    values, column = load_series(str(csv))
    assert column == "OT" and len(values) == 400
    spec = write_spec(tmp_path / "f.yaml", workload={"name": "forecast", "args": {**TINY, "series": "ETTh1.csv", "patch_len": 4,
                      "context_patches": 4, "horizon_patches": 3}},
                      knobs={"spec_k": [1, 2], "spec_accept_bias": [1.0, 10.0]}, measure={"warmup": 0, "repeats": 1})  # fmt: skip
    res = cli("run", str(spec), "--no-progress")
    assert res.returncode == 0, res.stderr
    with sqlite3.connect(tmp_path / "run" / "results.db") as db:
        rows = db.execute("SELECT t.config, s.record FROM samples s JOIN trials t USING (trial_id)").fetchall()
    assert len(rows) == 4 * 3
    for config, record in rows:
        r, c = json.loads(record), json.loads(config)
        assert 0 <= r["acceptance_rate"] <= 1 and 1 <= r["rounds"] <= 3
        assert r["accepted_per_round"] <= c["spec_k"]
        assert r["mse"] >= 0 and r["target_mse"] >= 0 and r["naive_mse"] >= 0
        assert r["speculative_ms"] == pytest.approx(r["draft_ms"] + r["verify_ms"] + r["accept_ms"])
        assert r["speedup"] == pytest.approx(r["target_only_ms"] / r["speculative_ms"])
        # target-only forecasts do not depend on the configuration
    by_window: dict[str, set[float]] = {}
    for config, record in rows:
        r = json.loads(record)
        by_window.setdefault(str(r["sample_id"]), set()).add(round(r["target_mse"], 9))
    assert all(len(v) == 1 for v in by_window.values())


def test_a_users_own_pair_plugs_in(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "import torch\n"
        "class Last(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x  # each patch predicts itself repeated: a persistence forecaster\n"
        "class Noisy(torch.nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x, torch.full_like(x, 0.04)\n"
        "def pair(patch_len):\n"
        "    return Last(), Noisy()\n"
    )
    spec = write_spec(tmp_path / "f.yaml", workload={"name": "forecast", "args": {"models": "mine.py:pair", "windows": 2}},
                      knobs={"spec_sigma": [0.2]}, measure={"warmup": 0, "repeats": 1})  # fmt: skip
    res = cli("run", str(spec), "--no-progress")
    assert res.returncode == 0, res.stderr
    with sqlite3.connect(tmp_path / "run" / "results.db") as db:
        records = [json.loads(r) for (r,) in db.execute("SELECT record FROM samples")]
    # the draft's mean is the target's: proposals are accepted far more often than not
    assert len(records) == 2 and all(r["acceptance_rate"] > 0.5 for r in records)


@pytest.mark.parametrize(
    ("args", "knobs", "message"),
    [
        ({"series": "nonumbers.csv"}, {"spec_k": [1]}, "has no numeric column"),
        ({"horizon_patches": 200}, {"spec_k": [1]}, "more than the 293 steps of the test split (the last 20% of 'builtin:seattle_weather')"),
        ({}, {"spec_k": [0, 1]}, "spec_k value 0 is not possible"),
        ({}, {"spec_sigma": [0.0]}, "spec_sigma value 0.0 is not possible"),
        ({}, {"spec_sigma": [-1]}, "spec_sigma value -1 is not possible"),
        ({}, {"spec_accept_bias": [0.5]}, "spec_accept_bias value 0.5 is not possible"),
        ({}, {"spec_rule": ["greedy"]}, "spec_rule value 'greedy' is not possible"),
        ({"models": "nope.py:pair"}, {"spec_k": [1]}, "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: dict, knobs: dict, message: str) -> None:
    _ett(tmp_path / "nonumbers.csv", numeric=False)
    spec = write_spec(tmp_path / "f.yaml", workload={"name": "forecast", "args": {**TINY, **args}}, knobs=knobs)
    res = cli("run", str(spec), "--no-progress")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert message in res.stderr
    assert not (tmp_path / "run").exists()


def test_seed_003s_outputs_files_decision_table_and_five_figures(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "f.yaml", workload={"name": "forecast", "args": {**TINY, "horizon_patches": 3}},
                      knobs={"spec_sigma": [0.25, 1.0], "spec_accept_bias": [1.0, 10.0], "spec_k": [1, 3]},
                      objectives={"acceptance_rate": "max", "mse": "min"}, measure={"warmup": 0, "repeats": 1},
                      files={"csv": "stochastic_sweep_results.csv", "log": "stochastic_sweep.log"},
                      analysis={"scenarios": {"top_by_mse": {"minimize": "mse"},
                                              "balanced": {"maximize": "acceptance_rate",
                                                           "constraints": ["mse <= 1.10 * target_mse"]}}})  # fmt: skip
    res = cli("run", str(spec), "--no-progress")
    assert res.returncode == 0, res.stderr
    run = tmp_path / "run"
    assert (run / "stochastic_sweep.log").stat().st_size > 0 and not (run / "knobscope.log").exists()
    import pandas as pd

    table = pd.read_csv(run / "stochastic_sweep_results.csv")
    assert len(table) == 8 and {"spec_sigma", "acceptance_rate", "mse", "target_mse", "speedup"} <= set(table.columns)
    res = cli("analyze", str(run))
    assert res.returncode == 0, res.stderr
    assert "top_by_mse: minimize mse" in res.stdout and "balanced: maximize acceptance_rate subject to mse <= 1.10 * target_mse" in res.stdout
    res = cli("plot", str(run))
    assert res.returncode == 0, res.stderr
    for name in ("acceptance_vs_mse", "acceptance_heatmap", "mse_heatmap", "k_effect", "pareto_frontier"):
        assert (run / "figures" / f"{name}.png").stat().st_size > 10_000, name


def test_training_is_reproducible_from_its_seed(tmp_path: Path) -> None:
    values, _ = load_series("builtin:seattle_weather")
    series = (values - values.mean()) / values.std()
    cfg = ForecasterConfig(patch_len=7, context_patches=4, horizon_patches=2, d_model=16, layers=1, heads=2, d_ff=32,
                           train_steps=15, draft_steps=15, batch_size=8)  # fmt: skip
    from knobscope.models.forecaster import train_pair

    a, b = train_pair(series, cfg), train_pair(series, cfg)
    for m, n in ((a.target, b.target), (a.draft, b.draft)):
        for x, y in zip(m.state_dict().values(), n.state_dict().values(), strict=True):
            assert torch.equal(x, y)
    from dataclasses import replace

    c = train_pair(series, replace(cfg, seed=1))
    assert not torch.equal(next(iter(c.target.state_dict().values())), next(iter(a.target.state_dict().values())))


def test_the_seeds_parallel_execution_split_by_sigma_then_merged(tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "f.yaml", workload={"name": "forecast", "args": {**TINY, "horizon_patches": 2}},
                      knobs={"spec_sigma": [0.25, 0.5, 1.0, 2.0], "spec_k": [1, 2]}, measure={"warmup": 0, "repeats": 1})  # fmt: skip
    for part, sigmas in (("sweep1", "0.25,0.5"), ("sweep2", "1.0,2.0")):
        res = cli("run", str(spec), "--set", f"spec_sigma={sigmas}", "--out", str(tmp_path / part), "--no-progress")
        assert res.returncode == 0, res.stderr
    res = cli("merge", str(tmp_path / "sweep1"), str(tmp_path / "sweep2"), "--output", str(tmp_path / "merged"))
    assert res.returncode == 0, res.stderr
    with sqlite3.connect(tmp_path / "merged" / "results.db") as db:
        configs = sorted(tuple(sorted(json.loads(c).items())) for (c,) in db.execute("SELECT config FROM trials WHERE status = 'done'"))
    assert len(configs) == 8 and len(set(configs)) == 8
