"""The cassette model: YAML round trip, validation with file:line, redaction, frames, matching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chaosstream.streams.cassette import (
    REDACTED,
    Cassette,
    Frame,
    Interaction,
    Player,
    RecordedRequest,
    RecordedResponse,
    Redactor,
    dump_cassette,
    frames_of,
    load_cassette,
    save_cassette,
)
from chaosstream.yamlfile import InputError

NASTY = [
    'data: {"a":"héllo"}\n\n',
    "\r\n",
    " lead\ttrail \n",
    "\x00\x07\x1b",
    "\ufeffbom",
    "\u2028\u0085x\u2029",
    "'quoted\"",
    "- item",
    "\U0001f600\ue000\ufffd\uffff",
    "",
    "yes",
    "null",
    "#x",
    "a: b",
    "\x7f\x9f\xa0",
    "\\",
]


def chat(content: str, stream: bool = True) -> bytes:
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def interaction(
    body: bytes, stream: bool, frames: list[bytes], path: str = "/v1/chat/completions"
) -> Interaction:
    return Interaction(
        request=RecordedRequest(
            method="POST", path=path, body=body.decode(), stream=stream, format="openai"
        ),
        response=RecordedResponse(
            status=200, frames=[Frame.of(f, 10.0 * i) for i, f in enumerate(frames)]
        ),
    )


def test_every_frame_survives_the_yaml_round_trip_byte_for_byte(tmp_path: Path) -> None:
    """Control characters, line breaks, BOMs, YAML keywords, non-UTF-8 bytes come back exact."""
    raws = [s.encode() for s in NASTY] + [b"\xff\xfe\x00", b"ok\xc3"]
    cassette = Cassette(interactions=[interaction(b"{}", True, raws)])
    save_cassette(cassette, tmp_path)
    loaded = load_cassette(tmp_path)
    assert [f.raw for f in loaded.interactions[0].response.frames] == raws
    assert loaded.interactions[0].response.frames[-1].base64 is not None


def test_a_frame_is_one_readable_line(tmp_path: Path) -> None:
    """Each frame is written on one line with its time, so a diff shows frames changing."""
    raws = [b'data: {"x":1}\n\n', b"data: [DONE]\n\n"]
    text = dump_cassette(Cassette(interactions=[interaction(b"{}", True, raws)]))
    assert '- {t_ms: 0.0, data: "data: {\\"x\\":1}\\n\\n"}' in text
    assert '- {t_ms: 10.0, data: "data: [DONE]\\n\\n"}' in text
    assert text.startswith("# chaosstream cassette, format version 1")


def test_bad_cassettes_are_refused_naming_file_line_and_field(tmp_path: Path) -> None:
    """Validation errors say file:line: field; duplicate keys and unknown versions too."""
    good = dump_cassette(Cassette(interactions=[interaction(b"{}", True, [b"data: 1\n\n"])]))
    path = tmp_path / "cassette.yaml"
    path.write_text(good.replace("t_ms: 0.0, data:", "t_ms: 0.0, base64: AA==, data:"))
    with pytest.raises(
        InputError, match=r"cassette.yaml:\d+: interactions\[0\].response.frames\[0\]"
    ):
        load_cassette(tmp_path)
    path.write_text(good.replace("status: 200", "status: 200\n    status: 201"))
    with pytest.raises(InputError, match=r"cassette.yaml:\d+: duplicate key 'status'"):
        load_cassette(tmp_path)
    path.write_text(good.replace("version: 1", "version: 9"))
    with pytest.raises(InputError, match=r"cassette.yaml:2: version"):
        load_cassette(tmp_path)
    with pytest.raises(InputError, match="no such cassette"):
        load_cassette(tmp_path / "nowhere")


def test_the_size_cap_is_a_parameter(tmp_path: Path) -> None:
    """A cassette over the cap given is refused unread; the default cap is far above 1 MiB."""
    body = "x" * 4000
    save_cassette(Cassette(interactions=[interaction(b"{}", True, [body.encode()])]), tmp_path)
    with pytest.raises(InputError, match="cap"):
        load_cassette(tmp_path, cap=1000)
    assert load_cassette(tmp_path).interactions[0].response.body == body.encode()


def test_redactor_hides_secret_headers_query_keys_and_named_fields() -> None:
    """Secret headers and query keys always; user-named headers and JSON fields at any depth."""
    red = Redactor.with_extra(["X-Tenant"], ["user", "token"])
    pairs = red.header_pairs(
        [
            ("Authorization", "Bearer sk"),
            ("x-api-key", "k"),
            ("X-Goog-Api-Key", "g"),
            ("Cookie", "c"),
            ("X-Amz-Security-Token", "t"),
            ("x-tenant", "acme"),
            ("Accept", "a"),
        ]
    )
    assert [v for _, v in pairs] == [REDACTED] * 6 + ["a"]
    assert red.query("alt=sse&key=AIza") == f"alt=sse&key={REDACTED}"
    body = red.body(b'{"user":"bob","x":{"token":"t","keep":1},"list":[{"token":2}]}')
    assert json.loads(body) == {
        "user": REDACTED,
        "x": {"token": REDACTED, "keep": 1},
        "list": [{"token": REDACTED}],
    }
    assert red.body(b"not json") == b"not json"


def test_frames_of_cuts_a_stream_by_its_framer_and_stamps_each_with_its_read() -> None:
    """SSE events and NDJSON lines become frames, each timed by the read that completed it."""
    body = b"data: 1\n\ndata: 2\n\ndata: 3\n\n"
    times = [(0.010, 12), (0.020, 27)]  # event 2 ends in the second read
    frames = frames_of(body, times, "openai", "text/event-stream")
    assert frames == [(b"data: 1\n\n", 0.010), (b"data: 2\n\n", 0.020), (b"data: 3\n\n", 0.020)]
    lines = frames_of(b'{"a":1}\n{"b":2}\n', [(0.5, 16)], "ollama", "application/x-ndjson")
    assert [raw for raw, _ in lines] == [b'{"a":1}\n', b'{"b":2}\n']
    plain = frames_of(b'{"json":true}', [(0.1, 5), (0.2, 13)], "openai", "application/json")
    assert plain == [(b'{"jso', 0.1), (b'n":true}', 0.2)]


def test_matching_sets_the_stream_flag_aside_and_prefers_the_same_flag() -> None:
    """A fallback without stream matches; among matches the one with its own flag wins."""
    cassette = Cassette(
        interactions=[
            interaction(chat("hi"), True, [b"data: s\n\n"]),
            interaction(chat("hi", stream=False), False, [b"{}"]),
        ]
    )
    player = Player(cassette)
    args = ("POST", "/v1/chat/completions", "")
    assert player.lookup(*args, chat("hi", stream=False), "openai", False).index == 1
    assert player.lookup(*args, chat("hi"), "openai", True).index == 0
    # played once each; a retry repeats the last match rather than failing
    assert player.lookup(*args, chat("hi"), "openai", True).index == 0
    strict = Player(cassette, match_on=("method", "path", "body", "stream"))
    only_stream = Cassette(interactions=cassette.interactions[:1])
    assert Player(only_stream).lookup(*args, chat("hi", False), "openai", False).index == 0
    assert (
        Player(only_stream, match_on=strict.match_on)
        .lookup(*args, chat("hi", False), "openai", False)
        .index
        is None
    )


def test_each_recorded_request_plays_once_in_order() -> None:
    """Two recordings of one request are played in recorded order (VCR.py's default)."""
    cassette = Cassette(
        interactions=[
            interaction(chat("hi"), True, [b"data: first\n\n"]),
            interaction(chat("hi"), True, [b"data: second\n\n"]),
        ]
    )
    player = Player(cassette)
    picks = [
        player.lookup("POST", "/v1/chat/completions", "", chat("hi"), "openai", True).index
        for _ in range(3)
    ]
    assert picks == [0, 1, 1]


def test_an_unmatched_request_names_the_nearest_recording_and_what_differed() -> None:
    """The reason names the nearest interaction and the first differing JSON field."""
    cassette = Cassette(
        interactions=[
            interaction(chat("hello there"), True, [b"x"], path="/v1/other"),
            interaction(chat("hi"), True, [b"x"]),
        ]
    )
    found = Player(cassette).lookup("POST", "/v1/chat/completions", "", chat("hey"), "openai", True)
    assert found.index is None and found.nearest == 1
    assert "nearest is interaction 2 (POST /v1/chat/completions)" in found.reason
    assert 'messages[0].content: recorded "hi" != request "hey"' in found.reason
    empty = Player(Cassette()).lookup("GET", "/x", "", b"", "sse", False)
    assert "empty" in empty.reason


def test_a_redacted_field_still_matches() -> None:
    """The live request is redacted like the recording before comparing."""
    recorded = Redactor.with_extra(fields=["user"]).body(b'{"user":"bob","q":1}')
    cassette = Cassette(interactions=[interaction(recorded, False, [b"{}"])])
    player = Player(cassette, redactor=Redactor.with_extra(fields=["user"]))
    assert (
        player.lookup(
            "POST", "/v1/chat/completions", "", b'{"user":"eve","q":1}', "openai", False
        ).index
        == 0
    )


def test_unknown_matchers_are_refused() -> None:
    """A matcher name outside the list is bad input naming the allowed ones."""
    with pytest.raises(InputError, match="method, path, query, body, stream"):
        Player(Cassette(), match_on=("colour",))


def test_response_frames_lose_named_fields_and_keep_every_other_byte() -> None:
    """SSE data values and NDJSON lines are redacted in their own spacing; other frames,
    comments, event names and line ends are untouched."""
    red = Redactor.with_extra(fields=["user", "token"])
    sse = [
        (
            b": keep-alive\r\nevent: delta\r\n"
            b'data: {"id":"c1","user":"bob","d":"h\\u00e9"}\r\n\r\n',
            0.01,
        ),
        (b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n', 0.02),
        (b'data:{"meta": {"token": "t0k", "n": 1}}\n\n', 0.03),
        (b"data: [DONE]\n\n", 0.04),
    ]
    out = red.frames(sse, "openai", "text/event-stream")
    assert out[0] == (
        b': keep-alive\r\nevent: delta\r\ndata: {"id":"c1","user":"REDACTED","d":"h\\u00e9"}'
        b"\r\n\r\n",
        0.01,
    )
    assert out[1] == sse[1] and out[3] == sse[3]
    assert out[2] == (b'data:{"meta": {"token": "REDACTED", "n": 1}}\n\n', 0.03)
    lines = [(b'{"message":{"content":"a"},"user":"bob"}\n', 0.1), (b'{"done":true}\n', 0.2)]
    assert red.frames(lines, "ollama", "application/x-ndjson") == [
        (b'{"message":{"content":"a"},"user":"REDACTED"}\n', 0.1),
        (b'{"done":true}\n', 0.2),
    ]
    assert Redactor().frames(sse, "openai", "text/event-stream") is sse


def test_a_json_value_over_several_data_lines_and_a_json_body_are_redacted() -> None:
    """A JSON value spread over data: lines becomes one redacted line; a non-stream JSON body
    read in pieces becomes one redacted frame at the time it ended."""
    red = Redactor.with_extra(fields=["user"])
    (event, t), *_ = red.frames(
        [(b'data: {"user":\ndata:  "bob",\ndata: "n": 2}\n\n', 0.5)], "openai", "text/event-stream"
    )
    assert event == b'data: {"user":"REDACTED","n":2}\n\n' and t == 0.5
    body = [(b'{"id":"x","us', 0.1), (b'er":"bob"}', 0.3)]
    assert red.frames(body, "openai", "application/json") == [
        (b'{"id":"x","user":"REDACTED"}', 0.3)
    ]
    plain = [(b'{"id":"x"}', 0.1)]
    assert red.frames(plain, "openai", "application/json") is plain
    assert red.frames([(b"not json", 0.1)], "openai", "text/plain") == [(b"not json", 0.1)]


def test_peek_names_the_match_without_playing_it() -> None:
    """peek answers which interaction a request matches and leaves the play order alone."""
    cassette = Cassette(
        interactions=[
            interaction(chat("hi"), True, [b"data: first\n\n"]),
            interaction(chat("hi"), True, [b"data: second\n\n"]),
        ]
    )
    player = Player(cassette)
    args = ("POST", "/v1/chat/completions", "", chat("hi"), "openai", True)
    assert player.peek(*args) == 0 and player.peek(*args) == 0
    assert player.lookup(*args).index == 0 and player.lookup(*args).index == 1
    assert player.peek("POST", "/v1/other", "", chat("hi"), "openai", True) is None
