"""Seed 004 §9.1's quick-start table, from a run's measurements beside the seed's expectations.

Usage:  .venv/bin/python examples/sketchwalk/table.py runs/sketchwalk-quickstart [--out FILE.md]

Rows are the run's configurations that match a scenario of the seed's table (block size,
sketch dimension, tau, s), per sequence length. Measured columns: theoretical sparsity
1 - tau*B/n, the sparsity of the pairs SketchWalk attends (pair_sparsity), the attention speedup
over all layers against dense SDPA with its work bound, the output cosine against dense
attention (mean over sparse layers), and the model's perplexity with SketchWalk inside divided
by the dense model's.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from knobscope.results import load_run

# Seed 004 §9.1: scenario -> (B, k, tau, s, expected sparsity, expected speedup)
SEED_TABLE = {
    "Default": (64, 64, 16, 8, "~80%", "~2-3x"),
    "High Quality": (32, 128, 32, 4, "~50%", "~1.5-2x"),
    "High Speed": (128, 32, 8, 16, "~90%", "~4-6x"),
    "Long Context": (128, 128, 32, 8, "~75%", "~3-4x"),
}


def table(run_dir: Path) -> str:
    results = load_run(run_dir)
    df = results.table[results.table["status"] == "done"]
    seq = "seq_len" in df.columns
    lines = [
        "| Scenario | n | B | k | τ | s | seed: sparsity | sparsity 1-τB/n | pair sparsity | seed: speedup "
        "| speedup (all layers) | work bound | cosine | perplexity ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lengths = sorted(df["seq_len"].unique()) if seq else [None]
    for n in lengths:
        part = df[df["seq_len"] == n] if seq else df
        for name, (b, k, tau, s, sparsity, speedup) in SEED_TABLE.items():
            match = part[(part.block_size == b) & (part.sketch_dim == k) & (part.top_k_blocks == tau) & (part.sparsity_exponent == s)]
            if match.empty:
                continue
            r = match.iloc[0]
            ppl = f"{r.perplexity_ratio:.3f}" if "perplexity_ratio" in r and r.perplexity_ratio == r.perplexity_ratio else "-"
            length = int(n) if n is not None else int(results.spec.workload.args.get("seq_len", 4096))  # type: ignore[union-attr]
            lines.append(
                f"| {name} | {length} | {b} | {k} | {tau} | {s} | {sparsity} | {r.theoretical_sparsity:.0%} "
                f"| {r.pair_sparsity_mean:.0%} | {speedup} | {r.speedup_mean:.2f}x | {r.speedup_bound_mean:.2f}x "
                f"| {r.cosine_mean:.3f} | {ppl} |"
            )
    prov = results.provenance
    lines.append("")
    lines.append(f"Measured with knobscope {prov.get('knobscope_version')} ({prov.get('knobscope_git')}), torch "
                 f"{prov.get('torch')}, on {prov.get('device')}; run directory {run_dir}.")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, help="also write the table to this Markdown file")
    args = parser.parse_args()
    text = table(args.run_dir)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
