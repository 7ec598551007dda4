"""The ``knobscope`` command line. Every verb's ``--help`` says what it takes.

Errors in input (spec, arguments, store, plugin) print one line and exit with status 2;
Ctrl-C exits with 130 after handing the current trial back, so the same command resumes.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from knobscope.errors import KnobscopeError, SpecError

try:  # typer >= 0.20 vendors click; older versions use the click package
    from typer._click.exceptions import UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import UsageError  # type: ignore[assignment]
from knobscope.spec import ExperimentSpec, load_spec, parse_set_option

app = typer.Typer(
    name="knobscope",
    help="Declare inference knobs, sample configurations, measure them on a real workload, analyse the trade-offs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (logs, CI) has no terminal width; tables read better at 160 columns than at 80.
# emoji=False: model names such as "random:llama:layers=2" must not turn into pictures.
out = Console(emoji=False) if Console().is_terminal else Console(width=160, emoji=False)
err = Console(stderr=True, emoji=False)

SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a knob's values: KNOB=V1,V2,... (repeatable), e.g. --set top_k=4,16,32."),
]
SpecArg = Annotated[Path, typer.Argument(help="Experiment spec (YAML); see docs/spec.md.")]


def _load(spec_path: Path, sets: list[str] | None, *, strategy: str | None = None, require_workload: bool,
          output: Path | None = None) -> ExperimentSpec:  # fmt: skip
    spec = load_spec(spec_path, require_workload=require_workload)
    return spec.with_overrides(values=parse_set_option(sets or []), strategy=strategy, output=output)


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "∞" if value > 0 else "-∞"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


@app.command()
def run(
    spec_path: SpecArg,
    strategy: Annotated[str | None, typer.Option(help="Strategy name, overriding the spec's.")] = None,
    sets: SetOpt = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run directory (default: the spec's output, else runs/NAME).")] = None,
    shard: Annotated[str, typer.Option(help="Run only shard I of N (I/N), e.g. 0/4; shards share one run directory.")] = "0/1",
    retry_failed: Annotated[bool, typer.Option("--retry-failed", help="Run failed trials again.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (default: the spec's measure.device).")] = "auto",
    executor: Annotated[str | None, typer.Option(help="Where trials run: local (default), devices or ray.")] = None,
    devices: Annotated[str | None, typer.Option(help="devices executor: one worker process per device, e.g. cuda:0,cuda:1.")] = None,
    address: Annotated[str | None, typer.Option(help="ray executor: auto or HOST:PORT of a running cluster (default: start a local one).")] = None,
    gpus_per_trial: Annotated[float | None, typer.Option(help="ray executor: GPUs per actor (default 1 when the cluster has GPUs, else 0).")] = None,
    cpus_per_trial: Annotated[float | None, typer.Option(help="ray executor: CPUs per actor (default 1).")] = None,
    max_failures: Annotated[int | None, typer.Option(help="ray executor: times a trial whose actor died is retried before it is recorded as failed (default 3).")] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="ray executor: actors to start (default: as many as the cluster's CPUs/GPUs fit).")] = None,
    lease: Annotated[float, typer.Option(help="Seconds without heartbeat after which another host's claim is presumed dead.")] = 900.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run a sweep: measure every selected configuration, store every sample, resume on rerun."""
    from knobscope.executors import run as run_with
    from knobscope.results import export
    from knobscope.runner import run_log
    from knobscope.trials import parse_shard

    spec = _load(spec_path, sets, strategy=strategy, require_workload=True, output=out_dir)
    shard_ix = parse_shard(shard)
    options: dict[str, Any] = {"address": address, "gpus_per_trial": gpus_per_trial, "cpus_per_trial": cpus_per_trial,
                               "max_failures": max_failures, "workers": workers}  # fmt: skip
    options = {k: v for k, v in options.items() if v is not None}
    if devices is not None:
        options["devices"] = [d.strip() for d in devices.split(",") if d.strip()]
    name = executor or ("devices" if devices is not None else "local")
    try:
        with _listener(progress) as listener, run_log(spec.output_dir, spec.files["log"]):
            result = run_with(spec, name, listener=listener, shard=shard_ix, retry_failed=retry_failed, device=device,
                              lease_s=lease, **options)  # fmt: skip
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: finished trials are stored; run the same command again to resume.")
        raise typer.Exit(130) from None
    _print_results(spec, result.run_dir)
    for fmt, name in (("json", None), ("csv", spec.files["csv"])):
        for path in export(result.run_dir, fmt, out=result.run_dir / name if name else None):
            out.print(f"wrote {path}")
    c = result.counts
    out.print(f"trials: {c['done']} done, {c['failed']} failed, {c['pending'] + c['running']} unfinished "
              f"(this invocation ran {result.ran}); store: {result.run_dir / 'results.db'}")  # fmt: skip
    for config, reason in result.failed:
        err.print(f"[red]failed[/] {dict(config)}: {reason}")


@contextlib.contextmanager
def _listener(enabled: bool) -> Iterator[Any]:
    """The sweep's listener for this terminal: a progress bar on stderr and status lines."""
    from knobscope.runner import SweepListener

    class Quiet(SweepListener):
        def say(self, text: str) -> None:
            err.print(text, markup=False, highlight=False)

    if not enabled:
        yield Quiet()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (
        TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(), TextColumn("failed {task.fields[failed]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[current]}"),
    )  # fmt: skip

    class Bar(Quiet):
        """Drawn from the first progress report on, so an error found while loading shows alone."""

        bar: Any = None

        def progress(self, counts: Any, total: int, current: Any) -> None:
            if self.bar is None:
                self.bar = Progress(*columns, console=err, transient=False)
                self.bar.start()
                self.task = self.bar.add_task("sweep", total=total, failed=0, current="")
            shown = "" if current is None else ", ".join(f"{k}={v}" for k, v in current.items())
            self.bar.update(self.task, total=total, completed=counts["done"] + counts["failed"], failed=counts["failed"],
                            current=shown)  # fmt: skip

    listener = Bar()
    try:
        yield listener
    finally:
        if listener.bar is not None:
            listener.bar.stop()


def _with_interval(row: Any, column: str) -> str:
    value = _fmt(row[column])
    lo, hi = row.get(f"{column}_ci_low"), row.get(f"{column}_ci_high")
    if lo is None or hi is None or (isinstance(lo, float) and lo != lo):
        return value
    return f"{value} \\[{_fmt(lo)}, {_fmt(hi)}]"


def _ci(ci: Any) -> str:
    """`` [lo, hi]`` of a JSON interval (null: unbounded on that side), escaped for rich."""
    from knobscope.figures.base import interval_text

    return interval_text(ci, bracket="\\[")


def _print_results(spec: ExperimentSpec, run_dir: Path) -> None:
    from knobscope.results import summary_table
    from knobscope.store import Store

    with Store.open(run_dir) as store:
        df = summary_table(store)
    if df.empty:
        return
    df = df[df["workload"] == spec.workload.name] if spec.workload else df
    knob_cols = [k for k in spec.space.names if k in df.columns]
    labels = {
        "total_ms_p50": "total P50 ms", "total_ms_p95": "total P95 ms", "prefill_ms_mean": "prefill mean ms",
        "decode_per_call_ms_mean": "mean ms/token", "tokens_out_mean": "mean tokens out", "accuracy": "accuracy",
        "peak_memory_mb": "peak MiB",
        "device_busy_share": "device busy",  # a profiled diagnostic sample (measure.diagnose)
    }  # fmt: skip
    # an objective's column: the name itself, else its mean (a declared metric has both: one is enough)
    from knobscope.goals import column_for

    objective_cols = [c for o in spec.objectives if f"{o.column}_p50" not in labels and (c := column_for(o.column, df.columns))]
    metric_cols = [c for c in dict.fromkeys([*labels, *objective_cols]) if c in df.columns]
    show_status = bool((df["status"] != "done").any())
    noisy = "noisy" in df.columns and bool((df["noisy"] == True).any())  # noqa: E712 - None means unknown
    repeats = "repeats" in df.columns and df["repeats"].nunique(dropna=True) > 1
    cols = knob_cols + (["status"] if show_status else []) + metric_cols
    # intervals where a reader compares configurations: the latency percentiles, quality and the objectives
    with_ci = {"total_ms_p50", "total_ms_p95", "accuracy", *objective_cols}
    table = Table(title=f"{spec.name}: {len(df)} configurations ({run_dir})",
                  caption="\\[a, b]: 95% interval; P50/P95: percentiles over samples and repeats; mean: over them")  # fmt: skip
    for c in cols:  # values never wrap; long headers fold instead
        table.add_column(labels.get(c, c), justify="left" if c == "status" else "right", no_wrap=c in with_ci or c in knob_cols,
                         overflow="fold")  # fmt: skip
    if repeats:
        table.add_column("repeats", justify="right")
    if noisy:
        table.add_column("noisy")
    for _, row in df.iterrows():
        cells = [_with_interval(row, c) if c in with_ci else _percent(row[c]) if c == "device_busy_share" else _fmt(row[c])
                 for c in cols]  # fmt: skip
        if repeats:
            cells.append(_fmt(row["repeats"]))
        if noisy:
            cells.append("[red]yes[/]" if row["noisy"] is True else "")
        table.add_row(*cells)
    out.print(table)
    if noisy:
        for _, row in df[df["noisy"] == True].iterrows():  # noqa: E712
            config = ", ".join(f"{k}={row[k]}" for k in knob_cols)
            out.print(f"[yellow]noisy[/] {config}: {row['noise_reason']}")
    if "host_bound" in df.columns:
        from knobscope.diagnose import host_bound_notes

        for note in host_bound_notes(df.to_dict("records")):
            out.print(f"[yellow]host-bound[/] {note}", highlight=False)


def _percent(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.0%}"


@app.command()
def strategies(
    spec_path: SpecArg,
    sets: SetOpt = None,
) -> None:
    """Compare every sampling strategy on the spec's knobs: combinations and values chosen per knob."""
    from knobscope.strategies import STRATEGIES, describe_selection, get_strategy

    spec = _load(spec_path, sets, require_workload=False)
    table = Table(title=f"{spec.name}: full grid {spec.space.grid_size} ({' x '.join(str(len(k.values)) for k in spec.space.knobs)})")
    table.add_column("strategy")
    table.add_column("combinations", justify="right")
    for k in spec.space.knobs:
        table.add_column(k.name)
    for name in STRATEGIES.names():
        cls = STRATEGIES.load(name)
        if cls.adaptive:
            continue
        options = spec.strategy_options if name == spec.strategy_name else {}
        try:
            chosen = get_strategy(name, options).select(spec.space)
        except SpecError:  # needs options this spec does not give it (listed: its configs)
            continue
        desc = describe_selection(spec.space, chosen)
        cells = []
        for k in spec.space.knobs:
            info = desc["knobs"][k.name]
            if info["covered"] == info["of"] and name in ("lhs", "random"):
                cells.append(f"all {info['of']} (x{min(info['counts'])}-{max(info['counts'])})")
            elif info["covered"] == info["of"]:
                cells.append(f"all {info['of']}")
            else:
                cells.append(str(info["values"]))
        star = " *" if name == spec.strategy_name else ""
        table.add_row(name + star, str(desc["combinations"]), *cells)
    out.print(table)
    for name in STRATEGIES.names():
        out.print(f"  [bold]{name}[/]: {STRATEGIES.load(name).summary}")
    out.print("* the spec's strategy. Constraints are applied: combinations count feasible configurations.")


@app.command()
def sample(
    spec_path: SpecArg,
    strategy: Annotated[str | None, typer.Option(help="Strategy name (default: the spec's).")] = None,
    sets: SetOpt = None,
    fmt: Annotated[str, typer.Option("--format", help="table or json.")] = "table",
) -> None:
    """Print the configurations a strategy selects (nothing is run)."""
    if fmt not in ("table", "json"):
        raise SpecError(f"--format {fmt!r} is not supported; choose table or json")
    spec = _load(spec_path, sets, strategy=strategy, require_workload=False)
    configs = spec.strategy().select(spec.space)
    if fmt == "json":
        sys.stdout.write(json.dumps([c.to_dict() for c in configs], indent=1) + "\n")
        return
    table = Table(title=f"{spec.strategy_name}: {len(configs)} configurations")
    table.add_column("#", justify="right")
    for name in spec.space.names:
        table.add_column(name, justify="right")
    for i, c in enumerate(configs):
        table.add_row(str(i), *[_fmt(c[n]) for n in spec.space.names])
    out.print(table)


@app.command(name="export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (holds results.db).")],
    fmt: Annotated[str, typer.Option("--format", help="json (unified {summary, all_samples}), csv (one row per config) or parquet (both tables).")] = "json",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Output file (json, csv) or directory (parquet).")] = None,
) -> None:
    """Export a run's results."""
    from knobscope.results import export

    for path in export(run_dir, fmt, out=output):
        out.print(f"wrote {path}")


@app.command()
def merge(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to merge (only read).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Run directory to merge into (created if missing).")],
) -> None:
    """Merge runs made on different GPUs or machines; duplicates are resolved by trial identity."""
    from knobscope.store import merge_stores

    if any(Path(d).resolve() == output.resolve() for d in run_dirs):
        raise SpecError(f"the output {str(output)!r} is also an input; merge into a new directory")
    counts = merge_stores(run_dirs, output)
    out.print(f"merged {len(run_dirs)} runs into {output}: {counts['added']} trials added, "
              f"{counts['replaced']} replaced by a finished copy, {counts['duplicates']} duplicates skipped")  # fmt: skip


@app.command()
def show(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (holds results.db).")],
) -> None:
    """Print a run's results table and trial counts."""
    from knobscope.store import Store

    with Store.open(run_dir) as store:
        runs = store.runs()
        counts = store.status_counts()
    if not runs:
        raise SpecError(f"{str(run_dir)!r} holds no runs yet")
    from knobscope.spec import parse_spec

    spec = parse_spec(runs[-1]["spec"], source=str(run_dir), require_workload=False)
    _print_results(spec, run_dir)
    out.print(", ".join(f"{k}: {v}" for k, v in counts.items()))
    from knobscope.results import where_measured

    with Store.open(run_dir) as store:
        where = where_measured(store)
    if where:
        out.print("measured on: " + "; ".join(f"{w['node']}, {w['device']}: {w['trials']} trials" for w in where),
                  markup=False, highlight=False)  # fmt: skip


RunDirArg = Annotated[Path, typer.Argument(help="Run directory (holds results.db).")]
ObjectiveOpt = Annotated[list[str] | None, typer.Option("--objective", help="METRIC or METRIC:min|max (repeatable); default: the spec's objectives, else total_ms_p95 and the workload's quality metric.")]
ConstraintOpt = Annotated[list[str] | None, typer.Option("--constraint", help='Constraint on results, knobs or derived values (repeatable), e.g. "total_ms_p95 <= 500".')]
MaximizeOpt = Annotated[str | None, typer.Option("--maximize", help="Recommend by the highest value of this metric.")]
MinimizeOpt = Annotated[str | None, typer.Option("--minimize", help="Recommend by the lowest value of this metric.")]
ScoreOpt = Annotated[str | None, typer.Option("--score", help='Recommend by a composite score expression, e.g. "accuracy + 0.5*log(1/total_ms_mean)".')]
WeightOpt = Annotated[list[str] | None, typer.Option("--weight", help="METRIC=W (repeatable): recommend by the weighted sum of metrics scaled to [0, 1], worst to best.")]
ScenarioOpt = Annotated[str | None, typer.Option("--scenario", help="Only this named scenario of the spec's analysis.scenarios.")]
FixOpt = Annotated[list[str] | None, typer.Option("--fix", help="Knob to fix in the coupling analysis (repeatable; default: every knob).")]
ReferenceOpt = Annotated[list[str] | None, typer.Option("--reference", help="METRIC=VALUE: hypervolume reference point (default: worst observed).")]
TopOpt = Annotated[int | None, typer.Option("--top", min=1, help="Configurations per recommendation (default: the spec's analysis.top, else 5).")]
CompareOpt = Annotated[list[Path] | None, typer.Option("--compare", help="Another run of the same knobs on another workload (repeatable).")]


def _pairs(items: list[str] | None, what: str, *, number: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"{what} {item!r} must look like NAME=VALUE")
        try:
            out[key.strip()] = float(value) if number else value.strip()
        except ValueError:
            raise SpecError(f"{what} {item!r}: {value!r} is not a number") from None
    return out


def _analysis(
    run_dir: Path, *, objective: list[str] | None = None, constraint: list[str] | None = None, maximize: str | None = None,
    minimize: str | None = None, score: str | None = None, weight: list[str] | None = None, scenario: str | None = None,
    fix: list[str] | None = None, reference: list[str] | None = None, top: int | None = None, compare: list[Path] | None = None,
) -> tuple[Any, list[Any], Any]:  # fmt: skip
    from knobscope.analysis import AnalysisOptions, analyze
    from knobscope.goals import goal_from
    from knobscope.results import load_run

    # the same rules as the spec's analysis section (one goal at most)
    flags = {"maximize": "--maximize", "minimize": "--minimize", "score": "--score", "weights": "--weight"}
    goal = goal_from({"maximize": maximize, "minimize": minimize, "score": score,
                      "weights": _pairs(weight, "--weight") if weight else None}, where="the command line", keys=flags)  # fmt: skip
    options = AnalysisOptions(objectives=tuple(objective or ()), constraints=tuple(constraint or ()), goal=goal, scenario=scenario,
                              fix=tuple(fix or ()), reference=_pairs(reference, "--reference"), top=top)  # fmt: skip
    run = load_run(run_dir, with_samples=True)
    others = [load_run(d, with_samples=True) for d in compare or []]
    return run, others, analyze(run, options, compare=others)


def _print_analysis(result: Any) -> None:
    """The analysis as tables and lines (``result``: an :class:`~knobscope.analysis.Analysis`)."""
    objs = [o.column for o in result.objectives]
    fr = result.frontier
    knobs = list(result.coverage["knobs"])
    unc = fr.uncertainty
    hv = _fmt(fr.hypervolume) + (_ci(fr.hypervolume_interval) if fr.hypervolume_interval else "")
    t = Table(title=f"Pareto frontier: {fr.size} of {fr.n} configurations by the estimates "
                    f"(hypervolume {hv} {fr.hypervolume_unit}, normalised {_fmt(fr.hypervolume_normalized)})",
              caption="\\[a, b]: 95% interval" + (f"; P(optimal): share of {unc['resamples']} bootstrap replicates in which it is "
                                                 "Pareto-optimal" if unc else ""))  # fmt: skip
    for c in [*knobs, *objs]:
        t.add_column(c, justify="right")
    if unc:
        for c in ("P(optimal)", "status", "tied with (knob values, within noise)"):
            t.add_column(c)
    for r in fr.rows:
        cells = [_fmt(v) for v in r.config.values()] + [_fmt(r.values[c]) + _ci(r.intervals.get(c)) for c in objs]
        if unc:
            colour = {"optimal": "green", "uncertain": "yellow"}.get(r.status or "", "red")
            ties = r.tie_labels(_fmt)
            more = f" (+{len(ties) - 3})" if len(ties) > 3 else ""
            cells += [f"{r.probability:.2f}", f"[{colour}]{r.status}[/]", " ".join(ties[:3]) + more]
        t.add_row(*cells)
    out.print(t)
    if unc:
        c = unc["counts"]
        out.print(f"frontier {'decided' if unc['decided'] else 'not decided'}: {c['optimal']} optimal beyond noise, "
                  f"{c['uncertain']} uncertain, {c['dominated']} dominated beyond noise")  # fmt: skip
        for column, how in unc["sources"].items():
            out.print(f"  {column}: {how}")
        for note in unc["notes"]:
            out.print(f"  [yellow]{note}[/]")
    if fr.excluded:
        out.print(f"left out {len(fr.excluded)}: " + "; ".join(f"{e['trial_id']} ({e['reason']})" for e in fr.excluded[:5]))
    t = Table(title="Knob coupling")
    for c in ("knobs", "verdict", "evidence"):
        t.add_column(c)
    for p in result.coupling.pairs:
        colour = {"coupled": "red", "not coupled": "green"}.get(p.verdict, "yellow")
        t.add_row(" x ".join(p.knobs), f"[{colour}]{p.verdict}[/]", p.reason)
    out.print(t)
    pol = result.policies
    if pol.available:
        from knobscope.report import policy_sentence

        sentence = policy_sentence(pol)
        out.print("single- vs multi-knob: " + sentence[0].lower() + sentence[1:])
    else:
        out.print(f"single- vs multi-knob: {pol.reason}")
    for rec in result.recommendations:
        cons = " subject to " + " and ".join(rec.constraints) if rec.constraints else ""
        title = f"{rec.scenario}: {rec.goal}{cons} ({rec.feasible} of {rec.considered} qualify)"
        if not rec.top:
            out.print(f"[bold]{title}[/]\n  [red]no configuration[/]: {rec.reason}")
            continue
        t = Table(title=title)
        vcols = list(rec.top[0]["values"])
        for c in ["#", *knobs, "score", *vcols]:
            t.add_column(c, justify="right")
        for i, r in enumerate(rec.top):
            values = [_fmt(v) + _ci(r.get("intervals", {}).get(c)) for c, v in r["values"].items()]
            t.add_row(str(i + 1), *[_fmt(v) for v in r["config"].values()], _fmt(r["score"]), *values)
        out.print(t)
        if rec.tied_with:
            out.print(f"  #1 is tied with {len(rec.tied_with)} other configuration(s) within noise ({rec.tie_basis}), "
                      "e.g. " + "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in rec.tied_with[:3]))  # fmt: skip
        for i, r in enumerate(rec.top):
            if r.get("within_noise"):
                out.print(f"  #{i + 1} meets {', '.join(r['within_noise'])} only within noise (its 95% interval crosses the bound)")
    comp = result.comparison
    if comp:
        out.print(f"workloads {', '.join(comp.workloads)}: {len(comp.workload_dependent)} of {comp.common_configs} common "
                  "configurations are Pareto-optimal on one workload and dominated on another")  # fmt: skip
    for case in result.cases:
        colour = "yellow" if case.supported is False else "default"
        out.print(f"  case ({case.kind}): [{colour}]{case.text}[/]")
    if result.failures:
        out.print(f"[red]{len(result.failures)} failed trial(s)[/]; see the report's failures section")


@app.command()
def analyze(
    run_dir: RunDirArg, objective: ObjectiveOpt = None, constraint: ConstraintOpt = None, maximize: MaximizeOpt = None,
    minimize: MinimizeOpt = None, score: ScoreOpt = None, weight: WeightOpt = None, scenario: ScenarioOpt = None,
    fix: FixOpt = None, reference: ReferenceOpt = None, top: TopOpt = None, compare: CompareOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole analysis as JSON.")] = False,
    prefix: Annotated[str, typer.Option("--prefix", help="With --compare: the comparison files' prefix (seed 001: e2).")] = "comparison",
    out_dir: Annotated[Path | None, typer.Option("--out", help="With --compare: folder for the comparison files (default: DIR).")] = None,
    color_by: Annotated[str | None, typer.Option("--color-by", help="With --compare: knob that colours the Pareto plots.")] = None,
) -> None:  # fmt: skip
    """Pareto frontier, knob coupling, single- vs multi-knob policies and recommendations for a run.

    Also writes analysis.json, coupling_analysis.json and pareto_frontiers.json into the run directory.
    With --compare, also the workload comparison (seed 001's E2 outputs) into --out:
    PREFIX_knob_grid_results.json, PREFIX_pareto_frontiers.json, PREFIX_coupling_analysis.json and
    figures/PREFIX_pareto_WORKLOAD.png, PREFIX_coupling_proof.png, PREFIX_illustrative_cases.png.
    """
    from knobscope.results import to_json

    if not re.fullmatch(r"[A-Za-z0-9._-]+", prefix):
        raise SpecError(f"--prefix {prefix!r} must be letters, digits, '-', '_' or '.'")
    run, others, result = _analysis(run_dir, objective=objective, constraint=constraint, maximize=maximize, minimize=minimize,
                                    score=score, weight=weight, scenario=scenario, fix=fix, reference=reference, top=top, compare=compare)  # fmt: skip
    if others:
        from knobscope.analysis import AnalysisOptions, analyze as analyze_run
        from knobscope.comparison import write_comparison
        from knobscope.figures import FigureContext

        _check_colour_knob(FigureContext(run, result, color_by=color_by))
        # each compared workload analysed on the objectives the comparison gave it
        given = list(result.comparison.objectives.values())[1:]
        analyses = [result] + [analyze_run(o, AnalysisOptions(objectives=tuple(f"{g['column']}:{g['direction']}" for g in objs),
                                                              fix=tuple(fix or ()))) for o, objs in zip(others, given)]  # fmt: skip
    paths = result.write(run_dir)
    if others:
        paths += write_comparison([run, *others], analyses, out_dir or run_dir, prefix=prefix, color_by=color_by)
    if as_json:
        sys.stdout.write(to_json(result.to_json()) + "\n")
        return
    _print_analysis(result)
    out.print("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def plot(
    run_dir: RunDirArg, objective: ObjectiveOpt = None, fix: FixOpt = None, compare: CompareOpt = None,
    color_by: Annotated[str | None, typer.Option("--color-by", help="Knob that colours the Pareto plots (default: the knob with the largest effect).")] = None,
    heatmap: Annotated[list[str] | None, typer.Option("--heatmap", help="METRIC:KNOB_X,KNOB_Y (repeatable); default: each objective over the most interacting pair.")] = None,
    xy: Annotated[list[str] | None, typer.Option("--xy", help="X,Y: scatter any metric against any metric (repeatable), e.g. acceptance_mean,mse_mean.")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Folder for the PNGs (default: DIR/figures).")] = None,
) -> None:  # fmt: skip
    """Write the figures (300 DPI PNG) under DIR/figures."""
    from knobscope.figures import FigureContext, make_figures

    maps = []
    for h in heatmap or []:
        metric, sep, pair = h.partition(":")
        knobs = [k.strip() for k in pair.split(",")]
        if not sep or len(knobs) != 2 or not all(knobs):
            raise SpecError(f"--heatmap {h!r} must look like METRIC:KNOB_X,KNOB_Y")
        maps.append((metric.strip(), knobs[0], knobs[1]))
    pairs = []
    for item in xy or []:
        parts = [p.strip() for p in item.split(",")]
        if len(parts) != 2 or not all(parts):
            raise SpecError(f"--xy {item!r} must look like X_METRIC,Y_METRIC")
        pairs.append((parts[0], parts[1]))
    run, others, result = _analysis(run_dir, objective=objective, fix=fix, compare=compare)
    ctx = FigureContext(run, result, compare=others, color_by=color_by, heatmaps=maps, xy=pairs)
    _check_colour_knob(ctx)
    paths = make_figures(ctx, out_dir=out_dir)
    for p in paths:
        out.print(f"wrote {p}")


@app.command()
def report(
    run_dir: RunDirArg, objective: ObjectiveOpt = None, constraint: ConstraintOpt = None, maximize: MaximizeOpt = None,
    minimize: MinimizeOpt = None, score: ScoreOpt = None, weight: WeightOpt = None, fix: FixOpt = None,
    reference: ReferenceOpt = None, top: TopOpt = None, compare: CompareOpt = None,
    color_by: Annotated[str | None, typer.Option("--color-by", help="Knob that colours the Pareto plots.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="HTML file (default: DIR/report.html).")] = None,
    figures: Annotated[bool, typer.Option(help="Also write the PNG figures under DIR/figures.")] = True,
) -> None:  # fmt: skip
    """Write DIR/report.html: one self-contained, interactive file that opens offline."""
    from knobscope.figures import FigureContext, make_figures
    from knobscope.report import write_report

    run, others, result = _analysis(run_dir, objective=objective, constraint=constraint, maximize=maximize, minimize=minimize,
                                    score=score, weight=weight, fix=fix, reference=reference, top=top, compare=compare)  # fmt: skip
    result.write(run_dir)
    _print_analysis(result)
    ctx = FigureContext(run, result, compare=others, color_by=color_by)
    _check_colour_knob(ctx)
    if figures:
        paths = make_figures(ctx)
        out.print(f"wrote {len(paths)} figures under {paths[0].parent}" if paths else "no figures")
    path = write_report(run, result, path=output, compare=others, color_by=color_by, ctx=ctx)
    out.print(f"report: {path.resolve()}")


def _check_colour_knob(ctx: Any) -> None:
    if ctx.colour_knob not in ctx.knobs:
        raise SpecError(f"--color-by {ctx.colour_knob!r} is not a knob; knobs: {', '.join(ctx.knobs)}")


@app.command(name="refine-measurements")
def refine_measurements_cmd(
    run_dir: RunDirArg, objective: ObjectiveOpt = None,
    budget: Annotated[int | None, typer.Option(min=0, help="Samples to spend at most (default: as many as the run holds).")] = None,
    resamples: Annotated[int, typer.Option(min=50, help="Bootstrap replicates per decision.")] = 200,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (default: the spec's measure.device).")] = "auto",
) -> None:  # fmt: skip
    """Measure more passes of the configurations whose Pareto membership is uncertain, until the
    frontier is decided or the budget is spent (racing). Resumable: rerun the same command."""
    from knobscope.refine import refine_measurements

    def report(rnd: int, uncertain: int, spent: int) -> None:
        err.print(f"round {rnd + 1}: {uncertain} configuration(s) uncertain; {spent} samples spent so far", markup=False)

    try:
        result = refine_measurements(run_dir, budget=budget, objectives=tuple(objective or ()), resamples=resamples,
                                     device=device, on_round=report)  # fmt: skip
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: every finished pass is stored; run the same command again to go on.")
        raise typer.Exit(130) from None
    objectives = ", ".join(result.objectives)
    if result.decided:
        out.print(f"frontier decided over {objectives}: no configuration is uncertain "
                  f"({result.spent} samples spent in {result.rounds} round(s))")  # fmt: skip
    else:
        left = ", ".join(f"{t} (P = {p:.2f})" for t, p in sorted(result.uncertain.items(), key=lambda kv: -kv[1])[:5])
        out.print(f"frontier not decided over {objectives} after {result.spent} samples in {result.rounds} round(s): "
                  f"{len(result.uncertain)} uncertain, e.g. {left}; raise --budget to go on")  # fmt: skip


IntList = Annotated[list[int] | None, typer.Option(help="Values to sweep (repeatable).")]


@app.command()
def profile(
    preset: Annotated[str, typer.Argument(help="context-scaling | moe-topk | blocks-mask | output-tokens | flops-scaling")],
    model: Annotated[str, typer.Option(help="smollm2, a checkpoint dir, a hub id, or random:FAMILY (knobscope inspect MODEL).")] = "smollm2",
    num_samples: Annotated[int, typer.Option(min=1, help="Questions per configuration (the seed's default is 50).")] = 50,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run directory (default: runs/profiling/<experiment>).")] = None,
    top_k: Annotated[list[int] | None, typer.Option("--top-k", help="top_k values (moe-topk, flops-scaling; repeatable).")] = None,
    num_active_blocks: Annotated[list[int] | None, typer.Option("--num-active-blocks", help="num_active_blocks values (repeatable).")] = None,
    max_new_tokens: Annotated[list[int] | None, typer.Option("--max-new-tokens", help="max_new_tokens values (repeatable).")] = None,
    input_tokens: Annotated[list[int] | None, typer.Option("--input-tokens", help="input_tokens values (context-scaling; repeatable).")] = None,
    max_crops: Annotated[list[int] | None, typer.Option("--max-crops", help="max_crops values (context-scaling on a VLM; repeatable).")] = None,
    block_selection: Annotated[list[str] | None, typer.Option("--block-selection", help="first | accuracy_drop | block_influence (repeatable).")] = None,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up samples per configuration.")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run one of seed 002's profiling experiments; write expN_<name>_results.json and its figure.

    On a vision-language model (random:idefics3 or a VLM checkpoint), context-scaling sweeps image
    crops 1..12 (tilings 1x1..1x12) and stacks vision encoder + projector + LLM prefill."""
    from knobscope.executors import run_local
    from knobscope.models.loading import load_causal_lm
    from knobscope.models.vlm import is_vlm_source
    from knobscope.runner import run_log
    from knobscope.profile import PRESETS, build_spec, flops_table, model_shape, preset_files, preset_for, swept_knob, write_results
    from knobscope.figures import FigureContext, make_figures
    from knobscope.results import load_run

    if preset not in PRESETS:
        raise SpecError(f"unknown profile preset {preset!r}; presets: {', '.join(PRESETS)}")
    vlm = is_vlm_source(model)
    info = preset_for(preset, vlm=vlm)
    shape = None if vlm else model_shape(load_causal_lm(model, structure_only=True).model)  # no weights loaded
    out_path = out_dir or Path("runs") / "profiling" / f"exp{info.number}_{info.stem}"
    values = {"top_k": top_k, "num_active_blocks": num_active_blocks, "max_new_tokens": max_new_tokens,
              "input_tokens": input_tokens, "block_selection": block_selection, "max_crops": max_crops}  # fmt: skip
    spec = build_spec(preset, shape, model=model, out=out_path, num_samples=num_samples,
                      values={k: v for k, v in values.items() if v}, warmup=warmup, device=device)  # fmt: skip
    knob = swept_knob(info, shape)
    out.print(f"[bold]{preset}[/]: {info.description}; {knob} = {list(spec.space.knob(knob).values)}, "
              f"{num_samples} samples each, model {model}")  # fmt: skip
    try:
        with _listener(progress) as listener, run_log(spec.output_dir):
            result = run_local(spec, device=device, listener=listener)
    except KeyboardInterrupt:
        err.print("[yellow]interrupted[/]: finished trials are stored; run the same command again to resume.")
        raise typer.Exit(130) from None
    _print_results(spec, result.run_dir)
    results_path = write_results(preset, result.run_dir)
    run = load_run(result.run_dir, with_samples=True)
    if run.samples is None or run.samples.empty:
        for config, reason in result.failed:
            err.print(f"[red]failed[/] {dict(config)}: {reason.strip().splitlines()[-1]}", highlight=False)
        reasons = "; ".join(sorted({reason.strip().splitlines()[-1] for _, reason in result.failed})) or "no trial finished"
        raise SpecError(f"profile {preset}: no configuration was measured, so there is nothing to draw ({reasons})")
    _, figure = preset_files(preset, result.run_dir)
    options = {"profile": {"knob": knob, "layout": info.layout, "file": figure.stem,
                           "title": f"Exp{info.number}: {info.description} ({model})"}}  # fmt: skip
    make_figures(FigureContext(run, None, options=options), out_dir=figure.parent, names=["profile"])
    out.print(f"wrote {results_path}\nwrote {figure}")
    if info.stem == "flops_scaling":
        rows = flops_table(run.table[run.table["status"] == "done"], knob)
        table = Table(title="FLOPs scaling: estimate vs counted vs measured (x = ratio to the first value)")
        names = {"gflops_theoretical": "GFLOP estimate", "gflops_total": "GFLOP counted", "prefill_ms_mean": "prefill ms",
                 "decode_per_call_ms_mean": "decode ms/token", "total_ms_mean": "total ms"}  # fmt: skip
        shown = [c for c in names if c in rows[0]]
        table.add_column(knob, justify="right")
        for column in shown:
            table.add_column(names[column], justify="right")
        for row in rows:
            table.add_row(_fmt(row[knob]), *(f"{_fmt(row[c])} ({row[c + '_ratio']:.2f}x)" for c in shown))
        out.print(table)
        (result.run_dir / "flops_scaling_table.json").write_text(json.dumps(rows, indent=1))
        (path,) = make_figures(FigureContext(run, None, options={**options, "flops_rows": rows}), out_dir=figure.parent, names=["flops"])
        out.print(f"wrote {result.run_dir / 'flops_scaling_table.json'}\nwrote {path}")
    for config, reason in result.failed:
        err.print(f"[red]failed[/] {dict(config)}: {reason}")


@app.command(name="inspect")
def inspect_cmd(
    model: Annotated[str, typer.Argument(help="smollm2, a checkpoint dir, a hub id, or random:FAMILY[:key=value,...].")],
    verify_topk: Annotated[list[int] | None, typer.Option("--verify-topk", help="Set MoE top-k to K, run a prompt, count the experts each token used per layer (repeatable).")] = None,
    importance: Annotated[str | None, typer.Option(help="Print block importance: accuracy_drop or block_influence (computed once, then cached).")] = None,
    gguf_file: Annotated[str | None, typer.Option(help="GGUF file inside MODEL when it holds several.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a model's structure, parameters, blocks, MoE layers and timable stages; verify top-k."""
    import logging

    import torch

    from knobscope.inspection import describe_model, verify_top_k
    from knobscope.measure import StageTimer
    from knobscope.models.importance import IMPORTANCE_METHODS
    from knobscope.workloads.base import WorkloadContext
    from knobscope.workloads.lm import LMWorkload

    if importance is not None and importance not in IMPORTANCE_METHODS:
        raise SpecError(f"--importance {importance!r} is unknown; choose from {', '.join(IMPORTANCE_METHODS)}")
    log = logging.getLogger("knobscope.inspect")
    if importance and not log.handlers:  # ranking blocks takes minutes: report progress on stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("knobscope: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    lm = LMWorkload(model=model, gguf_file=gguf_file)
    lm.setup(WorkloadContext("cpu", 0, StageTimer("cpu"), Path.cwd(), log))
    result: dict[str, Any] = describe_model(lm.model, lm.loaded.source)
    if verify_topk:
        if not lm.topk:
            raise SpecError(f"--verify-topk: {model!r} ({result['class']}) has no MoE layers")
        ids = torch.tensor([lm._encode(lm.items[0]["question"], 64)])
        result["verify_topk"] = []
        for k in verify_topk:
            if not 1 <= k <= lm.topk.num_experts:
                raise SpecError(f"--verify-topk {k} is outside 1..{lm.topk.num_experts} (experts per MoE layer)")
            result["verify_topk"].append(verify_top_k(lm.model, ids, k))
    if importance:
        result["importance"] = lm.importance(importance).to_json()
    if as_json:
        out.print_json(json.dumps(result, default=str))
    else:
        _print_inspection(result)
    if verify_topk and not all(v["ok"] for v in result["verify_topk"]):
        err.print("[red]top-k verification failed[/]: some layer used a different number of experts than set")
        raise typer.Exit(1)


def _print_inspection(r: dict[str, Any]) -> None:
    p, b, m = r["parameters"], r["blocks"], r["moe"]
    out.print(f"[bold]{r['class']}[/] from {r['source']} ({r['dtype']})")
    out.print(f"parameters: {p['total']:,} total; embedding {p['embedding'] or 0:,}{' (tied LM head)' if p['lm_head_tied'] else ''}; "
              f"blocks {p['blocks']:,} ({p['per_block']:,} per block)")  # fmt: skip
    out.print("config: " + ", ".join(f"{k}={v}" for k, v in r["config"].items() if v is not None))
    out.print(f"blocks: {b['count']} x {b['class']} at {b['path']} (attention: {b['attention']}, feed-forward: {b['ffn']}); "
              f"knobs: {', '.join(b['knobs'])}")  # fmt: skip
    if m["layers"]:
        out.print(f"MoE: {m['layers']} layers, experts {m['experts']}, default top_k {m['default_top_k']}; top_k is set on "
                  f"{', '.join(m['top_k_set_on'])}; knob: top_k")  # fmt: skip
    else:
        out.print("MoE: none (knob top_k not available)")
    out.print(f"stages: {', '.join(r['stages'])} (per-phase attention/ffn with workload arg breakdown: true)")
    for check in r.get("verify_topk", []):
        table = Table(title=f"experts per token with top_k = {check['top_k']}: {'OK' if check['ok'] else 'MISMATCH'}")
        for column in ("layer", "tokens", "min", "mean", "max", "seen at"):
            table.add_column(column)
        for row in check["layers"]:
            style = "" if row["ok"] else "red"
            table.add_row(row["layer"], str(row["tokens"]), str(row["min"]), f"{row['mean']:.2f}", str(row["max"]), row["seen_at"], style=style)
        out.print(table)
    if "importance" in r:
        imp = r["importance"]
        table = Table(title=f"block importance by {imp['method']} (higher = kept first); baseline {imp['baseline'] or '-'}")
        for column in ("rank", "block", "score", "tie-break"):
            table.add_column(column, justify="right")
        for rank, block in enumerate(imp["order"], 1):
            tie = imp["tie_break"][block] if imp["tie_break"] else None
            table.add_row(str(rank), str(block), f"{imp['scores'][block]:.4f}", "" if tie is None else f"{tie:.3f}")
        out.print(table)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI, turning input errors into one line and exit status 2."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="knobscope", standalone_mode=False)
    except KnobscopeError as exc:
        err.print(f"knobscope: error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `knobscope`: help was asked for
            pass
            sys.exit(0)
        where = f" {exc.ctx.command.name}" if exc.ctx is not None and exc.ctx.command.name != "knobscope" else ""
        err.print(f"knobscope{where}: error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted", markup=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
