"""The shape of an objective over a measured table: what a surrogate of it would have to learn (issue 16).

The knobs an objective is declared monotone in (``search_efficiency.py``'s ``MONOTONE``: for the
cosine, block size and top-k) split each table's configurations into *cells*, and the other knobs
(the sketch dimension and sparsity exponent) into *settings*; each table is then a cells x settings
matrix of the objective (on the logit of its declared range, as ``frontier`` models it). Printed per
table: the share of the variance the cells explain, and the share the settings add as one effect in
every cell; of what varies within a cell (leaving out the cells where it does not vary, such as
dense attention's cosine of 1.0), the share an additive model explains (one effect per setting, the
same in every cell), the share a rank-1 model explains (one profile of the settings, times a scale
per cell), and the correlation of that scale with the cell's mean. Then per pair of tables: the
median over cells of the correlation of the settings' deviations in the same cell, and the share of
cells whose best setting is the same.

Usage: python benchmarks/search_structure.py [--objective cosine]
       [--table runs/search_table benchmarks/search_table.yaml] [--table DIR SPEC ...]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from knobscope.frontier import range_logit
from search_efficiency import MONOTONE, Table, fail

DEFAULT_TABLES = [
    ("runs/search_table", "benchmarks/search_table.yaml"),
    ("runs/search_table_2048", "benchmarks/search_table_2048.yaml"),
    ("runs/search_table_synthetic", "benchmarks/search_table_synthetic.yaml"),
]


def matrix(table: Table, objective: str) -> tuple[np.ndarray, list[tuple], list[tuple]]:
    """The objective (logit of its declared range, where it has one) as cells x settings."""
    columns = [o.column for o in table.goal.objectives]
    j = columns.index(objective)
    declared = MONOTONE.get(objective, {})
    knobs = [k.name for k in table.space.knobs]
    cell_knobs = [k for k in knobs if declared.get(k) in ("increasing", "decreasing")]
    setting_knobs = [k for k in knobs if k not in cell_knobs]
    if not cell_knobs or not setting_knobs:
        fail(f"--objective: {objective!r} is declared monotone in {cell_knobs or 'no knob'}; the split into cells and "
             "settings needs some knobs declared and some not")  # fmt: skip
    rows = table.rows
    cells = sorted({tuple(o.config[k] for k in cell_knobs) for o in rows.values()})
    settings = sorted({tuple(o.config[k] for k in setting_knobs) for o in rows.values()})
    value_range = table.goal.with_ranges(table.spec.workload.workload_class().metrics).objectives[j].range
    out = np.full((len(cells), len(settings)), np.nan)
    for canonical, obs in rows.items():
        v = table.values(canonical)[j]
        if value_range is not None:  # as frontier's model sees it
            v = float(range_logit(v, value_range))
        out[cells.index(tuple(obs.config[k] for k in cell_knobs)),
            settings.index(tuple(obs.config[k] for k in setting_knobs))] = v  # fmt: skip
    return out, cells, settings


def describe(name: str, m: np.ndarray) -> None:
    total = ((m - m.mean()) ** 2).sum()
    within = m - m.mean(1, keepdims=True)
    settings = len(m) * (within.mean(0) ** 2).sum()  # each setting as one effect in every cell
    print(f"{name}: {m.shape[0]} cells x {m.shape[1]} settings; the cells explain {1 - (within**2).sum() / total:.1%} "
          f"of the variance, the settings as one effect in every cell {settings / total:.1%} more")  # fmt: skip
    varies = np.ptp(m, 1) > 1e-6
    if not varies.any():
        print("  nothing varies within a cell")
        return
    dev = within[varies]
    additive = dev - dev.mean(0)
    left, s, _ = np.linalg.svd(dev, full_matrices=False)
    u = left[:, 0] * s[0]  # each cell's scale of the shared profile
    u *= np.sign(u.sum()) or 1.0
    print(f"  within a cell ({(~varies).sum()} cells where it does not vary left out): additive "
          f"{1 - (additive**2).sum() / (dev**2).sum():.0%}, rank 1 {s[0]**2 / (s**2).sum():.0%}, rank 2 "
          f"{(s[:2]**2).sum() / (s**2).sum():.0%}; the rank-1 scale against the cell's mean: r = "
          f"{np.corrcoef(u, m[varies].mean(1))[0, 1]:.2f}")  # fmt: skip


def compare(a: str, ma: np.ndarray, b: str, mb: np.ndarray) -> None:
    if ma.shape != mb.shape:
        print(f"{a} / {b}: different grids, not compared")
        return
    keep = (np.ptp(ma, 1) > 1e-6) & (np.ptp(mb, 1) > 1e-6)
    if not keep.any():
        print(f"{a} / {b}: no cell varies in both, not compared")
        return
    da = ma[keep] - ma[keep].mean(1, keepdims=True)
    db = mb[keep] - mb[keep].mean(1, keepdims=True)
    r = [np.corrcoef(x, y)[0, 1] for x, y in zip(da, db)]
    same = np.mean(ma[keep].argmax(1) == mb[keep].argmax(1))
    means = np.corrcoef(ma[keep].mean(1), mb[keep].mean(1))[0, 1]
    print(f"{a} / {b}: the cells' means, r = {means:.2f}; the settings' deviations in the same cell, median r = "
          f"{np.median(r):.2f} [min {np.min(r):.2f}]; the same best setting in {same:.0%} of {keep.sum()} cells")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objective", default="cosine")
    parser.add_argument("--table", nargs=2, action="append", metavar=("DIR", "SPEC"), default=None,
                        help="a measured table and its spec (repeatable; default: the README's first three)")  # fmt: skip
    args = parser.parse_args()
    matrices = {}
    for run_dir, spec in args.table or DEFAULT_TABLES:
        table = Table(Path(run_dir), Path(spec))
        if args.objective not in [o.column for o in table.goal.objectives]:
            fail(f"--objective: {args.objective!r} is not an objective of {spec}; objectives: {table.goal.description}")
        matrices[run_dir] = matrix(table, args.objective)[0]
        describe(run_dir, matrices[run_dir])
    for (a, ma), (b, mb) in itertools.combinations(matrices.items(), 2):
        compare(a, ma, b, mb)


if __name__ == "__main__":
    main()
