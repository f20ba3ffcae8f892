"""Deterministic answers: the same prompt always streams the same tokens."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from typing import Any

from chaosstream.mock._json import loads_bounded

# Word-like pieces as a tokenizer would cut them. The non-ASCII words (2-, 3- and
# 4-byte UTF-8) make sure a client that splits bytes mid-character gets caught.
# fmt: off
_WORDS: tuple[str, ...] = (
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "stream", "token",
    "network", "packet", "latency", "client", "server", "model", "answer", "retry",
    "resume", "buffer", "signal", "mobile", "tower", "river", "window", "garden",
    "harbor", "morning", "careful", "gentle", "bright", "steady", "simple", "honest",
    "patient", "rapid", "silent", "every", "small", "piece", "arrives", "slowly",
    "then", "all", "at", "once", "and", "with", "without", "never", "always", "often",
    "café", "naïve", "über", "façade", "résumé", "jalapeño", "smörgåsbord", "東京",
    "données", "🚀", "✓", "λ",
)
# fmt: on
_BYTES_CHUNK = 65536
_PUNCTUATION: tuple[str, ...] = (",", ".", ";", ":", "!", "?")

# Fields that shape *how* an answer is delivered, not *what* it says; they never
# change the text, so a streaming request and its non-streaming fallback match.
# fmt: off
_DELIVERY_FIELDS = frozenset({
    "stream", "stream_options", "model", "max_tokens", "max_completion_tokens",
    "temperature", "top_p", "top_k", "n", "seed", "user", "metadata",
    "stop", "stop_sequences", "tokens", "ttft_ms", "tokens_per_s",
    "max_output_tokens", "background", "store",  # OpenAI Responses
})
# fmt: on


def prompt_key(body: bytes | str | Mapping[str, Any]) -> str:
    """Return the canonical prompt text that seeds the answer for ``body``.

    A mapping with ``messages`` (OpenAI or Anthropic) is keyed on its messages and
    ``system``; one with ``prompt`` on that string; any other mapping on its
    content fields. Bytes and strings holding a JSON object are parsed; anything
    else is itself the prompt, so ``answer_text("hi", n) == answer_text({"prompt": "hi"}, n)``.
    """
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            # Bounded: a body nested too deeply for json.dumps below is plain text.
            parsed = loads_bounded(body)
        except ValueError:
            return body
        if not isinstance(parsed, Mapping):
            return body
        body = parsed
    if "messages" in body:
        material: dict[str, Any] = {"messages": body["messages"]}
        if "system" in body:
            material["system"] = body["system"]
        return _canonical(material)
    if "prompt" in body:
        prompt = body["prompt"]
        return prompt if isinstance(prompt, str) else _canonical(prompt)
    return _canonical({k: v for k, v in body.items() if k not in _DELIVERY_FIELDS})


def answer_tokens(body: bytes | str | Mapping[str, Any], tokens: int) -> list[str]:
    """Return the ``tokens`` answer tokens for the prompt in ``body``.

    The first token has no leading space; later words do and punctuation does not.
    The list for ``n`` tokens is a prefix of the list for ``n + k`` tokens, and a
    seed from SHA-256 (not the salted ``hash()``) keeps it stable across processes.
    """
    if tokens < 0:
        raise ValueError(f"tokens must be >= 0, got {tokens}")
    digest = hashlib.sha256(prompt_key(body).encode("utf-8")).digest()
    rng = random.Random(int.from_bytes(digest[:16], "big"))
    out: list[str] = []
    for index in range(tokens):
        previous_is_word = bool(out) and out[-1] not in _PUNCTUATION
        if index > 1 and previous_is_word and rng.random() < 0.15:
            out.append(rng.choice(_PUNCTUATION))
            continue
        word = rng.choice(_WORDS)
        out.append(word.capitalize() if index == 0 else " " + word)
    return out


def answer_text(body: bytes | str | Mapping[str, Any], tokens: int) -> str:
    """Return the full answer text: ``"".join(answer_tokens(body, tokens))``."""
    return "".join(answer_tokens(body, tokens))


def count_prompt_tokens(body: bytes | str | Mapping[str, Any]) -> int:
    """Return a rough prompt token count for ``usage`` blocks (words in the prompt)."""
    return max(1, len(prompt_key(body).split()))


def mock_bytes(n: int, seed: str | int = 0) -> bytes:
    """Return ``n`` deterministic pseudo-random bytes for ``seed`` (what ``/bytes`` serves)."""
    return b"".join(iter_mock_bytes(n, seed))


def iter_mock_bytes(n: int, seed: str | int = 0) -> Iterator[bytes]:
    """Yield ``mock_bytes(n, seed)`` lazily in pieces of at most 64 KiB."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for index, start in enumerate(range(0, n, _BYTES_CHUNK)):
        # One SHAKE stream per fixed-size chunk lets a server produce the body lazily.
        xof = hashlib.shake_256(f"{seed}:{index}".encode())
        yield xof.digest(min(_BYTES_CHUNK, n - start))


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
