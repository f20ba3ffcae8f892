"""The built-in profiles load, describe their sources and stay fair; the registry is the schema."""

from __future__ import annotations

import pytest

from chaosstream.faults import FAULT_TYPES, REGISTRY, HttpError
from chaosstream.faults.profile import builtin_names, load_profile, profile_schema

REQUIRED = [
    "clean", "mobile-3g", "mobile-4g-slow", "mobile-lossy", "edge-2g", "subway-tunnel",
    "flaky-wifi", "midstream-reset", "midstream-close", "silent-stall", "slow-first-token",
    "slow-drip", "overloaded-api", "buffering-proxy", "malformed-events",
]  # fmt: skip


def test_every_required_builtin_exists() -> None:
    """Every profile the issue lists ships with the package."""
    assert set(REQUIRED) <= set(builtin_names())


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_loads_with_description(name: str) -> None:
    """Each built-in validates, is named after its file and says what it simulates."""
    profile = load_profile(name)
    assert profile.name == name
    assert len(profile.description.split()) >= 15


@pytest.mark.parametrize("name", builtin_names())
def test_builtin_is_fair_to_a_retrying_client(name: str) -> None:
    """Cutting faults fire on a few early requests only: 5 attempts can get through."""
    for fault in load_profile(name).faults:
        cuts = fault.type not in ("latency", "throttle", "buffer", "gzip", "loss")
        if cuts and fault.window is None:
            assert fault.requests is not None and max(fault.requests) <= 4, fault


def test_overloaded_api_sends_retry_after() -> None:
    """overloaded-api refuses with 429 then 503, both with Retry-After."""
    errors = [f for f in load_profile("overloaded-api").faults if isinstance(f, HttpError)]
    assert [(e.status, e.retry_after_s is not None) for e in errors] == [(429, True), (503, True)]


def test_registry_matches_schema() -> None:
    """Every registered fault type is in the profile schema and vice versa."""
    schema_types = {
        d["properties"]["type"]["const"]
        for d in profile_schema()["$defs"].values()
        if "const" in d.get("properties", {}).get("type", {})
    }
    assert set(REGISTRY) == {c.model_fields["type"].default for c in FAULT_TYPES}
    assert set(REGISTRY) <= schema_types
