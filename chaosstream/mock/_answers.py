"""The mock's whole answer to a recorded request, per wire format, without asking the mock.

The verifier needs the full answer to tell a truncated answer from a complete
one when no attempt got a whole answer from upstream (a cut on the only
attempt). Most routes key the answer on the request body as it is
(:func:`answer_text`); Ollama and the AI SDK UI stream key it on the messages'
text only (their bodies carry images, options, ids that must not change it),
so their keys are rebuilt here exactly as their routes build them.
"""

from __future__ import annotations

from typing import Any

from chaosstream.mock._json import loads_bounded
from chaosstream.mock._ollama import chat_messages
from chaosstream.mock._realtime import user_text
from chaosstream.mock._text import answer_text
from chaosstream.mock._ui_stream import ui_messages_as_chat

# Formats whose mock route answers answer_text(body): the body's messages/system or prompt.
_AS_IS = frozenset({"openai", "anthropic", "openai-responses", "gemini", "bedrock"})


def mock_answer(provider: str, body: bytes, tokens: int) -> str | None:
    """The text the mock answers ``body`` with on ``provider``'s route, or None if unknown."""
    if provider in _AS_IS:
        return answer_text(body, tokens)
    if provider == "openai-realtime":
        # The client's events, one JSON line each (proxy/websocket.py records them).
        items = []
        for line in body.splitlines():
            try:
                event = loads_bounded(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("type") == "conversation.item.create":
                item = event.get("item")
                items.append(item if isinstance(item, dict) else {})
        return answer_text(user_text(items), tokens) if items else None
    if provider not in ("ollama", "ui-message-stream", "mcp"):
        return None
    try:
        parsed: Any = loads_bounded(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    if provider == "mcp":
        # tools/call of the mock's tool: the answer keys on arguments.prompt (_mcp._call).
        params = parsed.get("params")
        arguments = params.get("arguments") if isinstance(params, dict) else None
        if not isinstance(arguments, dict):
            return None
        return answer_text(str(arguments.get("prompt", "")), tokens)
    if provider == "ui-message-stream":
        messages = parsed.get("messages")
        if not isinstance(messages, list):
            return None
        return answer_text({"messages": ui_messages_as_chat(messages)}, tokens)
    # Ollama: /api/chat keys on messages (+ system), /api/generate on prompt (_ollama._answer).
    if isinstance(parsed.get("messages"), list):
        key: dict[str, Any] = {"messages": chat_messages(parsed["messages"])}
        if isinstance(parsed.get("system"), str):
            key["system"] = parsed["system"]
        return answer_text(key, tokens)
    return answer_text({"prompt": parsed.get("prompt") or ""}, tokens)
