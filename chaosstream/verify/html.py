"""The self-contained HTML report: a summary grid, then a timeline per scenario.

Charts are Vega-Lite, built with Altair (the schema-validated Python API) and
drawn in the page by Vega-Embed from the bundle ``vl-convert`` makes: Vega,
Vega-Lite and Vega-Embed with their dependencies in one ~0.9 MB script,
inlined once per file and shared by every chart. So the file opens offline
(a Content-Security-Policy of ``default-src 'none'`` forbids any request), the
battery's report stays far under 5 MB, and the charts keep tooltips (each
fault marker says what fired and why). Plotly's single bundle is ~4.6 MB on
its own, and matplotlib's SVG is static; Vega-Lite's declarative specs are
also plain JSON, which the page carries anyway.

The report's data (:func:`chaosstream.verify.timeline.run_timeline`) is
embedded as ``<script type="application/json" id="chaosstream-data">`` for
tools and tests; the chart specs sit beside it in ``id="chaosstream-specs"``.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaosstream.verify.timeline import run_timeline

if TYPE_CHECKING:
    from chaosstream.verify.results import RunReport

__all__ = ["INSTALL_HINT", "charts_available", "render_html", "scenario_chart", "write_html"]

INSTALL_HINT = "pip install 'chaosstream[report]' (Altair and vl-convert draw the timelines)"
"""What to install when the charting libraries are missing."""

# Vega-Lite's own category10 picks, named so the legend reads the same in every report.
_EVENT_KINDS = ["token", "terminal", "error", "other", "body"]
_EVENT_COLORS = ["#4c78a8", "#54a24b", "#e45756", "#9d755d", "#72b7b2"]
_WIDTH = 820


def charts_available() -> bool:
    """Altair and vl-convert are installed (``--html`` needs them)."""
    try:
        import altair  # noqa: F401
        import vl_convert  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _bundle() -> str:
    """Vega + Vega-Lite + Vega-Embed as one script (vl-convert bundles them; ~3 s once)."""
    import altair
    import vl_convert

    # The Vega-Lite version Altair's specs are written for (its $schema), e.g. v6.4.
    script: str = vl_convert.javascript_bundle(
        "window.vegaEmbed = vegaEmbed;", vl_version=altair.SCHEMA_VERSION.rsplit(".", 1)[0]
    )
    return script


def _x_domain(s: dict[str, Any]) -> list[float]:
    times = [0.0]
    for lane in s["lanes"]:
        times += [lane["start_ms"], lane["end_ms"] or lane["start_ms"]]
    times += [e["t_ms"] for e in s["events"]] + [f["t_ms"] for f in s["faults"]]
    times += [w["next_ms"] or 0.0 for w in s["waits"]] + [w["retry_after_ms"] for w in s["waits"]]
    times += [p["t_ms"] for p in s["output"]]
    lo, hi = min(times) / 1000.0, max(times) / 1000.0
    pad = max(0.05, (hi - lo) * 0.03)
    return [round(lo - (pad if lo < 0 else 0), 3), round(hi + pad, 3)]


def _data(rows: list[dict[str, Any]]) -> Any:
    import altair as alt

    return alt.InlineData(values=rows)


def _secs(rows: list[dict[str, Any]], *keys: str) -> list[dict[str, Any]]:
    """Rows with ``<key>_s`` seconds added for each ``<key>_ms`` (axes read seconds)."""
    out = []
    for row in rows:
        extra = {
            k.removesuffix("_ms") + "_s": None if row.get(k) is None else row[k] / 1000.0
            for k in keys
        }
        out.append({**row, **extra})
    return out


def _label_rows(markers: list[dict[str, Any]], near_s: float) -> list[dict[str, Any]]:
    """One label per lane and moment: faults firing together read as one line, not a smear."""
    rows: list[dict[str, Any]] = []
    for m in sorted(markers, key=lambda m: (m["lane"], m["t_s"])):
        last = rows[-1] if rows else None
        if last is not None and last["lane"] == m["lane"] and m["t_s"] - last["t_s"] <= near_s:
            if m["label"] not in last["label"].split(" · "):
                last["label"] += " · " + m["label"]
        else:
            rows.append({"lane": m["lane"], "t_s": m["t_s"], "label": m["label"]})
    return rows


def scenario_chart(s: dict[str, Any]) -> dict[str, Any]:
    """The Vega-Lite spec of one scenario's timeline (lanes above, shown text below)."""
    import altair as alt

    domain = _x_domain(s)
    x_title = "seconds since the first request"
    lanes = [lane["lane"] for lane in s["lanes"]] or ["(no request)"]
    y = alt.Y("lane:N", sort=lanes, title=None, scale=alt.Scale(domain=lanes))
    height = max(40, 26 * len(lanes))

    def x(field: str, title: str | None = None) -> alt.X:
        return alt.X(field, title=title, scale=alt.Scale(domain=domain, nice=False))

    span_rows = [
        {**row, "end_ms": row["end_ms"] if row["end_ms"] is not None else row["start_ms"]}
        for row in s["lanes"]
    ]
    spans = (
        alt.Chart(_data(_secs(span_rows, "start_ms", "end_ms")))
        .mark_bar(height=14, color="#bab0ac", opacity=0.45, cornerRadius=2)
        .encode(
            x=x("start_s:Q", x_title),
            x2="end_s:Q",
            y=y,
            tooltip=["lane:N", "method:N", "path:N", "status:N", "outcome:N", "events:Q"],
        )
    )
    layers: list[Any] = [spans]
    first_bytes = [row for row in s["lanes"] if row["first_byte_ms"] is not None]
    if first_bytes:
        layers.append(
            alt.Chart(_data(_secs(first_bytes, "first_byte_ms")))
            .mark_point(shape="diamond", filled=True, size=50, color="#333333")
            .encode(x=x("first_byte_s:Q"), y=y, tooltip=["lane:N", "first_byte_ms:Q"])
        )
    if s["waits"]:
        waits = _secs(s["waits"], "from_ms", "retry_after_ms", "next_ms")
        layers.append(
            alt.Chart(_data(waits))
            .mark_bar(height=22, color="#f58518", opacity=0.25)
            .encode(
                x=x("from_s:Q"),
                x2="retry_after_s:Q",
                y=y,
                tooltip=[
                    alt.Tooltip("from_ms:Q", title="refused at (ms)"),
                    alt.Tooltip("retry_after_ms:Q", title="Retry-After ends (ms)"),
                ],
            )
        )
        layers.append(
            alt.Chart(_data([w for w in waits if w["next_s"] is not None]))
            .mark_rule(strokeWidth=2, strokeDash=[4, 2], color="#333333")
            .encode(
                x=x("from_s:Q"),
                x2="next_s:Q",
                y=y,
                tooltip=[
                    alt.Tooltip("waited_ms:Q", title="client waited (ms)"),
                    alt.Tooltip("respected:N", title="respected Retry-After"),
                    alt.Tooltip("next:Q", title="next request"),
                ],
            )
        )
        layers.append(
            alt.Chart(_data(waits))
            .mark_text(align="left", dx=4, dy=10, fontSize=10, color="#b35806")
            .encode(x=x("retry_after_s:Q"), y=y, text="label:N")
        )
    if s["events"]:
        layers.append(
            alt.Chart(_data(_secs(s["events"], "t_ms")))
            .mark_tick(thickness=1.5, size=16)
            .encode(
                x=x("t_s:Q"),
                y=y,
                color=alt.Color(
                    "kind:N",
                    title="event delivered",
                    scale=alt.Scale(domain=_EVENT_KINDS, range=_EVENT_COLORS),
                ),
                tooltip=["lane:N", "n:Q", "kind:N", "t_ms:Q"],
            )
        )
    if s["faults"]:
        markers = _secs(s["faults"], "t_ms")
        layers.append(
            alt.Chart(_data(markers))
            .mark_point(shape="triangle-down", filled=True, size=160, color="#d62728", yOffset=-9)
            .encode(
                x=x("t_s:Q"),
                y=y,
                tooltip=["label:N", "type:N", "action:N", "detail:N", "trigger:N", "t_ms:Q"],
            )
        )
        layers.append(
            alt.Chart(_data(_label_rows(markers, (domain[1] - domain[0]) * 0.04)))
            .mark_text(align="left", dx=7, dy=-12, fontSize=10, color="#d62728")
            .encode(x=x("t_s:Q"), y=y, text="label:N")
        )
    top = alt.layer(*layers).properties(width=_WIDTH, height=height, title="requests")

    output = _secs(s["output"], "t_ms")
    answer = s["answer"]
    top_chars = max([1, *(p["chars"] for p in output), answer["chars"] if answer else 0])
    source = "page text (DOM readings)" if s["output_source"] == "page" else "stdout"
    line = (
        alt.Chart(_data(output))
        .mark_line(interpolate="step-after", point=True, color="#4c78a8")
        .encode(
            x=x("t_s:Q", x_title),
            y=alt.Y("chars:Q", title="characters", scale=alt.Scale(domain=[0, top_chars])),
            tooltip=["what:N", "t_ms:Q", "chars:Q"],
        )
    )
    bottom_layers: list[Any] = [line]
    if answer is not None:
        bottom_layers.append(
            alt.Chart(_data([{"chars": answer["chars"], "what": "full answer"}]))
            .mark_rule(strokeDash=[6, 3], color="#54a24b")
            .encode(y="chars:Q", tooltip=["what:N", "chars:Q"])
        )
    if s["ttft_shown_ms"] is not None:
        bottom_layers.append(
            alt.Chart(_data([{"t_s": s["ttft_shown_ms"] / 1000.0, "what": "first text"}]))
            .mark_rule(color="#b279a2")
            .encode(x=x("t_s:Q"), tooltip=["what:N", "t_s:Q"])
        )
    bottom = alt.layer(*bottom_layers).properties(
        width=_WIDTH, height=110, title=f"client's shown text ({source}) vs the full answer"
    )
    chart = alt.vconcat(top, bottom).configure_view(stroke=None)
    spec: dict[str, Any] = chart.to_dict()
    return spec


def _safe_json(value: Any) -> str:
    # Inside <script> only "</" could end the element early; escaping <, > and & as
    # JSON \\u escapes keeps any text (an answer, stderr) inert (HTML 4.12.1.3).
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _screenshots(report: RunReport) -> dict[str, str]:
    return {
        r.name: "data:image/png;base64," + base64.b64encode(r.page.screenshot).decode("ascii")
        for r in report.results
        if r.page is not None and r.page.screenshot
    }


def render_html(report: RunReport, title: str = "chaosstream report") -> str:
    """The whole report as one HTML page with every asset inlined."""
    import jinja2
    from markupsafe import Markup

    data = run_timeline(report)
    specs = {f"chart-{i}": scenario_chart(s) for i, s in enumerate(data["scenarios"])}
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(_TEMPLATE)
    return template.render(
        title=title,
        data=data,
        data_json=Markup(_safe_json(data)),
        specs_json=Markup(_safe_json(specs)),
        bundle=Markup(_bundle().replace("</script", "<\\/script")),
        shots=_screenshots(report),
    )


def write_html(report: RunReport, path: str | Path, title: str = "chaosstream report") -> None:
    """Write :func:`render_html` to ``path``."""
    Path(path).write_text(render_html(report, title), encoding="utf-8")


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; \
script-src 'unsafe-inline' 'unsafe-eval'">
<title>{{ title }}</title>
<style>
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 2em; }
table.grid { border-collapse: collapse; }
.grid th, .grid td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; }
.pass { background: #e3f4e1; color: #1d6b1d; } .fail { background: #fbe3e1; color: #a31515; }
.na { color: #999; }
section.scenario { border-top: 2px solid #ddd; padding-top: .3em; }
.badge { font-weight: bold; padding: 0 .4em; border-radius: 3px; }
.cols { display: flex; gap: 1.5em; flex-wrap: wrap; }
.cols > div { flex: 1 1 380px; min-width: 300px; }
pre { white-space: pre-wrap; background: #f7f7f7; padding: .5em; max-height: 18em;
      overflow: auto; font-size: 12px; }
.answer { white-space: pre-wrap; background: #f7f7f7; padding: .5em; max-height: 18em;
          overflow: auto; font-size: 12px; font-family: ui-monospace, monospace; }
mark.missing { background: #f7b6b0; text-decoration: line-through; }
ul.verdicts li { margin-bottom: .3em; }
code { font-size: 12px; }
img.shot { max-width: 100%; border: 1px solid #ccc; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p>chaosstream {{ data.version }} · seed {{ data.seed }} · upstream {{ data.upstream }} ·
<span class="badge {{ 'pass' if data.passed else 'fail' }}">\
{{ 'PASSED' if data.passed else 'FAILED' }}</span>
{% if data.interrupted %}<b>interrupted: only the finished scenarios are shown</b>{% endif %}</p>
<h2>Summary</h2>
<table class="grid" id="summary">
<tr><th>scenario</th>{% for n in data.expectation_names %}<th>{{ n }}</th>{% endfor %}
<th>TTFT wire (ms)</th><th>TTFT shown (ms)</th><th>attempts</th><th>repro</th></tr>
{% for s in data.scenarios %}
<tr><td><a href="#scenario-{{ loop.index0 }}">{{ s.name }}</a></td>
{% for n in data.expectation_names %}{% set v = s.expectations | selectattr("name", "equalto", n)
 | list %}{% if v %}<td class="{{ v[0].verdict }}" title="{{ v[0].evidence }}">\
{{ v[0].verdict }}</td>{% else %}<td class="na">-</td>{% endif %}{% endfor %}
<td>{{ s.ttft_ms if s.ttft_ms is not none else "-" }}</td>
<td>{{ s.ttft_shown_ms if s.ttft_shown_ms is not none else "-" }}</td>
<td>{{ s.attempts }}</td>
<td>{% if not s.passed and s.repro %}<code>{{ s.repro }}</code>{% endif %}</td></tr>
{% endfor %}
</table>
{% for s in data.scenarios %}
<section class="scenario" id="scenario-{{ loop.index0 }}" data-name="{{ s.name }}">
<h2>{{ s.name }} <span class="badge {{ 'pass' if s.passed else 'fail' }}">\
{{ 'PASS' if s.passed else 'FAIL' }}</span></h2>
<p>profile <b>{{ s.profile }}</b> · seed {{ s.seed }} · {{ s.attempts }} attempt(s) ·
exit code {{ s.exit_code if s.exit_code is not none else ("killed (hang)" if s.timed_out
else "-") }} · TTFT wire {{ s.ttft_ms if s.ttft_ms is not none else "-" }} ms, shown
{{ s.ttft_shown_ms if s.ttft_shown_ms is not none else "-" }} ms
{% if s.faults_total > s.faults | length %}· {{ s.faults_total }} fault firings, \
{{ s.faults | length }} drawn{% endif %}</p>
{% if s.repro %}<p>repro: <code>{{ s.repro }}</code></p>{% endif %}
{% if s.repro_run and not s.passed %}<p>rerun: <code>{{ s.repro_run }}</code></p>{% endif %}
<div class="chart" id="chart-{{ loop.index0 }}"></div>
<div class="cols">
<div><h3>Verdicts</h3><ul class="verdicts">
{% for v in s.expectations %}<li><span class="badge {{ v.verdict }}">{{ v.verdict }}</span>
<b>{{ v.name }}</b>: {{ v.evidence }}</li>{% endfor %}
</ul></div>
<div><h3>Expected answer{% if s.answer %} ({{ s.answer.summary }}){% endif %}</h3>
{% if s.answer %}<div class="answer">{% for p in s.answer.pieces %}{% if p.missing
%}<mark class="missing" title="not shown">{{ p.text }}</mark>{% else %}{{ p.text }}{% endif
%}{% endfor %}{% if s.answer.cut %} …{% endif %}</div>
{% else %}<p class="na">unknown: no complete upstream answer was seen</p>{% endif %}
<h3>What the client showed ({{ s.output_source }})</h3><pre>{{ s.shown_text }}</pre>
{% if s.stderr %}<h3>stderr</h3><pre>{{ s.stderr }}</pre>{% endif %}
</div>
{% if s.page %}<div><h3>Page</h3>
{% if s.name in shots %}<img class="shot" alt="screenshot of {{ s.name }}" \
src="{{ shots[s.name] }}">{% endif %}
<p>cumulative layout shift {{ s.page.cls }} over {{ s.page.shifts | length }} shift(s)</p>
{% if s.page.shift_trace %}<table class="shifts"><tr><th>ms after Send</th><th>shift</th>\
<th>CLS so far</th></tr>{% for t in s.page.shift_trace %}<tr><td>{{ t.ms }}</td>\
<td>{{ t.value }}</td><td>{{ t.cls }}</td></tr>{% endfor %}</table>{% endif %}
{% if s.page.console %}<pre>{{ s.page.console | join("\\n") }}</pre>{% endif %}
</div>{% endif %}
</div>
</section>
{% endfor %}
<script type="application/json" id="chaosstream-data">{{ data_json }}</script>
<script type="application/json" id="chaosstream-specs">{{ specs_json }}</script>
<script>{{ bundle }}</script>
<script>
(function () {
  var specs = JSON.parse(document.getElementById("chaosstream-specs").textContent);
  var jobs = Object.keys(specs).map(function (id) {
    return vegaEmbed("#" + id, specs[id], {actions: false, renderer: "svg"});
  });
  Promise.all(jobs).then(function () { document.body.dataset.charts = String(jobs.length); },
    function (e) { console.error(e); document.body.dataset.charts = "error"; });
})();
</script>
</body>
</html>
"""
