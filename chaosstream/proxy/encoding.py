"""Content codings a stream may come in: decode them incrementally so faults can see frames.

A fault that acts on events must read frames, and a compressed body hides them
(Next.js gzips an event stream by default). The proxy first asks upstream for
``identity``; when upstream compresses anyway, the body is decoded chunk by
chunk here -- never buffered whole -- and the client gets identity (see
:func:`decoder_for`'s caller in ``proxy/server.py``). Codings of RFC 9110 8.4.1:
``gzip``, ``deflate``, and ``br`` (RFC 7932) when the ``brotli`` package is installed.
"""

from __future__ import annotations

import zlib
from typing import Protocol

__all__ = ["Decoder", "decode_body", "decoder_for", "is_encoded"]


class Decoder(Protocol):
    """An incremental decoder: bytes in as read, decoded bytes out as soon as they can be."""

    def decompress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Zlib:
    """gzip and deflate on :mod:`zlib`, emitting whatever each read completes."""

    def __init__(self, coding: str) -> None:
        # 32 + 15: zlib detects a gzip or a zlib header itself. RFC 9110 8.4.1.2 says
        # "deflate" is the zlib format, yet some servers send raw deflate: the first
        # read falls back to -15 (no header) when the zlib header is not there.
        self._raw_fallback = coding == "deflate"
        self._d = zlib.decompressobj(47 if coding == "gzip" else 15)
        self._started = False

    def decompress(self, data: bytes) -> bytes:
        if not self._started and self._raw_fallback:
            self._started = True
            try:
                return self._d.decompress(data)
            except zlib.error:
                self._d = zlib.decompressobj(-15)
        self._started = True
        return self._d.decompress(data)

    def flush(self) -> bytes:
        return self._d.flush()


class _Brotli:
    def __init__(self) -> None:
        import brotli  # type: ignore[import-untyped]  # optional: decoder_for asks first

        self._d = brotli.Decompressor()

    def decompress(self, data: bytes) -> bytes:
        out: bytes = self._d.process(data)
        return out

    def flush(self) -> bytes:
        return b""


def is_encoded(content_encoding: str | None) -> bool:
    """Does the header name a coding other than identity?"""
    return (content_encoding or "").strip().lower() not in ("", "identity")


def decoder_for(content_encoding: str | None) -> Decoder | None:
    """A fresh decoder for the header's coding; None for identity, several stacked
    codings, or a coding this machine cannot decode."""
    coding = (content_encoding or "").strip().lower()
    if coding in ("gzip", "x-gzip"):
        return _Zlib("gzip")
    if coding == "deflate":
        return _Zlib("deflate")
    if coding == "br":
        try:
            return _Brotli()
        except ImportError:
            return None
    return None


def decode_body(body: bytes, content_encoding: str | None) -> bytes:
    """A recorded body decoded for reading its text; as it is when it cannot be
    (unknown coding, or cut short by a cap: what decodes is kept)."""
    decoder = decoder_for(content_encoding)
    if decoder is None:
        return body
    try:
        return decoder.decompress(body) + decoder.flush()
    except Exception:  # a capped or broken body: its text is unknown, not an error
        return body
