"""Page verdicts on hand-built observations: what a person saw, judged without a browser."""

from __future__ import annotations

import pytest

from chaosstream.proxy.record import Exchange
from chaosstream.verify.page import (
    CANCEL_WITHIN_S,
    PAGE_JUDGED,
    PageObservation,
    PageView,
    api_exchanges,
    judge_page,
    page_flags,
    page_observed,
    page_signals,
    shown_prefix,
)
from chaosstream.verify.scenario import StableLayoutOptions

ANSWER = "Streams break on mobile networks because radios sleep."


def view(
    text: str,
    state: str = "complete",
    *,
    error: str = "",
    retry: bool = False,
    settled: bool = True,
) -> PageView:
    """One settled look at the page; ``error`` non-empty means the notice is visible."""
    return PageView(
        state=state,
        text=text,
        error_visible=bool(error),
        error_text=error,
        retry_visible=retry,
        settled=settled,
    )


def obs(*views: PageView, **kw: object) -> PageObservation:
    return PageObservation("http://127.0.0.1:9/", list(views), **kw)  # type: ignore[arg-type]


def chat(
    i: int, started: float, ended: float | None, outcome: str = "complete", done: bool = True
) -> Exchange:
    """A streamed chat request the proxy recorded (ended None: still open)."""
    ex = Exchange(
        id=i,
        method="POST",
        path="/v1/chat/completions",
        provider="openai",
        stream=True,
        started=started,
        status=200,
        content_type="text/event-stream",
        first_byte=started + 0.01,
        ended=ended,
        outcome=outcome,  # type: ignore[arg-type]
    )
    ex.upstream_chunks.append(
        b'data: {"choices":[{"delta":{"content":"hi"}}]}\n\n'
        + (b"data: [DONE]\n\n" if done else b"")
    )
    return ex


def asset(i: int, path: str) -> Exchange:
    """The page itself, its script or its stylesheet: a plain GET."""
    return Exchange(
        id=i,
        method="GET",
        path=path,
        provider="sse",
        stream=False,
        started=0.0,
        status=200,
        content_type="text/html",
        ended=0.01,
        outcome="complete",
    )


# --- page_signals ---------------------------------------------------------------------------


def test_full_answer_rendered_is_complete_and_nothing_else() -> None:
    """The answer on the page (whitespace aside) completes; no error, no truncation."""
    text = "  Streams break on mobile\nnetworks because radios sleep. "
    signals = page_signals(obs(view(text)), ANSWER)
    assert signals == {
        "completed": (True, f"rendered text equals the {len(ANSWER)}-char answer"),
        "surfaced_error": (
            False,
            f"no error visible; output state 'complete', {len(text)} chars shown",
        ),
        "silent_truncation": (False, "no"),
    }


def test_partial_text_shown_as_complete_is_silent_truncation() -> None:
    """A prefix of the answer under a `complete` state and no error is a silent truncation."""
    signals = page_signals(obs(view("Streams break")), ANSWER)
    n = len(ANSWER)
    assert signals["completed"] == (
        False,
        f"rendered 13 of {n} answer chars; output state 'complete', 13 chars shown",
    )
    assert signals["silent_truncation"] == (
        True,
        f"the page shows 13 of {n} chars as if complete; no error visible",
    )
    assert not signals["surfaced_error"][0]


def test_error_with_an_unfinished_state_surfaces_the_failure() -> None:
    """An error notice and an `error` state surface the failure: not a truncation."""
    signals = page_signals(obs(view("Streams break", "error", error="Network error")), ANSWER)
    assert signals["surfaced_error"] == (
        True,
        "error visible: 'Network error'; output state 'error', 13 chars shown",
    )
    assert signals["silent_truncation"] == (False, "no")


def test_error_next_to_a_complete_state_is_not_surfacing() -> None:
    """An error notice while the output still says `complete` contradicts itself: no surfacing."""
    signals = page_signals(obs(view("Streams break", error="Oops")), ANSWER)
    assert signals["surfaced_error"] == (
        False,
        "error visible but the output is presented as complete; "
        "output state 'complete', 13 chars shown",
    )


def test_without_a_data_state_the_error_notice_decides() -> None:
    """A page with no data-state is unfinished exactly when its error notice shows."""
    failed = page_signals(obs(view("Streams", "", error="Failed", settled=False)), ANSWER)
    assert failed["surfaced_error"] == (
        True,
        "error visible: 'Failed'; 7 chars shown (still busy at the deadline)",
    )
    assert not failed["silent_truncation"][0]
    quiet = page_signals(obs(view("Streams", "")), ANSWER)
    assert quiet["silent_truncation"][0] and quiet["surfaced_error"] == (
        False,
        "no error visible; 7 chars shown",
    )


def test_stopped_output_is_never_a_silent_truncation() -> None:
    """Partial text the user stopped (state `stopped`) is what they asked for, not a lie."""
    signals = page_signals(obs(view("Streams break", "stopped")), ANSWER)
    assert signals["silent_truncation"] == (False, "no")
    assert not signals["completed"][0]


def test_completed_is_judged_at_the_end_and_surfacing_at_first_settle() -> None:
    """Error first, then the full answer after a Retry click: surfaced and completed both."""
    page = obs(view("Str", "error", error="Cut", retry=True), view(ANSWER), retry_clicked=True)
    signals = page_signals(page, ANSWER)
    assert signals["completed"][0] and signals["surfaced_error"][0]
    assert not signals["silent_truncation"][0]


def test_text_that_is_not_the_answer_is_quoted_short() -> None:
    """Different text is quoted, cut to 60 characters, next to the wanted answer."""
    signals = page_signals(obs(view("x" * 100)), ANSWER)
    completed, evidence = signals["completed"]
    assert not completed
    assert evidence == f"rendered text {'x' * 59 + '…'!r} is not the answer {ANSWER!r}"


def test_unknown_answer_is_truncation_only_without_a_whole_response() -> None:
    """Answer unknown: shown text is a truncation unless some request delivered a whole one."""
    page = obs(view("Streams break"))
    cut = page_signals(page, None, [chat(1, 0.0, 0.5, "fault", done=False)])
    assert cut["completed"] == (
        False,
        "the full answer is unknown: no complete upstream response was seen",
    )
    assert cut["silent_truncation"] == (
        True,
        "the page shows 13 chars as if complete; no error visible",
    )
    whole = page_signals(page, None, [chat(1, 0.0, 0.5)])
    assert whole["silent_truncation"] == (False, "no")


def test_a_page_that_could_not_be_driven_fails_every_signal() -> None:
    """No view at all: every signal is false with the driver's reason."""
    signals = page_signals(obs(error="Chromium crashed"), ANSWER)
    why = "the page could not be driven: Chromium crashed"
    assert signals == {
        k: (False, why) for k in ("completed", "surfaced_error", "silent_truncation")
    }
    assert page_signals(obs(), ANSWER)["completed"] == (
        False,
        "the page could not be driven: no view",
    )


# --- page_observed ---------------------------------------------------------------------------


def test_observed_block_says_what_a_person_saw() -> None:
    """The report's `page` block: last state and text, the first error, times rounded."""
    page = obs(
        view("Str", "error", error="Connection lost", retry=True),
        view(ANSWER),
        typing_ms=41.26,
        first_text_ms=250.04,
        shifts=[0.01234, 0.02],
        retry_clicked=True,
    )
    assert page_observed(page) == {
        "url": "http://127.0.0.1:9/",
        "state": "complete",
        "text_chars": len(ANSWER),
        "error_shown": "Connection lost",
        "retry_visible": True,
        "retry_clicked": True,
        "typing_ms": 41.3,
        "first_text_ms": 250.0,
        "cls": 0.0323,
        "stop_clicked": False,
        "driver_error": None,
        "elements": {},
    }
    empty = page_observed(obs(error="no Chromium"))
    assert (empty["state"], empty["text_chars"], empty["error_shown"], empty["typing_ms"]) == (
        None,
        0,
        None,
        None,
    )
    assert empty["driver_error"] == "no Chromium"


# --- judge_page ------------------------------------------------------------------------------


def test_typing_indicator_before_the_first_text() -> None:
    """shows_typing passes with the indicator's time; fails naming when the text came."""
    seen = obs(view(ANSWER), typing_ms=40.4, first_text_ms=300.0)
    assert judge_page("shows_typing", None, seen, []) == (
        True,
        "typing indicator visible 40 ms after Send, first text at 300 ms",
    )
    never = obs(view(ANSWER), first_text_ms=300.0)
    assert judge_page("shows_typing", None, never, []) == (
        False,
        "no typing indicator was visible before the first text at 300 ms after Send",
    )
    nothing = obs(view(""))
    assert judge_page("shows_typing", None, nothing, []) == (
        False,
        "no typing indicator was visible at all after Send",
    )


def test_stable_layout_against_the_default_and_a_set_limit() -> None:
    """CLS 0.08 passes the default 0.1 and fails a 0.05 limit, with the shifts as evidence."""
    page = obs(view(ANSWER), shifts=[0.03, 0.05])
    evidence = "cumulative layout shift 0.0800 over 2 shift(s), largest 0.0500"
    assert judge_page("stable_layout", None, page, []) == (True, f"{evidence} < 0.1")
    strict = StableLayoutOptions(max_cls=0.05)
    assert judge_page("stable_layout", strict, page, []) == (False, f"{evidence} >= 0.05")


def test_an_undriven_page_fails_typing_and_layout() -> None:
    """A driver error fails the page-only checks with its reason (no CLS of 0 passes)."""
    broken = obs(error="page did not load")
    for name in ("shows_typing", "stable_layout"):
        assert judge_page(name, None, broken, []) == (
            False,
            "the page could not be driven: page did not load",
        )


def test_stop_closes_the_open_request_soon_enough() -> None:
    """The request open at Stop, closed 200 ms later by the client, passes cancels_upstream."""
    page = obs(view("Str", "stopped"), stop_clicked=10.1)
    ex = [asset(1, "/"), chat(2, 10.0, 10.3, "client_gone")]
    assert judge_page("cancels_upstream", None, page, ex) == (
        True,
        "request #2 closed upstream 200 ms after Stop (client_gone)",
    )


@pytest.mark.parametrize(
    ("ended", "outcome", "why"),
    [
        (None, "pending", f"request #2 was still open {CANCEL_WITHIN_S:g}s after Stop"),
        (10.5, "complete", "request #2 ran to completion 0.40s after Stop"),
        (11.6, "client_gone", f"request #2 closed 1.50s after Stop (> {CANCEL_WITHIN_S:g}s)"),
    ],
)
def test_stop_that_does_not_close_upstream_fails(
    ended: float | None, outcome: str, why: str
) -> None:
    """Still open, run to completion, or closed too late: cancels_upstream fails, saying which."""
    page = obs(view("Str", "stopped"), stop_clicked=10.1)
    assert judge_page("cancels_upstream", None, page, [chat(2, 10.0, ended, outcome)]) == (
        False,
        why,
    )


def test_stop_never_clicked_or_nothing_open() -> None:
    """No Stop (the driver's reason wins), or no request open at the click: fail with why."""
    no_button = obs(view(ANSWER), stop_error="no Stop control")
    assert judge_page("cancels_upstream", None, no_button, []) == (False, "no Stop control")
    assert judge_page("cancels_upstream", None, obs(view(ANSWER)), []) == (
        False,
        "Stop was never clicked",
    )
    late = obs(view(ANSWER), stop_clicked=20.0)
    assert judge_page("cancels_upstream", None, late, [chat(1, 10.0, 10.5)]) == (
        False,
        "no request was open when Stop was clicked",
    )


def test_only_page_expectations_are_judged_here() -> None:
    """judge_page decides exactly PAGE_JUDGED; any other name is a programming error."""
    assert PAGE_JUDGED == ("shows_typing", "stable_layout", "cancels_upstream")
    with pytest.raises(ValueError, match="completes is not a page-only expectation"):
        judge_page("completes", None, obs(view(ANSWER)), [])


def test_api_exchanges_leave_out_the_page_and_its_assets() -> None:
    """Model requests are the non-GETs and the event streams; the page's GETs are not."""
    stream_get = chat(4, 1.0, 2.0)
    stream_get.method = "GET"
    records = [asset(1, "/"), asset(2, "/chat.js"), chat(3, 0.5, 0.9), stream_get]
    assert [e.id for e in api_exchanges(records)] == [3, 4]


def test_api_exchanges_leave_out_cors_preflights() -> None:
    """A cross-origin page's OPTIONS preflight before its chat request is not a model request."""
    preflight = asset(2, "/v1/chat/completions")
    preflight.method, preflight.status, preflight.content_type = "OPTIONS", 204, ""
    records = [asset(1, "/"), preflight, chat(3, 0.5, 0.9)]
    assert [e.id for e in api_exchanges(records)] == [3]


# --- pages without our test ids (issue 23) ---------------------------------------------------


def test_answer_inside_a_labelled_message_completes() -> None:
    """The docs' page writes "AI: " before the answer in the same element: still complete."""
    text = f"User: why?\n AI:  {ANSWER}\n"
    completed = page_signals(obs(view(text, "")), ANSWER)["completed"]
    assert completed == (
        True,
        f"rendered text contains the whole {len(ANSWER)}-char answer "
        f"({len(' '.join(text.split()))} chars shown)",
    )


def test_labelled_partial_answer_shown_as_final_is_silent_truncation() -> None:
    """A labelled block holding only the answer's start, nothing else shown, is truncated."""
    signals = page_signals(obs(view("AI: Streams break on mobile", "")), ANSWER)
    assert signals["completed"] == (
        False,
        f"rendered 23 of {len(ANSWER)} answer chars; 27 chars shown",
    )
    assert signals["silent_truncation"][0] is True


def test_shown_prefix_measures_the_readable_start_of_the_answer() -> None:
    """The longest start of the answer found in one piece in the text, in chars."""
    assert shown_prefix("abcdef", "AI: abc") == 3
    assert shown_prefix("abcdef", "xx abcdef yy") == 6
    assert shown_prefix("abcdef", "bcdef") == 0


def test_flags_incomplete_on_a_page_reads_the_screen_not_the_console() -> None:
    """A stopped answer is flagged by an error notice, a non-complete state or words shown."""
    assert page_flags(obs(view("Str", "")), "length", "(?i)cut off")[0] is False
    assert page_flags(obs(view("Str", "", error="Answer cut off")), "length", "x")[0] is True
    assert page_flags(obs(view("Str", "incomplete")), "length", "x")[0] is True
    assert page_flags(obs(view("Str (cut off)", "")), "length", "(?i)cut off")[0] is True
    assert page_flags(obs(view(ANSWER)), None, "x") == (
        False,
        "no answer was stopped short, so there was nothing to flag",
    )
