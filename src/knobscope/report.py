"""The HTML report: one self-contained file (``DIR/report.html``) that opens offline.

Plotly's JavaScript is inlined once, so nothing is fetched from the network; every point's
hover text shows its configuration. Sections: overview and provenance, strategy coverage,
Pareto frontier, coupling, knob effects, latency breakdown, single- vs multi-knob policies,
recommendations, workload comparison and illustrative cases, failures. Reporting only reads.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from knobscope.analysis.objectives import Objective
from knobscope.analysis.results import Analysis
from knobscope.figures import FIGURES, FigureContext, figure
from knobscope.figures.base import interval_text, number
from knobscope.results import RunResults

__all__ = ["build_report", "write_report", "SECTIONS"]

SECTIONS = ("overview", "coverage", "frontier", "configurations", "coupling", "effects", "breakdown", "policies",
            "recommendations", "comparison", "failures", "provenance")  # fmt: skip

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d1e0}nav{padding:8px 32px;background:#e9edf3;font-size:13px}
nav a{margin-right:14px;color:#24509a;text-decoration:none}main{padding:8px 32px 40px;max-width:1400px}
section{background:#fff;border:1px solid #dde2ea;border-radius:8px;padding:14px 20px;margin:16px 0}
h2{font-size:18px;margin:4px 0 10px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:12.5px;margin:6px 0}th,td{border:1px solid #dde2ea;padding:3px 8px;text-align:right}
th{background:#f0f3f7}td.l,th.l{text-align:left}.coupled{color:#b3261e;font-weight:600}.ok{color:#1b7a3a;font-weight:600}
.muted{color:#667085}.warn{color:#b54708}.card{display:inline-block;border:1px solid #dde2ea;border-radius:6px;padding:6px 12px;margin:4px 8px 4px 0}
.card b{display:block;font-size:18px}.plot{min-height:380px}pre{font-size:11px;white-space:pre-wrap}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return number(value)
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, left: int = 0) -> str:
    head = "".join(f"<th class='{'l' if i < left else ''}'>{_esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td class='{'l' if i < left else ''}'>{_esc(_fmt(v))}</td>" for i, v in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class _Plots:
    """Collects plotly figures as divs; the page loads plotly.js once."""

    def __init__(self) -> None:
        self.count = 0

    def div(self, fig: Any) -> str:
        self.count += 1
        fig.update_layout(template="plotly_white", margin=dict(l=60, r=20, t=50, b=50), font=dict(size=12))
        return "<div class='plot'>" + fig.to_html(
            full_html=False, include_plotlyjs=False, div_id=f"plot{self.count}",
            config={"displaylogo": False, "responsive": True},
        ) + "</div>"  # fmt: skip


def _pct(value: Any) -> str:
    """A share for a person: 12%, 0.3%, < 0.1%."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    v = float(value) * 100
    return "< 0.1%" if 0 < v < 0.1 else f"{v:.1f}%" if v < 10 else f"{v:.0f}%"


def _p(value: Any) -> str:
    if value is None:
        return "–"
    return "< 1e-6" if value < 1e-6 else f"{value:.2g}"


_ci = interval_text


def _objectives(analysis: Analysis) -> list[Objective]:
    return list(analysis.objectives)


def _configurations(run: RunResults, objectives: Sequence[Objective], analysis: Analysis) -> str:
    """Every configuration with each objective's value, 95% interval and spread (std over samples)."""
    table = run.table
    unc = analysis.frontier.uncertainty or {}
    probability = unc.get("probability") or {}
    headers = [*run.knobs, "status"]
    for o in objectives:
        headers += [f"{o.column}{f' [{o.unit}]' if o.unit else ''}", "std"]
    extra = [c for c in ("repeats", "noisy", "device_busy_share") if c in table.columns]
    headers += [*(["P(optimal)"] if unc else []), *extra]
    rows = []
    for r in table.to_dict("records"):
        row: list[Any] = [r[k] for k in run.knobs] + [r.get("status")]
        for o in objectives:
            value = r.get(o.column)
            lo, hi = r.get(f"{o.column}_ci_low"), r.get(f"{o.column}_ci_high")
            ci = _ci([None if _missing(lo) else lo, None if _missing(hi) else hi]) if f"{o.column}_ci_low" in r else ""
            base = o.column[: -len("_mean")] if o.column.endswith("_mean") else o.column.rsplit("_p", 1)[0]
            std = r.get(f"{base}_std")
            row += [("–" if _missing(value) else number(value)) + ci, "–" if _missing(std) else number(std)]
        if unc:
            row.append(f"{probability.get(str(r.get('trial_id')), 0.0):.2f}" if r.get("status") == "done" else "–")
        for c in extra:
            v = r.get(c)
            row.append("yes" if v is True else "" if c == "noisy" else "–" if _missing(v) else f"{v:.0%}" if c == "device_busy_share"
                       else str(int(v)))  # fmt: skip
        rows.append(row)
    headers = [{"device_busy_share": "device busy"}.get(h, h) for h in headers]
    note = ("<p class=muted>[a, b]: 95% interval (∞: too few records to bound it); std: the spread over samples and repeats"
            + ("; P(optimal): share of bootstrap replicates in which the configuration is Pareto-optimal" if unc else "")
            + ("; device busy: the share of one profiled sample's time the device was working" if "device_busy_share" in extra else "")
            + ".</p>")  # fmt: skip
    if "host_bound" in table.columns:
        from knobscope.diagnose import host_bound_notes

        note += "".join(f"<p class=warn>Host-bound: {_esc(n)}.</p>" for n in host_bound_notes(table.to_dict("records")))
    return _table(headers, rows, left=0) + note


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value))


def build_report(run: RunResults, analysis: Analysis, *, compare: Sequence[RunResults] = (), color_by: str | None = None,
                 ctx: FigureContext | None = None) -> str:  # fmt: skip
    """The report's HTML text (self-contained). Its plots come from the figure registry, from
    the same data as the PNGs (``ctx``: the figures' context; built from the arguments if absent)."""
    from plotly.offline import get_plotlyjs

    plots = _Plots()
    ctx = ctx or FigureContext(run, analysis, compare=compare, color_by=color_by)
    drawn: dict[str, list[str]] = {}
    for name in FIGURES.in_order():
        fig = figure(name)
        for info in fig.infos(ctx):
            drawn.setdefault(info.section, []).append(plots.div(fig.plotly(info)))
    figs = lambda section: "".join(drawn.get(section, []))  # noqa: E731
    objectives = _objectives(analysis)
    knobs = run.knobs
    parts: list[str] = []

    # overview
    counts = analysis.counts
    fr = analysis.frontier
    unc = fr.uncertainty
    hv_ci = fr.hypervolume_interval
    cards = [("configurations", sum(counts.values())), ("done", counts.get("done", 0)), ("failed", counts.get("failed", 0)),
             ("Pareto-optimal", fr.size), ("normalised hypervolume", _fmt(fr.hypervolume_normalized))]  # fmt: skip
    if unc:
        cards.append(("optimal beyond noise", unc["counts"]["optimal"]))
        cards.append(("frontier", "decided" if unc["decided"] else f"{unc['counts']['uncertain']} uncertain"))
    objs = ", ".join(f"{o.column} ({'max' if o.maximise else 'min'})" for o in objectives)
    parts.append(f"<section id='overview'><h2>Overview</h2>{''.join(f'<span class=card>{_esc(k)}<b>{_esc(v)}</b></span>' for k, v in cards)}"
                 f"<p>Workload <b>{_esc(analysis.run['workload'])}</b>; objectives: {_esc(objs)}; knobs: {_esc(', '.join(knobs))}.</p>"
                 f"<p class=muted>{_esc(analysis.run['description'])}</p></section>")  # fmt: skip

    # coverage
    cov = analysis.coverage
    rows = [[k, len(v["values"]), len(v["measured"]), ", ".join(f"{val}:{n}" for val, n in zip(v["values"], v["counts"]))]
            for k, v in cov["knobs"].items()]  # fmt: skip
    parts.append(f"<section id='coverage'><h2>Strategy coverage</h2><p>Strategy <b>{_esc(cov['strategy'])}</b> measured "
                 f"{cov['measured']} of the {cov['grid_size']} configurations of the full grid.</p>"
                 + _table(["knob", "values", "measured values", "configurations per value"], rows, left=1) + "</section>")  # fmt: skip

    # frontier
    body = figs("frontier")
    cols = [o.column for o in objectives]
    headers = ["trial", *knobs, *cols] + (["P(optimal)", "status", "tied with (knob values, within noise)"] if unc else [])
    frows = []
    for r in fr.rows:
        row = [r.trial_id, *r.config.values(), *(number(r.values[c]) + _ci(r.intervals.get(c)) for c in cols)]
        if unc:
            row += [f"{r.probability:.2f}", r.status, " ".join(r.tie_labels(number))]
        frows.append(row)
    body += _table(headers, frows, left=1)
    reference = "; ".join(f"{c} = {number(v)}" for c, v in zip(cols, fr.reference))
    body += (f"<p>Hypervolume {number(fr.hypervolume)}{_ci(hv_ci)} ({_esc(fr.hypervolume_unit)}; normalised "
             f"{number(fr.hypervolume_normalized)}: the share of the box between the best and worst observed values) "
             f"with reference point {_esc(reference)} ({_esc(fr.reference_source)}).</p>")  # fmt: skip
    if unc:
        c = unc["counts"]
        body += (f"<p>Given the noise ({unc['resamples']} bootstrap replicates of the per-sample records): {c['optimal']} "
                 f"configuration(s) optimal beyond noise, {c['uncertain']} uncertain, {c['dominated']} dominated beyond noise. "
                 "The band around the frontier is where it lies in 95% of replicates.</p><ul class=muted>"
                 + "".join(f"<li>{_esc(k)}: {_esc(v)}</li>" for k, v in unc["sources"].items())
                 + "".join(f"<li>{_esc(n)}</li>" for n in unc["notes"]) + "</ul>")  # fmt: skip
    if fr.excluded:
        body += f"<p class=muted>{len(fr.excluded)} configuration(s) left out: " + _esc("; ".join(f"{e['trial_id']}: {e['reason']}" for e in fr.excluded[:20])) + "</p>"
    parts.append(f"<section id='frontier'><h2>Pareto frontier</h2>{body}</section>")

    # every configuration
    parts.append(f"<section id='configurations'><h2>Every configuration</h2>{_configurations(run, objectives, analysis)}</section>")

    # coupling
    coup = analysis.coupling
    rows = [[" × ".join(p.knobs), p.verdict, p.reason] for p in coup.pairs]
    body = _table(["knob pair", "verdict", "evidence"], rows, left=3).replace(">coupled<", " class=coupled>coupled<").replace(">not coupled<", " class=ok>not coupled<")
    krows = [[k, _fmt(v["hypervolume_range"][0] if v["hypervolume_range"] else None), _fmt(v["hypervolume_range"][1] if v["hypervolume_range"] else None),
              {True: "yes", False: "no", None: "not comparable"}[v["optimal_settings_change"]], _fmt(v["mean_jaccard"])]
             for k, v in coup.knobs.items()]  # fmt: skip
    body += "<h3>Fixed-knob frontiers</h3>" + _table(["fixed knob", "min HV (norm.)", "max HV (norm.)", "optimal settings of the others change", "mean Jaccard"], krows, left=1)
    body += figs("coupling")
    parts.append(f"<section id='coupling'><h2>Knob coupling</h2>{body}</section>")

    # effects
    body = ""
    for o in objectives:
        eff = analysis.effects.get(o.column)
        if not eff:
            continue
        rows = [[k, _pct(v["share"]), _p(v["p_value"])] for k, v in eff["main"].items()]
        rows += [[" × ".join(r["knobs"]), _pct(r["share"]), _p(r["p_value"])] for r in eff["interactions"]]
        body += f"<h3>{_esc(o.column)}</h3>" + _table(["effect", "share of variance", "p-value"], rows, left=1)
    body += figs("effects")
    parts.append(f"<section id='effects'><h2>Knob effects</h2>{body}</section>")

    # breakdown
    body = figs("breakdown")
    parts.append(f"<section id='breakdown'><h2>Latency breakdown</h2>{body or '<p class=muted>No stage timings recorded.</p>'}</section>")

    # policies
    pol = analysis.policies
    if pol.available:
        rows = [[k, v["n"], _pct(v.get("hypervolume_ratio")), "" if v.get("available") else v.get("reason", "")] for k, v in (pol.single or {}).items()]
        body = f"<p>Single-knob policies start from {_esc(pol.base)} ({_esc(pol.base_source)}). {_esc(policy_sentence(pol))}</p>"
        body += _table(["moved knob", "configurations", "HV ratio vs multi-knob", "note"], rows, left=1) + figs("policies")
        if pol.budgets:
            b = pol.budgets
            body += _table([f"{b['cost']} budget", f"multi-knob {b['quality']}", f"single-knob {b['quality']}", "gap"],
                           [[r["budget"], r["multi"], r["single"], r["gap"]] for r in b["rows"]])  # fmt: skip
    else:
        body = f"<p class=muted>{_esc(pol.reason or 'not available')}</p>"
    parts.append(f"<section id='policies'><h2>Single- vs multi-knob policies</h2>{body}</section>")

    # recommendations
    body = ""
    for rec in analysis.recommendations:
        desc = f" — {_esc(rec.description)}" if rec.description else ""
        cons = " subject to " + " and ".join(rec.constraints) if rec.constraints else ""
        body += f"<h3>{_esc(rec.scenario)}{desc}</h3><p>{_esc(rec.goal + cons)}: {rec.feasible} of {rec.considered} configurations qualify.</p>"
        if rec.top:
            vcols = list(rec.top[0]["values"])
            body += _table(["#", *knobs, "score", *vcols],
                           [[i + 1, *r["config"].values(), r["score"], *(number(r["values"][c]) + _ci(r.get("intervals", {}).get(c)) for c in vcols)]
                            for i, r in enumerate(rec.top)])  # fmt: skip
            if rec.tied_with:
                body += (f"<p>#1 is tied within noise ({_esc(rec.tie_basis)}) with: "
                         + _esc("; ".join(", ".join(f"{k}={v}" for k, v in t.items()) for t in rec.tied_with)) + "</p>")  # fmt: skip
            noisy = [f"#{i + 1} meets {', '.join(r['within_noise'])} only within noise" for i, r in enumerate(rec.top) if r.get("within_noise")]
            if noisy:
                body += f"<p class=muted>{_esc('; '.join(noisy))} (its 95% interval crosses the bound).</p>"
        else:
            body += f"<p class=coupled>No configuration: {_esc(rec.reason)}</p>"
    parts.append(f"<section id='recommendations'><h2>Recommendations</h2>{body}</section>")

    # comparison and cases
    body = ""
    comp = analysis.comparison
    if comp:
        body += f"<p>Workloads: {_esc(', '.join(comp.workloads))}; {comp.common_configs} configurations measured on all.</p>"
        rows = [[c["config"], ", ".join(c["optimal_on"]), ", ".join(c["dominated_on"]),
                 {True: "yes", False: "no: within noise", None: "–"}[c.get("beyond_noise")],
                 "; ".join(f"{w}: " + ", ".join(f"{k} {v:+.4g}" for k, v in cost["improvement"].items()) + f" by {cost['dominated_by_config']}"
                           for w, cost in c["cost"].items())] for c in comp.workload_dependent[:30]]  # fmt: skip
        body += _table(["configuration", "optimal on", "dominated on", "beyond noise", "what using it there costs"], rows, left=5)
    body += figs("comparison")
    if analysis.cases:
        body += "<h3>Illustrative cases</h3><ul>" + "".join(
            f"<li{' class=muted' if c.supported is False else ''}><b>{_esc(c.kind)}</b>: {_esc(c.text)}</li>" for c in analysis.cases) + "</ul>"
    parts.append(f"<section id='comparison'><h2>Workloads and illustrative cases</h2>{body or '<p class=muted>One workload; pass other runs to compare.</p>'}</section>")

    # failures
    fails = analysis.failures
    body = _table(["trial", "configuration", "error"], [[f["trial_id"], f["config"], (f["error"] or "").strip().splitlines()[-1:] or ""] for f in fails], left=3) if fails else "<p class=ok>No failed trials.</p>"
    parts.append(f"<section id='failures'><h2>Failures</h2>{body}</section>")

    # provenance
    prov = {k: v for k, v in analysis.provenance.items() if k not in ("metrics", "measured_on")}
    where = analysis.provenance.get("measured_on") or []
    measured_on = _table(["node", "device", "trials"], [[w["node"], w["device"], w["trials"]] for w in where], left=2) if where else ""
    parts.append(f"<section id='provenance'><h2>Provenance</h2><h3>Measured on</h3>{measured_on}"
                 f"<h3>The latest invocation</h3><pre>{_esc(json.dumps(prov, indent=1, default=str))}</pre></section>")

    nav = "".join(f"<a href='#{s}'>{s}</a>" for s in SECTIONS)
    title = f"knobscope report: {run.label}"
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style>"
        # Errors are collected so a headless browser (and the test) can read them from the DOM.
        "<script>window.knobscopeErrors=[];window.addEventListener('error',function(e){window.knobscopeErrors.push(String(e.message))});</script>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f"<header><h1>{_esc(title)}</h1><p>{_esc(analysis.run['dir'])}</p></header><nav>{nav}</nav><main>{''.join(parts)}</main>"
        "<script>window.addEventListener('load',function(){var n=document.querySelectorAll('.js-plotly-plot .main-svg').length;"
        "document.body.setAttribute('data-plots-rendered',String(document.querySelectorAll('.js-plotly-plot').length));"
        "document.body.setAttribute('data-svg-layers',String(n));"
        "document.body.setAttribute('data-errors',JSON.stringify(window.knobscopeErrors));});</script>"
        f"<!-- plots: {plots.count} --></body></html>"
    )


def write_report(run: RunResults, analysis: Analysis, *, path: Path | None = None, compare: Sequence[RunResults] = (),
                 color_by: str | None = None, ctx: FigureContext | None = None) -> Path:  # fmt: skip
    path = Path(path) if path else run.run_dir / "report.html"
    path.write_text(build_report(run, analysis, compare=compare, color_by=color_by, ctx=ctx), encoding="utf-8")
    return path


def policy_sentence(pol: Any) -> str:
    """Single- vs multi-knob in one sentence that cannot read as a contradiction: a budget that
    only a multi-knob setting meets is often the frontier's end point, which lies on the edge of
    the hypervolume's reference box and so adds no volume. ``pol``: the analysis' policies."""
    ratio = pol.hypervolume_ratio
    text = ("The best single-knob policy reaches " + (f"{ratio:.0%} of the multi-knob hypervolume" if ratio is not None
            else "no hypervolume (the multi-knob one is 0)"))  # fmt: skip
    b = pol.budgets or {}
    gap = pol.largest_gap
    if gap and gap.get("gap"):
        text += f"; its largest {b['quality']} shortfall is {number(gap['gap'])} at {b['cost']} {b['within']} {number(gap['budget'])}"
    unmet = pol.budgets_single_cannot_meet or ()
    if unmet:
        text += (f". Yet within {b['cost']} {b['within']} {', '.join(number(v) for v in unmet[:3])} only a multi-knob setting "
                 "qualifies at all; such a point lies on the edge of the reference box, where it adds no hypervolume, "
                 "so the ratio cannot show it")  # fmt: skip
    return text + "."
