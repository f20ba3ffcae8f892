"""The embedded mock model server.

OpenAI ``/v1/chat/completions`` and Anthropic ``/v1/messages`` (streaming and not),
a generic ``/sse`` and ``/ws``, plus byte-exactness helpers. The answer for a
prompt is deterministic, so a test can compare what a client shows with
:func:`answer_text`.

Limits against hostile clients (:class:`MockLimits`, ``CHAOSSTREAM_MOCK_*``):
a request head within 30 s, idle keep-alive 75 s, /ws messages up to 1 MiB and
8 queued prompts per socket; the request history keeps 1,000 requests and
16 MiB at most; JSON nests at most 128 levels.
"""

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
    "mock_bytes",
    "prompt_key",
    "run_mock",
    "start_mock",
]
