"""CPU per event with a stream-aware fault armed, per wire format.

Each format's stream is recorded once from the embedded mock (the real bytes
its endpoint sends), then run through the proxy's fault path in process:
framing by the format's framer and a ``disconnect after_tokens`` set past the
end, so every frame is parsed for its text and nothing is cut. The figure is
CPU seconds (``time.process_time``) per event; the rule (issue 13) is that no
format costs more than 1.5x Chat Completions: a FAIL line on stderr and exit 1
name each one that does (here and in ``python -m bench``).

Run alone: ``python -m bench.formats [--events N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiohttp

from chaosstream.faults import Disconnect
from chaosstream.mock import MockSettings, start_mock
from chaosstream.streams.registry import framer_for, get
from chaosstream.testing import make_request, run_fault

# name -> (request path, JSON body); every body asks the mock to stream.
MESSAGES = [{"role": "user", "content": "Tell me about rivers."}]
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"model": "m", "messages": MESSAGES, "stream": True}),
    "openai-responses": ("/v1/responses", {"model": "m", "input": "rivers", "stream": True}),
    "anthropic": (
        "/v1/messages",
        {"model": "m", "max_tokens": 9, "messages": MESSAGES, "stream": True},
    ),
    "gemini": (
        "/v1beta/models/m:streamGenerateContent?alt=sse",
        {"contents": [{"role": "user", "parts": [{"text": "rivers"}]}]},
    ),
    "ollama": ("/api/chat", {"model": "m", "messages": MESSAGES}),
    # The AI SDK UI message stream, as useChat's DefaultChatTransport posts it.
    "ui-message-stream": (
        "/api/ui/chat",
        {
            "id": "c1",
            "trigger": "submit-message",
            "messages": [
                {"id": "m1", "role": "user", "parts": [{"type": "text", "text": "rivers"}]}
            ],
        },
    ),
    # Binary framing (issue 21): the AWS event stream, its CRCs checked on every message.
    "bedrock": (
        "/model/m/converse-stream",
        {"messages": [{"role": "user", "content": [{"text": "rivers"}]}]},
    ),
    # MCP Streamable HTTP (issue 21): a tools/call answered by SSE, one JSON-RPC progress
    # notification per token, then the result (the session is opened first, in record()).
    "mcp": (
        "/mcp",
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {
                "name": "stream_answer",
                "arguments": {"prompt": "rivers"},
                "_meta": {"progressToken": 2},
            },
        },
    ),
}

_MCP_INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}

# OpenAI Realtime (issue 21): a WebSocket; each server message is one chunk, as the relay
# hands them to faults (proxy/websocket.py).
REALTIME_PATH = "/v1/realtime"
REALTIME_EVENTS = [
    {
        "type": "conversation.item.create",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "rivers"}],
        },
    },
    {"type": "response.create"},
]


async def record_realtime(url: str) -> list[bytes]:
    """The server messages of one Realtime answer, as the mock sends them."""
    messages: list[bytes] = []
    async with aiohttp.ClientSession() as http, http.ws_connect(url + REALTIME_PATH) as ws:
        for event in REALTIME_EVENTS:
            await ws.send_json(event)
        async for msg in ws:
            messages.append(msg.data.encode())
            if json.loads(msg.data).get("type") == "response.done":
                break
    return messages


async def record(tokens: int) -> dict[str, bytes | list[bytes]]:
    """Each format's stream body as the mock sends it (Realtime: its messages)."""
    bodies: dict[str, bytes | list[bytes]] = {}
    settings = MockSettings(ttft_ms=0, tokens_per_s=0, tokens=tokens)
    async with await start_mock(settings=settings) as mock, aiohttp.ClientSession() as http:
        for name, (path, body) in REQUESTS.items():
            headers: dict[str, str] = {}
            if name == "mcp":
                async with http.post(mock.url + path, json=_MCP_INIT) as resp:
                    headers["Mcp-Session-Id"] = resp.headers["Mcp-Session-Id"]
            async with http.post(mock.url + path, json=body, headers=headers) as resp:
                bodies[name] = await resp.read()
        bodies["openai-realtime"] = await record_realtime(mock.url)
    return bodies


def per_event_us(name: str, body: bytes | list[bytes], rounds: int) -> tuple[float, int]:
    """Best-of-``rounds`` CPU microseconds per event through the armed fault path."""
    fault = Disconnect(type="disconnect", after_tokens=10**9, mode="reset")
    if isinstance(body, list):  # WebSocket messages: one chunk each, as the relay reads them
        request = make_request(REALTIME_PATH)
        request.websocket = True
        chunks, events, body = body, len(body), b"".join(body)
    else:
        request = make_request(REQUESTS[name][0].split("?", 1)[0])
        events = sum(1 for f in framer_for(get(name)).splitter().feed(body) if f.strip())
        # The proxy reads about 64 KiB at a time; so does this.
        chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    assert request.provider == name, (name, request.provider)
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        result = asyncio.run(run_fault(fault, chunks, request=request))
        best = min(best, time.process_time() - start)
        assert result.data == body, name
    return best / max(events, 1) * 1e6, events


def measure(tokens: int = 2000, rounds: int = 5) -> dict[str, Any]:
    """Per format: events, CPU us per event, and the ratio to Chat Completions."""
    bodies = asyncio.run(record(tokens))
    out: dict[str, Any] = {}
    for name, body in bodies.items():
        us, events = per_event_us(name, body, rounds)
        out[name] = {"events": events, "bytes": len(body), "cpu_us_per_event": round(us, 2)}
    base = out["openai"]["cpu_us_per_event"]
    for row in out.values():
        row["vs_chat"] = round(row["cpu_us_per_event"] / base, 2)
    return out


LIMIT = 1.5
"""No format may cost more than this many times Chat Completions per event (issue 13)."""


def failures(rows: dict[str, Any]) -> list[str]:
    """One ``FAIL`` line per format over :data:`LIMIT`; empty when all are within it."""
    return [
        f"FAIL formats: {name} costs {row['vs_chat']}x Chat Completions per event "
        f"({row['cpu_us_per_event']} us), over the {LIMIT}x limit"
        for name, row in rows.items()
        if row["vs_chat"] > LIMIT
    ]


def table(rows: dict[str, Any]) -> list[str]:
    """Markdown lines for the report."""
    lines = [
        "| format | events | CPU us/event | vs Chat Completions |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['events']} | {row['cpu_us_per_event']} | {row['vs_chat']}x |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.formats", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tokens", type=int, default=2000, help="Tokens per recorded stream.")
    parser.add_argument("--rounds", type=int, default=5, help="Runs per format (best is kept).")
    args = parser.parse_args()
    rows = measure(args.tokens, args.rounds)
    print(json.dumps(rows, indent=2))
    print("\n".join(table(rows)))
    failed = failures(rows)
    for line in failed:
        print(line, file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
