"""The HTML report: one self-contained file (``DIR/report.html``) that opens offline.

Plotly's JavaScript is inlined once, so nothing is fetched from the network; every point's
hover text shows its configuration. Sections: overview and provenance, strategy coverage,
Pareto frontier, coupling, knob effects, latency breakdown, single- vs multi-knob policies,
recommendations, workload comparison and illustrative cases, failures. Reporting only reads.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from knobscope.analysis.objectives import Objective
from knobscope.plots import axis_label, breakdown_means, frontier_points
from knobscope.results import RunResults

__all__ = ["build_report", "write_report", "SECTIONS"]

SECTIONS = ("overview", "coverage", "frontier", "coupling", "effects", "breakdown", "policies",
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
.muted{color:#667085}.card{display:inline-block;border:1px solid #dde2ea;border-radius:6px;padding:6px 12px;margin:4px 8px 4px 0}
.card b{display:block;font-size:18px}.plot{min-height:380px}pre{font-size:11px;white-space:pre-wrap}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
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


def _hover(rows: pd.DataFrame, knobs: Sequence[str], columns: Sequence[str]) -> list[str]:
    out = []
    for r in rows.to_dict("records"):
        parts = [f"{k}={r[k]}" for k in knobs] + [f"{c}={_fmt(r.get(c))}" for c in columns]
        out.append("<br>".join(parts))
    return out


def _objectives(analysis: Mapping[str, Any]) -> list[Objective]:
    return [Objective(o["column"], o["direction"], o.get("unit", "")) for o in analysis["objectives"]]


def _done(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    return table[table["status"] == "done"].dropna(subset=list(columns))


def _pareto_plot(plots: _Plots, run: RunResults, table: pd.DataFrame, objectives: Sequence[Objective], color_by: str, title: str) -> str:
    import plotly.graph_objects as go

    x, y = objectives[0], objectives[1]
    rows = _done(table, [x.column, y.column])
    shown = [o.column for o in objectives]
    fig = go.Figure()
    for v in [k for k in run.spec.space.knob(color_by).values if (rows[color_by] == k).any()]:
        part = rows[rows[color_by] == v]
        fig.add_trace(go.Scatter(x=part[x.column], y=part[y.column], mode="markers", name=f"{color_by}={v}",
                                 text=_hover(part, run.knobs, shown), hovertemplate="%{text}<extra></extra>"))  # fmt: skip
    fx, fy = frontier_points(rows, x, y)
    fig.add_trace(go.Scatter(x=fx, y=fy, mode="lines+markers", name="Pareto frontier", line=dict(shape="hv", color="black"),
                             marker=dict(size=11, symbol="circle-open", color="black"), hoverinfo="skip"))  # fmt: skip
    fig.update_layout(title=title, xaxis_title=axis_label(x.column, run.metrics), yaxis_title=axis_label(y.column, run.metrics), height=460)
    return plots.div(fig)


def _coupling_plot(plots: _Plots, run: RunResults, objectives: Sequence[Objective], knob: str) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    x, y = objectives[0], objectives[1]
    rows = _done(run.table, [x.column, y.column])
    values = [v for v in run.spec.space.knob(knob).values if (rows[knob] == v).any()]
    cols = min(4, max(len(values), 1))
    nrows = int(np.ceil(len(values) / cols)) or 1
    fig = make_subplots(rows=nrows, cols=cols, subplot_titles=[f"{knob} = {v}" for v in values], shared_xaxes=True, shared_yaxes=True)
    shown = [o.column for o in objectives]
    for i, v in enumerate(values):
        r, c = i // cols + 1, i % cols + 1
        part = rows[rows[knob] == v]
        fig.add_trace(go.Scatter(x=rows[x.column], y=rows[y.column], mode="markers", marker=dict(color="#d0d4da", size=5),
                                 hoverinfo="skip", showlegend=False), row=r, col=c)  # fmt: skip
        fig.add_trace(go.Scatter(x=part[x.column], y=part[y.column], mode="markers", marker=dict(color="#2c6fbb", size=7),
                                 text=_hover(part, run.knobs, shown), hovertemplate="%{text}<extra></extra>", showlegend=False),
                      row=r, col=c)  # fmt: skip
        fx, fy = frontier_points(part, x, y)
        fig.add_trace(go.Scatter(x=fx, y=fy, mode="lines", line=dict(shape="hv", color="#c0392b"), hoverinfo="skip", showlegend=False),
                      row=r, col=c)  # fmt: skip
    fig.update_layout(title=f"Frontier over the other knobs with {knob} fixed ({x.column} vs {y.column})", height=300 * nrows + 80)
    return plots.div(fig)


def _breakdown_plot(plots: _Plots, run: RunResults, knob: str, base: Mapping[str, Any] | None) -> str:
    import plotly.graph_objects as go

    means, stages, note = breakdown_means(run.table, knob, run.spec.space.knob(knob).values, base)
    if means.empty:
        return ""
    fig = go.Figure()
    for s in stages:
        fig.add_trace(go.Bar(x=[str(v) for v in means.index], y=means[f"{s}_ms_mean"], name=s,
                             hovertemplate=f"{knob}=%{{x}}<br>{s}: %{{y:.2f}} ms<extra></extra>"))  # fmt: skip
    fig.update_layout(barmode="stack", title=f"Latency by stage vs {knob} ({note})", xaxis_title=knob,
                      yaxis_title="latency per sample [ms] (mean)", height=400)  # fmt: skip
    return plots.div(fig)


def _effects_plot(plots: _Plots, run: RunResults, column: str, knobs: Sequence[str]) -> str:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = _done(run.table, [column])
    fig = make_subplots(rows=1, cols=len(knobs), shared_yaxes=True, subplot_titles=list(knobs))
    for i, k in enumerate(knobs):
        stats = rows.groupby(k)[column].agg(["mean", "std", "count"])
        stats = stats.reindex([v for v in run.spec.space.knob(k).values if v in stats.index])
        fig.add_trace(go.Scatter(x=[str(v) for v in stats.index], y=stats["mean"], mode="lines+markers", showlegend=False,
                                 error_y=dict(type="data", array=stats["std"].fillna(0).to_numpy()),
                                 hovertemplate=f"{k}=%{{x}}<br>mean {column}: %{{y:.4g}}<extra></extra>"), row=1, col=i + 1)  # fmt: skip
    fig.update_layout(title=f"Main effect of each knob on {column} (mean ± std over the other knobs)", height=360,
                      yaxis_title=axis_label(column, run.metrics))  # fmt: skip
    return plots.div(fig)


def _heatmap_plot(plots: _Plots, run: RunResults, column: str, kx: str, ky: str) -> str:
    import plotly.graph_objects as go

    rows = _done(run.table, [column])
    grid = rows.pivot_table(index=ky, columns=kx, values=column, aggfunc="mean")
    grid = grid.reindex(index=[v for v in run.spec.space.knob(ky).values if v in grid.index],
                        columns=[v for v in run.spec.space.knob(kx).values if v in grid.columns])  # fmt: skip
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(dtype=float), x=[str(v) for v in grid.columns], y=[str(v) for v in grid.index],
                               colorbar=dict(title=column), texttemplate="%{z:.3g}",
                               hovertemplate=f"{kx}=%{{x}}<br>{ky}=%{{y}}<br>{column}=%{{z:.4g}}<extra></extra>"))  # fmt: skip
    fig.update_layout(title=f"{column} by {kx} and {ky} (mean over the other knobs)", xaxis_title=kx, yaxis_title=ky, height=380)
    return plots.div(fig)


def _policy_plot(plots: _Plots, policies: Mapping[str, Any]) -> str:
    import plotly.graph_objects as go

    b = policies.get("budgets")
    if not b:
        return ""
    rows = b["rows"]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[r["budget"] for r in rows], y=[r["multi"] for r in rows], mode="lines+markers",
                             line=dict(shape="hv"), name="multi-knob"))  # fmt: skip
    fig.add_trace(go.Scatter(x=[r["budget"] for r in rows], y=[r["single"] for r in rows], mode="lines+markers",
                             line=dict(shape="hv", dash="dash"), name="best single-knob"))  # fmt: skip
    fig.update_layout(title=f"Best {b['quality']} reachable within a {b['cost']} budget", xaxis_title=f"budget: {b['cost']}",
                      yaxis_title=b["quality"], height=380)  # fmt: skip
    return plots.div(fig)


def build_report(run: RunResults, analysis: Mapping[str, Any], *, compare: Sequence[RunResults] = (), color_by: str | None = None) -> str:
    """The report's HTML text (self-contained)."""
    from plotly.offline import get_plotlyjs

    plots = _Plots()
    objectives = _objectives(analysis)
    knobs = run.knobs
    color_by = color_by or (run.spec.analysis or {}).get("color_by") or knobs[0]
    parts: list[str] = []

    # overview
    counts = analysis["counts"]
    fr = analysis["frontier"]
    cards = [("configurations", sum(counts.values())), ("done", counts.get("done", 0)), ("failed", counts.get("failed", 0)),
             ("Pareto-optimal", fr["size"]), ("hypervolume (normalised)", _fmt(fr["hypervolume_normalized"]))]  # fmt: skip
    objs = ", ".join(f"{o.column} ({'max' if o.maximise else 'min'})" for o in objectives)
    parts.append(f"<section id='overview'><h2>Overview</h2>{''.join(f'<span class=card>{_esc(k)}<b>{_esc(v)}</b></span>' for k, v in cards)}"
                 f"<p>Workload <b>{_esc(analysis['run']['workload'])}</b>; objectives: {_esc(objs)}; knobs: {_esc(', '.join(knobs))}.</p>"
                 f"<p class=muted>{_esc(analysis['run']['description'])}</p></section>")  # fmt: skip

    # coverage
    cov = analysis["coverage"]
    rows = [[k, len(v["values"]), len(v["measured"]), ", ".join(f"{val}:{n}" for val, n in zip(v["values"], v["counts"]))]
            for k, v in cov["knobs"].items()]  # fmt: skip
    parts.append(f"<section id='coverage'><h2>Strategy coverage</h2><p>Strategy <b>{_esc(cov['strategy'])}</b> measured "
                 f"{cov['measured']} of the {cov['grid_size']} configurations of the full grid.</p>"
                 + _table(["knob", "values", "measured values", "configurations per value"], rows, left=1) + "</section>")  # fmt: skip

    # frontier
    body = ""
    if len(objectives) >= 2:
        body += _pareto_plot(plots, run, run.table, objectives, color_by, f"{run.label}: Pareto frontier (hover shows the configuration)")
    cols = [o.column for o in objectives]
    body += _table(["trial", *knobs, *cols], [[r["trial_id"], *r["config"].values(), *(r["values"][c] for c in cols)] for r in fr["rows"]], left=1)
    body += (f"<p>Hypervolume {_fmt(fr['hypervolume'])} (normalised {_fmt(fr['hypervolume_normalized'])}) with reference point "
             f"{_esc(dict(zip(cols, (_fmt(v) for v in fr['reference']))))} ({_esc(fr['reference_source'])}).</p>")  # fmt: skip
    if fr["excluded"]:
        body += f"<p class=muted>{len(fr['excluded'])} configuration(s) left out: " + _esc("; ".join(f"{e['trial_id']}: {e['reason']}" for e in fr["excluded"][:20])) + "</p>"
    parts.append(f"<section id='frontier'><h2>Pareto frontier</h2>{body}</section>")

    # coupling
    coup = analysis["coupling"]
    rows = []
    for p in coup["pairs"]:
        rows.append([" × ".join(p["knobs"]), p["verdict"], p["reason"]])
    body = _table(["knob pair", "verdict", "evidence"], rows, left=3).replace(">coupled<", " class=coupled>coupled<").replace(">not coupled<", " class=ok>not coupled<")
    krows = [[k, _fmt(v["hypervolume_range"][0] if v["hypervolume_range"] else None), _fmt(v["hypervolume_range"][1] if v["hypervolume_range"] else None),
              {True: "yes", False: "no", None: "not comparable"}[v["optimal_settings_change"]], _fmt(v["mean_jaccard"])]
             for k, v in coup["knobs"].items()]  # fmt: skip
    body += "<h3>Fixed-knob frontiers</h3>" + _table(["fixed knob", "min HV (norm.)", "max HV (norm.)", "optimal settings of the others change", "mean Jaccard"], krows, left=1)
    if len(objectives) >= 2:
        for knob in coup["knobs"]:
            body += _coupling_plot(plots, run, objectives, knob)
    parts.append(f"<section id='coupling'><h2>Knob coupling</h2>{body}</section>")

    # effects
    body = ""
    varying = [k for k in knobs if run.table[k].nunique() > 1]
    for o in objectives:
        eff = analysis["effects"].get(o.column)
        if not eff:
            continue
        rows = [[k, _fmt(v["share"]), _fmt(v["p_value"])] for k, v in eff["main"].items()]
        rows += [[" × ".join(r["knobs"]), _fmt(r["share"]), _fmt(r["p_value"])] for r in eff["interactions"]]
        body += f"<h3>{_esc(o.column)}</h3>" + _table(["effect", "share of variance", "p-value"], rows, left=1)
        if varying:
            body += _effects_plot(plots, run, o.column, varying)
    if len(varying) >= 2:
        strongest = analysis["effects"].get(objectives[-1].column, {}).get("strongest") or []
        kx, ky = strongest[0]["knobs"] if strongest else varying[:2]
        for o in objectives:
            body += _heatmap_plot(plots, run, o.column, kx, ky)
    parts.append(f"<section id='effects'><h2>Knob effects</h2>{body}</section>")

    # breakdown
    base = analysis["policies"].get("base")
    body = "".join(_breakdown_plot(plots, run, k, base) for k in knobs)
    parts.append(f"<section id='breakdown'><h2>Latency breakdown</h2>{body or '<p class=muted>No stage timings recorded.</p>'}</section>")

    # policies
    pol = analysis["policies"]
    if pol.get("available"):
        rows = [[k, v["n"], _fmt(v.get("hypervolume_ratio")), "" if v.get("available") else v.get("reason", "")] for k, v in pol["single"].items()]
        body = (f"<p>Single-knob policies start from {_esc(pol['base'])} ({_esc(pol['base_source'])}). The best single-knob policy reaches "
                f"<b>{_fmt(pol['hypervolume_ratio'])}</b> of the multi-knob hypervolume.</p>"
                + _table(["moved knob", "configurations", "HV ratio vs multi-knob", "note"], rows, left=1) + _policy_plot(plots, pol))  # fmt: skip
        if pol.get("budgets"):
            b = pol["budgets"]
            body += _table([f"{b['cost']} budget", f"multi-knob {b['quality']}", f"single-knob {b['quality']}", "gap"],
                           [[r["budget"], r["multi"], r["single"], r["gap"]] for r in b["rows"]])  # fmt: skip
    else:
        body = f"<p class=muted>{_esc(pol.get('reason', 'not available'))}</p>"
    parts.append(f"<section id='policies'><h2>Single- vs multi-knob policies</h2>{body}</section>")

    # recommendations
    body = ""
    for rec in analysis["recommendations"]:
        desc = f" — {_esc(rec['description'])}" if rec["description"] else ""
        cons = " subject to " + " and ".join(rec["constraints"]) if rec["constraints"] else ""
        body += f"<h3>{_esc(rec['scenario'])}{desc}</h3><p>{_esc(rec['goal'] + cons)}: {rec['feasible']} of {rec['considered']} configurations qualify.</p>"
        if rec["top"]:
            vcols = list(rec["top"][0]["values"])
            body += _table(["#", *knobs, "score", *vcols], [[i + 1, *r["config"].values(), r["score"], *r["values"].values()] for i, r in enumerate(rec["top"])])
        else:
            body += f"<p class=coupled>No configuration: {_esc(rec['reason'])}</p>"
    parts.append(f"<section id='recommendations'><h2>Recommendations</h2>{body}</section>")

    # comparison and cases
    body = ""
    comp = analysis.get("comparison")
    if comp:
        body += f"<p>Workloads: {_esc(', '.join(comp['workloads']))}; {comp['common_configs']} configurations measured on all.</p>"
        rows = [[c["config"], ", ".join(c["optimal_on"]), ", ".join(c["dominated_on"]),
                 "; ".join(f"{w}: " + ", ".join(f"{k} {v:+.4g}" for k, v in cost["improvement"].items()) + f" by {cost['dominated_by_config']}"
                           for w, cost in c["cost"].items())] for c in comp["workload_dependent"][:30]]  # fmt: skip
        body += _table(["configuration", "optimal on", "dominated on", "what using it there costs"], rows, left=4)
        for other in compare:
            objs = [Objective(o["column"], o["direction"], o.get("unit", "")) for o in comp["objectives"].get(other.label, [])]
            if len(objs) >= 2:
                body += _pareto_plot(plots, other, other.table, objs, color_by, f"{other.label}: Pareto frontier")
    cases = analysis.get("cases") or []
    if cases:
        body += "<h3>Illustrative cases</h3><ul>" + "".join(f"<li><b>{_esc(c['kind'])}</b>: {_esc(c['text'])}</li>" for c in cases) + "</ul>"
    parts.append(f"<section id='comparison'><h2>Workloads and illustrative cases</h2>{body or '<p class=muted>One workload; pass other runs to compare.</p>'}</section>")

    # failures
    fails = analysis["failures"]
    body = _table(["trial", "configuration", "error"], [[f["trial_id"], f["config"], (f["error"] or "").strip().splitlines()[-1:] or ""] for f in fails], left=3) if fails else "<p class=ok>No failed trials.</p>"
    parts.append(f"<section id='failures'><h2>Failures</h2>{body}</section>")

    # provenance
    prov = {k: v for k, v in analysis["provenance"].items() if k != "metrics"}
    parts.append(f"<section id='provenance'><h2>Provenance</h2><pre>{_esc(json.dumps(prov, indent=1, default=str))}</pre></section>")

    nav = "".join(f"<a href='#{s}'>{s}</a>" for s in SECTIONS)
    title = f"knobscope report: {run.label}"
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>{_esc(title)}</title><style>{_CSS}</style>"
        # Errors are collected so a headless browser (and the test) can read them from the DOM.
        "<script>window.knobscopeErrors=[];window.addEventListener('error',function(e){window.knobscopeErrors.push(String(e.message))});</script>"
        f"<script>{get_plotlyjs()}</script></head><body>"
        f"<header><h1>{_esc(title)}</h1><p>{_esc(analysis['run']['dir'])}</p></header><nav>{nav}</nav><main>{''.join(parts)}</main>"
        "<script>window.addEventListener('load',function(){var n=document.querySelectorAll('.js-plotly-plot .main-svg').length;"
        "document.body.setAttribute('data-plots-rendered',String(document.querySelectorAll('.js-plotly-plot').length));"
        "document.body.setAttribute('data-svg-layers',String(n));"
        "document.body.setAttribute('data-errors',JSON.stringify(window.knobscopeErrors));});</script>"
        f"<!-- plots: {plots.count} --></body></html>"
    )


def write_report(run: RunResults, analysis: Mapping[str, Any], *, path: Path | None = None, compare: Sequence[RunResults] = (),
                 color_by: str | None = None) -> Path:  # fmt: skip
    path = Path(path) if path else run.run_dir / "report.html"
    path.write_text(build_report(run, analysis, compare=compare, color_by=color_by), encoding="utf-8")
    return path
