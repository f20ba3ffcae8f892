"""What every exchange on the data path shares: the request's info and the ways to end it.

The HTTP proxy (:mod:`chaosstream.proxy.server`) and its WebSocket twin
(:mod:`chaosstream.proxy.websocket`) both use these, so they live below both.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from chaosstream.faults import FaultContext, Refusal, RequestInfo
from chaosstream.proxy import downstream
from chaosstream.proxy.downstream import Incoming
from chaosstream.proxy.record import Exchange
from chaosstream.streams.registry import format_for

__all__ = ["abort", "refused", "request_info"]


def abort(request: web.Request, rst: bool = False) -> None:
    """Drop ``request``'s client connection at once: with RST when ``rst``."""
    downstream.abort(request.transport, rst)


def request_info(request: web.Request | Incoming, body: bytes) -> RequestInfo:
    """What the faults' triggers ask of a request: provider, stream flag, parsed JSON body."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    parsed: Any = None
    if body[:1] in (b"{", b"["):
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            # Too deep or not JSON: forwarded untouched all the same, stream unknown.
            parsed = None
    fmt = format_for(request.method, request.path, headers)
    info = RequestInfo(
        method=request.method,
        path=request.path,
        query=request.query_string,
        headers=headers,
        body=body,
        provider=fmt.name,
        stream=False,
        json=parsed,
    )
    # The format decides: a body field, a path (Gemini's :streamGenerateContent),
    # or a default (Ollama streams unless told not to).
    info.stream = fmt.wants_stream(info)
    return info


def refused(ex: Exchange, ctx: FaultContext, refusal: Refusal, now: float) -> None:
    """Record that a fault answered ``ex`` itself (the HTTP answer or the WebSocket
    handshake's): status, the retry hints it sent, its fault log line, its bytes."""
    ex.outcome = "refused"
    ex.status = refusal.status
    ex.retry_after = refusal.headers.get("Retry-After")
    ex.retry_after_ms = refusal.headers.get("retry-after-ms")
    ex.should_retry = refusal.headers.get("x-should-retry")
    ctx.fired("refuse", detail=f"status {refusal.status}")
    ex.bytes_out = len(refusal.body)
    ex.first_byte = now
