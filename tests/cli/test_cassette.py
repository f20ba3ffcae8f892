"""The cassette options: --upstream cassette:DIR and --match-on."""

from __future__ import annotations

import click
import pytest

from chaosstream.cli.cassette import match_on_option, upstream_or_cassette

CTX = click.Context(click.Command("x"))
PARAM = click.Option(["--x"])


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
