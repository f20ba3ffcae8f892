"""What a person saw on a chat page, and the verdicts on it.

The browser driver (:mod:`chaosstream.clients.browser`) fills a
:class:`PageObservation`; this module judges it, so the verifier never needs
the driver.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from chaosstream.proxy.record import Exchange

__all__ = [
    "CANCEL_WITHIN_S",
    "PAGE_JUDGED",
    "PageObservation",
    "PageView",
    "api_exchanges",
    "judge_page",
    "page_flags",
    "page_observed",
    "page_signals",
    "shown_prefix",
]

CANCEL_WITHIN_S = 1.0
"""``cancels_upstream``: the proxy must see the upstream request closed this soon after Stop."""


@dataclass(slots=True)
class PageView:
    """What the page showed at one moment."""

    state: str
    """The output's ``data-state`` ("" when the page has none)."""
    text: str
    error_visible: bool
    error_text: str
    retry_visible: bool
    settled: bool
    """False when the page was still busy at the deadline."""


@dataclass(slots=True)
class PageObservation:
    """Everything the driver saw on one page run.

    ``*_ms`` times are page milliseconds since Send was clicked; ``stop_clicked``
    is on the monotonic clock the proxy uses, so it compares with exchange times.
    """

    url: str
    views: list[PageView] = field(default_factory=list)
    """The page once settled, and again after a Retry click when there was one."""
    typing_ms: float | None = None
    first_text_ms: float | None = None
    shifts: list[float] = field(default_factory=list)
    """Layout-shift values after Send, without those caused by recent input."""
    shift_ms: list[float] = field(default_factory=list)
    """When each of ``shifts`` happened, page milliseconds since Send (same order)."""
    stop_clicked: float | None = None
    stop_error: str = ""
    retry_clicked: bool = False
    console: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    error: str = ""
    """Why the page could not be driven at all ("" when it could)."""
    elements: dict[str, str] = field(default_factory=dict)
    """Which element played each part (input, send, output, error, typing, retry, stop) and
    why: a named selector, the reference page's test id, or what was found by role and text."""

    @property
    def first(self) -> PageView | None:
        """The page when it first settled after Send."""
        return self.views[0] if self.views else None

    @property
    def last(self) -> PageView | None:
        """The page at the end of the run."""
        return self.views[-1] if self.views else None

    @property
    def cls(self) -> float:
        """Cumulative layout shift while the answer streamed."""
        return sum(self.shifts)


def api_exchanges(exchanges: Sequence[Exchange]) -> list[Exchange]:
    """The model requests among a page run's exchanges (not the page, its script, its CSS,
    nor a CORS preflight: the browser's OPTIONS asking a cross-origin API for leave, Fetch
    standard 4.8, before a page on its own origin calls a provider directly)."""
    return [
        e for e in exchanges if e.method != "OPTIONS" and (e.method != "GET" or e.is_event_stream)
    ]


def _norm(text: str) -> str:
    return " ".join(text.split())


def shown_prefix(answer: str, text: str) -> int:
    """How many chars of ``answer`` from its start appear, in one piece, in ``text``
    (both whitespace-normalised): the part of the answer a person can read."""
    lo, hi = 0, len(answer)
    while lo < hi:  # containment of a prefix is monotonic in its length: bisect it
        mid = (lo + hi + 1) // 2
        if answer[:mid] in text:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _clip(text: str, n: int = 60) -> str:
    text = _norm(text)
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def _presented_complete(view: PageView) -> bool:
    # Without a data-state the page has only one way to say "not finished": its error notice.
    if view.state:
        return view.state == "complete"
    return not view.error_visible


def _shown(view: PageView) -> str:
    state = f"output state {view.state!r}, " if view.state else ""
    busy = "" if view.settled else " (still busy at the deadline)"
    return f"{state}{len(view.text)} chars shown{busy}"


def page_signals(
    obs: PageObservation, answer: str | None, exchanges: Sequence[Exchange] = ()
) -> dict[str, tuple[bool, str]]:
    """The page's ``completed``, ``surfaced_error`` and ``silent_truncation``, with evidence.

    ``completed`` is judged on the page at the end of the run (after a Retry
    click, if any); ``surfaced_error`` on the page when it first settled, the
    moment the failure was (or was not) shown.
    """
    first, last = obs.first, obs.last
    if first is None or last is None:
        why = f"the page could not be driven: {obs.error or 'no view'}"
        return {k: (False, why) for k in ("completed", "surfaced_error", "silent_truncation")}
    got = _norm(last.text)
    if answer is None:
        completed = (False, "the full answer is unknown: no complete upstream response was seen")
    else:
        # The rule (docs/web-app.md): the whole answer, whitespace runs as one space, is
        # contained in the output's text -- a page may put "AI: " or a name around it.
        want = _norm(answer)
        shown = shown_prefix(want, got)
        if got == want:
            completed = (True, f"rendered text equals the {len(want)}-char answer")
        elif shown == len(want):
            completed = (
                True,
                f"rendered text contains the whole {len(want)}-char answer "
                f"({len(got)} chars shown)",
            )
        elif shown:
            completed = (False, f"rendered {shown} of {len(want)} answer chars; {_shown(last)}")
        else:
            completed = (False, f"rendered text {_clip(got)} is not the answer {_clip(want)}")
    if not first.error_visible:
        surfaced = (False, f"no error visible; {_shown(first)}")
    elif _presented_complete(first):
        surfaced = (
            False,
            f"error visible but the output is presented as complete; {_shown(first)}",
        )
    else:
        surfaced = (True, f"error visible: {_clip(first.error_text)}; {_shown(first)}")
    # Truncated: short of the known answer, or no request ever delivered a whole one.
    short = answer is not None or not any(e.client_complete for e in api_exchanges(exchanges))
    silent = (
        not completed[0] and short and bool(got) and _presented_complete(last)
    ) and last.state != "stopped"
    of = f" of {len(_norm(answer))}" if answer is not None else ""
    truncation = (
        (True, f"the page shows {len(got)}{of} chars as if complete; no error visible")
        if silent
        else (False, "no")
    )
    return {"completed": completed, "surfaced_error": surfaced, "silent_truncation": truncation}


def page_observed(obs: PageObservation) -> dict[str, Any]:
    """The report's ``observed.page`` block: what a person saw."""
    first, last = obs.first, obs.last
    return {
        "url": obs.url,
        "state": last.state if last else None,
        "text_chars": len(last.text) if last else 0,
        "error_shown": first.error_text if first and first.error_visible else None,
        "retry_visible": bool(first and first.retry_visible),
        "retry_clicked": obs.retry_clicked,
        "typing_ms": _round(obs.typing_ms),
        "first_text_ms": _round(obs.first_text_ms),
        "cls": round(obs.cls, 4),
        "stop_clicked": obs.stop_clicked is not None,
        "driver_error": obs.error or None,
        "elements": dict(obs.elements),
    }


def page_flags(obs: PageObservation, stopped: str | None, pattern: str) -> tuple[bool, str]:
    """``flags_incomplete`` on a page: a stopped answer must be marked on screen -- an error
    notice, a non-complete ``data-state``, or words saying so -- never in the console."""
    last = obs.first
    if stopped is None:
        return False, "no answer was stopped short, so there was nothing to flag"
    if last is None:
        return False, f"answer stopped by {stopped}; the page could not be driven: {obs.error}"
    if last.error_visible:
        return True, f"answer stopped by {stopped}; the page shows {_clip(last.error_text)}"
    if last.state and last.state != "complete":
        return True, f"answer stopped by {stopped}; the output's state is {last.state!r}"
    found = re.search(pattern, last.text)
    if found is not None:
        return True, f"answer stopped by {stopped}; the page says {found.group(0)!r}"
    return False, (
        f"answer stopped by {stopped}, but the page shows it as a whole answer: {_clip(last.text)}"
    )


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def judge_page(
    name: str, options: BaseModel | None, obs: PageObservation, exchanges: Sequence[Exchange]
) -> tuple[bool, str]:
    """Judge a page-only expectation (:data:`PAGE_JUDGED`): ``(passed, evidence)``.

    ``exchanges`` are the proxy's records for the run. The others
    (``completes``, ``surfaces_error``, ``retries``, ...) are the verifier's,
    fed with :func:`page_signals`.
    """
    if name == "cancels_upstream":
        return _cancels_upstream(obs, api_exchanges(exchanges))
    if obs.error:
        return False, f"the page could not be driven: {obs.error}"
    if name == "shows_typing":
        return _shows_typing(obs)
    if name == "stable_layout":
        return _stable_layout(float(getattr(options, "max_cls", 0.1)), obs)
    raise ValueError(f"{name} is not a page-only expectation")


PAGE_JUDGED = ("shows_typing", "stable_layout", "cancels_upstream")
"""Expectations :func:`judge_page` decides for a page run."""


def _shows_typing(obs: PageObservation) -> tuple[bool, str]:
    text_at = obs.first_text_ms
    if obs.typing_ms is None:
        when = f"before the first text at {text_at:.0f} ms" if text_at is not None else "at all"
        return False, f"no typing indicator was visible {when} after Send"
    if text_at is None:
        return True, f"typing indicator visible {obs.typing_ms:.0f} ms after Send; no text followed"
    return True, (
        f"typing indicator visible {obs.typing_ms:.0f} ms after Send, "
        f"first text at {text_at:.0f} ms"
    )


def _stable_layout(limit: float, obs: PageObservation) -> tuple[bool, str]:
    cls, worst = obs.cls, max(obs.shifts, default=0.0)
    evidence = (
        f"cumulative layout shift {cls:.4f} over {len(obs.shifts)} shift(s), largest {worst:.4f}"
    )
    if cls < limit:
        return True, f"{evidence} < {limit:g}"
    return False, f"{evidence} >= {limit:g}"


def _cancels_upstream(obs: PageObservation, api: list[Exchange]) -> tuple[bool, str]:
    if obs.stop_clicked is None:
        return False, obs.stop_error or obs.error or "Stop was never clicked"
    clicked = obs.stop_clicked
    live = [e for e in api if e.started <= clicked and (e.ended is None or e.ended >= clicked)]
    if not live:
        return False, "no request was open when Stop was clicked"
    ex = live[-1]
    if ex.ended is None:
        return False, f"request #{ex.id} was still open {CANCEL_WITHIN_S:g}s after Stop"
    took = ex.ended - clicked
    if ex.outcome == "complete":
        return False, f"request #{ex.id} ran to completion {took:.2f}s after Stop"
    if took > CANCEL_WITHIN_S:
        return False, f"request #{ex.id} closed {took:.2f}s after Stop (> {CANCEL_WITHIN_S:g}s)"
    return True, f"request #{ex.id} closed upstream {took * 1000:.0f} ms after Stop ({ex.outcome})"
