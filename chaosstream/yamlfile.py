"""Load YAML into a pydantic model; every error names the file, the line and the field.

Profiles and scenario files both come through here, so a user sees the same
kind of message for both: ``profiles/x.yaml:12: faults[0].after_events: ...``.
"""

from __future__ import annotations

import difflib
import os
import re
import types
import typing
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

MAX_INPUT_BYTES = 1 << 20
"""Default cap on a profile or scenario file (and profile text sent to the control API):
1 MiB, hundreds of times the largest real profile. Past it the input is refused unread."""

MAX_INPUT_ENV = "CHAOSSTREAM_MAX_INPUT_BYTES"
"""Environment variable that sets another cap, in bytes."""

_QUOTE_CHARS = 80
"""Bad input is quoted up to this many characters, never whole."""

MAX_ERRORS = 50
"""A validation error lists at most this many problems, then counts the rest: a 1 MiB
file can hold tens of thousands, and nobody reads past the first screen."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


class InputError(Exception):
    """Bad input from a user: a file, an argument. The CLI prints it and exits 2."""


def cut(value: object, limit: int = _QUOTE_CHARS) -> str:
    """``value`` as text, cut to ``limit`` characters with an ellipsis: bad input is
    quoted so a user recognises it, never echoed whole (it may be megabytes)."""
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def cut_path(value: object, limit: int = _QUOTE_CHARS) -> str:
    """A path as text, cut from its start when longer than ``limit``: the end (the file
    name the user typed) is what tells them which one is meant."""
    text = str(value)
    return text if len(text) <= limit else "\u2026" + text[-(limit - 1) :]


def did_you_mean(word: object, known: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` when ``word`` is close to one of ``known``, else ``""``."""
    close = difflib.get_close_matches(str(word)[:_QUOTE_CHARS], list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def max_input_bytes() -> int:
    """The input size cap: ``CHAOSSTREAM_MAX_INPUT_BYTES`` when set, else MAX_INPUT_BYTES."""
    raw = os.environ.get(MAX_INPUT_ENV)
    if raw is None or not raw.strip():
        return MAX_INPUT_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise InputError(f"{MAX_INPUT_ENV}: expected a positive number of bytes, got {cut(raw)!r}")
    return value


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def _too_big(source: str, cap: int) -> InputError:
    return InputError(f"{source}: larger than the {_size(cap)} input cap (set {MAX_INPUT_ENV})")


def check_size(text: str | bytes, source: str, cap: int | None = None) -> None:
    """Refuse input larger than ``cap`` (default :func:`max_input_bytes`), in UTF-8 bytes."""
    cap = max_input_bytes() if cap is None else cap
    if len(text) > cap:  # a character is at least one byte: too big without encoding it
        raise _too_big(source, cap)
    if isinstance(text, str) and len(text) * 4 > cap and len(text.encode("utf-8", "replace")) > cap:
        raise _too_big(source, cap)


def _node_for(
    node: yaml.Node | None, loc: Sequence[int | str]
) -> tuple[yaml.Node | None, list[str]]:
    """Walk the YAML node tree along a pydantic error location.

    Returns the deepest node found and the path as the user wrote it. Location
    parts that are not in the document (a discriminated union's tag, a
    validator's name) are skipped, so the line still points at the entry.
    """
    path: list[str] = []
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            # The last entry wins, as in the loaded data: after a merge (<<) the
            # mapping holds the merged keys first and the explicit ones after.
            for key, value in reversed(node.value):
                if key.value == part:
                    node = value
                    path.append(cut(part))
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            node = node.value[part]
            path[-1:] = [f"{path[-1]}[{part}]" if path else f"[{part}]"]
    return node, path


def _unwrap(tp: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated, Optional) type."""
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [alt for arg in typing.get_args(tp) for alt in _unwrap(arg)]
    return [tp]


def _step(tp: Any, part: int | str) -> Any:
    """The type found at ``part`` inside ``tp``; ``tp`` itself when ``part`` is not in the
    document (a union member's name); None when the walk cannot go on."""
    found: list[Any] = []
    for alt in _unwrap(tp):
        origin = typing.get_origin(alt)
        if isinstance(alt, type) and issubclass(alt, BaseModel):
            field = alt.model_fields.get(str(part))
            if field is not None:
                found.append(field.annotation)
            elif (
                alt.model_fields.get("type") is not None
                and alt.model_fields["type"].default == part
            ):
                found.append(alt)  # a discriminated union's tag picks the member
        elif origin is list and isinstance(part, int):
            found.append(typing.get_args(alt)[0])
        elif origin is dict and isinstance(part, str):
            found.append(typing.get_args(alt)[1])
    if len(found) == 1:
        return found[0]
    return tp if not found else None


def known_fields(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The field names the model at ``loc`` (inside ``model``) accepts, for suggestions."""
    tp: Any = model
    for part in loc:
        tp = _step(tp, part)
        if tp is None:
            return []
    return sorted(
        {
            name
            for alt in _unwrap(tp)
            if isinstance(alt, type) and issubclass(alt, BaseModel)
            for name in alt.model_fields
        }
    )


def _message(e: Any, model: type[BaseModel]) -> str:
    """One pydantic error in the user's words: no "Value error, " prefix, input cut short."""
    kind, ctx = e["type"], e.get("ctx", {})
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        known = known_fields(model, e["loc"][:-1])
        hint = did_you_mean(e["loc"][-1], known)
        return "unknown field" + (
            hint or (f"; expected one of {', '.join(known)}" if known else "")
        )
    if kind == "union_tag_invalid":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected_tags", "")))
        tag = cut(ctx.get("tag"))
        return f"unknown type {tag!r}{did_you_mean(tag, expected)} (one of {', '.join(expected)})"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return cut(ctx["error"], 400)
    return str(e["msg"])


def _format_errors(
    err: ValidationError, source: str, root: yaml.Node | None, model: type[BaseModel]
) -> str:
    found: list[tuple[int, str, Any]] = []
    for e in err.errors(include_url=False):
        loc = list(e["loc"])
        if e["type"] == "union_tag_invalid":
            loc.append("type")  # point at the `type:` line, not the entry's first line
        node, path = _node_for(root, loc)
        line = node.start_mark.line + 1 if node is not None else 1
        if e["type"] == "missing" and loc:
            # The field is absent, so the walk stopped at its parent: name it anyway.
            path.append(cut(loc[-1]))
        found.append((line, ".".join(path) or "(top level)", e))
    # Sorted by line (stable, so errors on one line keep pydantic's order); only the
    # messages shown are worded, since suggestions cost a search each.
    found.sort(key=lambda item: item[0])
    lines = [
        f"{source}:{line}: {field}: {_message(e, model)}" for line, field, e in found[:MAX_ERRORS]
    ]
    if len(found) > MAX_ERRORS:
        lines.append(f"... and {len(found) - MAX_ERRORS} more problems")
    return "\n".join(lines)


def _mappings(root: yaml.Node) -> Iterator[yaml.MappingNode]:
    """Every mapping in the tree once (an alias is the same node object), without recursion."""
    seen: set[int] = set()
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            yield node
            for key, value in node.value:
                stack += (key, value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _check_unique_keys(root: yaml.Node, source: str) -> None:
    """A key given twice in one mapping is an error naming both lines.

    PyYAML keeps the last value silently, so ``after_events: 1`` then
    ``after_events: 2`` would run as 2. YAML 1.2 (section 3.2.1.1) requires keys
    to be unique. A merge (``<<: *base``) followed by an explicit key is an
    override, not a duplicate: merge keys are left out of the check.
    """
    for mapping in _mappings(root):
        first: dict[tuple[str, str], int] = {}
        for key, _ in mapping.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
                continue
            line = key.start_mark.line + 1
            earlier = first.get((key.tag, key.value))
            if earlier is not None:
                raise InputError(
                    f"{source}:{line}: duplicate key {cut(key.value)!r} (first at line {earlier})"
                )
            first[key.tag, key.value] = line


def parse_yaml(
    text: str, source: str, max_bytes: int | None = None
) -> tuple[Any, yaml.Node | None]:
    """The document as Python data plus its node tree (for line numbers).

    Parsed once; refused when larger than the cap (``max_bytes``, default
    :func:`max_input_bytes`: cassettes pass a bigger one) or when a mapping
    repeats a key. Synchronous and pure, so a server can run it in a worker thread.
    """
    check_size(text, source, max_bytes)
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # its reader refuses unprintable characters at once
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_unique_keys(root, source)
        data = loader.construct_document(root)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise InputError(f"{source}:{line}: invalid YAML: {cut(e.problem or e, 200)}") from None
    except yaml.YAMLError as e:
        raise InputError(f"{source}: invalid YAML: {cut(e, 200)}") from None
    except (ValueError, OverflowError, RecursionError) as e:
        # PyYAML's constructors raise these for well-formed but impossible
        # values (`2001-02-30`) and for nesting deeper than Python's stack.
        raise InputError(f"{source}: invalid YAML value: {cut(e, 200)}") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, root


def validate(model: type[M], data: Any, source: str, root: yaml.Node | None = None) -> M:
    """``model`` built from ``data``; errors carry ``source`` and lines from ``root``."""
    if not isinstance(data, dict):
        raise InputError(
            f"{source}:1: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise InputError(_format_errors(e, source, root, model)) from None


def load_text(model: type[M], text: str, source: str, max_bytes: int | None = None) -> M:
    """Parse and validate YAML text (``max_bytes``: see :func:`parse_yaml`)."""
    data, root = parse_yaml(text, source, max_bytes)
    return validate(model, data, source, root)


def read_text(path: str | Path) -> str:
    """A UTF-8 input file's text; a missing, unreadable or oversized file is an
    :class:`InputError`.

    At most cap + 1 bytes are read, so ``/dev/zero`` or a huge file costs no
    more memory than the cap.
    """
    cap = max_input_bytes()
    try:
        with Path(path).open("rb") as f:
            raw = f.read(cap + 1)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read: {cut(e.strerror or e)}") from None
    if len(raw) > cap:
        raise _too_big(str(path), cap)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None


def load_file(model: type[M], path: str | Path) -> M:
    """Parse and validate a YAML file."""
    return load_text(model, read_text(path), str(path))
