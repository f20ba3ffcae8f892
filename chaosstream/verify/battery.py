"""The `check` battery: the standard scenarios every streaming client should survive.

One scenario per failure the seed article lists, each under a built-in profile
of the same name, so a failure can be replayed with `chaosstream proxy
--profile NAME --seed N` and read in `docs/profiles.md`. Each fault hits the
first attempt only (``requests: [1]``) where a retry can recover, so a
resilient client completes; a client that cannot recover must at least say so.
The rule for every scenario is the same (:data:`chaosstream.verify.expectations.RESILIENT`):
complete or surface the error, never present truncated text as complete, never
exceed the attempt limit, never retry sooner than Retry-After. Two scenarios
test what a byte-level view misses: `keepalive-stall` (keep-alives but no
content: a client must time content, not bytes) and `length-stop` (a clean end
with `finish_reason: "length"`: the client must tell its user the answer is
incomplete, or fetch a whole one).
"""

from __future__ import annotations

from chaosstream.faults.profile import Profile, load_builtin
from chaosstream.verify.scenario import Scenario

__all__ = ["BATTERY", "battery"]

BATTERY: list[tuple[str, str]] = [
    ("clean", "clean"),
    ("slow-first-token", "slow-first-token"),
    ("midstream-reset", "midstream-reset"),
    ("midstream-close", "midstream-close"),
    ("silent-stall", "silent-stall"),
    ("keepalive-stall", "keepalive-stall"),
    ("rate-limited-429", "rate-limited-429"),
    ("unavailable-503", "unavailable-503"),
    ("overloaded-in-stream", "overloaded-in-stream"),
    ("malformed-event", "malformed-event"),
    ("buffering-middlebox", "buffering-middlebox"),
    ("length-stop", "length-stop"),
    ("mobile-3g-lossy", "mobile-3g-lossy"),
]
"""(scenario name, built-in profile name) in the order `check` runs them."""


def battery(timeout_s: float = 60.0) -> list[tuple[Scenario, Profile]]:
    """The battery's scenarios with their built-in profiles."""
    return [
        (Scenario(name=name, profile=ref, timeout_s=timeout_s), load_builtin(ref))
        for name, ref in BATTERY
    ]
