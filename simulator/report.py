"""The A/B report: markdown and HTML tables beside PNG plots, plus the numbers as JSON.

`write_report(analysis, out_dir)` takes the dictionary of `simulator.analysis.analyse` and writes
``report.md``, ``report.html``, ``report.json``, ``metric_over_time.png`` (the first metric per arm per
time bucket) and ``versions_over_time.png`` (the newest model version each arm served per bucket).
`online_report` and the replay's own wrapper build the analysis and call it.
"""

from __future__ import annotations

import html
import itertools
import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from simulator.arms import FALLBACK_VERSION

Table = tuple[list[str], list[list[str]]]


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _ci(ci: Sequence[float]) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "n/a"
    return f"{p:.4f}" + (" *" if p < 0.05 else "")


def _p_of(comparison: dict[str, Any]) -> str:
    """The p-value cell: starred when significant, unless an arm has too few users for the test to mean it."""
    if comparison.get("enough_users", True):
        return _p(comparison["p_value"])
    users = min(comparison["users_a"], comparison["users_b"])
    return f"{_p(comparison['p_value']).rstrip(' *')} (only {users} users: too few to test)"


def summary_table(summary: list[dict[str, Any]], metrics: Sequence[str]) -> Table:
    """Arms as rows: requests, users, each metric with its 95% CI."""
    header = ["arm", "requests", "users", *[f"{m} [95% CI]" for m in metrics]]
    rows = [[s["arm"], str(s["requests"]), str(s["users"]),
             *[f"{_fmt(s[m]['value'])} {_ci(s[m]['ci'])}" for m in metrics]] for s in summary]
    return header, rows


def comparison_table(comparisons: list[dict[str, Any]]) -> Table:
    """One row per (arm, metric): difference against control, its CI, relative change, p-value."""
    header = ["arm vs control", "metric", "control", "arm", "diff [95% CI]", "relative", "p-value"]
    rows = [[f"{c['arm_b']} vs {c['arm_a']}", c["metric"], _fmt(c["value_a"]), _fmt(c["value_b"]),
             f"{_fmt(c['diff'])} {_ci(c['diff_ci'])}",
             f"{100 * c['relative']:+.1f}%" if math.isfinite(c["relative"]) else "n/a", _p_of(c)]
            for c in comparisons]
    return header, rows


def _markdown(table: Table) -> str:
    header, rows = table
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _html(table: Table) -> str:
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def plot_time_series(series: dict[str, Any], out_dir: Path) -> list[str]:
    """Writes the metric-over-time and versions-over-time PNGs; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = series.get("edges_ms") or []
    if len(edges) < 2:
        return []
    start = edges[0]
    mids = [((a + b) / 2 - start) / 60_000 for a, b in itertools.pairwise(edges)]
    names = []
    fig, ax = plt.subplots(figsize=(8, 4))
    for arm, data in series["arms"].items():
        ys = [v if v is not None and math.isfinite(v) else float("nan") for v in data["values"]]
        ax.plot(mids, ys, marker="o", markersize=3, label=arm)
    ax.set_xlabel("simulated time since start (minutes)")
    ax.set_ylabel(series["metric"])
    ax.set_title(f"{series['metric']} per arm over time")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "metric_over_time.png", dpi=100)
    plt.close(fig)
    names.append("metric_over_time.png")
    fig, ax = plt.subplots(figsize=(8, 3))
    for arm, data in series["arms"].items():
        ys = [v if v is not None else float("nan") for v in data["versions"]]
        ax.step(mids, ys, where="mid", label=arm)
    ax.set_xlabel("simulated time since start (minutes)")
    ax.set_ylabel("model version (0 built-in, -1 fallback)")
    ax.set_title("newest model version served per arm")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "versions_over_time.png", dpi=100)
    plt.close(fig)
    names.append("versions_over_time.png")
    return names


def _sections(analysis: dict[str, Any]) -> list[tuple[str, Table]]:
    metrics = analysis["metrics"]
    out = [("Per arm", summary_table(analysis["summary"], metrics)),
           (f"Against the control arm ({analysis['control']})", comparison_table(analysis["comparisons"]))]
    for kind, groups in analysis["breakdowns"].items():
        for name, part in groups.items():
            out.append((f"{kind}: {name} — per arm", summary_table(part["summary"], metrics)))
            out.append((f"{kind}: {name} — against control", comparison_table(part["comparisons"])))
    return out


def write_report(analysis: dict[str, Any], out_dir: str | Path, title: str = "A/B report",
                 notes: Sequence[str] = ()) -> Path:
    """Writes report.md, report.html, report.json and the plots into `out_dir`; returns the markdown path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(analysis, indent=1, default=str))
    plots = plot_time_series(analysis.get("time_series", {}), out)
    sections = _sections(analysis)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    test = "per-user sign flip (paired)" if analysis.get("paired") else "user-label permutation test"
    legend = (f"95% CIs: percentile bootstrap over users; p-values: two-sided {test} "
              "(`*` = p < 0.05; not starred when an arm has fewer than 30 users, too few for either). Users are the "
              "randomisation unit, so both resample users, not requests.")
    md = [f"# {title}", "", f"Generated {stamp}.", "", *[f"- {n}" for n in notes], "", legend, ""]
    md += [f"![{p}]({p})" for p in plots]
    for heading, table in sections:
        md += ["", f"## {heading}", "", _markdown(table)]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>Generated {stamp}.</p>"]
    body += [f"<p>{html.escape(n)}</p>" for n in notes]
    body += [f"<p>{html.escape(legend)}</p>", '<div class="plots">']
    body += [f'<img src="{p}" alt="{p}">' for p in plots]
    body.append("</div>")
    for heading, table in sections:
        body += [f"<h2>{html.escape(heading)}</h2>", _html(table)]
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin-bottom:1em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}.plots img{max-width:48%}")
    (out / "report.html").write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
                                     f"</title><style>{style}</style></head><body>{''.join(body)}</body></html>\n")
    return path


def online_report(result: Any, out_dir: str | Path, control: str | None = None, n_boot: int = 1000,
                  n_perm: int = 1000, seed: int = 0, title: str = "Online A/B (synthetic environment)") -> Path:
    """Analyses an `OnlineResult` (CTR, CVR, purchases/request, HIT@K, true NDCG) and writes its report."""
    from simulator.analysis import analyse, online_metrics

    slate = int(result.params.get("slate_size", 10))
    arms = [a["name"] for a in result.arms]
    analysis = analyse(result.columns(), online_metrics(result.hit_k, slate), arms, control, n_boot, n_perm, seed)
    analysis["arm_rankers"] = {a["name"]: a["ranker"] for a in result.arms}
    notes = [f"{len(result)} requests, seed {result.params.get('seed')}, arms: "
             + ", ".join(f"{a['name']} = {a['ranker']} (weight {a['weight']})" for a in result.arms),
             f"HIT@{result.hit_k}: share of requests with at least one click in the top {result.hit_k}; "
             f"true NDCG@{slate}: the shown order scored with the environment's true click probabilities."]
    return write_report(analysis, out_dir, title, notes)


def replay_report(result: Any, out_dir: str | Path, control: str | None = None, n_boot: int = 1000,
                  n_perm: int = 1000, seed: int = 0, title: str = "Log replay") -> Path:
    """Analyses a `ReplayResult` (HIT@K, NDCG@K, session AUC; paired in shadow mode) and writes its report."""
    from simulator.analysis import analyse, replay_metrics

    arms = [a["name"] for a in result.arms]
    analysis = analyse(result.columns(), replay_metrics(result.ks), arms, control, n_boot, n_perm, seed,
                       paired=result.shadow)
    notes = [f"{len(result)} ranked (request, arm) rows; arms: "
             + ", ".join(f"{a['name']} = {a['ranker']}" for a in result.arms),
             "shadow mode: every arm ranked every request, comparisons are paired by user" if result.shadow
             else "each user saw only their assigned arm, comparisons are unpaired",
             "long-tail: the user had at most 5 logged interactions before the request"]
    analysis["training"] = training_summary(result)
    notes += training_notes(analysis["training"])
    return write_report(analysis, out_dir, title, notes)


def training_summary(result: Any) -> dict[str, Any]:
    """Per arm: the model versions it served, how many of its requests the fallback served, and its trainer's
    lag (samples behind the stream) over the replay's probes; plus the seconds the replay held for the
    trainers. Arms whose trainers lag differently compare training speed as much as models."""
    versions: dict[str, set[int]] = {}
    fallback: dict[str, int] = {}
    for arm, version in zip(result.rows.get("arm", []), result.rows.get("model_version", []), strict=True):
        versions.setdefault(arm, set()).add(int(version))
        fallback[arm] = fallback.get(arm, 0) + (int(version) == FALLBACK_VERSION)
    arms: dict[str, Any] = {}
    for a in result.arms:
        name = a["name"]
        lags = [p["lags"].get(name) for p in result.lag]
        known = [v for v in lags if v is not None]
        arms[name] = {"versions_served": sorted(versions.get(name, ())), "fallback_requests": fallback.get(name, 0),
                      "lag_median": float(np.median(known)) if known else None,
                      "lag_max": max(known) if known else None, "lag_last": known[-1] if known else None}
    return {"arms": arms, "probes": len(result.lag), "held_s": round(result.held_s, 1)}


def training_notes(training: dict[str, Any]) -> list[str]:
    """Report lines of `training_summary`."""
    lines = []
    for arm, t in training["arms"].items():
        served = t["versions_served"]
        text = f"{arm}: served model versions {served[0]}..{served[-1]} ({len(served)} distinct)" if served else \
            f"{arm}: no model version served"
        if n := t["fallback_requests"]:
            text += (f"; {n:,} request{'' if n == 1 else 's'} served by the fallback (no model version yet, or the "
                     "scorer unavailable)")
        if t["lag_median"] is not None:
            text += (f"; trainer behind the stream by {t['lag_median']:,.0f} samples (median of {training['probes']} "
                     f"probes), at most {t['lag_max']:,}, {t['lag_last']:,} at the end")
        lines.append(text)
    if training["held_s"]:
        lines.append(f"the replay waited {training['held_s']:.0f} s for the trainers to catch up (--pace-to-trainers)")
    return lines
