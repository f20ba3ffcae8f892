"""Gzip: a compressing middlebox that sends the stream a full buffer at a time."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, MutableMapping
from dataclasses import replace
from typing import Literal

from pydantic import Field

from chaosstream.faults._feed import closing
from chaosstream.faults.base import Chunk, Fault, FaultContext
from chaosstream.streams.format import media_type

# nginx: `gzip_comp_level` defaults to 1; `gzip_buffers` to 32 4k (one memory page)
# (ngx_http_gzip_module docs). 31 window bits = a gzip container (zlib's deflateInit2).
DEFAULT_LEVEL = 1
DEFAULT_BUFFER = 4096
_GZIP_WBITS = 31
_DECLINED = "declined"


def _accepts_gzip(accept_encoding: str) -> bool:
    """Does ``Accept-Encoding`` allow gzip (RFC 9110 12.5.3: a q of 0 refuses it)?"""
    for item in accept_encoding.lower().split(","):
        name, _, params = item.strip().partition(";")
        if name.strip() in ("gzip", "x-gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and q[2:].strip() in ("0", "0.", "0.0", "0.00", "0.000"))
    return False


class Gzip(Fault):
    """Gzips the response the way nginx's `gzip on` does, and sends it in bursts.

    The gzip filter of nginx (`gzip on; gzip_types text/event-stream;`, a
    common copy-pasted config, or a CDN doing the same) compresses the stream
    and hands compressed output on only when one of its `gzip_buffers` is
    full (`buffer_bytes`, 4 KiB by default) or the response ends. Text
    compresses about tenfold, so an answer arrives in bursts of some 40 KB of
    events, and a short one only at the very end: the client sees nothing,
    then everything. The response gets `Content-Encoding: gzip` and `Vary:
    Accept-Encoding`, and loses Content-Length. As nginx does, it compresses
    only when the request's `Accept-Encoding` allows gzip, the media type is
    one of `types` and upstream sent it unencoded; otherwise nothing fires.
    Put it last in the profile: faults after it see compressed bytes.
    Sources: nginx ngx_http_gzip_module (`gzip_buffers`, `gzip_comp_level`),
    the SSE-behind-nginx reports it causes (Vercel AI SDK, "streaming works
    locally but not behind nginx").
    """

    type: Literal["gzip"] = "gzip"
    buffer_bytes: int = Field(
        DEFAULT_BUFFER,
        ge=1,
        description="Compressed bytes held until sent (nginx `gzip_buffers` size: 4k).",
    )
    level: int = Field(
        DEFAULT_LEVEL, ge=1, le=9, description="Compression level (nginx `gzip_comp_level`: 1)."
    )
    types: list[str] = Field(
        ["text/event-stream", "application/x-ndjson", "application/json"],
        description="Media types compressed (nginx `gzip_types`).",
    )

    def response_headers(self, headers: MutableMapping[str, str], ctx: FaultContext) -> None:
        coding = headers.get("Content-Encoding", "identity").strip().lower()
        wanted = media_type(headers.get("Content-Type")) in self.types
        if (
            not _accepts_gzip(ctx.request.headers.get("accept-encoding", ""))
            or not wanted
            or coding != "identity"
        ):
            ctx.state[f"{_DECLINED}:{ctx.exchange}"] = True
            return
        headers["Content-Encoding"] = "gzip"
        headers.pop("Content-Length", None)
        headers["Vary"] = "Accept-Encoding"

    async def apply(self, chunks: AsyncIterator[Chunk], ctx: FaultContext) -> AsyncIterator[Chunk]:
        async with closing(chunks):
            if ctx.state.pop(f"{_DECLINED}:{ctx.exchange}", False) or not _accepts_gzip(
                ctx.request.headers.get("accept-encoding", "")
            ):
                async for chunk in chunks:
                    yield chunk
                return
            comp = zlib.compressobj(self.level, zlib.DEFLATED, _GZIP_WBITS)
            held = b""
            last: Chunk | None = None
            ctx.fired("gzip", detail=f"level {self.level}, {self.buffer_bytes} B buffers")
            async for chunk in chunks:
                last = chunk
                held += comp.compress(chunk.data)
                whole = len(held) - len(held) % self.buffer_bytes
                if whole:  # only full buffers leave
                    yield replace(chunk, data=held[:whole])
                    held = held[whole:]
            tail = held + comp.flush()
            if last is None:
                last = Chunk(b"", ctx.clock.now())
            yield replace(last, data=tail)
