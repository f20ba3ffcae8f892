"""The command line's cassette options (``--upstream cassette:DIR``, ``--match-on``).

``proxy --cassette DIR [--record-mode ...]`` records (and, per mode, replays);
``proxy --upstream cassette:DIR`` and ``mock --cassette DIR`` replay only. What a
mode opens is :func:`chaosstream.clients.cassette.open_cassette`. Imports nothing
heavy at module level: ``chaosstream --help`` reads the options.
"""

from __future__ import annotations

import click

from chaosstream.cli.args import cut, upstream_url
from chaosstream.clients.cassette import (
    CASSETTE_SCHEME,
    CassetteOptions,
    open_cassette,
    player_for,
)

__all__ = [
    "CASSETTE_SCHEME",
    "RECORD_MODES",
    "CassetteOptions",
    "match_on_option",
    "open_cassette",
    "player_for",
    "upstream_or_cassette",
]

RECORD_MODES = ("once", "new_episodes", "all", "none")  # streams.cassette.RECORD_MODES
MATCHERS = ("method", "path", "query", "body", "stream")  # streams.cassette.MATCHERS


def upstream_or_cassette(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """Click callback for ``--upstream``: an http(s) URL or ``cassette:DIR``."""
    if value is None:
        return None
    if value.startswith(CASSETTE_SCHEME):
        folder = value[len(CASSETTE_SCHEME) :]
        if not folder:
            raise click.BadParameter("cassette: names no folder (cassette:DIR)")
        return value
    return upstream_url(value)


def match_on_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, ...] | None:
    """Click callback for ``--match-on method,path,body``."""
    if value is None:
        return None
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    for name in names:
        if name not in MATCHERS:
            raise click.BadParameter(f"{cut(name)} is not one of {', '.join(MATCHERS)}")
    if not names:
        raise click.BadParameter("names no matcher")
    return names
