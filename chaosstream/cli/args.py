"""Command-line values checked before anything starts: URLs, files, folders, addresses.

Every check raises :class:`click.BadParameter` (exit 2, one ``Error:`` line) or
:class:`BadInput`, never lets a traceback out, and quotes bad input cut short.
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
from pathlib import Path

import click
from yarl import URL

__all__ = [
    "BadInput",
    "ca_file_option",
    "cut",
    "hostport_option",
    "parse_hostport",
    "upstream_option",
    "upstream_url",
    "writable_file_option",
]

QUOTE_MAX = 80
"""Bad input is quoted up to this many characters (a 5,000-character URL is not echoed whole)."""

# RFC 1123 section 2.1 host names: labels of 1-63 letters, digits and hyphens, 253 in
# all. Underscores are let through: container and compose service names use them.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


class BadInput(click.ClickException):
    """Bad input from the user: message on stderr, exit code 2."""

    exit_code = 2

    def format_message(self) -> str:
        return self.message


def cut(value: str, limit: int = QUOTE_MAX) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + "…"


def cut_path(value: str, limit: int = QUOTE_MAX) -> str:
    """A path quoted for an error message; a long one loses its start, not its file name
    (CI workspaces and temporary folders make paths of 100 characters and more)."""
    return repr(value) if len(value) <= limit else "…" + repr(value[-limit:])


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host.rstrip(".")
    return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def upstream_url(value: str) -> str:
    """An ``http://`` or ``https://`` URL with a valid host and port, else ``BadParameter``."""
    try:
        url = URL(value)
    except ValueError as e:  # yarl: "Invalid IPv6 URL", "Port out of range 0-65535", ...
        raise click.BadParameter(f"{cut(value)} is not a valid URL: {e}") from None
    if url.scheme not in ("http", "https"):
        raise click.BadParameter(f"{cut(value)} is not an http:// or https:// URL")
    if not url.host:
        raise click.BadParameter(f"{cut(value)} names no host")
    if not _valid_host(url.host):
        raise click.BadParameter(f"{cut(value)}: {cut(url.host)} is not a host name or address")
    if url.port == 0:
        raise click.BadParameter(f"{cut(value)}: port 0 cannot be connected to")
    return value


def upstream_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback for ``--upstream``."""
    return None if value is None else upstream_url(value)


def ca_file_option(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Click callback for ``--ca-file``: the file must hold at least one PEM certificate."""
    if value is None:
        return None
    try:
        ssl.create_default_context(cafile=value)
    except ssl.SSLError as e:
        raise click.BadParameter(
            f"{cut_path(value)} holds no usable PEM certificate ({e.reason or e})"
        ) from None
    except OSError as e:
        raise click.BadParameter(f"cannot read {cut_path(value)}: {e.strerror or e}") from None
    return value


def writable_file_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> str | None:
    """Click callback for an output file: its folder exists and it can be written.

    Checked before anything starts, so a run does not end on a traceback after
    its scenarios (the file itself is created only when written).
    """
    if value is None:
        return None
    path = Path(value)
    folder = path.parent
    if path.is_dir():
        raise click.BadParameter(f"{cut_path(value)} is a folder, not a file")
    if not folder.is_dir():
        raise click.BadParameter(
            f"{cut_path(value)}: folder {cut_path(str(folder))} does not exist"
        )
    target = path if path.exists() else folder
    if not os.access(target, os.W_OK):
        raise click.BadParameter(f"{cut_path(value)}: permission denied")
    return value


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT``, ``:PORT`` or ``PORT``."""
    host, _, port = value.rpartition(":")
    host = host.strip("[]") or default_host
    try:
        number = int(port)
    except ValueError:
        raise click.BadParameter(f"{cut(value)} is not HOST:PORT") from None
    if not 0 <= number <= 65535:
        raise click.BadParameter(f"port {number} is out of range 0-65535")
    if not _valid_host(host):
        raise click.BadParameter(f"{cut(host)} is not a host name or address")
    return host, number


def hostport_option(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[str, int] | None:
    """Click callback: parse a ``HOST:PORT`` option value."""
    if value is None:
        return None
    return parse_hostport(value)
