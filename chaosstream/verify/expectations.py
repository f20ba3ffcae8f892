"""The verifier: what the client did under a profile, and whether that meets expectations.

Input is one scenario's evidence -- the exchanges the proxy recorded, the
client's exit code and output, what the mock saw -- and the output is the
``observed`` block of the report plus one verdict per expectation, each with
evidence a person can follow (exchange ids, times, gaps, what was printed).
Rules: DESIGN.md, "Verdict words".
"""

from __future__ import annotations

import bisect
import difflib
import email.utils
import itertools
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from chaosstream.faults.profile import Profile
from chaosstream.proxy.record import Exchange
from chaosstream.verify.scenario import (
    INCOMPLETE_WORDS,
    CompletesOptions,
    ErrorSignal,
    Expect,
    FlagsIncompleteOptions,
    RetriesOptions,
)

if TYPE_CHECKING:
    from chaosstream.verify.page import PageObservation

__all__ = [
    "ALIGN_LIMIT_CHARS",
    "RESILIENT",
    "RETRY_AFTER_TOLERANCE_S",
    "ClientRun",
    "Evidence",
    "Gap",
    "Observed",
    "Shown",
    "Verdict",
    "align",
    "evaluate",
    "main_request",
    "observe",
    "retry_hint",
    "shown_fraction",
]

RETRY_AFTER_TOLERANCE_S = 0.05
"""A retry this much sooner than Retry-After still counts as waiting (clock granularity)."""
DEFAULT_MAX_ATTEMPTS = 5
ALIGN_LIMIT_CHARS = 50_000
"""Output characters (whitespace aside) aligned with the answer. difflib's cost grows with
output x answer, so a client printing megabytes is judged on this many characters from where
the answer's beginning first shows (or its last ones when it never does)."""
MIN_BLOCK = 4
"""Shortest run of characters that counts as shown: a lone letter of an error message
lining up with the answer is chance, not the answer."""
RESILIENT = "resilient"
"""The `check` battery's rule: completes or surfaces the error, never truncates
silently, never storms, never retries before Retry-After."""


@dataclass(slots=True)
class ClientRun:
    """What the client process did."""

    command: list[str]
    exit_code: int | None
    """None when it was killed at the scenario's timeout."""
    timed_out: bool
    stdout: str
    stderr: str
    duration_s: float
    stdout_times: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic time, characters of stdout received by then), one per read of the pipe."""


@dataclass(slots=True)
class Evidence:
    """Everything one scenario produced, for the verifier."""

    client: ClientRun
    exchanges: list[Exchange]
    answer: str | None
    """The full answer upstream produced for the client's request, when known."""
    mock_closed_early: int | None = None
    """Upstream streams the mock saw abandoned during the scenario (None: not the mock)."""
    error_signal: ErrorSignal | None = None
    page: PageObservation | None = None
    """A browser client's run: the page's signals replace the exit code's."""
    profile: Profile | None = None
    """The scenario's profile: whether it has faults the client had to meet (None: unknown)."""


@dataclass(slots=True)
class Verdict:
    """One expectation's outcome."""

    name: str
    verdict: Literal["pass", "fail"]
    evidence: str

    def as_dict(self) -> dict[str, Any]:
        """The report's form."""
        return {"name": self.name, "verdict": self.verdict, "evidence": self.evidence}


@dataclass(slots=True)
class Observed:
    """What the client did, whatever was expected (the report's ``observed`` block)."""

    attempts: int
    retried: bool
    fell_back: bool
    resumed: bool
    completed: bool
    surfaced_error: bool
    silent_truncation: bool
    respected_retry_after: bool
    exit_code: int | None
    ttft_ms: float | None
    ttft_shown_ms: float | None = None
    """When the first answer text reached the user (stdout or page), since the first request."""
    fault_met: bool | None = None
    """A fault of the profile fired on the client's traffic; None when the profile has none."""
    faults: list[dict[str, Any]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    """Evidence sentences behind each flag, for verdicts (not in the JSON block)."""
    page: dict[str, Any] | None = None
    """What a browser client's page showed (see chaosstream.clients.browser.page_observed)."""
    artifacts: dict[str, str] = field(default_factory=dict)
    """Files saved for a failed page scenario: screenshot, console log."""
    stopped: str | None = None
    """How the last attempt's answer was stopped short (``length``, ``content_filter``,
    ``refusal``, ``empty``: the ``content`` fault), or None (not in the JSON block)."""
    flagged_incomplete: bool = False
    """The client told its user the answer is not whole (output words or exit code)."""

    def as_dict(self) -> dict[str, Any]:
        """The report's ``observed`` block: exactly the contract's keys."""
        return {
            "attempts": self.attempts,
            "retried": self.retried,
            "fell_back": self.fell_back,
            "resumed": self.resumed,
            "completed": self.completed,
            "surfaced_error": self.surfaced_error,
            "silent_truncation": self.silent_truncation,
            "respected_retry_after": self.respected_retry_after,
            "exit_code": self.exit_code,
            "ttft_ms": self.ttft_ms,
            "ttft_shown_ms": self.ttft_shown_ms,
            "fault_met": self.fault_met,
            "faults": self.faults,
            **({"page": self.page} if self.page is not None else {}),
            **({"artifacts": self.artifacts} if self.artifacts else {}),
        }


_SPACE = re.compile(r"\s+")


def _squash(text: str) -> tuple[str, list[int]]:
    # Whitespace is layout (wrapping, indentation, a newline per token), not content;
    # keep where each remaining character stood so evidence can point into the original.
    keep = [i for i, ch in enumerate(text) if not ch.isspace()]
    return "".join(text[i] for i in keep), keep


class Gap(NamedTuple):
    """A piece of the answer the output does not show."""

    at: int
    """1-based character position in the answer."""
    text: str
    to_end: bool
    """Nothing of the answer after it is shown: the output stops here."""


@dataclass(frozen=True, slots=True)
class Shown:
    """How much of the answer an output shows, by alignment (whitespace ignored)."""

    shown: int
    """Answer characters found in the output, in order."""
    total: int
    """Answer characters (whitespace aside)."""
    gaps: list[Gap]
    """What of the answer is missing, in answer order."""
    first_at: int | None
    """Index in the output where the answer text begins, or None when none is shown."""

    @property
    def complete(self) -> bool:
        """Every answer character is shown."""
        return self.total > 0 and self.shown == self.total

    def describe(self, limit: int = 3) -> str:
        """E.g. "180 of 183 characters shown; ' and' missing at character 57"."""
        head = f"{self.shown} of {self.total} characters shown"
        if self.shown == 0 or not self.gaps:
            return head
        parts = [
            f"{_quote(gap.text)} missing "
            + (f"from character {gap.at} to the end" if gap.to_end else f"at character {gap.at}")
            for gap in self.gaps[:limit]
        ]
        more = len(self.gaps) - limit
        return "; ".join([head, *parts]) + (f"; and {more} more gap(s)" if more > 0 else "")


def _quote(text: str, limit: int = 40) -> str:
    text = text.replace("\n", " ")
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def align(answer: str, output: str) -> Shown:
    """Line ``output`` up with ``answer`` (difflib) and say what of the answer it shows.

    Labels, prefixes and decorations around the text do not count against it,
    nor does whitespace; a missing word is found wherever it is.
    """
    want, want_pos = _squash(answer)
    have, have_pos = _squash(output)
    if not want:
        return Shown(0, 0, [], None)
    head = want[: min(len(want), 8)]
    begin = have.find(head)
    start = begin if begin >= 0 else max(0, len(have) - ALIGN_LIMIT_CHARS)
    window = have[start : start + ALIGN_LIMIT_CHARS]
    if want in window:  # the usual case, without difflib's quadratic work
        at = window.index(want)
        blocks = [(at, 0, len(want))]
    else:
        matcher = difflib.SequenceMatcher(None, window, want, autojunk=False)
        least = min(MIN_BLOCK, len(want))
        blocks = [(a, b, n) for a, b, n in matcher.get_matching_blocks() if n >= least]
    shown = sum(n for _, _, n in blocks)
    gaps: list[Gap] = []
    covered = 0
    for _, b, n in [*blocks, (0, len(want), 0)]:
        if b > covered:
            lo, hi = want_pos[covered], want_pos[b - 1] + 1
            while lo > 0 and answer[lo - 1].isspace():
                lo -= 1  # " and": the word with the space before it, as it reads
            gaps.append(Gap(lo + 1, answer[lo:hi], b == len(want)))
        covered = max(covered, b + n)
    first = begin if begin >= 0 else (start + blocks[0][0] if blocks else None)
    return Shown(shown, len(want), gaps, None if first is None else have_pos[first])


def shown_fraction(answer: str, stdout: str) -> tuple[int, int]:
    """(answer characters ``stdout`` shows, answer characters), by :func:`align`."""
    result = align(answer, stdout)
    return result.shown, result.total


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s"


def _describe(ex: Exchange) -> str:
    what = "stream" if ex.stream else "non-stream"
    status = ex.status if ex.status is not None else "-"
    fired = ",".join(f"{f.type}:{f.action}" for f in ex.faults)
    return f"#{ex.id} {what} {status} {ex.outcome}" + (f" [{fired}]" if fired else "")


def retry_hint(ex: Exchange) -> tuple[float, str] | None:
    """The wait this exchange's response asked for, and the header that said so.

    Read as the Stainless SDKs read it (openai-python / anthropic-python
    ``_base_client.py``, ``_parse_retry_after_header``): ``retry-after-ms``
    first, at millisecond precision, then ``Retry-After`` as delay-seconds,
    then as an HTTP-date, which counts from when the response was sent.
    """
    if ex.retry_after_ms is not None:
        try:
            wait = max(0.0, float(ex.retry_after_ms) / 1000.0)
            return wait, f"retry-after-ms {ex.retry_after_ms}"
        except ValueError:
            pass
    value = ex.retry_after
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip())), f"Retry-After {value}"
    except ValueError:
        pass
    try:
        at = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    sent = ex.wall + ((ex.first_byte or ex.started) - ex.started)
    return max(0.0, at - sent), f"Retry-After {value!r} (an HTTP-date)"


def _tail(text: str, limit: int = 160) -> str:
    text = text.strip().replace("\n", " | ")
    return text if len(text) <= limit else "..." + text[-limit:]


def _damaged(ex: Exchange) -> str:
    """The corrupt action that spoiled this stream's content, or "" (none did).

    A malformed, dropped, doubled, reordered or mangled event leaves the client
    without the upstream's answer even when every byte up to the terminal event
    arrived (a short stream is often all in the client's socket before it stops
    reading): the stream failed for the client, so a non-streaming request after
    it is a fallback. `split` is not damage: a correct SSE parser joins the halves.
    """
    for f in ex.faults:
        if f.type == "corrupt" and f.action != "split":
            return f"corrupt {f.action}"
    return ""


def main_request(exchanges: list[Exchange]) -> Exchange | None:
    """The client's request: the first one, or in a session protocol the first that streams.

    An MCP client opens with ``initialize`` (and lists tools) before the
    ``tools/call`` whose result is the answer; those set-up requests are not
    the request a scenario judges.
    """
    if not exchanges:
        return None
    first = exchanges[0]
    if first.provider == "mcp":
        return next((e for e in exchanges if e.stream and e.method == "POST"), first)
    return first


def _main_group(exchanges: list[Exchange]) -> list[Exchange]:
    """The client's request and its equivalents (see :func:`main_request`)."""
    first = main_request(exchanges)
    if first is None:
        return []
    fp = first.fingerprint
    return [e for e in exchanges if e.fingerprint == fp]


def _surfaced(client: ClientRun, signal: ErrorSignal | None) -> tuple[bool, str]:
    if client.timed_out:
        return (
            False,
            f"client hung: killed after {_fmt_s(client.duration_s)} (a hang is not an error)",
        )
    if signal is None:
        ok = client.exit_code != 0
        why = f"exit code {client.exit_code}"
        if client.stderr.strip():
            why += f", stderr: {_tail(client.stderr)!r}"
        return ok, why
    checks: list[tuple[bool, str]] = []
    if signal.exit_code is not None:
        checks.append((client.exit_code == signal.exit_code, f"exit code {client.exit_code}"))
    if signal.stderr_regex is not None:
        found = re.search(signal.stderr_regex, client.stderr, re.MULTILINE) is not None
        checks.append((found, f"stderr {'matches' if found else 'lacks'} /{signal.stderr_regex}/"))
    if signal.stdout_regex is not None:
        found = re.search(signal.stdout_regex, client.stdout, re.MULTILINE) is not None
        checks.append((found, f"stdout {'matches' if found else 'lacks'} /{signal.stdout_regex}/"))
    if not checks:
        checks.append((client.exit_code != 0, f"exit code {client.exit_code}"))
    return all(ok for ok, _ in checks), ", ".join(why for _, why in checks)


def _ttft_ms(exchanges: list[Exchange]) -> float | None:
    # What the user waited: from the first request to the first byte of a
    # successful answer, across retries.
    if not exchanges:
        return None
    start = exchanges[0].started
    for ex in exchanges:
        if ex.first_byte is not None and ex.status is not None and 200 <= ex.status < 300:
            return round((ex.first_byte - start) * 1000.0, 1)
    return None


def _ttft_shown_ms(ev: Evidence, shown: Shown | None) -> float | None:
    # What the user waited for the first answer text: from the first request to
    # the pipe read that brought it (the page measures its own, from Send).
    if ev.page is not None:
        first_text = ev.page.first_text_ms
        return None if first_text is None else round(first_text, 1)
    if not ev.exchanges or shown is None or shown.first_at is None:
        return None
    times = ev.client.stdout_times
    i = bisect.bisect_right(times, shown.first_at, key=lambda stamp: stamp[1])
    if i >= len(times):
        return None
    return round((times[i][0] - ev.exchanges[0].started) * 1000.0, 1)


def _has_faults(profile: Profile | None) -> bool:
    # Network conditions count: they act on every exchange and say so when they do.
    return profile is not None and bool(profile.all_faults())


def observe(ev: Evidence) -> Observed:
    """Compute the ``observed`` block and the notes behind it."""
    client = ev.client
    group = _main_group(ev.exchanges)
    notes: dict[str, str] = {}
    position = {ex.id: i + 1 for i, ex in enumerate(ev.exchanges)}

    attempts = len(group)
    notes["attempts"] = (
        f"{attempts} equivalent request(s): " + "; ".join(_describe(e) for e in group)
        if group
        else "the client sent no request through the proxy"
    )

    # Fallback: a non-streaming equivalent after a failed streaming one.
    fell_back = False
    for i, ex in enumerate(group):
        if ex.stream and (ex.failed or _damaged(ex)):
            later = next((e for e in group[i + 1 :] if not e.stream), None)
            if later is not None:
                fell_back = True
                how = ex.outcome if ex.failed else f"{_damaged(ex)}, terminal event delivered"
                notes["fell_back"] = (
                    f"streaming #{ex.id} failed ({how}); non-streaming #{later.id} "
                    f"followed {_fmt_s(later.started - (ex.ended or ex.started))} later"
                )
                break
    notes.setdefault("fell_back", "no non-streaming request followed a failed stream")

    # Resume: a reconnect carries the id of the last event the client was sent.
    resumed = False
    for prev, nxt in itertools.pairwise(group):
        want = prev.delivered_event_id
        if want and nxt.last_event_id == want:
            resumed = True
            notes["resumed"] = (
                f"#{nxt.id} sent Last-Event-ID {want!r}, the last event #{prev.id} delivered"
            )
            break
        if nxt.last_event_id:
            notes["resumed"] = (
                f"#{nxt.id} sent Last-Event-ID {nxt.last_event_id!r} but #{prev.id} last "
                f"delivered {want!r}"
            )
    if not resumed:
        # MCP resumes a POST's stream with a GET on the endpoint (Streamable HTTP,
        # 2025-11-25, "Resumability and Redelivery"): not an equivalent request.
        for prev in group:
            want = prev.delivered_event_id
            found = next(
                (
                    e
                    for e in ev.exchanges
                    if e.started >= prev.started
                    and e.id != prev.id
                    and e.method == "GET"
                    and e.path == prev.path
                    and want
                    and e.last_event_id == want
                ),
                None,
            )
            if found is not None:
                resumed = True
                notes["resumed"] = (
                    f"GET #{found.id} sent Last-Event-ID {want!r}, the last event #{prev.id} "
                    "delivered"
                )
                break
    notes.setdefault("resumed", "no reconnect carried Last-Event-ID")

    # Retry-After: the gap before the next equivalent request.
    respected = True
    waits: list[str] = []
    for prev, nxt in itertools.pairwise(group):
        gap = nxt.started - (prev.ended or prev.started)
        if prev.should_retry == "false" and prev.failed:
            # x-should-retry: false is the server saying "do not retry this at all";
            # the Stainless SDKs obey it over their retry-by-status rule (_should_retry).
            respected = False
            waits.append(
                f"#{prev.id} {prev.status} x-should-retry: false -> #{nxt.id} retried after "
                f"{_fmt_s(gap)} (told not to)"
            )
            continue
        hint = retry_hint(prev)
        if hint is None:
            continue
        wait, header = hint
        ok = gap >= wait - RETRY_AFTER_TOLERANCE_S
        respected = respected and ok
        waits.append(
            f"#{prev.id} {prev.status} {header} -> #{nxt.id} after "
            f"{_fmt_s(gap)}" + ("" if ok else f" (too soon: {_fmt_s(wait)} asked)")
        )
    notes["respected_retry_after"] = "; ".join(waits) or "no retry followed a Retry-After"

    surfaced, why = _surfaced(client, ev.error_signal)
    notes["surfaced_error"] = why

    succeeded = not client.timed_out and client.exit_code == 0
    shown: Shown | None = None
    if ev.answer is None:
        completed = False
        notes["completed"] = "the full answer is unknown: no complete upstream response was seen"
    else:
        shown = align(ev.answer, client.stdout)
        completed = succeeded and shown.complete
        if client.timed_out:
            # The hang itself is the surfaced_error note; say only what was on screen.
            notes["completed"] = f"before the kill stdout had {shown.describe()}"
        else:
            notes["completed"] = (
                f"exit code {client.exit_code}; stdout has {shown.describe()} (whitespace ignored)"
            )
    stopped = _stopped(group)
    flagged, notes["flags_incomplete"] = _flags(client, stopped, INCOMPLETE_WORDS)
    if stopped is not None and completed:
        # A stub that ends with a terminal event is still a stub (DESIGN.md, completes).
        completed = False
        notes["completed"] = f"the answer was stopped by {stopped}; {notes['completed']}"
    # A stopped answer the client said was stopped is not presented as complete.
    silent = succeeded and not surfaced and shown is not None and not completed
    silent = silent and not (stopped is not None and flagged)
    notes["silent_truncation"] = (
        f"exit 0 while stdout has only {shown.describe()}: {_tail(client.stdout, 80)!r}"
        if silent and shown is not None
        else "no"
    )

    faults = [
        {
            "type": f.type,
            "request": position.get(f.exchange, f.exchange),
            "at_ms": round(f.at_ms, 1),
        }
        for ex in ev.exchanges
        for f in ex.faults
    ]
    return Observed(
        attempts=attempts,
        retried=attempts > 1,
        fell_back=fell_back,
        resumed=resumed,
        completed=completed,
        surfaced_error=surfaced,
        silent_truncation=silent,
        respected_retry_after=respected,
        exit_code=None if client.timed_out else client.exit_code,
        ttft_ms=_ttft_ms(ev.exchanges),
        ttft_shown_ms=_ttft_shown_ms(ev, shown),
        fault_met=True if faults else (False if _has_faults(ev.profile) else None),
        faults=faults,
        notes=notes,
        stopped=stopped,
        flagged_incomplete=flagged,
    )


def _stopped(group: list[Exchange]) -> str | None:
    """The stop the last attempt's answer met (a ``content`` fault), if any."""
    if not group:
        return None
    for f in group[-1].faults:
        if f.type == "content":
            return f"{f.action} ({f.detail})" if f.detail else f.action
    return None


def _flags(client: ClientRun, stopped: str | None, pattern: str) -> tuple[bool, str]:
    """Did the client tell its user the answer is not whole, and the evidence."""
    if stopped is None:
        return False, "no answer was stopped short"
    found = re.search(pattern, f"{client.stdout}\n{client.stderr}")
    if found is not None:
        return True, f"answer stopped by {stopped}; the client said {found.group(0)!r}"
    if client.timed_out:
        return False, f"answer stopped by {stopped}; the client hung"
    if client.exit_code != 0:
        return True, f"answer stopped by {stopped}; the client exited {client.exit_code}"
    return False, (
        f"answer stopped by {stopped}, but the client exited 0 and printed nothing that says "
        f"so: {_tail(client.stdout, 80)!r}"
    )


def _verdict(name: str, ok: bool, evidence: str) -> Verdict:
    return Verdict(name, "pass" if ok else "fail", evidence)


def _retries(ev: Evidence, obs: Observed, opts: RetriesOptions) -> Verdict:
    group = _main_group(ev.exchanges)
    failed = next((i for i, e in enumerate(group) if e.failed), None)
    if failed is None:
        return _verdict(
            "retries", False, f"no request failed, so nothing to retry; {obs.notes['attempts']}"
        )
    first = group[failed]
    if failed + 1 >= len(group):
        return _verdict(
            "retries", False, f"{_describe(first)} was never retried; {obs.notes['surfaced_error']}"
        )
    nxt = group[failed + 1]
    gap = nxt.started - (first.ended or first.started)
    problems = []
    if gap > opts.within_s:
        problems.append(f"the retry came {_fmt_s(gap)} after the failure (limit {opts.within_s} s)")
    if not obs.respected_retry_after:
        problems.append(f"retried before Retry-After: {obs.notes['respected_retry_after']}")
    if obs.attempts > opts.max_attempts:
        problems.append(f"retry storm: {obs.attempts} attempts > max_attempts {opts.max_attempts}")
    head = f"{_describe(first)} -> retry #{nxt.id} after {_fmt_s(gap)}; {obs.attempts} attempt(s)"
    if obs.notes["respected_retry_after"] != "no retry followed a Retry-After":
        head += f"; {obs.notes['respected_retry_after']}"
    return _verdict("retries", not problems, "; ".join([*problems, head]) if problems else head)


def _jsonrpc_method(ex: Exchange) -> str:
    body = ex.request_body
    if body[:1] != b"{":
        return ""
    try:
        method = json.loads(body).get("method")
    except (ValueError, RecursionError, AttributeError):
        return ""
    return method if isinstance(method, str) else ""


def _reinitializes(exchanges: list[Exchange]) -> tuple[bool, str]:
    """(MCP) After a 404 for an expired session, the next request is a fresh ``initialize``.

    Streamable HTTP (2025-11-25, "Session Management"): a client that gets 404
    for a request carrying ``Mcp-Session-Id`` MUST start a new session by
    sending a new ``InitializeRequest`` without a session id. A request sent
    after the 404 and before any ``initialize`` went to the dead session.
    """
    for i, ex in enumerate(exchanges):
        if ex.provider != "mcp" or ex.status != 404 or _jsonrpc_method(ex) == "initialize":
            continue
        # Only a POST carries a JSON-RPC message; a DELETE (closing the session) or the
        # standalone GET stream is housekeeping, not a retry.
        later = [e for e in exchanges[i + 1 :] if e.method == "POST"]
        if not later:
            return False, f"#{ex.id} got 404 (session expired); the client sent nothing after"
        nxt = later[0]
        method = _jsonrpc_method(nxt) or "a non-JSON-RPC POST"
        gap = _fmt_s(nxt.started - (ex.ended or ex.started))
        if method == "initialize":
            return True, f"#{ex.id} got 404 (session expired) -> #{nxt.id} initialize {gap} later"
        return (
            False,
            f"#{ex.id} got 404 (session expired) -> #{nxt.id} {method} {gap} later, "
            "on the dead session instead of a new initialize",
        )
    return False, "no request met a 404 for an expired session, so nothing showed a re-initialise"


def _cancels(ev: Evidence) -> Verdict:
    gone = [e for e in ev.exchanges if e.outcome == "client_gone"]
    if not gone:
        return _verdict("cancels_upstream", False, "no exchange ended with the client going away")
    ids = ", ".join(f"#{e.id}" for e in gone)
    # The proxy's own record (set where it closes upstream before upstream's EOF) is the
    # evidence for any upstream; the mock's count of abandoned streams adds its side.
    finished = [e for e in gone if not e.upstream_closed_early]
    if finished:
        late = ", ".join(f"#{e.id}" for e in finished)
        return _verdict(
            "cancels_upstream",
            False,
            f"client left {ids}, but upstream had already sent its whole response on {late}: "
            "no upstream request was left to cancel, so nothing showed one cancelled",
        )
    evidence = f"client left {ids}; the proxy closed its upstream request before upstream's end"
    if ev.mock_closed_early is None:
        return _verdict("cancels_upstream", True, evidence)
    ok = ev.mock_closed_early >= len(gone)
    return _verdict(
        "cancels_upstream",
        ok,
        f"{evidence}; the mock saw {ev.mock_closed_early} stream(s) closed early",
    )


def _resilient(obs: Observed) -> Verdict:
    problems = []
    if obs.silent_truncation:
        problems.append(f"silent truncation: {obs.notes['silent_truncation']}")
    elif obs.stopped is not None and not (obs.completed or obs.flagged_incomplete):
        problems.append(f"a stopped answer presented as complete: {obs.notes['flags_incomplete']}")
    elif not (obs.completed or obs.surfaced_error or obs.flagged_incomplete):
        problems.append(
            f"neither completed nor surfaced the error: {obs.notes['surfaced_error']}; "
            f"{obs.notes['completed']}"
        )
    if obs.attempts > DEFAULT_MAX_ATTEMPTS:
        problems.append(f"retry storm: {obs.attempts} attempts > {DEFAULT_MAX_ATTEMPTS}")
    if not obs.respected_retry_after:
        problems.append(f"retried before Retry-After: {obs.notes['respected_retry_after']}")
    if problems:
        return _verdict(RESILIENT, False, "; ".join(problems))
    how = (
        "completed"
        if obs.completed
        else ("flagged the stopped answer" if obs.flagged_incomplete else "surfaced the error")
    )
    extra = [w for w in ("retried", "fell_back", "resumed") if getattr(obs, w)]
    return _verdict(
        RESILIENT,
        True,
        f"{how} ("
        + (
            obs.notes["completed"]
            if obs.completed
            else obs.notes["flags_incomplete" if obs.flagged_incomplete else "surfaced_error"]
        )
        + ")"
        + (f"; {', '.join(extra)} in {obs.attempts} attempts" if extra else ""),
    )


def _unmet(ev: Evidence, obs: Observed) -> str | None:
    """Why this run cannot count as evidence (DESIGN.md, "Verdict words"), or None.

    A verdict on a client that never met the profile's fault is about nothing:
    a client that cannot even start "surfaces an error" on every scenario.
    """
    faults = _has_faults(ev.profile)
    if obs.attempts == 0:
        where = (
            "does the page send its requests to the proxy's URL?"
            if ev.page is not None
            else "is it pointed at $OPENAI_BASE_URL?"
        )
        met = ": it never met the fault" if faults else ""
        return (
            f"the client sent no request through the proxy{met}; {where} "
            f"({obs.notes['surfaced_error']})"
        )
    if obs.fault_met is False:
        return (
            f"none of the profile's faults fired on the client's traffic "
            f"({obs.notes['attempts']}): it never met the fault, so this run shows nothing "
            "about how it copes with it"
        )
    return None


def evaluate(
    ev: Evidence, expect: list[Expect], *, resilient: bool = False
) -> tuple[Observed, list[Verdict]]:
    """The observed block and a verdict for each expectation (plus the battery rule)."""
    obs = observe(ev)
    notes = obs.notes
    if ev.page is not None:
        from chaosstream.verify.page import PAGE_JUDGED, judge_page, page_observed, page_signals

        # What the page showed replaces what an exit code would have said.
        for flag, (value, why) in page_signals(ev.page, ev.answer, ev.exchanges).items():
            setattr(obs, flag, value)
            notes[flag] = why
        obs.exit_code = None
        obs.page = page_observed(ev.page)
    if obs.attempts == 0:
        # Nothing went through the proxy: whatever the client printed or the page
        # shows, it was not judged against the answer, so it is neither complete
        # nor a silent truncation.
        obs.completed = obs.silent_truncation = False
    verdicts: list[Verdict] = []
    for item in expect:
        name = item.name
        if ev.page is not None and name in PAGE_JUDGED:
            verdicts.append(_verdict(name, *judge_page(name, item.options, ev.page, ev.exchanges)))
        elif name == "surfaces_error":
            ok = obs.surfaced_error and not obs.silent_truncation
            verdicts.append(_verdict(name, ok, notes["surfaced_error"]))
        elif name == "retries":
            opts = item.options
            assert isinstance(opts, RetriesOptions)
            verdicts.append(_retries(ev, obs, opts))
        elif name == "falls_back":
            verdicts.append(_verdict(name, obs.fell_back, notes["fell_back"]))
        elif name == "resumes":
            verdicts.append(_verdict(name, obs.resumed, notes["resumed"]))
        elif name == "reinitializes":
            verdicts.append(_verdict(name, *_reinitializes(ev.exchanges)))
        elif name == "completes":
            copts = item.options
            ok = obs.completed
            if isinstance(copts, CompletesOptions) and copts.accept_stop and obs.stopped:
                ok = obs.exit_code == 0  # the scenario takes the stopped answer as its answer
            verdicts.append(_verdict(name, ok, notes["completed"]))
        elif name == "flags_incomplete":
            fopts = item.options
            assert isinstance(fopts, FlagsIncompleteOptions)
            ok, why = _flags(ev.client, obs.stopped, fopts.pattern)
            if ev.page is not None:  # judged on what a person sees, not the console
                from chaosstream.verify.page import page_flags

                ok, why = page_flags(ev.page, obs.stopped, fopts.pattern)
            if obs.stopped is None:
                ok, why = False, "no answer was stopped short, so there was nothing to flag"
            verdicts.append(_verdict(name, ok, why))
        elif name == "cancels_upstream":
            verdicts.append(_cancels(ev))
        elif name == RESILIENT and not resilient:  # a scenario file may name the battery rule
            verdicts.append(_resilient(obs))
    if resilient:
        verdicts.append(_resilient(obs))
    unmet = _unmet(ev, obs)
    if unmet is not None:
        verdicts = [
            _verdict(v.name, False, unmet if obs.attempts == 0 else f"{unmet}; {v.evidence}")
            for v in verdicts
        ] or [_verdict("fault_met", False, unmet)]
    return obs, verdicts
