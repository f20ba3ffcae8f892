"""Cassettes: recorded exchanges as versioned, diff-friendly YAML, and matching requests to them.

One cassette is one YAML file (``DIR/cassette.yaml``); docs/cassettes.md is
the reference. Each interaction holds the request (method, path, query,
headers, body) and the response (status, headers, and the body as the frames
its format's framer sees, each with its arrival time in milliseconds since the
request). A frame's bytes are ``data`` when they are UTF-8 text, ``base64``
otherwise, so a recording reads and diffs like the stream it was.

This module is the model and its I/O only (no aiohttp): the proxy records
through it (``proxy/cassette.py``), the mock replays from it
(``mock/cassette.py``). Secrets are redacted *before* anything is written
(:class:`Redactor`); matching redacts the live request the same way, so a
redacted field still matches.
"""

from __future__ import annotations

import base64
import binascii
import copy
import difflib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chaosstream.streams.format import json_or_none
from chaosstream.streams.registry import framer_for, get, is_stream_body
from chaosstream.yamlfile import InputError, cut, load_text, max_input_bytes

__all__ = [
    "CASSETTE_FILE",
    "DEFAULT_MATCH_ON",
    "INDEX_HEADER",
    "MATCHERS",
    "MAX_CASSETTE_BYTES",
    "RECORD_MODES",
    "REDACTED",
    "SECRET_HEADERS",
    "SECRET_QUERY",
    "Cassette",
    "Frame",
    "Interaction",
    "Match",
    "Player",
    "RecordMode",
    "RecordedRequest",
    "RecordedResponse",
    "Redactor",
    "cassette_path",
    "dump_cassette",
    "frames_of",
    "header_list",
    "load_cassette",
    "save_cassette",
]

VERSION = 1
CASSETTE_FILE = "cassette.yaml"
"""The file a cassette folder holds."""

MAX_CASSETTE_BYTES = 256 * 1024 * 1024
"""Cap on a cassette file: recordings hold whole streams, so far more than a profile's 1 MiB."""

INDEX_HEADER = "X-Chaosstream-Cassette-Index"
"""Sent by a recording proxy (``--record-mode new_episodes``) to the replay server for a
request it already matched: the 1-based interaction to play, so it is matched once."""

REDACTED = "REDACTED"
"""What a redacted value becomes on disk."""

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "x-api-key",  # Anthropic
        "api-key",  # Azure OpenAI
        "x-goog-api-key",  # Gemini
        "cookie",
        "set-cookie",
        # AWS SigV4 (Bedrock): the signature is in Authorization; these carry the session
        # token and the signed material (docs.aws.amazon.com, "Signature Version 4").
        "x-amz-security-token",
        "x-amz-signature",
        "x-amz-credential",
    }
)
"""Request and response headers that are always redacted (lower case)."""

SECRET_QUERY = frozenset(
    {"key", "api_key", "api-key", "x-amz-signature", "x-amz-credential", "x-amz-security-token"}
)
"""Query parameters that are always redacted (Gemini's ``?key=``, presigned AWS URLs)."""

RecordMode = Literal["once", "new_episodes", "all", "none"]
RECORD_MODES: tuple[RecordMode, ...] = ("once", "new_episodes", "all", "none")

MATCHERS = ("method", "path", "query", "body", "stream")
"""What a request can be matched on: ``stream`` is the streaming flag itself."""
DEFAULT_MATCH_ON = ("method", "path", "body")
"""Method + path + body with the streaming flag set aside (each format's ``equivalent()``)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Frame(_Model):
    """One frame of a response body and when it arrived (ms since the request)."""

    t_ms: float = Field(ge=0, description="Arrival time, milliseconds since the request.")
    data: str | None = Field(None, description="The frame's bytes as UTF-8 text.")
    base64: str | None = Field(None, description="The frame's bytes, base64, when not UTF-8.")

    @model_validator(mode="after")
    def _one_of(self) -> Frame:
        if (self.data is None) == (self.base64 is None):
            raise ValueError("a frame has exactly one of data (text) or base64 (bytes)")
        if self.base64 is not None:
            try:
                base64.b64decode(self.base64, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("base64: not valid base64") from None
        return self

    @property
    def raw(self) -> bytes:
        """The frame's bytes, exactly as recorded."""
        if self.data is not None:
            return self.data.encode("utf-8")
        return base64.b64decode(self.base64 or "")

    @classmethod
    def of(cls, raw: bytes, t_ms: float) -> Frame:
        """A frame holding ``raw``: text when it is UTF-8 that YAML can carry, else base64."""
        t = round(t_ms, 3)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return cls(t_ms=t, base64=base64.b64encode(raw).decode("ascii"))
        return cls(t_ms=t, data=text)


class RecordedRequest(_Model):
    """The request as recorded (secrets redacted)."""

    method: str
    path: str = Field(pattern=r"^/")
    query: str = ""
    headers: list[tuple[str, str]] = Field(default_factory=list)
    body: str | None = Field(None, description="The body as UTF-8 text.")
    body_base64: str | None = None
    stream: bool = Field(False, description="The request asked for a stream.")
    sent_ms: float = Field(
        0.0,
        ge=0,
        description="When the recording proxy sent it upstream, ms since it arrived: a "
        "replay counts frame times from here, as its own clock starts when the request reaches it.",
    )
    format: str = Field("sse", description="Wire format name (openai, anthropic, ollama, ...).")

    @field_validator("method")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @property
    def raw_body(self) -> bytes:
        if self.body_base64 is not None:
            return base64.b64decode(self.body_base64)
        return (self.body or "").encode("utf-8")

    @property
    def line(self) -> str:
        """``POST /v1/chat/completions?x=1`` for messages."""
        return f"{self.method} {self.path}" + (f"?{self.query}" if self.query else "")


class RecordedResponse(_Model):
    """The response as recorded: status, headers, body frames with times."""

    status: int = Field(ge=100, le=599)
    headers: list[tuple[str, str]] = Field(default_factory=list)
    frames: list[Frame] = Field(default_factory=list)
    end_ms: float = Field(0.0, ge=0, description="When the body ended, ms since the request.")
    complete: bool = Field(True, description="False when upstream broke the body off.")

    @property
    def body(self) -> bytes:
        return b"".join(f.raw for f in self.frames)


class Interaction(_Model):
    """One recorded exchange."""

    request: RecordedRequest
    response: RecordedResponse


class Cassette(_Model):
    """A cassette file: a version and the interactions in recorded order."""

    version: Literal[1] = 1
    recorded_with: str = ""
    interactions: list[Interaction] = Field(default_factory=list)


def cassette_path(folder: str | Path) -> Path:
    """The cassette file of a folder (``DIR/cassette.yaml``); a ``.yaml`` path is itself."""
    p = Path(folder)
    return p if p.suffix in (".yaml", ".yml") else p / CASSETTE_FILE


def load_cassette(path: str | Path, cap: int | None = None) -> Cassette:
    """Read and validate a cassette; errors are ``file:line: field: message`` (InputError).

    ``cap`` (default :data:`MAX_CASSETTE_BYTES`, or the input cap when that is set
    higher) bounds the file size.
    """
    p = cassette_path(path)
    limit = cap if cap is not None else max(MAX_CASSETTE_BYTES, max_input_bytes())
    try:
        with p.open("rb") as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{p}: no such cassette") from None
    except OSError as e:
        raise InputError(f"{p}: cannot read: {cut(e.strerror or e)}") from None
    if len(raw) > limit:
        raise InputError(f"{p}: larger than the {limit} byte cassette cap")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text (byte {e.start})") from None
    return load_text(Cassette, text, str(p), max_bytes=limit)


class _Dumper(yaml.SafeDumper):
    """Flow style for frames and header pairs (one line each), block style elsewhere."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump_cassette(cassette: Cassette) -> str:
    """The cassette as YAML text: one line per frame (``- {t_ms: 12.5, data: "..."}``)."""
    data = cassette.model_dump(mode="json", exclude_none=True)
    for it in data["interactions"]:
        for part in (it["request"], it["response"]):
            part["headers"] = [_Flow(h) for h in part["headers"]]
        it["response"]["frames"] = [
            _FlowMap({k: _Quoted(v) if k == "data" else v for k, v in f.items()})
            for f in it["response"]["frames"]
        ]
        if "body" in it["request"]:
            it["request"]["body"] = _Quoted(it["request"]["body"])
    text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 30)
    return f"# chaosstream cassette, format version {VERSION}: docs/cassettes.md\n{text}"


class _Flow(list[Any]):
    pass


class _FlowMap(dict[str, Any]):
    pass


class _Quoted(str):
    """Always double-quoted: every byte stays visible on one line (``\\n``, ``\\r``, ``\\e``),
    and YAML's line folding or NEL/LS breaks can never change it on reading."""

    __slots__ = ()


_Dumper.add_representer(
    _Quoted, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", str(v), style='"')
)


_Dumper.add_representer(
    _Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
_Dumper.add_representer(
    _FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)


def save_cassette(cassette: Cassette, path: str | Path) -> Path:
    """Write atomically (a temporary file renamed over the old one): a crash never
    leaves half a cassette."""
    p = cassette_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = dump_cassette(cassette)
    fd, tmp = tempfile.mkstemp(prefix=".cassette-", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def frames_of(
    body: bytes, times: Sequence[tuple[float, int]], fmt: str, content_type: str | None
) -> list[tuple[bytes, float]]:
    """Cut a recorded body into frames with arrival times.

    ``times`` are ``(seconds since the request, bytes received by then)`` per
    upstream read. A stream body is cut by its format's framer (an SSE event, an
    NDJSON line), each frame stamped with the read that completed it; any other
    body keeps one frame per read. The frames join to ``body`` byte for byte.
    """
    if is_stream_body(fmt, content_type):
        splitter = framer_for(fmt).splitter()
        raws = splitter.feed(body)
        tail = splitter.flush()
        if tail:
            raws.append(tail)
    else:
        raws, at = [], 0
        for _, end in times:
            if end > at:
                raws.append(body[at:end])
                at = end
        if at < len(body):
            raws.append(body[at:])
    out: list[tuple[bytes, float]] = []
    end, i = 0, 0
    last = times[-1][0] if times else 0.0
    for raw in raws:
        end += len(raw)
        while i < len(times) and times[i][1] < end:
            i += 1
        out.append((raw, times[i][0] if i < len(times) else last))
    return out


# How a JSON text may have been written: tried in turn, so a redacted frame keeps its
# spacing and escaping whenever its sender used one of these (providers send compact JSON;
# Python's json.dumps and httpx's ``json=`` the default separators).
_JSON_STYLES: tuple[tuple[tuple[str, str], bool], ...] = (
    ((",", ":"), False),
    ((",", ":"), True),
    ((", ", ": "), False),
    ((", ", ": "), True),
)
_LINE = re.compile(rb"(\r\n|\r|\n)")  # SSE line ends (WHATWG HTML 9.2.6: CRLF, CR or LF)


@dataclass
class Redactor:
    """Replaces secrets with :data:`REDACTED` before anything reaches disk.

    Always: :data:`SECRET_HEADERS` and :data:`SECRET_QUERY`; plus ``headers``
    and JSON ``fields`` (at any depth) the user names, in request bodies and in
    response bodies that are JSON (SSE ``data:`` values, NDJSON lines, a JSON body).
    """

    headers: frozenset[str] = SECRET_HEADERS
    fields: frozenset[str] = frozenset()

    @classmethod
    def with_extra(cls, headers: Iterable[str] = (), fields: Iterable[str] = ()) -> Redactor:
        return cls(
            headers=SECRET_HEADERS | {h.strip().lower() for h in headers},
            fields=frozenset(f.strip() for f in fields),
        )

    def header_pairs(self, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [(k, REDACTED if k.lower() in self.headers else v) for k, v in pairs]

    def query(self, query: str) -> str:
        if not query:
            return query
        parts = []
        for part in query.split("&"):
            name, eq, _value = part.partition("=")
            if eq and name.lower() in SECRET_QUERY:
                part = f"{name}={REDACTED}"
            parts.append(part)
        return "&".join(parts)

    def body(self, body: bytes) -> bytes:
        """A JSON body with the named fields redacted; else as is (see :meth:`json_text`)."""
        out = self.json_text(body) if self.fields else None
        return body if out is None else out

    def json_text(self, text: bytes) -> bytes | None:
        """One JSON value (whitespace around it kept) with the named fields redacted, or None
        when it is not JSON or holds none of them.

        Only the redacted values change when the text was written in one of the usual
        styles (compact, or json.dumps' default spacing; escaped non-ASCII or not);
        otherwise the value is re-serialised compactly.
        """
        start, end = 0, len(text)
        while start < end and text[start] in b" \t\r\n":
            start += 1
        while end > start and text[end - 1] in b" \t\r\n":
            end -= 1
        core = text[start:end]
        if core[:1] not in (b"{", b"[") or not self._may_hold(core):
            return None
        obj = json_or_none(core)
        if obj is None:
            return None
        before = copy.deepcopy(obj)
        if not self._redact(obj):
            return None
        seps, ascii_only = (",", ":"), False
        for style, escaped in _JSON_STYLES:
            if _dumps(before, style, escaped) == core:
                seps, ascii_only = style, escaped
                break
        return text[:start] + _dumps(obj, seps, ascii_only) + text[end:]

    def frames(
        self, frames: list[tuple[bytes, float]], fmt: str, content_type: str | None
    ) -> list[tuple[bytes, float]]:
        """Response frames (:func:`frames_of`) with the named JSON fields redacted.

        A stream's frames are redacted one by one: an SSE event's ``data:`` values, an
        NDJSON line; a frame without a named field keeps its bytes, so the stream stays
        byte-exact except the redacted fields. A body that is no stream is redacted whole
        when it is JSON and becomes one frame at the time it ended (it is only usable
        whole anyway). An AWS event stream is binary and CRC-checked: it is left as is.
        """
        if not self.fields or not frames:
            return frames
        if is_stream_body(fmt, content_type):
            framing = framer_for(fmt).name
            if framing == "sse":
                return [(self._sse_event(raw), t) for raw, t in frames]
            if framing == "ndjson":
                return [(self.json_text(raw) or raw, t) for raw, t in frames]
            return frames
        out = self.json_text(b"".join(raw for raw, _ in frames))
        return frames if out is None else [(out, frames[-1][1])]

    def _sse_event(self, raw: bytes) -> bytes:
        """One SSE event with each JSON ``data:`` value redacted; a JSON value spread over
        several ``data:`` lines (joined by LF, WHATWG HTML 9.2.6) becomes one line."""
        if b"data:" not in raw or not self._may_hold(raw):
            return raw
        parts = _LINE.split(raw)  # [line, end, line, end, ..., rest]
        data_at = [i for i in range(0, len(parts), 2) if parts[i].startswith(b"data:")]
        changed = False
        for i in data_at:
            value = parts[i][5:]
            lead = b"data: " if value.startswith(b" ") else b"data:"
            out = self.json_text(value[len(lead) - 5 :])
            if out is not None:
                parts[i] = lead + out
                changed = True
        if not changed and len(data_at) > 1:
            values = [parts[i][5:] for i in data_at]
            joined = b"\n".join(v[1:] if v.startswith(b" ") else v for v in values)
            out = self.json_text(joined)
            if out is not None:
                parts[data_at[0]] = b"data: " + out.strip()
                for i in reversed(data_at[1:]):
                    del parts[i : i + 2]
                changed = True
        return b"".join(parts) if changed else raw

    def _may_hold(self, text: bytes) -> bool:
        """A cheap test before parsing: a named key appears (or an escape could hide one)."""
        return b"\\" in text or any(json.dumps(f).encode() in text for f in self.fields)

    def _redact(self, obj: Any) -> bool:
        changed = False
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in self.fields:
                    obj[k] = REDACTED
                    changed = True
                else:
                    changed = self._redact(v) or changed
        elif isinstance(obj, list):
            for v in obj:
                changed = self._redact(v) or changed
        return changed


def _dumps(obj: Any, separators: tuple[str, str], ensure_ascii: bool) -> bytes:
    return json.dumps(obj, separators=separators, ensure_ascii=ensure_ascii).encode("utf-8")


@dataclass
class Match:
    """A lookup's answer: the interaction (index) or why none matched."""

    index: int | None
    reason: str = ""
    nearest: int | None = None


@dataclass
class _Key:
    method: str
    path: str
    query: str
    body: Any
    stream: bool


def _key(method: str, path: str, query: str, body: bytes, fmt: str, stream: bool) -> _Key:
    parsed = json_or_none(body) if body[:1] in (b"{", b"[") else None
    eq_path, eq_query, eq_body = get(fmt).equivalent(path, query, copy.deepcopy(parsed))
    if eq_body is None:
        eq_body = body.decode("utf-8", "replace")
    return _Key(method.upper(), eq_path, eq_query, eq_body, stream)


def _first_difference(a: Any, b: Any, where: str = "") -> str:
    """Where two JSON values first differ, as ``messages[0].content: 'hi' != 'hello'``."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in list(a) + [k for k in b if k not in a]:
            if k not in b:
                return f"{where}{'.' if where else ''}{k}: recorded has it, request has not"
            if k not in a:
                return f"{where}{'.' if where else ''}{k}: request has it, recording has not"
            if a[k] != b[k]:
                return _first_difference(a[k], b[k], f"{where}{'.' if where else ''}{k}")
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return (
        f"{where or 'body'}: recorded {cut(json.dumps(a), 60)} != request {cut(json.dumps(b), 60)}"
    )


@dataclass
class Player:
    """Answers requests from a cassette: which interaction, or the nearest and what differed.

    Each interaction plays once, in recorded order (VCR.py's default); once every
    match was played the last one repeats, so a client's retries after a fault
    still get an answer. Among matches, one whose streaming flag equals the
    request's is preferred, so a fallback without streaming gets the JSON body
    when one was recorded.
    """

    cassette: Cassette
    match_on: tuple[str, ...] = DEFAULT_MATCH_ON
    redactor: Redactor = field(default_factory=Redactor)
    played: list[int] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        bad = [m for m in self.match_on if m not in MATCHERS]
        if bad:
            raise InputError(f"match on {bad[0]!r}: expected some of {', '.join(MATCHERS)}")
        self._keys = [
            _key(r.method, r.path, r.query, r.raw_body, r.format, r.stream)
            for r in (it.request for it in self.cassette.interactions)
        ]
        self._uses = [0] * len(self._keys)

    def _differs(self, rec: _Key, req: _Key) -> list[str]:
        out = []
        for m in self.match_on:
            if getattr(rec, m) != getattr(req, m):
                out.append(m)
        return out

    def lookup(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        fmt: str,
        stream: bool,
    ) -> Match:
        """The interaction to play for a request, marking it played."""
        req = _key(method, path, self.redactor.query(query), self.redactor.body(body), fmt, stream)
        pick = self._pick(req)
        if pick is not None:
            self._uses[pick] += 1
            self.played.append(pick)
            return Match(pick)
        reason = self._explain(req, f"{method.upper()} {path}" + (f"?{query}" if query else ""))
        self.unmatched.append(reason)
        return Match(None, reason, self._nearest(req))

    def peek(
        self, method: str, path: str, query: str, body: bytes, fmt: str, stream: bool
    ) -> int | None:
        """The first interaction matching a request (preferring its streaming flag), or
        None; nothing is marked played (the runner asks it for the expected answer)."""
        req = _key(method, path, self.redactor.query(query), self.redactor.body(body), fmt, stream)
        hits = [i for i, k in enumerate(self._keys) if not self._differs(k, req)]
        same = [i for i in hits if self._keys[i].stream == stream] or hits
        return same[0] if same else None

    def _pick(self, req: _Key) -> int | None:
        hits = [i for i, k in enumerate(self._keys) if not self._differs(k, req)]
        if not hits:
            return None
        same = [i for i in hits if self._keys[i].stream == req.stream] or hits
        fresh = [i for i in same if self._uses[i] == 0]
        return fresh[0] if fresh else same[-1]

    def _nearest(self, req: _Key) -> int | None:
        if not self._keys:
            return None

        def score(i: int) -> tuple[int, float]:
            k = self._keys[i]
            diff = self._differs(k, req)
            ratio = difflib.SequenceMatcher(
                None, json.dumps(k.body)[:2000], json.dumps(req.body)[:2000]
            ).quick_ratio()
            return len(diff), -ratio

        return min(range(len(self._keys)), key=score)

    def _explain(self, req: _Key, line: str) -> str:
        near = self._nearest(req)
        if near is None:
            return (
                f"chaosstream cassette: no recorded request matches {line}: the cassette is empty"
            )
        k = self._keys[near]
        rec = self.cassette.interactions[near].request
        parts = []
        for m in self._differs(k, req):
            if m == "body" and not isinstance(k.body, str) and not isinstance(req.body, str):
                parts.append(_first_difference(k.body, req.body))
            else:
                parts.append(
                    f"{m}: recorded {cut(str(getattr(k, m)), 60)!r} "
                    f"!= request {cut(str(getattr(req, m)), 60)!r}"
                )
        return (
            f"chaosstream cassette: no recorded request matches {line}; nearest is "
            f"interaction {near + 1} ({rec.line}), which differs in " + "; ".join(parts)
        )


def header_list(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers as (name, value) pairs, repeats kept in order."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), str(v)) for k, v in items]
