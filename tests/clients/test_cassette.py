"""What each record mode opens: a recording tap, a replay server, or both."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from chaosstream.clients.cassette import CassetteOptions, open_cassette
from chaosstream.streams.cassette import (
    Cassette,
    Frame,
    Interaction,
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
