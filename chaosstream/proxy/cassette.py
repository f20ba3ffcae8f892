"""Recording a cassette: the proxy's tap that writes each exchange upstream answered.

``chaosstream proxy --cassette DIR`` gives the proxy a :class:`CassetteTap`.
The proxy tells it when an exchange begins (request headers), when upstream's
response head arrives (status, headers) and when the exchange ends; the body
comes from the exchange record, whose upstream bytes are stamped with the time
of each read. Frames are cut by the format's framer
(:func:`chaosstream.streams.cassette.frames_of`) and secrets are redacted
before the file is written (:class:`chaosstream.streams.cassette.Redactor`):
headers, query keys, and the JSON fields the user names in the request body
and in the response's JSON frames.

Record modes follow VCR.py (vcrpy.readthedocs.io, "Record Modes"):

- ``once``: no cassette yet → record everything; a cassette → replay only;
- ``new_episodes``: replay what matches, record (append) the rest;
- ``all``: record everything, replay nothing (the cassette is rewritten);
- ``none``: replay only; nothing is recorded.

Writing is off the event loop: the file is rewritten whole (atomically) and
YAML is slow to dump, so an exchange's end only queues a snapshot of it; one
writer task at a time hands the queue to a worker thread
(``asyncio.to_thread``), which builds the interactions and saves the file.
What finishes while a write runs goes in the next one together, so a burst of
exchanges costs a few rewrites, not one each. A failed write (a full disk) is
logged and its interactions go in the next write; :meth:`CassetteTap.drain`
(the proxy's close) waits for the last one.

Replaying is the mock's job (``mock/cassette.py``); the command line starts a
replay server and, for ``new_episodes``, the tap routes a matching request to
it (:meth:`CassetteTap.route`) with the interaction's number in a header.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from pathlib import Path
from typing import Any

import structlog
from multidict import CIMultiDict
from yarl import URL

from chaosstream._version import __version__
from chaosstream.faults import RequestInfo
from chaosstream.proxy.encoding import decoder_for
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

log = structlog.get_logger("chaosstream.proxy.cassette")


class CassetteTap:
    """Writes finished exchanges to a cassette file (atomically, in a worker thread).

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
        #: Interactions written by this tap (in a file write that succeeded).
        self.recorded = 0
        #: File writes done (each rewrites the whole cassette).
        self.writes = 0
        # Finished exchanges (snapshots) waiting for the writer, and the writer task.
        self._queued: list[tuple[Exchange, dict[str, Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        # Interactions added to ``cassette`` (by the worker) but not yet in a saved file.
        self._unsaved = 0

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
        """The exchange ended: queue it for writing when upstream answered it.

        Called on the event loop; only a snapshot is taken here (the recorder may
        compact the record meanwhile), the rest is the writer's.
        """
        state = self._open.pop(id(ex), None)
        if state is None or "response_headers" not in state or ex.status is None:
            return
        self._queued.append((ex.snapshot(), state))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        # The only writer: the cassette is touched by one thread at a time, in order.
        while self._queued or self._unsaved:
            batch, self._queued = self._queued, []
            try:
                await asyncio.to_thread(self._save, batch)
            except Exception as e:  # a full disk, a folder that is a file: keep serving
                log.error(
                    "cassette_write_failed",
                    path=str(self.path),
                    error=f"{type(e).__name__}: {e}",
                    unsaved=self._unsaved,
                )
                if not self._queued:
                    return  # retried with the next exchange, or by drain()

    def _save(self, batch: list[tuple[Exchange, dict[str, Any]]]) -> None:
        """In the worker thread: build the batch's interactions and rewrite the file."""
        for ex, state in batch:
            try:
                self.cassette.interactions.append(self.interaction(ex, state))
                self._unsaved += 1
            except Exception as e:  # one exchange that cannot be cut must not cost the rest
                log.error("cassette_interaction_failed", exchange=ex.id, error=repr(e))
        save_cassette(self.cassette, self.path)
        self.writes += 1
        self.recorded += self._unsaved
        self._unsaved = 0

    async def drain(self) -> None:
        """Wait until every finished exchange is written (one more try for a failed write)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._queued or self._unsaved:
            self._writer = asyncio.get_running_loop().create_task(self._write())
            await asyncio.shield(self._writer)

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
        head = state["response_headers"]
        cut = frames_of(raw, times, ex.provider, ex.content_type)
        if red.fields:
            # Named JSON fields are redacted in the response too (SSE data, NDJSON lines, a
            # JSON body); frames without one keep their bytes.
            cut, head = self._redact_response(ex, raw, times, cut, head)
        frames = [Frame.of(data, max(0.0, t * 1000.0)) for data, t in cut]
        end_ms = ((ex.ended or t0) - t0) * 1000.0
        response = RecordedResponse(
            status=ex.status or 0,
            headers=red.header_pairs(head),
            frames=frames,
            end_ms=round(max(end_ms, frames[-1].t_ms if frames else 0.0), 3),
            complete=ex.outcome != "upstream_error" and not ex.upstream_chunks.truncated,
        )
        return Interaction(request=request, response=response)

    def _redact_response(
        self,
        ex: Exchange,
        raw: bytes,
        times: list[tuple[float, int]],
        cut: list[tuple[bytes, float]],
        head: list[tuple[str, str]],
    ) -> tuple[list[tuple[bytes, float]], list[tuple[str, str]]]:
        """The frames with the named JSON fields redacted, and the response head to record.

        A compressed body (recorded as sent) hides its fields: it is decoded read by
        read, so each frame keeps its time; when a field was redacted the decoded body
        is recorded and Content-Encoding/Content-Length dropped (the replay sends
        identity, which every client accepts, RFC 9110 12.5.3); otherwise the body
        stays as upstream sent it, byte for byte.
        """
        red = self.redactor
        if ex.content_encoding is None:
            return red.frames(cut, ex.provider, ex.content_type), head
        decoder = decoder_for(ex.content_encoding)
        if decoder is None:
            return cut, head  # a coding this machine cannot read: nothing to find in it
        plain, plain_times, at = bytearray(), [], 0
        try:
            for t, end in times:
                plain += decoder.decompress(raw[at:end])
                at = end
                plain_times.append((t, len(plain)))
            plain += decoder.flush()
        except Exception:  # a capped or broken body: record it as sent
            return cut, head
        frames = frames_of(bytes(plain), plain_times, ex.provider, ex.content_type)
        redacted = red.frames(frames, ex.provider, ex.content_type)
        if redacted == frames:
            return cut, head
        dropped = ("content-encoding", "content-length")
        return redacted, [(k, v) for k, v in head if k.lower() not in dropped]
