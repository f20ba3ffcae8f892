"""Fuzzing (hypothesis): the SSE path and the profile loader against arbitrary input.

The SSE splitter's own unit fuzz lives in test_sse.py; here the same arbitrary
bytes go through the proxy's framing (``frame_events``) and through a real
proxy whose fault needs events, and must come out byte-exact and in bounded
time. The profile loader gets arbitrary text, arbitrary YAML and mappings that
look like profiles but are wrong: it must answer with a profile or an
``InputError`` naming the file, and the CLI must exit 2 without a traceback.
"""

from __future__ import annotations

import asyncio
import itertools
import string
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaosstream.cli.commands import cli
from chaosstream.faults import Chunk
from chaosstream.faults.profile import Profile, load_profile, profile_from_data
from chaosstream.proxy.server import ChaosProxy, frame_events
from chaosstream.streams.sse import EventDecoder, EventSplitter, parse_event
from chaosstream.yamlfile import InputError, load_text

# Pieces that make SSE framing interesting: every line ending, field names,
# comments, and a multi-byte UTF-8 character that a cut can split.
SSE_PIECES = st.sampled_from(
    [b"\n", b"\r", b"\r\n", b"\n\n", b"data:", b"data: x", b"id: 7", b"event: e", b"retry: 9",
     b":", b": ping", b"\xc3\xa9", b"\xe2\x82\xac", b"\xff", b"\xef\xbb\xbf", b"x", b" "]
)  # fmt: skip
SSE_BYTES = st.one_of(
    st.binary(max_size=2000),
    st.lists(SSE_PIECES, max_size=300).map(b"".join),
)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """``data`` cut at the given offsets (any order, duplicates allowed)."""
    edges = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(edges)]


@settings(max_examples=300, deadline=None)
@given(data=SSE_BYTES, points=st.lists(st.integers(min_value=0), max_size=60))
def test_frame_events_is_byte_exact_and_never_raises(data: bytes, points: list[int]) -> None:
    """The proxy's framing re-cuts any chunking into blocks that join back to the input."""

    async def source() -> AsyncIterator[Chunk]:
        for piece in cut(data, points):
            yield Chunk(piece, 0.0)

    async def collect() -> list[bytes]:
        return [c.data async for c in frame_events(source())]

    blocks = asyncio.run(collect())
    assert b"".join(blocks) == data
    for block in blocks:
        parse_event(block)  # never raises, whatever the bytes


@settings(max_examples=300, deadline=None)
@given(data=SSE_BYTES, points=st.lists(st.integers(min_value=0), max_size=60))
def test_decoder_accepts_any_bytes(data: bytes, points: list[int]) -> None:
    """EventDecoder takes arbitrary bytes in arbitrary pieces and returns only data events."""
    decoder = EventDecoder()
    events = []
    for piece in cut(data, points):
        events.extend(decoder.feed(piece))
    decoder.flush()
    assert all(ev.has_data for ev in events)
    assert all(isinstance(ev.data, str) for ev in events)


def test_pathological_input_is_linear() -> None:
    """A 2 MiB event fed a few bytes at a time, and 1 MiB of lone CRs, split in well under 2 s."""
    started = time.monotonic()
    splitter = EventSplitter()
    body = b"data: " + b"x" * (2 * 2**20) + b"\n\n"
    out: list[bytes] = []
    for i in range(0, len(body), 7):
        out.extend(splitter.feed(body[i : i + 7]))
    assert out == [body]
    crs = b"\r" * 2**20
    splitter = EventSplitter()
    blocks = [b for i in range(0, len(crs), 3) for b in splitter.feed(crs[i : i + 3])]
    assert b"".join(blocks) + splitter.flush() == crs
    assert time.monotonic() - started < 2.0


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(data=SSE_BYTES, points=st.lists(st.integers(min_value=0), max_size=20))
def test_real_proxy_framing_is_byte_exact(data: bytes, points: list[int]) -> None:
    """Arbitrary upstream bytes in arbitrary writes reach the client unchanged through a
    proxy whose (never-firing) fault makes it frame events."""
    pieces = cut(data, points)

    async def upstream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def run() -> bytes:
        app = web.Application()
        app.router.add_get("/sse", upstream)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        profile = profile_from_data(
            {"version": 1, "name": "fuzz",
             "faults": [{"type": "disconnect", "after_events": 10**9}]},
            "<fuzz>",
        )  # fmt: skip
        proxy = ChaosProxy(f"http://127.0.0.1:{port}", profile, seed=1)
        try:
            url = await proxy.start()
            async with aiohttp.ClientSession() as session, session.get(url + "/sse") as r:
                return await r.read()
        finally:
            await proxy.close()
            await runner.cleanup()

    assert asyncio.run(asyncio.wait_for(run(), 10)) == data


# -- the profile loader --------------------------------------------------------

FIELD_NAMES = [
    "version", "name", "description", "seed", "network", "faults", "type", "latency_ms",
    "jitter_ms", "down_kbps", "up_kbps", "loss", "after_events", "after_bytes", "after_ms",
    "after_tokens", "mode", "first_byte_ms", "per_event_ms", "probability", "match", "path",
    "stream", "headers", "requests", "every", "window", "start_s", "end_s", "every_s", "for_s",
    "enabled", "split_event", "status", "events_per_s", "bogus",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["latency", "disconnect", "noop", "reset", "close", "stall", "1", "nan"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELD_NAMES), SCALARS), inner, max_size=5),
    ),
    max_leaves=25,
)
# Mappings shaped like a profile, with wrong types, unknown fields and bad values.
PROFILE_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "version": st.one_of(st.just(1), VALUES),
        "name": st.one_of(st.just("p"), VALUES),
        "seed": VALUES,
        "network": st.one_of(
            st.dictionaries(st.sampled_from(FIELD_NAMES), VALUES, max_size=4), VALUES
        ),
        "faults": st.lists(
            st.one_of(
                st.dictionaries(st.sampled_from(FIELD_NAMES), VALUES, max_size=5).map(
                    lambda d: {"type": "disconnect", **d}
                ),
                st.dictionaries(st.sampled_from(FIELD_NAMES), VALUES, max_size=5),
                VALUES,
            ),
            max_size=4,
        ),
    },
)
YAML_PIECES = st.sampled_from(
    ["version: 1\n", "name: x\n", "faults:\n", "  - type: latency\n", "    first_byte_ms: ",
     "- ", ": ", "{", "}", "[", "]", "&a ", "*a ", "!!python/object ", "!!binary ", "? ", "|\n",
     ">\n", "'", '"', "\t", "\n", "  ", "2001-02-30", "0x1F", "~", "%YAML 1.1\n", "---\n", "...\n",
     "<<: *a\n", "#c\n", "\\", "é", "\x00", "\ufeff"]
)  # fmt: skip
YAML_TEXT = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=string.printable, max_size=200),
    st.lists(YAML_PIECES, max_size=40).map("".join),
    PROFILE_LIKE.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
)


def check_loads_or_input_error(load: Any) -> None:
    """``load()`` returns a Profile or raises InputError with a message naming the source."""
    try:
        profile = load()
    except InputError as e:
        message = str(e)
        assert message.startswith("fuzz.yaml"), message
        assert len(message) > len("fuzz.yaml:1: ")
    else:
        assert isinstance(profile, Profile)


@settings(max_examples=500, deadline=None)
@given(text=YAML_TEXT)
def test_profile_loader_any_text(text: str) -> None:
    """Arbitrary text (YAML or not) gives a profile or an InputError with file and message."""
    check_loads_or_input_error(lambda: load_text(Profile, text, "fuzz.yaml"))


@settings(max_examples=500, deadline=None)
@given(data=st.one_of(PROFILE_LIKE, VALUES))
def test_profile_from_data_any_mapping(data: Any) -> None:
    """Structured-but-wrong profile data gives a profile or an InputError, never a crash."""
    check_loads_or_input_error(lambda: profile_from_data(data, "fuzz.yaml"))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(text=YAML_TEXT)
def test_cli_validate_exits_2_with_a_message(text: str) -> None:
    """`chaosstream profiles validate FILE` on generated bad files exits 2 with file and
    message on stderr, never a traceback; a valid file exits 0."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.yaml"
        path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
        try:
            load_profile(str(path))
            valid = True
        except InputError:
            valid = False
        result = CliRunner().invoke(cli, ["profiles", "validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    if valid:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 2, result.output
        assert str(path) in result.output
