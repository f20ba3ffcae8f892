"""docs/limits.md states the defaults the code really has."""

from __future__ import annotations

from pathlib import Path

import pytest

from chaosstream import yamlfile
from chaosstream.faults import base, trigger
from chaosstream.faults._regex import MAX_HEADER_VALUE_CHARS
from chaosstream.mock import _json, _limits, _settings, _stats
from chaosstream.proxy import record
from chaosstream.proxy import server as proxy

PAGE = (Path(__file__).resolve().parents[1] / "docs" / "limits.md").read_text()
MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("value", "expected", "phrase"),
    [
        (proxy.IDLE_TIMEOUT_S, 60.0, "| 60 s | `--idle-timeout-s`"),
        (proxy.UPSTREAM_HEAD_TIMEOUT_S, 300.0, "| 300 s | `--upstream-timeout-s`"),
        (proxy.MAX_EVENT_BYTES, MIB, "| 1 MiB | `--max-event-bytes`"),
        (MAX_HEADER_VALUE_CHARS, 8192, "| 8,192 characters |"),
        (record.RECORD_BUDGET, 64 * MIB, "| 64 MiB | `--record-budget-mib`"),
        (record.BODY_LIMIT, 8 * MIB, "| 8 MiB | `--record-body-limit-mib`"),
        (record.COMPACT_REQUEST_LIMIT, 64 * 1024, "| 64 KiB |"),
        (yamlfile.MAX_INPUT_BYTES, MIB, "| 1 MiB | `CHAOSSTREAM_MAX_INPUT_BYTES`"),
        (yamlfile.MAX_ERRORS, 50, "| 50 |"),
        (base.MIN_WINDOW_S, 0.01, "| at least 0.01 s |"),
        (trigger.MIN_GATE_STEP_S, 0.001, "once a millisecond"),
        (_limits.HEAD_TIMEOUT_S, 30.0, "| 30 s | `--head-timeout-s`"),
        (_limits.IDLE_TIMEOUT_S, 75.0, "| 75 s | `--idle-timeout-s`"),
        (_limits.WS_MAX_MSG_BYTES, MIB, "| 1 MiB | `CHAOSSTREAM_MOCK_WS_MAX_MSG_BYTES`"),
        (_limits.WS_QUEUE, 8, "| 8 | `CHAOSSTREAM_MOCK_WS_QUEUE`"),
        (_stats.REQUEST_HISTORY_BYTES, 16 * MIB, "1,000 requests, 16 MiB"),
        (_json.MAX_JSON_DEPTH, 128, "| 128 levels |"),
        (_settings.MAX_TTFT_MS, 600_000, "| 0 to 600,000 |"),
        (_settings.MAX_TOKENS, 100_000, "| up to 100,000 |"),
    ],
)
def test_page_states_the_default(value: object, expected: object, phrase: str) -> None:
    """Each documented default equals the constant in the code, and the page says it."""
    assert value == expected
    assert phrase in PAGE
