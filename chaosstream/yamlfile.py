"""Load YAML into a pydantic model; every error names the file, the line and the field.

Profiles and scenario files both come through here, so a user sees the same
kind of message for both: ``profiles/x.yaml:12: faults[0].after_events: ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class InputError(Exception):
    """Bad input from a user: a file, an argument. The CLI prints it and exits 2."""


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
            for key, value in node.value:
                if key.value == part:
                    node = value
                    path.append(str(part))
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            node = node.value[part]
            path[-1:] = [f"{path[-1]}[{part}]" if path else f"[{part}]"]
    return node, path


def _format_errors(err: ValidationError, source: str, root: yaml.Node | None) -> str:
    lines = []
    for e in err.errors(include_url=False):
        node, path = _node_for(root, e["loc"])
        line = node.start_mark.line + 1 if node is not None else 1
        if e["type"] == "missing" and e["loc"]:
            # The field is absent, so the walk stopped at its parent: name it anyway.
            path.append(str(e["loc"][-1]))
        field = ".".join(path) or "(top level)"
        msg = e["msg"]
        if e["type"] == "missing":
            msg = "required field is missing"
        elif e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "union_tag_invalid":
            ctx = e.get("ctx", {})
            msg = f"unknown type {ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}"
        lines.append(f"{source}:{line}: {field}: {msg}")
    return "\n".join(lines)


def parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The document as Python data plus its node tree (for line numbers)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise InputError(f"{source}:{line}: invalid YAML: {e.problem or e}") from None
    except yaml.YAMLError as e:
        raise InputError(f"{source}: invalid YAML: {e}") from None
    except (ValueError, OverflowError, RecursionError) as e:
        # PyYAML's constructors raise these for well-formed but impossible
        # values (`2001-02-30`) and for nesting deeper than Python's stack.
        raise InputError(f"{source}: invalid YAML value: {e}") from None
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
        raise InputError(_format_errors(e, source, root)) from None


def load_text(model: type[M], text: str, source: str) -> M:
    """Parse and validate YAML text."""
    data, root = parse_yaml(text, source)
    return validate(model, data, source, root)


def read_text(path: str | Path) -> str:
    """A UTF-8 input file's text; a missing or unreadable file is an :class:`InputError`."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from None


def load_file(model: type[M], path: str | Path) -> M:
    """Parse and validate a YAML file."""
    return load_text(model, read_text(path), str(path))
