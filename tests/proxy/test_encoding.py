"""Incremental content decoding: gzip, deflate (zlib and raw), br; identity untouched."""

from __future__ import annotations

import zlib
from typing import Any

import brotli
import pytest

from chaosstream.proxy.encoding import decode_body, decoder_for, is_encoded

TEXT = b"".join(b"data: part %d\n\n" % i for i in range(50))


def flushed(compress: Any) -> list[bytes]:
    """Each event compressed and sync-flushed on its own, as a streaming server sends it."""
    out = [
        compress.compress(TEXT[i : i + 15]) + compress.flush(zlib.Z_SYNC_FLUSH)
        for i in range(0, len(TEXT), 15)
    ]
    return [*out, compress.flush()]


@pytest.mark.parametrize(
    ("coding", "wbits"), [("gzip", 31), ("x-gzip", 31), ("deflate", 15), ("deflate", -15)]
)
def test_zlib_codings_decode_each_read_as_it_comes(coding: str, wbits: int) -> None:
    """Every sync-flushed read decodes to its own bytes at once; nothing waits for the end."""
    decoder = decoder_for(coding)
    assert decoder is not None
    pieces = flushed(zlib.compressobj(wbits=wbits))
    out = [decoder.decompress(p) for p in pieces]
    assert out[0] == TEXT[:15]
    assert b"".join(out) + decoder.flush() == TEXT


def test_brotli_decodes_incrementally() -> None:
    """br decodes through the brotli package, flushed pieces as they come."""
    compressor = brotli.Compressor()
    pieces = [compressor.process(TEXT[:100]) + compressor.flush(), compressor.finish()]
    decoder = decoder_for("br")
    assert decoder is not None
    assert decoder.decompress(pieces[0]) == TEXT[:100]


def test_identity_and_unknown_codings_get_no_decoder() -> None:
    """identity, stacked codings and unknown ones are not decoded (the caller says so)."""
    assert decoder_for(None) is None
    assert decoder_for("identity") is None
    assert decoder_for("gzip, br") is None
    assert decoder_for("zstd-unknown") is None
    assert not is_encoded("identity") and not is_encoded(None) and is_encoded(" GZIP ")


def test_decode_body_reads_whole_or_cut_bodies() -> None:
    """A recorded body decodes whole; a body cut by a cap decodes as far as it goes."""
    body = b"".join(flushed(zlib.compressobj(wbits=31)))
    assert decode_body(body, "gzip") == TEXT
    assert TEXT.startswith(decode_body(body[: len(body) // 2], "gzip"))
    assert decode_body(b"not gzip", "gzip") == b"not gzip"
    assert decode_body(b"plain", None) == b"plain"
