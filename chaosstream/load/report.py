"""Load results: the JSON document, the objectives gate, the terminal summary, the HTML report.

The HTML report is one file with its charts inlined as SVG drawn by matplotlib
(Agg backend, no display needed): it opens offline, in any browser, with no
script, and an SVG stays sharp when zoomed. matplotlib is imported only when
``--html`` is given.
"""

from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass
from typing import Any

from chaosstream._version import __version__
from chaosstream.load.metrics import LoadStats, ProfileStats

__all__ = ["Objectives", "check_objectives", "html_report", "load_document", "terminal_summary"]


@dataclass(frozen=True, slots=True)
class Objectives:
    """What a CI job gates on; None = not checked."""

    max_interruption_rate: float | None = None
    min_goodput: float | None = None
    ttft_slo_ms: float | None = None
    ttlt_slo_ms: float | None = None


def check_objectives(overall: dict[str, Any], objectives: Objectives) -> list[str]:
    """The objectives the overall block misses, each as one sentence (empty = all met)."""
    missed = []
    rate = overall["interruption_rate"]
    if objectives.max_interruption_rate is not None and (rate or 0.0) > (
        objectives.max_interruption_rate
    ):
        missed.append(
            f"interruption rate {rate:.2%} is above --max-interruption-rate "
            f"{objectives.max_interruption_rate:.2%}"
        )
    goodput = overall["goodput"]
    if objectives.min_goodput is not None and (goodput is None or goodput < objectives.min_goodput):
        shown = "n/a (no answers)" if goodput is None else f"{goodput:.2%}"
        missed.append(f"goodput {shown} is below --min-goodput {objectives.min_goodput:.2%}")
    return missed


def load_document(
    stats: LoadStats,
    duration_s: float,
    run: dict[str, Any],
    objectives: Objectives,
) -> dict[str, Any]:
    """The ``--json`` document: ``profiles`` and ``overall`` as the contract gives them, plus
    the run's settings, the objectives, ``passed`` and a per-second ``timeline``."""
    overall_stats = stats.overall()
    overall = overall_stats.summary(duration_s)
    missed = check_objectives(overall, objectives)
    return {
        "tool": "chaosstream",
        "version": __version__,
        "kind": "load",
        "run": {**run, "duration_s": round(duration_s, 3)},
        "objectives": {
            "max_interruption_rate": objectives.max_interruption_rate,
            "min_goodput": objectives.min_goodput,
            "ttft_slo_ms": objectives.ttft_slo_ms,
            "ttlt_slo_ms": objectives.ttlt_slo_ms,
            "missed": missed,
        },
        "passed": not missed,
        "profiles": {
            name: {**s.summary(duration_s), "timeline": _timeline(s)}
            for name, s in sorted(stats.profiles.items())
        },
        "overall": {**overall, "timeline": _timeline(overall_stats)},
    }


def _timeline(stats: ProfileStats) -> dict[str, list[int]]:
    """Seconds since the first sample; open streams, errors, completed streams, tokens."""
    seconds = sorted(stats.timeline)
    base = seconds[0] if seconds else 0
    rows = [stats.timeline[s] for s in seconds]
    return {
        "t_s": [s - base for s in seconds],
        "open_streams": [r[0] for r in rows],
        "errors": [r[1] for r in rows],
        "completed": [r[2] for r in rows],
        "tokens": [r[3] for r in rows],
    }


def _ms(block: dict[str, Any], key: str) -> str:
    value = block.get(key)
    return "-" if value is None else f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def terminal_summary(doc: dict[str, Any]) -> str:
    """A fixed-width table: one row per profile and one for all of them."""
    head = (
        f"{'profile':<18}{'streams':>8}{'ttft p50/p99 ms':>18}{'itl p50/p99':>14}"
        f"{'ttlt p50 ms':>12}{'interrupted':>12}{'goodput':>9}{'att/ans':>8}  errors"
    )
    lines = [head]
    rows = [*doc["profiles"].items(), ("overall", doc["overall"])]
    for name, b in rows:
        errors = ", ".join(f"{k} {v}" for k, v in b["errors"].items()) or "-"
        apa = b["attempts_per_answer"]
        lines.append(
            f"{name:<18}{b['streams']:>8}"
            f"{_ms(b['ttft_ms'], 'p50') + ' / ' + _ms(b['ttft_ms'], 'p99'):>18}"
            f"{_ms(b['itl_ms'], 'p50') + ' / ' + _ms(b['itl_ms'], 'p99'):>14}"
            f"{_ms(b['ttlt_ms'], 'p50'):>12}{_pct(b['interruption_rate']):>12}"
            f"{_pct(b['goodput']):>9}{'-' if apa is None else f'{apa:.2f}':>8}  {errors}"
        )
    o = doc["overall"]
    lines.append(
        f"{o['requests_per_s']:.1f} requests/s, {o['tokens_per_s']:.0f} tokens/s over "
        f"{doc['run']['duration_s']:.1f} s"
    )
    for sentence in doc["objectives"]["missed"]:
        lines.append(f"objective missed: {sentence}")
    return "\n".join(lines)


def html_report(doc: dict[str, Any], stats: LoadStats) -> str:
    """A self-contained page: the summary table and four charts, SVG inlined."""
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    import matplotlib.pyplot as plt

    def svg(fig: Any) -> str:
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
        plt.close(fig)
        text = buf.getvalue()
        return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE inside HTML

    charts = []
    for title, attr in (("Time to first token", "ttft"), ("Inter-token latency", "itl")):
        fig, ax = plt.subplots(figsize=(8, 3.2))
        for name, s in sorted(stats.profiles.items()):
            values = getattr(s, attr).values()
            if values:
                ax.hist(values, bins=40, histtype="step", linewidth=1.5, label=name)
        ax.set_xlabel("ms")
        ax.set_ylabel("count")
        ax.set_title(f"{title} per profile")
        ax.legend(loc="upper right", fontsize="small")
        charts.append(svg(fig))
    for title, key, ylabel in (
        ("Open streams over time", "open_streams", "open streams"),
        ("Error rate over time", "errors", "errors / s"),
    ):
        fig, ax = plt.subplots(figsize=(8, 3.2))
        for name, block in sorted(doc["profiles"].items()):
            t = block["timeline"]
            ax.plot(t["t_s"], t[key], label=name, drawstyle="steps-post")
        ax.set_xlabel("s since start")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(loc="upper right", fontsize="small")
        charts.append(svg(fig))
    table = html.escape(terminal_summary(doc))
    verdict = "passed" if doc["passed"] else "objective missed"
    data = html.escape(json.dumps(doc["run"], sort_keys=True))
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<title>chaosstream load report</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto}"
        ".chart{margin:1em 0}</style></head><body>"
        f"<h1>chaosstream load: {verdict}</h1><p><code>{data}</code></p>"
        f"<pre>{table}</pre>"
        + "".join(f"<div class='chart'>{c}</div>" for c in charts)
        + "</body></html>"
    )
