"""Load plans: the --mix, prompts, retry policies and the request each user sends."""

from __future__ import annotations

import json
import random
import ssl
from pathlib import Path

import pytest

from chaosstream.cli.load import FORMAT_NAMES
from chaosstream.load.plan import (
    FORMATS,
    LoadPlan,
    Target,
    parse_mix,
    read_prompts,
    retry_policy,
    retryable,
)
from chaosstream.yamlfile import InputError


def test_mix_shares_are_normalised() -> None:
    """Shares need not add up to 1: 7/2/1 is the same mix as 0.7/0.2/0.1."""
    mix = parse_mix("mobile-3g=7, flaky-wifi=2,clean=1")
    assert [(e.name, round(e.share, 3)) for e in mix] == [
        ("mobile-3g", 0.7),
        ("flaky-wifi", 0.2),
        ("clean", 0.1),
    ]
    assert mix[0].profile.network is not None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("clean", "is not PROFILE=SHARE"),
        ("clean=x", "is not a number"),
        ("clean=0", "above 0"),
        ("clean=1,clean=2", "named twice"),
        ("no-such-profile=1", "unknown profile"),
        (" , ", "at least one"),
    ],
)
def test_bad_mix_names_the_problem(text: str, words: str) -> None:
    """A bad --mix raises InputError naming what is wrong."""
    with pytest.raises(InputError, match=words):
        parse_mix(text)


def test_profile_file_in_mix(tmp_path: Path) -> None:
    """A profile file in the mix is named by the profile's own name."""
    path = tmp_path / "mine.yaml"
    path.write_text("version: 1\nname: my-net\nnetwork: {latency_ms: 50}\n")
    assert parse_mix(f"{path}=1")[0].name == "my-net"


def test_prompt_file(tmp_path: Path) -> None:
    """One prompt per non-empty line; an empty file is refused with file and line."""
    path = tmp_path / "p.txt"
    path.write_text("first\n\n  second  \n")
    assert read_prompts(str(path)) == ["first", "second"]
    path.write_text("\n\n")
    with pytest.raises(InputError, match=r"p.txt:1: no prompt"):
        read_prompts(str(path))


def test_sdk_policy_backs_off_and_honours_retry_after() -> None:
    """sdk: 0.5 s doubling capped at 8 s (25 % jitter), Retry-After wins when given."""
    policy, rng = retry_policy("sdk"), random.Random(1)
    assert policy.max_attempts == 3
    delays = [policy.delay_s(n, None, rng) for n in (1, 2, 5)]
    assert 0.375 <= delays[0] <= 0.5 and 0.75 <= delays[1] <= 1.0 and 6.0 <= delays[2] <= 8.0
    assert policy.delay_s(1, 2.0, rng) == 2.0


def test_storm_policy_asks_again_at_once() -> None:
    """storm ignores Retry-After and never waits."""
    policy = retry_policy("storm")
    assert policy.max_attempts == 10
    assert policy.delay_s(3, 30.0, random.Random(0)) == 0.0
    with pytest.raises(InputError, match="--retry"):
        retry_policy("sometimes")


def test_retryable_outcomes() -> None:
    """429, 5xx, cuts and connection errors are retried; 400 and a complete answer are not."""
    assert all(retryable(o) for o in ("http_429", "http_503", "reset", "connect", "stall"))
    assert not any(retryable(o) for o in ("http_400", "http_401", "complete"))


def test_target_and_request_of_each_format() -> None:
    """The endpoint follows the format; a base URL ending in /v1 is not doubled."""
    mix = parse_mix("clean=1")
    openai = LoadPlan(upstream="http://127.0.0.1:8000/v1", mix=mix)
    assert openai.target == Target("127.0.0.1", 8000, False, "/v1/chat/completions", "openai")
    assert json.loads(openai.body("hi"))["stream"] is True
    assert openai.headers()["authorization"].startswith("Bearer ")
    anthropic = LoadPlan(upstream="https://api.example.test", mix=mix, format="anthropic")
    assert anthropic.target.path == "/v1/messages" and anthropic.target.port == 443
    assert json.loads(anthropic.body("hi"))["max_tokens"] == 256
    assert anthropic.headers()["anthropic-version"] == "2023-06-01"
    assert anthropic.request_info(anthropic.body("x")).stream is True


def test_gemini_ollama_bedrock_requests() -> None:
    """The model goes in Gemini's and Bedrock's paths; Gemini's key header and alt=sse,
    Ollama's NDJSON Accept and no key; a base URL ending in the first segment is kept."""
    mix = parse_mix("clean=1")
    gemini = LoadPlan(upstream="http://h:1/v1beta", mix=mix, format="gemini", model="g-2")
    assert gemini.target.path == "/v1beta/models/g-2:streamGenerateContent?alt=sse"
    assert gemini.headers()["x-goog-api-key"] == gemini.api_key
    info = gemini.request_info(gemini.body("hi"))
    assert info.path.endswith(":streamGenerateContent") and info.query == "alt=sse"
    assert info.json["contents"][0]["parts"][0]["text"] == "hi"
    ollama = LoadPlan(upstream="http://h:11434", mix=mix, format="ollama")
    assert ollama.target.path == "/api/chat" and ollama.target.provider == "ollama"
    assert ollama.headers()["accept"] == "application/x-ndjson"
    assert "authorization" not in ollama.headers()
    bedrock = LoadPlan(upstream="http://h:1", mix=mix, format="bedrock", model="a.b:0")
    assert bedrock.target.path == "/model/a.b%3A0/converse-stream"
    responses = LoadPlan(upstream="http://h:1/v1/", mix=mix, format="openai-responses")
    assert responses.target.path == "/v1/responses"
    assert json.loads(responses.body("hi"))["input"] == "hi"


def test_tls_context_follows_the_options(tmp_path: Path) -> None:
    """No context for http; https verifies by default; --insecure turns verification off."""
    mix = parse_mix("clean=1")
    assert LoadPlan(upstream="http://h:1", mix=mix).ssl_context() is None
    strict = LoadPlan(upstream="https://h", mix=mix).ssl_context()
    assert strict is not None and strict.verify_mode == ssl.CERT_REQUIRED
    loose = LoadPlan(upstream="https://h", mix=mix, insecure=True).ssl_context()
    assert loose is not None and loose.verify_mode == ssl.CERT_NONE


def test_cli_format_choices_are_the_plans_formats() -> None:
    """`load --format` offers exactly the formats the plan knows how to ask in."""
    assert set(FORMAT_NAMES) == set(FORMATS)
