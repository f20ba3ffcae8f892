"""OpenAI Realtime over WebSocket: ``GET /v1/realtime`` (``?model=...``), a small text session.

On connect the server sends ``session.created``. Client events it answers, as
the Realtime API does (openai-python ``types/realtime``): ``session.update`` ->
``session.updated``; ``conversation.item.create`` (a user message with
``input_text`` parts) -> ``conversation.item.added``, ``conversation.item.done``;
``response.create`` -> ``response.created``, ``rate_limits.updated``,
``response.output_item.added``, ``response.content_part.added``, one
``response.output_text.delta`` per answer token (paced by the mock's
settings), ``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``, ``response.done`` (``status: completed``);
``response.cancel`` ends the answer with ``response.done`` ``status:
cancelled``. Anything else gets an ``error`` event. The answer keys on the
conversation's user text (:func:`user_text`), as ``answer_text`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any

from aiohttp import WSMsgType, web

from chaosstream.mock._json import loads_bounded
from chaosstream.mock._limits import LIMITS
from chaosstream.mock._settings import SETTINGS, BadOverride, MockSettings, with_overrides
from chaosstream.mock._stats import STATS, ClientGone
from chaosstream.mock._stream import Pacer
from chaosstream.mock._text import answer_tokens
from chaosstream.streams.openai_realtime import realtime_error

PATH = "/v1/realtime"


def user_text(items: list[dict[str, Any]]) -> str:
    """The conversation's user text: every ``input_text`` of the user messages, in order."""
    parts: list[str] = []
    for item in items:
        if item.get("type", "message") != "message" or item.get("role") != "user":
            continue
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
    return "\n".join(parts)


class _Session:
    def __init__(self, request: web.Request, socket: web.WebSocketResponse, model: str) -> None:
        self.request = request
        self.socket = socket
        self.ids = itertools.count(1)
        self.items: list[dict[str, Any]] = []
        self.session: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": "sess_chaosstream",
            "model": model,
            "output_modalities": ["text"],
        }
        self.active: asyncio.Task[None] | None = None

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self.ids):06d}"

    async def send(self, event: dict[str, Any]) -> None:
        if self.socket.closed:
            raise ClientGone
        await self.socket.send_json({**event, "event_id": self._id("event")})

    async def error(self, message: str, code: str | None = None) -> None:
        event = realtime_error("invalid_request_error", code, message)
        del event["event_id"]
        await self.send(event)

    async def handle(self, event: Any, settings: MockSettings) -> None:
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "session.update":
            update = event.get("session")
            self.session.update(update if isinstance(update, dict) else {})
            await self.send({"type": "session.updated", "session": self.session})
        elif kind == "conversation.item.create":
            item = event.get("item")
            if not isinstance(item, dict):
                await self.error("'item' must be an object", "invalid_value")
                return
            item = {
                "id": self._id("item"),
                "object": "realtime.item",
                **item,
                "status": "completed",
            }
            self.items.append(item)
            for name in ("conversation.item.added", "conversation.item.done"):
                await self.send({"type": name, "previous_item_id": None, "item": item})
        elif kind == "response.create":
            if self.active is not None and not self.active.done():
                await self.error(
                    "Conversation already has an active response in progress.",
                    "conversation_already_has_active_response",
                )
                return
            self.active = asyncio.ensure_future(self.respond(settings))
        elif kind == "response.cancel":
            if self.active is not None and not self.active.done():
                self.active.cancel()
        else:
            await self.error(
                f"Invalid value: {str(kind)[:80]!r}: unknown event type", "invalid_value"
            )

    async def respond(self, settings: MockSettings) -> None:
        response_id, item_id = self._id("resp"), self._id("item")
        response: dict[str, Any] = {
            "object": "realtime.response",
            "id": response_id,
            "status": "in_progress",
            "output": [],
        }
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0}
        part = {**where, "content_index": 0}
        tokens = answer_tokens(user_text(self.items), settings.tokens)
        item = {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant"}
        sent: list[str] = []
        status = "completed"
        try:
            async with self.request.app[STATS].track():
                await self.send({"type": "response.created", "response": response})
                limits = [
                    {"name": "tokens", "limit": 40000, "remaining": 39000, "reset_seconds": 1}
                ]
                await self.send({"type": "rate_limits.updated", "rate_limits": limits})
                await self.send({"type": "response.output_item.added", **where, "item": item})
                empty = {"type": "text", "text": ""}
                await self.send({"type": "response.content_part.added", **part, "part": empty})
                pacer = Pacer(self.request, settings)
                for index, token in enumerate(tokens):
                    await pacer.wait_token(index)
                    await self.send({"type": "response.output_text.delta", **part, "delta": token})
                    sent.append(token)
                if not tokens:
                    await pacer.wait_token(0)
        except asyncio.CancelledError:
            status = "cancelled"  # response.cancel: the answer so far, then response.done
        except (ClientGone, ConnectionError):
            return
        text = "".join(sent)
        content = [{"type": "output_text", "text": text}]
        done_item = {**item, "status": status, "content": content}
        with contextlib.suppress(ClientGone, ConnectionError):
            await self.send({"type": "response.output_text.done", **part, "text": text})
            await self.send(
                {
                    "type": "response.content_part.done",
                    **part,
                    "part": {"type": "text", "text": text},
                }
            )
            await self.send({"type": "response.output_item.done", **where, "item": done_item})
            usage = {"input_tokens": 1, "output_tokens": len(sent), "total_tokens": 1 + len(sent)}
            final = {**response, "status": status, "output": [done_item], "usage": usage}
            await self.send({"type": "response.done", "response": final})


async def realtime(request: web.Request) -> web.StreamResponse:
    """``GET /v1/realtime``: the WebSocket session."""
    try:
        settings = with_overrides(request.app[SETTINGS], request.headers, request.query)
    except BadOverride as exc:
        return web.json_response(
            {"error": {"message": str(exc), "type": "invalid_request_error"}}, status=400
        )
    socket = web.WebSocketResponse(max_msg_size=request.app[LIMITS].ws_max_msg_bytes)
    if not socket.can_prepare(request).ok:
        return web.json_response(
            {"error": {"message": "expected a WebSocket upgrade", "type": "invalid_request_error"}},
            status=400,
        )
    await socket.prepare(request)
    session = _Session(request, socket, request.query.get("model", "gpt-realtime"))
    try:
        await session.send({"type": "session.created", "session": session.session})
        async for msg in socket:
            if msg.type != WSMsgType.TEXT:
                await session.error("send JSON text messages")
                continue
            try:
                event = loads_bounded(msg.data, "message")
            except ValueError as exc:
                await session.error(f"message is not valid JSON: {exc}")
                continue
            await session.handle(event, settings)
    except (ClientGone, ConnectionError):
        pass
    finally:
        if session.active is not None:
            session.active.cancel()
            await asyncio.wait([session.active])
    return socket
