"""What a load run asks for: the profile mix, the request each user sends, the retry policy.

Everything here is plain data checked before anything starts, so bad input ends
with one line naming the option (exit 2), never halfway through a run.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from chaosstream.faults.base import RequestInfo
from chaosstream.faults.profile import Profile, load_profile
from chaosstream.streams.providers import Provider, provider_for
from chaosstream.yamlfile import InputError, cut

__all__ = [
    "FORMATS",
    "MAX_PROMPT_FILE_BYTES",
    "RETRY_POLICIES",
    "Format",
    "LoadPlan",
    "MixEntry",
    "RetryPolicy",
    "Target",
    "parse_mix",
    "read_prompts",
    "retry_policy",
    "retryable",
]

Format = Literal["openai-chat", "anthropic"]
FORMATS: dict[str, str] = {
    "openai-chat": "/v1/chat/completions",
    "anthropic": "/v1/messages",
}
"""Wire format -> its streaming endpoint under the upstream URL."""

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
    provider: Provider

    @classmethod
    def from_url(cls, url: str, fmt: str) -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        suffix = FORMATS[fmt]
        base = parts.path.rstrip("/")
        # A base URL that already ends in /v1 (OPENAI_BASE_URL style) is not doubled.
        if base.endswith("/v1") and suffix.startswith("/v1/"):
            suffix = suffix[3:]
        host, port = parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80)
        # The provider (how a frame is read) follows from the endpoint, as in the proxy.
        return cls(host, port, tls, base + suffix, provider_for(suffix))


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

    @property
    def target(self) -> Target:
        return Target.from_url(self.upstream, self.format)

    def body(self, prompt: str) -> bytes:
        """The streaming request body of the plan's format."""
        messages = [{"role": "user", "content": prompt}]
        if self.format == "anthropic":
            data: dict[str, object] = {
                "model": self.model,
                "max_tokens": self.max_tokens,
                "messages": messages,
                "stream": True,
            }
        else:
            data = {"model": self.model, "messages": messages, "stream": True}
        return json.dumps(data).encode()

    def headers(self) -> dict[str, str]:
        """Request headers (lower-case names) of the plan's format, with its key."""
        target = self.target
        headers = {
            "host": target.host if target.port in (80, 443) else f"{target.host}:{target.port}",
            "content-type": "application/json",
            "accept": "text/event-stream",
            "user-agent": "chaosstream-load",
        }
        if self.format == "anthropic":
            headers["x-api-key"] = self.api_key
            headers["anthropic-version"] = "2023-06-01"
        else:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def request_info(self, body: bytes) -> RequestInfo:
        """What the fault triggers see: the same view the proxy builds."""
        target = self.target
        return RequestInfo(
            method="POST",
            path=target.path,
            query="",
            headers=self.headers(),
            body=body,
            provider=target.provider,
            stream=True,
            json=json.loads(body),
        )
