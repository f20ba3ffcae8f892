"""Generate ``docs/profiles.md`` from the profile JSON Schema and the fault docstrings.

Run ``python -m chaosstream.cli.docs`` after changing a fault, a field or a
built-in profile; a test fails while the committed page is stale.
"""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path
from typing import Any

from chaosstream.faults import FAULT_TYPES, Fault
from chaosstream.faults.loss import Loss
from chaosstream.faults.profile import PROFILE_DIR, builtin_names, load_profile, profile_schema
from chaosstream.verify.battery import BATTERY

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "profiles.md"
TRIGGER_FIELDS = tuple(Fault.model_fields)

_GUIDE = """\
## Writing your own profile

1. Start from the built-in closest to what you want:
   `chaosstream profiles show mobile-lossy > my-profile.yaml`.
2. Describe the real situation in `description`, with where the numbers come
   from (a measurement, a preset, a provider's documented limit).
3. Put conditions that hold for every exchange in `network:`; add one
   `faults:` entry per thing that goes wrong, each with its trigger
   (`requests`, `every`, `probability`, `match`, `window`).
4. Keep it fair when a client is meant to recover: fire on `requests: [1]` or
   `[1, 2]` rather than on every request, so a well-behaved client that
   retries a few times can still complete.
5. Set `seed:` to replay the same faults at the same points, then check the
   file: `chaosstream profiles validate my-profile.yaml` (errors name the
   file, line and field), and point an editor at `chaosstream profiles schema`.

```yaml
version: 1
name: my-flaky-gateway
description: Our gateway on a bad day (numbers from the 2024-05 incident).
seed: 7
network: {latency_ms: 120, jitter_ms: 30, loss: 0.01}
faults:
  - type: http_error
    status: 503
    retry_after_s: 1
    requests: [1]
  - type: disconnect
    after_events: 12
    mode: close
    match: {path: /v1/chat/completions, stream: true}
    requests: [2]
```
"""


_RESILIENT = """\
Every scenario of the battery is judged by one expectation, `resilient` (also
usable in scenario files): the client **completes** (prints or shows the whole
answer and ends well) **or surfaces the error** (a non-zero exit code, an error
on the page) — and never presents truncated text as complete (a *silent
truncation*), never makes more than 5 equivalent attempts (a retry storm), and
never retries sooner than a `Retry-After` it was sent.

A verdict needs evidence: a scenario passes only when the client sent at least
one request through the proxy and, when its profile has faults (a `network:`
block counts), at least one of them fired on the client's traffic. The report's
`observed` block says so with `fault_met` (`true`, `false`, or `null` for a
profile without faults); a client that never started, never used the proxy or
never met the fault fails with evidence saying which. A failed scenario prints
the one command that replays its faults, `chaosstream proxy --profile NAME
--seed N` (the JSON report's `repro`).
"""


def _battery() -> list[str]:
    rows = [
        "## The `check` battery",
        "",
        "`chaosstream check -- CMD` runs the client once under each of these built-in",
        "profiles, in this order.",
        "",
        "| scenario | profile | what the client meets |",
        "| --- | --- | --- |",
    ]
    for scenario, ref in BATTERY:
        first = " ".join(load_profile(ref).description.split()).split(". ")[0].rstrip(".")
        rows.append(f"| `{scenario}` | `{ref}` | {_cell(first)}. |")
    return [*rows, "", _RESILIENT]


def _type_of(prop: dict[str, Any]) -> str:
    """A short human name for a JSON Schema property type."""
    if "const" in prop:
        return f"`{prop['const']}`"
    if "enum" in prop:
        return " \\| ".join(f"`{v}`" for v in prop["enum"])
    if "$ref" in prop:
        return str(prop["$ref"]).rsplit("/", 1)[-1]
    if "oneOf" in prop:
        return "fault (chosen by `type`)"
    if "anyOf" in prop:
        kinds = [_type_of(p) for p in prop["anyOf"] if p.get("type") != "null"]
        return " \\| ".join(kinds)
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(prop.get('items', {}))}"
    if kind == "object" and "additionalProperties" in prop:
        return f"map of {_type_of(prop['additionalProperties'])}"
    return str(kind)


def _bounds(prop: dict[str, Any]) -> str:
    for option in prop.get("anyOf", ()):
        if option.get("type") != "null":
            prop = {**option, **prop}
    parts = []
    for key, sign in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in prop:
            parts.append(f"{sign} {prop[key]:g}")
    return f" ({', '.join(parts)})" if parts else ""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _fields(model: dict[str, Any], skip: tuple[str, ...] = ()) -> list[str]:
    required = set(model.get("required", ()))
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name, prop in model.get("properties", {}).items():
        if name in skip:
            continue
        if name in required:
            default = "required"
        elif "default" in prop:
            default = "—" if prop["default"] is None else f"`{json.dumps(prop['default'])}`"
        else:
            default = "—"
        meaning = _cell(prop.get("description", "")) + _bounds(prop)
        rows.append(f"| `{name}` | {_type_of(prop)} | {default} | {meaning} |")
    return rows


def _doc(text: str) -> str:
    return inspect.cleandoc(text)


def render() -> str:
    """The whole of ``docs/profiles.md``."""
    schema = profile_schema()
    defs: dict[str, Any] = schema["$defs"]
    out = [
        "# Profiles",
        "",
        "<!-- Generated by `python -m chaosstream.cli.docs` from the profile JSON Schema and the",
        "     fault docstrings. Do not edit by hand. -->",
        "",
        "A profile is a YAML file: the network conditions that hold for every exchange, and",
        "the faults that fire on their triggers. `--profile` takes a built-in name or a path;",
        "`chaosstream profiles schema` prints the JSON Schema for editors.",
        "",
        "## Top-level fields",
        "",
        *_fields(schema),
        "",
        "## `network:`",
        "",
        _doc(defs["Network"].get("description", "")),
        "",
        *_fields(defs["Network"]),
        "",
        "The block becomes faults that act on every exchange, in this order: a one-way",
        "delay on both directions (`latency_ms`, `jitter_ms`), bandwidth (`down_kbps` on",
        "the response, `up_kbps` on the request body; 1 kbit = 1000 bits), then segment",
        "loss on both directions with the TCP model of the `loss` fault below.",
        "",
        "## Trigger fields (every fault)",
        "",
        "The wrapper around every fault decides, once per exchange, whether the fault",
        "takes part; the fault itself only says what happens when it does. A fault fires",
        "when every trigger field given holds. Same profile + same seed + same sequence",
        "of requests = the same faults at the same points.",
        "",
        *_fields(defs["Noop"], skip=("type",)),
        "",
        "### `match:`",
        "",
        _doc(defs["Match"].get("description", "")),
        "",
        *_fields(defs["Match"]),
        "",
        "### `window:`",
        "",
        _doc(defs["Window"].get("description", "")),
        "",
        *_fields(defs["Window"]),
        "",
        "## Fault types",
        "",
    ]
    for cls in FAULT_TYPES:
        name = cls.model_fields["type"].default
        model = defs[cls.__name__]
        out += [f"### `{name}`", "", _doc(cls.__doc__ or ""), ""]
        own = _fields(model, skip=("type", *TRIGGER_FIELDS))
        out += (own if len(own) > 2 else ["No fields of its own."]) + [""]
    out += [
        "## The loss model and its sources",
        "",
        _doc(Loss.__doc__ or ""),
        "",
        "References: RFC 6298, *Computing TCP's Retransmission Timer*,",
        "https://www.rfc-editor.org/rfc/rfc6298; Linux `TCP_RTO_MIN` (200 ms) in",
        "`include/net/tcp.h`; `tcp_retries2` in Documentation/networking/ip-sysctl.rst.",
        "",
    ]
    known = {"Network", "Match", "Window", *(c.__name__ for c in FAULT_TYPES)}
    others = [name for name in defs if name not in known]
    if others:
        out += ["## Other sections", ""]
        for name in others:
            out += [f"### {name}", "", _doc(defs[name].get("description", "")), ""]
            out += [*_fields(defs[name]), ""]
    out += ["## Built-in profiles", ""]
    for name in builtin_names():
        profile = load_profile(name)
        text = (PROFILE_DIR / f"{name}.yaml").read_text(encoding="utf-8").strip()
        out += [
            f"### `{name}`",
            "",
            " ".join(profile.description.split()),
            "",
            "```yaml",
            text,
            "```",
            "",
        ]
    out += _battery()
    out += [_GUIDE]
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the page (or, with ``--check``, exit 1 when it is stale)."""
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        current = DOCS_PATH.read_text(encoding="utf-8") if DOCS_PATH.exists() else ""
        if current != text:
            print(f"{DOCS_PATH} is stale: run python -m chaosstream.cli.docs", file=sys.stderr)
            return 1
        return 0
    DOCS_PATH.parent.mkdir(parents=True, exist_ok=True)
    DOCS_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOCS_PATH}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
