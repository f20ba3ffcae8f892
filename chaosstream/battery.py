"""The `check` battery: the standard scenarios every streaming client should survive.

One scenario per failure the seed article lists. Each fault hits the first
attempt only (``requests: [1]``) where a retry can recover, so a resilient
client completes; a client that cannot recover must at least say so. The rule
for every scenario is the same (:data:`chaosstream.verify.RESILIENT`): complete
or surface the error, never present truncated text as complete, never exceed
the attempt limit, never retry sooner than Retry-After.
"""

from __future__ import annotations

from typing import Any

from chaosstream.profile import Profile, builtin_names, load_profile, profile_from_data
from chaosstream.scenario import Scenario

__all__ = ["BATTERY", "battery"]

_STREAM_FIRST = {"match": {"stream": True}, "requests": [1]}

BATTERY: list[tuple[str, str | dict[str, Any]]] = [
    ("clean", "clean"),
    ("slow-first-token", "slow-first-token"),
    ("midstream-reset", "midstream-reset"),
    ("midstream-close", "midstream-close"),
    ("silent-stall", "silent-stall"),
    (
        "rate-limited-429",
        {
            "version": 1,
            "name": "rate-limited-429",
            "description": "The first request gets 429 Too Many Requests with Retry-After: 1.",
            "faults": [{"type": "http_error", "status": 429, "retry_after_s": 1, "requests": [1]}],
        },
    ),
    (
        "unavailable-503",
        {
            "version": 1,
            "name": "unavailable-503",
            "description": "The first request gets 503 Service Unavailable before any stream.",
            "faults": [{"type": "http_error", "status": 503, "requests": [1]}],
        },
    ),
    (
        "overloaded-in-stream",
        {
            "version": 1,
            "name": "overloaded-in-stream",
            "description": "After 5 events the first stream carries the provider's "
            "overloaded error event, then ends.",
            "faults": [
                {"type": "stream_error", "after_events": 5, "kind": "overloaded", **_STREAM_FIRST}
            ],
        },
    ),
    (
        "malformed-event",
        {
            "version": 1,
            "name": "malformed-event",
            "description": "The 5th event of the first stream is not valid JSON.",
            "faults": [
                {
                    "type": "corrupt",
                    "action": "malformed_json",
                    "after_events": 5,
                    **_STREAM_FIRST,
                }
            ],
        },
    ),
    (
        "buffering-middlebox",
        {
            "version": 1,
            "name": "buffering-middlebox",
            "description": "A proxy on the way buffers the whole stream and sends it at the end.",
            "faults": [{"type": "buffer", "match": {"stream": True}}],
        },
    ),
    (
        "mobile-3g-lossy",
        {
            "version": 1,
            "name": "mobile-3g-lossy",
            "description": "Slow 3G: 300 ms latency with jitter, 400 kbit/s, 2% loss.",
            "network": {"latency_ms": 300, "jitter_ms": 40, "down_kbps": 400, "loss": 0.02},
        },
    ),
]
"""(scenario name, built-in profile name or inline profile) in the order `check` runs them."""


def battery(timeout_s: float = 60.0) -> list[tuple[Scenario, Profile]]:
    """The battery's scenarios with their profiles; a built-in profile of the
    same name, when one ships, replaces the inline one."""
    builtins = set(builtin_names())
    out: list[tuple[Scenario, Profile]] = []
    for name, spec in BATTERY:
        if isinstance(spec, str) or name in builtins:
            profile = load_profile(spec if isinstance(spec, str) else name)
            ref: str | dict[str, Any] = profile.name
        else:
            profile = profile_from_data(spec, f"battery:{name}")
            ref = spec
        out.append((Scenario(name=name, profile=ref, timeout_s=timeout_s), profile))
    return out
