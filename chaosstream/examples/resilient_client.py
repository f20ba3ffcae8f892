"""A streaming chat client that survives bad networks: the example to copy.

Run it against chaosstream's battery::

    chaosstream check -- python -m chaosstream.examples.resilient_client "Why is the sky blue?"

or on its own (it reads ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY`` like any
OpenAI SDK program)::

    python -m chaosstream.examples.resilient_client "Why is the sky blue?"

What it does, and why (the checklist of the seed article, "streaming AI
responses"):

1. **Streams** the answer and prints each piece as it arrives, so the user
   sees text at the first token, not at the last.
2. **Knows when a stream is cut.** The OpenAI SDK ends *quietly* when the
   connection closes without ``data: [DONE]``: the ``for`` loop simply stops.
   So the client tracks ``finish_reason`` itself; a stream that ends without
   one was cut (``StreamCut``), however clean the TCP close looked.
3. **Notices a stall, silent or not.** A connection can stay open and send
   nothing, or keep "breathing" (SSE ``: keepalive`` comments, pings) with no
   content at all: every keep-alive restarts a byte read timeout, so the
   client times *content* instead. No answer chunk for ``--idle-timeout``
   seconds means the stream is dead. (It must be longer than the provider's
   worst time to first token, which it also bounds.) The HTTP read timeout
   is set to the same value, so a silent socket is freed too.
4. **Retries with jittered exponential backoff** (0.5 s, 1 s, 2 s, ... each
   between half and all of that, so many clients don't retry in lockstep),
   and **honours Retry-After**: after a 429/503 carrying ``Retry-After`` (or
   OpenAI's ``retry-after-ms``) it never comes back sooner. Only failures
   that can heal are retried (timeouts, cuts, 408/409/429/5xx, in-stream
   errors); a 400 or 401 fails at once.
5. **Falls back to a non-streaming request** after two failed streams: some
   networks (buffering proxies, flaky mobile links) break long-lived streams
   but carry a normal request fine.
6. **Fails loudly.** After ``--max-attempts`` (4) it gives up with a clear
   message on stderr and exit code 1, never leaving half an answer looking
   like a whole one.
7. **Says when an answer was stopped short.** ``finish_reason: "length"``
   (the token limit) or ``"content_filter"`` ends a stream cleanly with half
   an answer; retrying gets the same limit, so the client keeps the text and
   tells its user on stderr that it is incomplete.

It sets ``max_retries=0`` on the SDK client: the SDK's own retries would hide
the behaviour from you (and from chaosstream), and they cannot see a stream
that breaks halfway anyway.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import sys
import threading
import time
from typing import Any, TextIO

import openai

try:  # openai 3.x talks HTTP through httpx2, earlier versions through httpx
    from httpx2 import HTTPError as TransportError
except ImportError:  # pragma: no cover - depends on the installed SDK
    from httpx import HTTPError as TransportError  # type: ignore[assignment]

DEFAULT_PROMPT = "Explain why streaming makes AI answers feel fast."
MAX_ATTEMPTS = 4
STREAM_FAILURES_BEFORE_FALLBACK = 2
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0
# A server asking us to wait longer than this is down for now: give up instead.
MAX_RETRY_AFTER_S = 60.0
# The longest wait for the next piece of answer (keep-alives do not count).
CONTENT_TIMEOUT_S = 10.0
# Stops that end a stream cleanly with an answer that is not whole.
STOPPED_SHORT = {"length": "the token limit", "content_filter": "a content filter"}
# HTTP statuses worth another try; anything else 4xx is our own mistake.
RETRYABLE_STATUS = frozenset({408, 409, 429})


class StreamCut(Exception):
    """The stream ended without a finish_reason: the answer is incomplete."""


class GiveUp(Exception):
    """A failure that retrying cannot fix."""


def backoff_s(attempt: int, retry_after_s: float | None) -> float:
    """Seconds to wait before attempt ``attempt + 1``.

    Exponential with "equal jitter" (half fixed, half random), and never less
    than the server's Retry-After.
    """
    cap = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2.0 ** (attempt - 1))
    delay = cap / 2 + random.uniform(0, cap / 2)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return delay


def retry_after_s(error: BaseException) -> float | None:
    """The wait a 429/503 asked for: ``retry-after-ms`` or ``Retry-After`` seconds."""
    headers = getattr(getattr(error, "response", None), "headers", None)
    if headers is None:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            continue  # an HTTP date: rare from model APIs; fall back to backoff
    return None


def _chunks(stream: Any, timeout_s: float) -> Any:
    """The stream's chunks, raising :class:`StreamCut` when none comes for ``timeout_s``.

    The SDK swallows keep-alives (SSE comments never become chunks), so a wait
    here is a wait for content. The SDK's iteration blocks inside a socket
    read, so it runs in a reader thread and this side waits on a queue.
    """
    items: queue.Queue[Any] = queue.Queue()
    done = object()

    def read() -> None:
        try:
            for chunk in stream:
                items.put(chunk)
        except BaseException as e:  # handed over and raised on this side
            items.put(e)
        items.put(done)

    threading.Thread(target=read, daemon=True).start()
    while True:
        try:
            item = items.get(timeout=timeout_s)
        except queue.Empty:
            raise StreamCut(f"no content for {timeout_s:g} s (stalled)") from None
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def stream_answer(
    client: openai.OpenAI,
    model: str,
    prompt: str,
    out: TextIO,
    log: TextIO = sys.stderr,
    content_timeout_s: float = CONTENT_TIMEOUT_S,
) -> str:
    """Stream one answer to ``out``; raise :class:`StreamCut` if it was cut short."""
    pieces: list[str] = []
    finish_reason = None
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True
    )
    # `with` closes the connection whatever happens (a stall too), so no stream
    # leaks upstream.
    with stream:
        for chunk in _chunks(stream, content_timeout_s):
            for choice in chunk.choices:
                if choice.delta.content:
                    pieces.append(choice.delta.content)
                    out.write(choice.delta.content)
                    out.flush()
                if choice.finish_reason is not None:
                    finish_reason = choice.finish_reason
    if finish_reason is None:
        # The SDK stops quietly when the body ends without [DONE]; only the
        # missing finish_reason tells us the answer is incomplete.
        raise StreamCut(f"stream ended without finish_reason after {len(''.join(pieces))} chars")
    warn_if_stopped_short(finish_reason, log)
    return "".join(pieces)


def warn_if_stopped_short(finish_reason: str | None, log: TextIO) -> None:
    """Tell the user an answer that ended cleanly is still not whole."""
    if finish_reason in STOPPED_SHORT:
        log.write(
            f"\n[note: the answer is incomplete: stopped by {STOPPED_SHORT[finish_reason]}"
            f" (finish_reason {finish_reason!r})]\n"
        )
        log.flush()


def whole_answer(client: openai.OpenAI, model: str, prompt: str, out: TextIO) -> str:
    """The non-streaming fallback: one ordinary request for the whole answer."""
    response = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=False
    )
    choice = response.choices[0] if response.choices else None
    if choice is None or choice.message.content is None:
        raise StreamCut("the response carried no answer")
    if choice.finish_reason not in ("stop", "length", "content_filter", "tool_calls"):
        raise StreamCut(f"the response ended with finish_reason {choice.finish_reason!r}")
    out.write(choice.message.content)
    out.flush()
    warn_if_stopped_short(choice.finish_reason, sys.stderr)
    return choice.message.content


def ask(
    client: openai.OpenAI,
    model: str,
    prompt: str,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    out: TextIO = sys.stdout,
    log: TextIO = sys.stderr,
    content_timeout_s: float = CONTENT_TIMEOUT_S,
) -> str:
    """Get the whole answer, printing it as it comes; raise :class:`GiveUp` when out of tries."""
    stream_failures = 0
    last_error = "no attempt made"
    for attempt in range(1, max_attempts + 1):
        streaming = stream_failures < STREAM_FAILURES_BEFORE_FALLBACK
        wait_at_least: float | None = None
        try:
            if streaming:
                return stream_answer(client, model, prompt, out, log, content_timeout_s)
            return whole_answer(client, model, prompt, out)
        except openai.APIStatusError as e:
            # Refused before any answer: retry only what can heal.
            if e.status_code < 500 and e.status_code not in RETRYABLE_STATUS:
                raise GiveUp(f"HTTP {e.status_code}: {e.message}") from e
            wait_at_least = retry_after_s(e)
            last_error = f"HTTP {e.status_code}: {e.message}"
            if wait_at_least is not None and wait_at_least > MAX_RETRY_AFTER_S:
                raise GiveUp(f"{last_error} (server asks to wait {wait_at_least:.0f} s)") from e
        except (openai.APIError, TransportError, StreamCut, ValueError) as e:
            # Connection reset, idle timeout, a cut or garbled stream, an
            # in-stream error event: the stream itself failed.
            last_error = f"{type(e).__name__}: {e}"
            if streaming:
                stream_failures += 1
        out.write("\n")
        out.flush()
        if attempt == max_attempts:
            break
        delay = backoff_s(attempt, wait_at_least)
        log.write(f"[attempt {attempt} failed: {last_error}; retrying in {delay:.1f} s]\n")
        log.flush()
        time.sleep(delay)
    raise GiveUp(f"gave up after {max_attempts} attempts; last error: {last_error}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("prompt", nargs="*", help="The question (default: a fixed one).")
    parser.add_argument("--model", default=os.environ.get("OPENAI_MODEL", "gpt-4o-mini"))
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=10.0,
        help="Seconds without a piece of answer (keep-alives do not count) before a "
        "stream counts as stalled (default 10).",
    )
    parser.add_argument("--max-attempts", type=int, default=MAX_ATTEMPTS)
    args = parser.parse_args(argv)
    prompt = " ".join(args.prompt) or DEFAULT_PROMPT
    client = openai.OpenAI(
        max_retries=0,
        # read = the idle timeout: the longest silence between two bytes.
        timeout=openai.Timeout(connect=10.0, read=args.idle_timeout, write=10.0, pool=10.0),
    )
    try:
        ask(
            client,
            args.model,
            prompt,
            max_attempts=args.max_attempts,
            content_timeout_s=args.idle_timeout,
        )
    except GiveUp as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
