"""The cassette options: --upstream cassette:DIR, --match-on, and what each record mode opens."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import click
import pytest

from chaosstream.cli.cassette import (
    CassetteOptions,
    match_on_option,
    open_cassette,
    upstream_or_cassette,
)
from chaosstream.streams.cassette import (
    Cassette,
    Frame,
    Interaction,
    RecordedRequest,
    RecordedResponse,
    save_cassette,
)
from chaosstream.yamlfile import InputError

CTX = click.Context(click.Command("x"))
PARAM = click.Option(["--x"])


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


def test_upstream_takes_a_url_or_a_cassette_folder() -> None:
    """cassette:DIR passes as is; an empty folder or a non-http URL is a usage error."""
    assert upstream_or_cassette(CTX, PARAM, "cassette:tapes/a") == "cassette:tapes/a"
    assert upstream_or_cassette(CTX, PARAM, "http://127.0.0.1:1") == "http://127.0.0.1:1"
    for bad in ("cassette:", "ftp://x"):
        with pytest.raises(click.BadParameter):
            upstream_or_cassette(CTX, PARAM, bad)


def test_match_on_is_a_checked_comma_list() -> None:
    """Known matcher names pass in order; an unknown one is named."""
    assert match_on_option(CTX, PARAM, "method, path,stream") == ("method", "path", "stream")
    with pytest.raises(click.BadParameter, match="'colour' is not one of"):
        match_on_option(CTX, PARAM, "method,colour")


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
