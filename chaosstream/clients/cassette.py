"""Cassettes around a proxy: which record mode opens a recording tap, a replay server, or both.

Shared by the command line (``proxy --cassette``, ``--upstream cassette:DIR`` on
``proxy``, ``run`` and ``check``), the runner (``clients/runner.py``) and the pytest
plugin (``chaos_cassette``): the tap lives in ``proxy/``, the
replay server in ``mock/``, and this layer may use both. Nothing heavy is
imported at module level (``chaosstream --help`` reads :class:`CassetteOptions`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from chaosstream.mock.cassette import ReplayServer
    from chaosstream.proxy.cassette import CassetteTap
    from chaosstream.proxy.record import Exchange
    from chaosstream.streams.cassette import Player

__all__ = [
    "CASSETTE_SCHEME",
    "CassetteOptions",
    "is_cassette",
    "open_cassette",
    "player_for",
    "recorded_answer",
]

CASSETTE_SCHEME = "cassette:"
"""``--upstream cassette:DIR`` replays the cassette in DIR instead of calling a server."""


def is_cassette(upstream: str | None) -> bool:
    """Does ``--upstream`` name a cassette (``cassette:DIR``) rather than a server?"""
    return upstream is not None and upstream.startswith(CASSETTE_SCHEME)


@dataclass(frozen=True)
class CassetteOptions:
    """What the cassette flags asked for."""

    path: str
    mode: str = "once"
    redact_headers: tuple[str, ...] = ()
    redact_fields: tuple[str, ...] = ()
    match_on: tuple[str, ...] | None = None
    speed: float = 1.0


def player_for(opts: CassetteOptions) -> Player:
    """A player over the cassette in ``opts.path`` (InputError when missing or invalid)."""
    from chaosstream.streams.cassette import DEFAULT_MATCH_ON, Player, Redactor, load_cassette

    return Player(
        load_cassette(opts.path),
        match_on=opts.match_on or DEFAULT_MATCH_ON,
        redactor=Redactor.with_extra(opts.redact_headers, opts.redact_fields),
    )


async def open_cassette(
    opts: CassetteOptions | None, upstream: str | None
) -> tuple[str | None, CassetteTap | None, ReplayServer | None]:
    """The proxy's upstream, its recording tap and a replay server, per record mode.

    ``upstream`` ``cassette:DIR`` replays DIR. Otherwise, by ``opts.mode``
    (VCR.py's modes): ``all`` records; ``once`` records when no cassette exists
    yet, else replays; ``none`` replays; ``new_episodes`` replays what matches and
    records the rest. The caller closes the replay server.
    """
    from yarl import URL

    from chaosstream.mock.cassette import start_replay
    from chaosstream.proxy.cassette import CassetteTap
    from chaosstream.streams.cassette import Cassette, Redactor, cassette_path, load_cassette
    from chaosstream.yamlfile import InputError

    if upstream is not None and upstream.startswith(CASSETTE_SCHEME):
        folder = upstream[len(CASSETTE_SCHEME) :]
        base = opts or CassetteOptions(folder)
        replay_opts = CassetteOptions(
            folder, "none", base.redact_headers, base.redact_fields, base.match_on, base.speed
        )
        replay = await start_replay(player_for(replay_opts), speed=replay_opts.speed)
        return replay.url, None, replay
    if opts is None:
        return upstream, None, None
    exists = cassette_path(opts.path).is_file()
    redactor = Redactor.with_extra(opts.redact_headers, opts.redact_fields)
    if opts.mode == "none" or (opts.mode == "once" and exists):
        if not exists:
            raise InputError(f"--cassette {opts.path}: no cassette to replay (--record-mode none)")
        replay = await start_replay(player_for(opts), speed=opts.speed)
        return replay.url, None, replay
    if opts.mode in ("all", "once"):
        if not Path(opts.path).parent.exists():
            raise InputError(f"--cassette {opts.path}: folder does not exist")
        return upstream, CassetteTap(opts.path, Cassette(), redactor), None
    # new_episodes
    existing = load_cassette(opts.path) if exists else Cassette()
    tap = CassetteTap(opts.path, existing, redactor)
    player = player_for(opts) if exists else None
    if player is None:
        return upstream, tap, None
    player.cassette = existing  # one list: indices stay valid while new ones are appended
    replay = await start_replay(player, speed=opts.speed)
    tap.player, tap.replay_url = player, URL(replay.url)
    return upstream, tap, replay


def recorded_answer(player: Player, exchanges: Sequence[Exchange]) -> str | None:
    """The full answer the cassette holds for the client's request, or None.

    The first exchange (in order) whose recorded match upstream answered whole
    (2xx, ``complete``) with text: what a client replaying the cassette should end
    with even when every live attempt was cut by a fault. Matching does not count
    as playing (:meth:`Player.peek`).
    """
    from chaosstream.proxy.encoding import decode_body
    from chaosstream.streams.registry import response_text

    for ex in exchanges:
        index = player.peek(ex.method, ex.path, ex.query, ex.request_body, ex.provider, ex.stream)
        if index is None:
            continue
        recorded = player.cassette.interactions[index].response
        if not recorded.complete or not 200 <= recorded.status < 300:
            continue
        head = {k.lower(): v for k, v in recorded.headers}
        body = decode_body(recorded.body, head.get("content-encoding"))
        text = response_text(body, head.get("content-type"), ex.provider)
        if text:
            return text
    return None
