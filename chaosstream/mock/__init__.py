"""The embedded mock model server.

Routes, one module per wire format, each streaming and not, so the official
SDKs work against it unchanged:

- OpenAI Chat Completions ``POST /v1/chat/completions`` (``_openai``);
- OpenAI Responses ``POST /v1/responses`` and ``GET /v1/responses/{id}``
  (``?stream=true&starting_after=N`` resumes a background response) (``_responses``);
- Anthropic Messages ``POST /v1/messages`` (``_anthropic``);
- Gemini ``POST /v1beta/models/{m}:streamGenerateContent?alt=sse`` and
  ``:generateContent``, also under ``/v1`` (``_gemini``);
- Ollama ``POST /api/chat`` and ``/api/generate`` (NDJSON, streaming unless
  ``"stream": false``), ``GET /api/tags``, ``/api/version`` (``_ollama``);
- the AI SDK UI message stream ``POST /api/ui/chat``, and ``POST /api/chat``
  when the body is ``useChat``'s (it carries ``trigger``) (``_ui_stream``);
- Bedrock Runtime ``POST /model/{id}/converse-stream`` and ``/converse`` (``_bedrock``);
- an MCP server on Streamable HTTP, ``POST``/``GET``/``DELETE /mcp`` (``_mcp``);
- a generic ``/sse`` and ``/ws``, ``/bytes``, ``/echo``, ``/healthz`` (``_generic``).

The answer for a prompt is deterministic, so a test can compare what a client
shows with :func:`answer_text` (:func:`mock_answer` for a recorded request of
any format).

Limits against hostile clients (:class:`MockLimits`, ``CHAOSSTREAM_MOCK_*``):
a request head within 30 s, idle keep-alive 75 s, /ws messages up to 1 MiB and
8 queued prompts per socket; the request history keeps 1,000 requests and
16 MiB at most; JSON nests at most 128 levels.
"""

from chaosstream.mock._answers import mock_answer
from chaosstream.mock._app import WEB_DIR, create_app
from chaosstream.mock._limits import MockLimits
from chaosstream.mock._server import MockServer, run_mock, start_mock
from chaosstream.mock._settings import (
    HEADER_TOKENS,
    HEADER_TOKENS_PER_S,
    HEADER_TTFT_MS,
    SETTINGS,
    BadOverride,
    MockSettings,
)
from chaosstream.mock._stats import STATS, MockStats, RecordedRequest
from chaosstream.mock._text import answer_text, answer_tokens, mock_bytes, prompt_key

__all__ = [
    "HEADER_TOKENS",
    "HEADER_TOKENS_PER_S",
    "HEADER_TTFT_MS",
    "SETTINGS",
    "STATS",
    "WEB_DIR",
    "BadOverride",
    "MockLimits",
    "MockServer",
    "MockSettings",
    "MockStats",
    "RecordedRequest",
    "answer_text",
    "answer_tokens",
    "create_app",
    "mock_answer",
    "mock_bytes",
    "prompt_key",
    "run_mock",
    "start_mock",
]
