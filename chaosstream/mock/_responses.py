"""OpenAI Responses endpoints: ``POST /v1/responses`` and ``GET /v1/responses/{id}``.

The event sequence is the one the API streams (and openai-python's
``ResponseStreamState`` accumulates): ``response.created``,
``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, one ``response.output_text.delta`` per token,
``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``, then ``response.completed`` (or
``response.incomplete`` when ``max_output_tokens`` cut the answer). Every
event has a ``sequence_number`` counting from 0.

A response is remembered (a bounded number of them) so ``GET
/v1/responses/{id}?stream=true&starting_after=N`` replays its events after
``N``, as resuming a background response does; without ``stream`` it returns
the response object.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import Any

from aiohttp import web

from chaosstream.mock._json import JsonTooDeep, loads_bounded
from chaosstream.mock._openai import DEFAULT_MODEL, openai_error
from chaosstream.mock._settings import SETTINGS, BadOverride, MockSettings, with_overrides
from chaosstream.mock._stats import STATS, ClientGone
from chaosstream.mock._stream import Pacer, json_data, open_event_stream, sse_event
from chaosstream.mock._text import answer_tokens, count_prompt_tokens


class _Answer:
    """One response: its id, tokens and the events that stream it."""

    def __init__(self, body: dict[str, Any], settings: MockSettings) -> None:
        self.body = body
        self.id = f"resp_{uuid.uuid4().hex[:24]}"
        self.item_id = f"msg_{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = str(body.get("model") or DEFAULT_MODEL)
        tokens = answer_tokens(body, settings.tokens)
        limit = body.get("max_output_tokens")
        self.incomplete = isinstance(limit, int) and 0 <= limit < len(tokens)
        self.tokens = tokens[:limit] if self.incomplete and isinstance(limit, int) else tokens
        self.text = "".join(self.tokens)

    def response(self, status: str, with_output: bool) -> dict[str, Any]:
        """The Response object in a given status."""
        output: list[dict[str, Any]] = []
        if with_output:
            output = [self.item("completed" if status == "completed" else "incomplete")]
        prompt = count_prompt_tokens(self.body)
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": bool(self.body.get("background")),
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if status == "incomplete"
            else None,
            "instructions": self.body.get("instructions"),
            "max_output_tokens": self.body.get("max_output_tokens"),
            "model": self.model,
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": len(self.tokens),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + len(self.tokens),
            }
            if with_output
            else None,
            "metadata": {},
        }

    def item(self, status: str) -> dict[str, Any]:
        return {
            "id": self.item_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": [self.part(self.text)],
        }

    def part(self, text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Every event of the stream, in order, without sequence numbers; tokens at 4..."""
        where = {"item_id": self.item_id, "output_index": 0, "content_index": 0}
        head: list[tuple[str, dict[str, Any]]] = [
            ("response.created", {"response": self.response("in_progress", False)}),
            ("response.in_progress", {"response": self.response("in_progress", False)}),
            (
                "response.output_item.added",
                {
                    "output_index": 0,
                    "item": {**self.item("in_progress"), "content": []},
                },
            ),
            ("response.content_part.added", {**where, "part": self.part("")}),
        ]
        deltas: list[tuple[str, dict[str, Any]]] = [
            ("response.output_text.delta", {**where, "delta": token, "logprobs": []})
            for token in self.tokens
        ]
        final = "response.incomplete" if self.incomplete else "response.completed"
        tail: list[tuple[str, dict[str, Any]]] = [
            ("response.output_text.done", {**where, "text": self.text, "logprobs": []}),
            ("response.content_part.done", {**where, "part": self.part(self.text)}),
            (
                "response.output_item.done",
                {"output_index": 0, "item": self.item("completed")},
            ),
            (final, {"response": self.response(final.split(".")[1], True)}),
        ]
        return head + deltas + tail


REMEMBERED: web.AppKey[OrderedDict[str, _Answer]] = web.AppKey(
    "chaosstream_mock_responses", OrderedDict
)
#: Responses kept for GET and resume; the oldest is forgotten past this.
REMEMBER_LIMIT = 256


HEAD_EVENTS = 4
"""Events before the first delta: they go out with it, at TTFT."""


def _frame(seq: int, kind: str, fields: dict[str, Any]) -> bytes:
    return sse_event(json_data({"type": kind, "sequence_number": seq, **fields}), event=kind)


async def _read_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = loads_bounded(raw)
    except JsonTooDeep:
        raise
    except ValueError as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    if "input" not in body:
        raise ValueError("Missing required parameter: 'input'.")
    return body


def _remember(app: web.Application, answer: _Answer) -> None:
    kept = app[REMEMBERED]
    kept[answer.id] = answer
    while len(kept) > REMEMBER_LIMIT:
        kept.popitem(last=False)


async def create(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``: a Response object, or its event stream."""
    try:
        body = await _read_body(request)
        settings = with_overrides(request.app[SETTINGS], request.headers)
    except (ValueError, BadOverride) as exc:
        return openai_error(400, str(exc))
    answer = _Answer(body, settings)
    _remember(request.app, answer)
    pacer = Pacer(request, settings)
    if body.get("stream") is True:
        return await _stream(request, pacer, answer, -1)
    try:
        # A real non-streaming call answers once the whole text is generated.
        await pacer.wait_token(max(len(answer.tokens) - 1, 0))
    except ClientGone:
        return web.Response(status=499)
    status = "incomplete" if answer.incomplete else "completed"
    return web.json_response(answer.response(status, True))


async def retrieve(request: web.Request) -> web.StreamResponse:
    """``GET /v1/responses/{id}``; with ``stream=true`` the events after ``starting_after``."""
    answer = request.app[REMEMBERED].get(request.match_info["response_id"])
    if answer is None:
        return openai_error(404, "No response found with that id.")
    if request.query.get("stream") != "true":
        return web.json_response(answer.response("completed", True))
    try:
        after = int(request.query.get("starting_after", "-1"))
        settings = with_overrides(request.app[SETTINGS], request.headers)
    except (ValueError, BadOverride) as exc:
        return openai_error(400, f"starting_after: {exc}")
    return await _stream(request, Pacer(request, settings), answer, after)


async def _stream(
    request: web.Request, pacer: Pacer, answer: _Answer, after: int
) -> web.StreamResponse:
    events = answer.events()
    resp = await open_event_stream(request)
    try:
        async with request.app[STATS].track():
            await pacer.wait_token(0)
            pending = b""
            for seq, (kind, fields) in enumerate(events):
                token = seq - HEAD_EVENTS
                if 0 < token < len(answer.tokens):
                    await pacer.wait_token(token)
                if seq > after:
                    pending += _frame(seq, kind, fields)
                # The head goes out with the first delta, the tail with the last.
                if HEAD_EVENTS <= seq < HEAD_EVENTS + len(answer.tokens) - 1 and pending:
                    await resp.write(pending)
                    pending = b""
            await resp.write(pending)
            await resp.write_eof()
    except (ClientGone, ConnectionError):
        pass
    return resp
