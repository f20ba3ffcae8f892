"""What a load run asks for: the profile mix, the request each user sends, the retry policy.

Everything here is plain data checked before anything starts, so bad input ends
with one line naming the option (exit 2), never halfway through a run.
"""

from __future__ import annotations

import json
import math
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from chaosstream.faults.base import RequestInfo
from chaosstream.faults.profile import Profile, load_profile
from chaosstream.streams.providers import Provider
from chaosstream.streams.registry import get
from chaosstream.yamlfile import InputError, cut

__all__ = [
    "FORMATS",
    "MAX_PROMPT_FILE_BYTES",
    "RETRY_POLICIES",
    "LoadPlan",
    "MixEntry",
    "RequestShape",
    "RetryPolicy",
    "Target",
    "parse_mix",
    "read_prompts",
    "retry_policy",
    "retryable",
]


def _chat(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True}


def _responses(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    # openai-python responses.create(stream=True): `input` may be a plain string.
    return {"model": model, "input": prompt, "stream": True}


def _anthropic(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    # Messages API: max_tokens is required (anthropic-sdk-python MessageCreateParams).
    return {**_chat(model, prompt, max_tokens), "max_tokens": max_tokens}


def _gemini(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    # GenerateContentRequest: the model is in the path, streaming is the method.
    return {
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": {"maxOutputTokens": max_tokens},
    }


def _bedrock(model: str, prompt: str, max_tokens: int) -> dict[str, Any]:
    # ConverseStream: the model is in the path; content is a list of blocks.
    return {
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "inferenceConfig": {"maxTokens": max_tokens},
    }


@dataclass(frozen=True, slots=True)
class RequestShape:
    """How one wire format asks for a stream; reading it is the registry's format's job.

    ``wire`` names the :class:`~chaosstream.streams.format.WireFormat` in
    :mod:`chaosstream.streams.registry`, which gives each frame's text, the
    terminal and error frames and the framer: nothing in ``load/`` reads a
    format's frames itself.
    """

    wire: str
    path: str
    """Endpoint under the upstream URL; ``{model}`` is replaced by the model name."""
    body: Callable[[str, str, int], dict[str, Any]]
    """``(model, prompt, max_tokens)`` -> the JSON body of a streaming request."""
    key_header: str | None = "authorization"
    """Where the API key goes (``authorization`` gets ``Bearer``); None: no key."""
    key_env: str | None = "OPENAI_API_KEY"
    """The environment variable the format's official SDK reads its key from."""
    headers: tuple[tuple[str, str], ...] = ()


FORMATS: dict[str, RequestShape] = {
    "openai-chat": RequestShape("openai", "/v1/chat/completions", _chat),
    "openai-responses": RequestShape("openai-responses", "/v1/responses", _responses),
    "anthropic": RequestShape(
        "anthropic",
        "/v1/messages",
        _anthropic,
        "x-api-key",
        "ANTHROPIC_API_KEY",
        (("anthropic-version", "2023-06-01"),),
    ),
    # google-genai: models.generate_content_stream posts to :streamGenerateContent?alt=sse
    # with the key in x-goog-api-key.
    "gemini": RequestShape(
        "gemini",
        "/v1beta/models/{model}:streamGenerateContent?alt=sse",
        _gemini,
        "x-goog-api-key",
        "GEMINI_API_KEY",
    ),
    # Ollama's /api/chat streams NDJSON by default and takes no key.
    "ollama": RequestShape("ollama", "/api/chat", _chat, None, None),
    # Bedrock's event stream; no SigV4 signing: the mock, or a gateway that signs.
    "bedrock": RequestShape("bedrock", "/model/{model}/converse-stream", _bedrock, None, None),
}
"""``--format`` name -> how its streaming request is made. A new wire format needs one
entry here (its endpoint and body); its frames are read through the registry."""

MAX_PROMPT_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class MixEntry:
    """One profile of the mix and its share of the users."""

    name: str
    share: float
    profile: Profile


def parse_mix(text: str) -> list[MixEntry]:
    """``mobile-3g=0.7,flaky-wifi=0.2,clean=0.1`` -> entries; shares are normalised.

    A profile is a built-in name or a file path (``./my.yaml=0.5``). Raises
    :class:`InputError` naming the bad part.
    """
    entries: list[MixEntry] = []
    seen: set[str] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, share_text = part.rpartition("=")
        if not sep or not name.strip():
            raise InputError(f"--mix: {cut(part)} is not PROFILE=SHARE")
        name = name.strip()
        try:
            share = float(share_text)
        except ValueError:
            raise InputError(
                f"--mix: {cut(name)}: share {cut(share_text)} is not a number"
            ) from None
        if not math.isfinite(share) or share <= 0:
            raise InputError(
                f"--mix: {cut(name)}: share must be a number above 0, got {share_text}"
            )
        profile = load_profile(name)
        label = profile.name if ("/" in name or name.endswith((".yaml", ".yml"))) else name
        if label in seen:
            raise InputError(f"--mix: profile {cut(label)} is named twice")
        seen.add(label)
        entries.append(MixEntry(label, share, profile))
    if not entries:
        raise InputError("--mix: give at least one PROFILE=SHARE")
    total = sum(e.share for e in entries)
    return [MixEntry(e.name, e.share / total, e.profile) for e in entries]


def read_prompts(path: str | None) -> list[str]:
    """One prompt per non-empty line of ``path``; a built-in prompt when None."""
    if path is None:
        return ["Explain in a few sentences why streaming responses need careful error handling."]
    p = Path(path)
    try:
        if p.stat().st_size > MAX_PROMPT_FILE_BYTES:
            raise InputError(f"{path}: larger than {MAX_PROMPT_FILE_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"{path}:1: no prompt (one prompt per non-empty line)")
    return prompts


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When a user asks again after a failed attempt, and how long it waits first."""

    name: str
    max_attempts: int
    base_s: float = 0.0
    cap_s: float = 0.0
    honour_retry_after: bool = False
    max_retry_after_s: float = 60.0

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (``attempt`` is 1-based)."""
        if (
            self.honour_retry_after
            and retry_after_s is not None
            and 0 <= retry_after_s <= self.max_retry_after_s
        ):
            return retry_after_s
        if not self.base_s:
            return 0.0
        # openai-python _base_client._calculate_retry_timeout: min(0.5 * 2**n, 8) s,
        # times a jitter of 1 - 0.25 * random().
        delay = min(self.base_s * 2.0 ** (attempt - 1), self.cap_s)
        return delay * (1.0 - 0.25 * rng.random())


RETRY_POLICIES: dict[str, RetryPolicy] = {
    "none": RetryPolicy("none", 1),
    # The official SDKs' defaults: 2 retries, exponential backoff from 0.5 s capped at
    # 8 s, Retry-After honoured up to 60 s (openai-python and anthropic-sdk-python
    # _base_client: DEFAULT_MAX_RETRIES = 2, INITIAL_RETRY_DELAY = 0.5, MAX_RETRY_DELAY = 8).
    "sdk": RetryPolicy("sdk", 3, 0.5, 8.0, honour_retry_after=True),
    # A naive client in a loop: asks again at once, ignores Retry-After, up to 10 times.
    "storm": RetryPolicy("storm", 10),
}


def retry_policy(name: str) -> RetryPolicy:
    try:
        return RETRY_POLICIES[name]
    except KeyError:
        raise InputError(
            f"--retry: {cut(name)} is not one of {', '.join(RETRY_POLICIES)}"
        ) from None


def retryable(outcome: str) -> bool:
    """Would an SDK-built client ask again after this outcome?

    The SDKs retry connection errors, 408, 409, 429 and 5xx; an application built
    on them asks again after a cut stream too (the SDK raises, the app catches).
    Other 4xx are the caller's fault: asking again changes nothing.
    """
    if outcome.startswith("http_"):
        status = int(outcome[5:])
        return status in (408, 409, 429) or status >= 500
    return outcome != "complete"


@dataclass(frozen=True, slots=True)
class Target:
    """Where users send their streaming requests."""

    host: str
    port: int
    tls: bool
    path: str
    """Request target: the path and, when the format has one, its query (``?alt=sse``)."""
    provider: Provider
    """The wire format's registry name: how a frame is read, as in the proxy."""

    @classmethod
    def from_url(cls, url: str, fmt: str, model: str = "chaosstream-mock") -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        shape = FORMATS[fmt]
        suffix = shape.path.replace("{model}", quote(model, safe=""))
        base = parts.path.rstrip("/")
        # A base URL that already ends in the endpoint's first segment (OPENAI_BASE_URL
        # style .../v1, Gemini's .../v1beta, Ollama's .../api) is not doubled.
        first = "/" + suffix.split("/")[1]
        if base.endswith(first):
            suffix = suffix[len(first) :]
        host, port = parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80)
        return cls(host, port, tls, base + suffix, shape.wire)


@dataclass
class LoadPlan:
    """Everything one process needs to run users: checked, immutable during the run."""

    upstream: str
    mix: list[MixEntry]
    format: str = "openai-chat"
    prompts: list[str] = field(default_factory=lambda: read_prompts(None))
    retry: RetryPolicy = RETRY_POLICIES["none"]
    model: str = "chaosstream-mock"
    api_key: str = "chaosstream-dummy-key"
    timeout_s: float = 60.0
    think_s: float = 0.0
    ttft_slo_ms: float | None = None
    ttlt_slo_ms: float | None = None
    max_tokens: int = 256
    seed: int = 7
    ca_file: str | None = None
    """PEM bundle to verify an HTTPS upstream with, instead of the system's (as ``proxy``)."""
    insecure: bool = False
    """Do not verify an HTTPS upstream's certificate (as ``proxy --insecure``)."""

    @property
    def shape(self) -> RequestShape:
        return FORMATS[self.format]

    @property
    def target(self) -> Target:
        return Target.from_url(self.upstream, self.format, self.model)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context every user of the process shares (None for plain HTTP).

        Made once: loading the trust store costs milliseconds, a handshake's worth.
        """
        if urlsplit(self.upstream).scheme != "https":
            return None
        context = ssl.create_default_context(cafile=self.ca_file)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def body(self, prompt: str) -> bytes:
        """The streaming request body of the plan's format."""
        return json.dumps(self.shape.body(self.model, prompt, self.max_tokens)).encode()

    def headers(self) -> dict[str, str]:
        """Request headers (lower-case names) of the plan's format, with its key."""
        target, shape = self.target, self.shape
        default_port = 443 if target.tls else 80
        host = f"[{target.host}]" if ":" in target.host else target.host  # RFC 9110 7.2
        headers = {
            "host": host if target.port == default_port else f"{host}:{target.port}",
            "content-type": "application/json",
            "accept": get(shape.wire).media_type,
            "user-agent": "chaosstream-load",
        }
        if shape.key_header == "authorization":
            headers["authorization"] = f"Bearer {self.api_key}"
        elif shape.key_header is not None:
            headers[shape.key_header] = self.api_key
        headers.update(shape.headers)
        return headers

    def request_info(self, body: bytes) -> RequestInfo:
        """What the fault triggers see: the same view the proxy builds."""
        target = self.target
        path, _, query = target.path.partition("?")
        return RequestInfo(
            method="POST",
            path=path,
            query=query,
            headers=self.headers(),
            body=body,
            provider=target.provider,
            stream=True,
            json=json.loads(body),
        )
