"""Recording a cassette: the proxy's tap that writes each exchange upstream answered.

``chaosstream proxy --cassette DIR`` gives the proxy a :class:`CassetteTap`.
The proxy tells it when an exchange begins (request headers), when upstream's
response head arrives (status, headers) and when the exchange ends; the body
comes from the exchange record, whose upstream bytes are stamped with the time
of each read. Frames are cut by the format's framer
(:func:`chaosstream.streams.cassette.frames_of`) and secrets are redacted
before the file is written (:class:`chaosstream.streams.cassette.Redactor`).

Record modes follow VCR.py (vcrpy.readthedocs.io, "Record Modes"):

- ``once``: no cassette yet → record everything; a cassette → replay only;
- ``new_episodes``: replay what matches, record (append) the rest;
- ``all``: record everything, replay nothing (the cassette is rewritten);
- ``none``: replay only; nothing is recorded.

Replaying is the mock's job (``mock/cassette.py``); the command line starts a
replay server and, for ``new_episodes``, the tap routes a matching request to
it (:meth:`CassetteTap.route`) with the interaction's number in a header.
"""

from __future__ import annotations

import time
from array import array
from pathlib import Path
from typing import Any

from multidict import CIMultiDict
from yarl import URL

from chaosstream._version import __version__
from chaosstream.faults import RequestInfo
from chaosstream.proxy.record import Exchange
from chaosstream.streams.cassette import (
    INDEX_HEADER,
    Cassette,
    Frame,
    Interaction,
    Player,
    RecordedRequest,
    RecordedResponse,
    Redactor,
    cassette_path,
    frames_of,
    save_cassette,
)

__all__ = ["CassetteTap"]


class CassetteTap:
    """Writes finished exchanges to a cassette file (after every exchange, atomically).

    ``cassette`` holds what was there before (``new_episodes``) or nothing
    (``all``, a first ``once``). ``player`` and ``replay_url``, when set, make
    :meth:`route` send matching requests to the replay server instead of upstream.
    """

    def __init__(
        self,
        path: str | Path,
        cassette: Cassette | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.path = cassette_path(path)
        self.cassette = cassette or Cassette()
        self.cassette.recorded_with = f"chaosstream {__version__}"
        self.redactor = redactor or Redactor()
        self.player: Player | None = None
        self.replay_url: URL | None = None
        self._open: dict[int, dict[str, Any]] = {}
        #: Interactions written by this tap.
        self.recorded = 0

    def begin(self, ex: Exchange, headers: Any) -> None:
        """An exchange started: keep its request headers; stamp its upstream body reads."""
        ex.upstream_chunks.stamps = array("d")
        self._open[id(ex)] = {"request_headers": list(headers.items())}

    def route(self, ex: Exchange, info: RequestInfo, headers: CIMultiDict[str]) -> URL | None:
        """The replay server's URL when the cassette already answers this request, else None.

        The matched interaction's number goes in :data:`INDEX_HEADER`, and the
        exchange is not recorded again.
        """
        state = self._open.get(id(ex))
        if state is not None:
            state["sent"] = time.monotonic()  # the proxy's SystemClock, as ex.started
        if self.player is None or self.replay_url is None:
            return None
        found = self.player.lookup(
            info.method, info.path, info.query, info.body, info.provider, info.stream
        )
        if found.index is None:
            return None
        headers[INDEX_HEADER] = str(found.index + 1)
        self._open.pop(id(ex), None)
        return self.replay_url

    def response(self, ex: Exchange, headers: Any) -> None:
        """Upstream's response head arrived."""
        state = self._open.get(id(ex))
        if state is not None:
            state["response_headers"] = list(headers.items())

    def finish(self, ex: Exchange) -> None:
        """The exchange ended: write it when upstream answered it."""
        state = self._open.pop(id(ex), None)
        if state is None or "response_headers" not in state or ex.status is None:
            return
        self.cassette.interactions.append(self.interaction(ex, state))
        save_cassette(self.cassette, self.path)
        self.recorded += 1

    def interaction(self, ex: Exchange, state: dict[str, Any]) -> Interaction:
        """One exchange as a cassette interaction, secrets redacted."""
        red = self.redactor
        t0 = ex.started
        body = red.body(ex.request_body)
        try:
            text: str | None = body.decode("utf-8")
            b64: str | None = None
        except UnicodeDecodeError:
            import base64

            text, b64 = None, base64.b64encode(body).decode("ascii")
        request = RecordedRequest(
            method=ex.method,
            path=ex.path,
            query=red.query(ex.query),
            headers=red.header_pairs(state["request_headers"]),
            body=text if body else None,
            body_base64=b64,
            stream=ex.stream,
            format=ex.provider,
            sent_ms=round(max(0.0, (state.get("sent", t0) - t0) * 1000.0), 3),
        )
        raw = bytes(ex.upstream_chunks)
        times = [(t - t0, n) for t, n in ex.upstream_chunks.times()]
        frames = [
            Frame.of(data, max(0.0, t * 1000.0))
            for data, t in frames_of(raw, times, ex.provider, ex.content_type)
        ]
        end_ms = ((ex.ended or t0) - t0) * 1000.0
        response = RecordedResponse(
            status=ex.status or 0,
            headers=red.header_pairs(state["response_headers"]),
            frames=frames,
            end_ms=round(max(end_ms, frames[-1].t_ms if frames else 0.0), 3),
            complete=ex.outcome != "upstream_error" and not ex.upstream_chunks.truncated,
        )
        return Interaction(request=request, response=response)
