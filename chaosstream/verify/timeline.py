"""What happened when, per scenario: the data behind the HTML report's timelines.

Every time is milliseconds since the scenario's first request (the origin of
``ttft_ms`` and ``ttft_shown_ms``), so lanes, fault markers, the client's
output and the verdicts' numbers line up. Sources:

- lanes and faults: the recorded exchanges and their fault log (``at_ms`` is
  since the exchange started);
- events delivered: the client's body split into SSE blocks, each stamped with
  the first body append that covered its last byte (``Body.times()``; the
  runner's recorder stamps, see :mod:`chaosstream.proxy.record`);
- the client's shown text: stdout's ``(time, characters)`` per pipe read
  (:class:`~chaosstream.verify.expectations.ClientRun`), or a page's DOM
  readings (Send, typing indicator, first text, the settled text);
- what of the answer is missing: :func:`~chaosstream.verify.expectations.align`.

Everything is bounded (events per lane, markers, output points, texts), so a
long or hostile run still makes a report of a few megabytes at most.
"""

from __future__ import annotations

import bisect
from typing import Any

from chaosstream._version import __version__
from chaosstream.proxy.record import Exchange
from chaosstream.streams.registry import framer_for, get
from chaosstream.verify.expectations import RETRY_AFTER_TOLERANCE_S, align, retry_hint
from chaosstream.verify.page import api_exchanges
from chaosstream.verify.report import fault_label, repro, repro_run
from chaosstream.verify.results import RunReport, ScenarioResult

__all__ = [
    "ANSWER_LIMIT",
    "EVENT_LIMIT",
    "MARKER_LIMIT",
    "OUTPUT_POINTS",
    "TEXT_LIMIT",
    "run_timeline",
    "scenario_timeline",
]

EVENT_LIMIT = 1000
"""Events drawn per lane; past it they are sampled evenly (first and last kept, count stated)."""
MARKER_LIMIT = 300
"""Fault markers per scenario (packet loss can fire on every segment)."""
OUTPUT_POINTS = 1000
"""Points of the client's output curve per scenario."""
ANSWER_LIMIT = 20_000
"""Characters of the expected answer shown with its gaps."""
TEXT_LIMIT = 4000
"""Characters of stdout (its end) and stderr shown per scenario."""


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 1)


def _sample(items: list[Any], limit: int) -> list[Any]:
    """At most ``limit`` items, evenly spread, the first and the last kept."""
    if len(items) <= limit:
        return items
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def _events(ex: Exchange, t0: float, lane: str) -> tuple[list[dict[str, Any]], int]:
    """The events the client was sent on ``ex`` with their delivery times; and their count."""
    body_obj = ex.client_chunks if ex.client_chunks is not None else ex.upstream_chunks
    stamps = body_obj.times()
    if not stamps:
        return [], 0
    kept = [n for _, n in stamps]

    def when(end: int) -> float | None:
        i = bisect.bisect_left(kept, end)
        return _ms(stamps[i][0] - t0) if i < len(stamps) else None

    body = bytes(body_obj)
    if not ex.is_event_stream:
        at = when(len(body))
        if not body or at is None:
            return [], 0
        return [{"lane": lane, "exchange": ex.id, "n": 1, "t_ms": at, "kind": "body"}], 1
    out: list[dict[str, Any]] = []
    end = 0
    # The format's own framing (SSE blocks, NDJSON lines), as the faults counted events.
    fmt = get(ex.provider)
    framer = framer_for(fmt)
    for raw in framer.splitter().feed(body):
        end += len(raw)
        if not framer.dispatches(raw):
            continue  # keep-alives and comments dispatch nothing (WHATWG HTML 9.2.6)
        at = when(end)
        if at is None:
            break  # past the stamps' cap: no honest time for the rest
        ev = framer.parse(raw, first=end == len(raw))
        if fmt.is_error(ev):
            kind = "error"
        elif fmt.is_terminal(ev):
            kind = "terminal"
        elif fmt.text(ev) is not None:
            kind = "token"
        else:
            kind = "other"
        out.append({"lane": lane, "exchange": ex.id, "n": len(out) + 1, "t_ms": at, "kind": kind})
    return _sample(out, EVENT_LIMIT), len(out)


def _segments(answer: str, shown_text: str) -> dict[str, Any]:
    """The answer cut into shown and missing pieces (alignment, whitespace ignored)."""
    cut = answer[:ANSWER_LIMIT]
    shown = align(cut, shown_text)
    pieces: list[dict[str, Any]] = []
    at = 0
    for gap in shown.gaps:
        lo = gap.at - 1
        if lo > at:
            pieces.append({"text": cut[at:lo], "missing": False})
        pieces.append({"text": gap.text, "missing": True})
        at = lo + len(gap.text)
    if at < len(cut):
        pieces.append({"text": cut[at:], "missing": False})
    return {
        "chars": len(answer),
        "cut": len(answer) > ANSWER_LIMIT,
        "shown": shown.shown,
        "total": shown.total,
        "complete": shown.complete,
        "summary": shown.describe(),
        "gaps": [{"at": g.at, "text": g.text, "to_end": g.to_end} for g in shown.gaps],
        "pieces": pieces,
    }


def scenario_timeline(result: ScenarioResult, upstream: str) -> dict[str, Any]:
    """One scenario's timeline: lanes, events, faults, waits, shown text, verdicts."""
    page = result.page
    judged = api_exchanges(result.exchanges) if page is not None else result.exchanges
    stdout_times = result.client.stdout_times
    if judged:
        t0 = judged[0].started
    elif stdout_times:
        t0 = stdout_times[0][0]
    else:
        t0 = 0.0
    fp = judged[0].fingerprint if judged else ""
    lanes: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    attempt = 0
    by_id: dict[int, dict[str, Any]] = {}
    for ex in judged:
        equivalent = ex.fingerprint == fp
        attempt += equivalent
        kind = "stream" if ex.stream else "non-stream"
        label = f"#{ex.id} " + (f"attempt {attempt}" if equivalent else "other") + f" · {kind}"
        delivered, count = _events(ex, t0, label)
        events += delivered
        start_ms = _ms(ex.started - t0)
        lane: dict[str, Any] = {
            "lane": label,
            "exchange": ex.id,
            "attempt": attempt if equivalent else None,
            "stream": ex.stream,
            "method": ex.method,
            "path": ex.path,
            "status": ex.status,
            "outcome": ex.outcome,
            "start_ms": start_ms,
            "end_ms": None if ex.ended is None else _ms(ex.ended - t0),
            "first_byte_ms": None if ex.first_byte is None else _ms(ex.first_byte - t0),
            "retry_after": ex.retry_after,
            "last_event_id": ex.last_event_id,
            "events": count,
            "events_drawn": len(delivered),
        }
        lanes.append(lane)
        by_id[ex.id] = lane
        for f in ex.faults:
            faults.append(
                {
                    "lane": label,
                    "exchange": ex.id,
                    "t_ms": round(start_ms + f.at_ms, 1),
                    "type": f.type,
                    "action": f.action,
                    "detail": f.detail,
                    "events": f.events,
                    "label": fault_label(f),
                    "trigger": f.trigger,
                }
            )
    waits = []
    group = [ex for ex in judged if ex.fingerprint == fp]
    for i, prev in enumerate(group):
        hint = retry_hint(prev)
        if hint is None:
            continue
        wait, header = hint
        nxt = group[i + 1] if i + 1 < len(group) else None
        start = _ms((prev.ended or prev.started) - t0)
        actual = None if nxt is None else _ms(nxt.started - t0)
        waits.append(
            {
                "lane": by_id[prev.id]["lane"],
                "exchange": prev.id,
                "next": None if nxt is None else nxt.id,
                "from_ms": start,
                "retry_after_ms": round(start + wait * 1000.0, 1),
                "next_ms": actual,
                "waited_ms": None if actual is None else round(actual - start, 1),
                "label": f"{header.split(' ', 1)[0]} {wait:g} s: "
                + (
                    "no retry"
                    if actual is None
                    else f"retried after {(actual - start) / 1000:.2f} s"
                ),
                # The verifier's tolerance; no retry at all waited long enough.
                "respected": actual is None
                or (actual - start) / 1000.0 >= wait - RETRY_AFTER_TOLERANCE_S,
            }
        )
    if page is not None:
        last = page.last
        shown_text = last.text if last is not None else ""
        # Page times are since Send, which the runner arms right before: about the first request.
        output = [{"t_ms": 0.0, "chars": 0, "what": "Send clicked"}]
        if page.typing_ms is not None:
            output.append({"t_ms": round(page.typing_ms, 1), "chars": 0, "what": "typing shown"})
        if page.first_text_ms is not None:
            output.append({"t_ms": round(page.first_text_ms, 1), "chars": 1, "what": "first text"})
        settled = max(lane["end_ms"] or lane["start_ms"] for lane in lanes) if lanes else 0.0
        output.append({"t_ms": settled, "chars": len(shown_text), "what": "settled text"})
        source = "page"
    else:
        shown_text = result.client.stdout
        output = [
            {"t_ms": _ms(t - t0), "chars": n, "what": "stdout"}
            for t, n in _sample(stdout_times, OUTPUT_POINTS)
        ]
        source = "stdout"
    obs = result.observed
    return {
        "name": result.name,
        "profile": result.profile,
        "seed": result.seed,
        "passed": result.passed,
        "repro": repro(result, upstream),
        "ttft_ms": obs.ttft_ms,
        "ttft_shown_ms": obs.ttft_shown_ms,
        "attempts": obs.attempts,
        "exit_code": obs.exit_code,
        "timed_out": result.client.timed_out,
        "duration_ms": _ms(result.client.duration_s),
        "expectations": [v.as_dict() for v in result.verdicts],
        "lanes": lanes,
        "events": events,
        "faults": _sample(faults, MARKER_LIMIT),
        "faults_total": len(faults),
        "waits": waits,
        "output": output,
        "output_source": source,
        "answer": None if result.answer is None else _segments(result.answer, shown_text),
        "shown_text": shown_text[-TEXT_LIMIT:],
        "stderr": result.client.stderr[-TEXT_LIMIT:],
        "page": None
        if page is None
        else {
            "url": page.url,
            "cls": round(page.cls, 4),
            "shifts": [round(s, 5) for s in page.shifts[:MARKER_LIMIT]],
            "shift_trace": _shift_trace(page.shifts, page.shift_ms),
            "typing_ms": page.typing_ms,
            "first_text_ms": page.first_text_ms,
            "screenshot": bool(page.screenshot),
            "console": page.console[-50:],
        },
    }


def _shift_trace(values: list[float], at_ms: list[float]) -> list[dict[str, float]]:
    """Each layout shift with its time since Send and the cumulative layout shift so far."""
    trace, total = [], 0.0
    for value, ms in list(zip(values, at_ms, strict=False))[:MARKER_LIMIT]:
        total += value
        trace.append({"ms": round(ms, 1), "value": round(value, 5), "cls": round(total, 5)})
    return trace


def run_timeline(report: RunReport) -> dict[str, Any]:
    """The whole report's data: run facts, the summary grid, one timeline per scenario."""
    scenarios = [scenario_timeline(r, report.upstream) for r in report.results]
    for scenario, r in zip(scenarios, report.results, strict=True):
        scenario["repro_run"] = repro_run(r, report)
    names: list[str] = []
    for r in report.results:
        names += [v.name for v in r.verdicts if v.name not in names]
    return {
        "tool": "chaosstream",
        "version": __version__,
        "seed": report.seed,
        "upstream": report.upstream,
        "passed": report.passed,
        "interrupted": report.interrupted,
        "expectation_names": names,
        "scenarios": scenarios,
    }
