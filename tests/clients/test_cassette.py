"""What each record mode opens (a recording tap, a replay server, or both); the recorded answer."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from chaosstream.clients.cassette import (
    CassetteOptions,
    is_cassette,
    open_cassette,
    recorded_answer,
)
from chaosstream.proxy.record import Exchange
from chaosstream.streams.cassette import (
    Cassette,
    Frame,
    Interaction,
    Player,
    RecordedRequest,
    RecordedResponse,
    save_cassette,
)
from chaosstream.yamlfile import InputError


def one(tmp: Path) -> None:
    save_cassette(
        Cassette(
            interactions=[
                Interaction(
                    request=RecordedRequest(method="GET", path="/ping"),
                    response=RecordedResponse(status=200, frames=[Frame.of(b"pong", 0)]),
                )
            ]
        ),
        tmp,
    )


async def test_modes_open_a_tap_a_replay_or_both(tmp_path: Path) -> None:
    """all and a first once record; none and a later once replay; new_episodes does both."""
    up = "http://127.0.0.1:9"
    url, tap, replay = await open_cassette(CassetteOptions(str(tmp_path), "once"), up)
    assert (url, replay) == (up, None) and tap is not None
    with pytest.raises(InputError, match="no cassette to replay"):
        await open_cassette(CassetteOptions(str(tmp_path), "none"), up)
    one(tmp_path)
    for mode in ("once", "none"):
        url, tap, replay = await open_cassette(CassetteOptions(str(tmp_path), mode), up)
        assert tap is None and replay is not None and url == replay.url
        async with aiohttp.ClientSession() as s, s.get(f"{url}/ping") as r:
            assert await r.read() == b"pong"
        await replay.close()
    url, tap, replay = await open_cassette(CassetteOptions(str(tmp_path), "new_episodes"), up)
    assert url == up and tap is not None and replay is not None
    assert str(tap.replay_url) == replay.url and len(tap.cassette.interactions) == 1
    await replay.close()
    url, tap, replay = await open_cassette(CassetteOptions(str(tmp_path), "all"), up)
    assert replay is None and tap is not None and not tap.cassette.interactions
    url, tap, replay = await open_cassette(None, f"cassette:{tmp_path}")
    assert tap is None and replay is not None and url == replay.url
    await replay.close()


def test_recorded_answer_is_the_text_upstream_answered_whole() -> None:
    """The answer comes from the first request whose recording is whole; a broken-off or
    refused recording, or no match, gives none; nothing is marked played."""
    body = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    sse = "text/event-stream"

    def recorded(content: str, complete: bool = True, status: int = 200) -> Interaction:
        frames = [
            Frame.of(
                f'data: {{"choices":[{{"delta":{{"content":"{content}"}}}}]}}\n\n'.encode(), 1
            ),
            Frame.of(b"data: [DONE]\n\n", 2),
        ]
        return Interaction(
            request=RecordedRequest(
                method="POST",
                path="/v1/chat/completions",
                body=body.decode(),
                stream=True,
                format="openai",
            ),
            response=RecordedResponse(
                status=status, headers=[("Content-Type", sse)], frames=frames, complete=complete
            ),
        )

    def ask(path: str = "/v1/chat/completions") -> Exchange:
        return Exchange(1, "POST", path, "openai", True, 0.0, request_body=body)

    player = player_of(recorded("Hello there"))
    assert recorded_answer(player, [ask("/v1/other"), ask()]) == "Hello there"
    assert player.played == []
    assert recorded_answer(player_of(recorded("x", complete=False)), [ask()]) is None
    assert recorded_answer(player_of(recorded("x", status=500)), [ask()]) is None
    assert recorded_answer(player, [ask("/v1/other")]) is None
    assert is_cassette("cassette:tapes/x") and not is_cassette("http://h") and not is_cassette(None)


def player_of(*interactions: Interaction) -> Player:
    return Player(Cassette(interactions=list(interactions)))
