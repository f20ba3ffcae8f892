"""``proxy --mode intercept``: the options, and the forward-proxy front started by ``serve``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from chaosstream.cli.args import BadInput
from chaosstream.cli.ca import ca_dir_option, open_ca

if TYPE_CHECKING:
    from chaosstream.faults.profile import Profile
    from chaosstream.proxy.intercept import InterceptProxy
    from chaosstream.proxy.server import ChaosProxy

__all__ = [
    "REAL",
    "InterceptOptions",
    "describe",
    "intercept_options",
    "real_or",
    "start_front",
]

REAL = "real"
"""``--upstream real``: intercepted requests go to the host the client called."""


@dataclass(frozen=True)
class InterceptOptions:
    """How the front intercepts: which hosts, whose CA, which token."""

    hosts: tuple[str, ...] = ()
    """Globs of the hosts to intercept; empty: the known AI API hosts."""
    ca_dir: str | None = None
    token: str | None = None


def real_or(
    callback: Callable[[click.Context, click.Parameter, str | None], str | None],
) -> Callable[[click.Context, click.Parameter, str | None], str | None]:
    """An ``--upstream`` callback that also takes ``real`` (checked against --mode later)."""

    def check(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        return value if value == REAL else callback(ctx, param, value)

    return check


_OPTIONS = [
    click.option(
        "--mode",
        type=click.Choice(["reverse", "intercept"]),
        default="reverse",
        show_default=True,
        help="reverse: clients use the proxy as their base URL. intercept: an HTTP(S) forward "
        "proxy (HTTPS_PROXY) that terminates TLS for the intercepted hosts with certificates "
        "from a local CA and tunnels the rest untouched: docs/intercept.md.",
    ),
    click.option(
        "--intercept-hosts",
        "intercept_hosts",
        multiple=True,
        metavar="GLOBS",
        help="Hosts to intercept, comma-separated globs (repeatable). [default: the known AI "
        "API hosts (api.openai.com, api.anthropic.com, generativelanguage.googleapis.com, "
        "bedrock-runtime.*.amazonaws.com, ...) plus the profile's match.host]",
    ),
    ca_dir_option,
    click.option(
        "--token",
        "proxy_token",
        envvar="CHAOSSTREAM_PROXY_TOKEN",
        default=None,
        metavar="TOKEN",
        help="With --mode intercept: the password clients must send "
        "(HTTPS_PROXY=http://chaosstream:TOKEN@HOST:PORT); needed when --listen is not "
        "loopback. [env: CHAOSSTREAM_PROXY_TOKEN]",
    ),
]


def intercept_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add --mode, --intercept-hosts, --ca-dir and --token to a command; the command gets
    ``intercept``: an :class:`InterceptOptions` in intercept mode, else None."""

    @functools.wraps(f)
    def wrapper(
        *args: Any,
        mode: str,
        intercept_hosts: tuple[str, ...],
        ca_dir: str | None,
        proxy_token: str | None,
        **kwargs: Any,
    ) -> Any:
        from chaosstream.proxy.intercept import hosts_of

        if mode == "reverse":
            if kwargs.get("upstream") == REAL:
                raise click.BadParameter(
                    "`real` is for --mode intercept (the host each client calls); "
                    "in reverse mode give a URL",
                    param_hint="--upstream",
                )
            kwargs["intercept"] = None
        else:
            kwargs["intercept"] = InterceptOptions(hosts_of(intercept_hosts), ca_dir, proxy_token)
        return f(*args, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


async def start_front(
    proxy: ChaosProxy,
    options: InterceptOptions,
    upstream: str | None,
    profile: Profile,
    listen: tuple[str, int],
) -> InterceptProxy:
    """Start the front over ``proxy`` on ``listen``; intercepted requests go to ``upstream``
    (None: the host called). Bad input (a CA folder, a public address without a token)
    raises :class:`BadInput`."""
    from chaosstream.proxy.intercept import (
        DEFAULT_INTERCEPT_HOSTS,
        InterceptError,
        InterceptProxy,
        profile_hosts,
    )

    ca = open_ca(options.ca_dir)
    hosts = (options.hosts or DEFAULT_INTERCEPT_HOSTS) + profile_hosts(profile)
    front = InterceptProxy(proxy, ca, upstream=upstream, hosts=hosts, token=options.token)
    try:
        await front.start(*listen)
    except InterceptError as e:
        ca.close()
        raise BadInput(f"--listen {listen[0]}:{listen[1]}: {e}") from None
    except OSError as e:
        ca.close()
        raise BadInput(f"cannot listen on {listen[0]}:{listen[1]}: {e.strerror or e}") from None
    return front


def describe(front: InterceptProxy, mock: bool) -> list[str]:
    """The lines ``proxy`` prints at start: what is intercepted, the CA, how to point clients."""
    if front.upstream is None:
        where = "the host each client calls"
    else:
        where = f"{front.upstream}{' (embedded mock)' if mock else ''}"
    hosts = ", ".join(front.hosts[:5]) + (", ..." if len(front.hosts) > 5 else "")
    shown = front.url if front.token is None else front.url.replace("://", "://chaosstream:TOKEN@")
    pem = front.ca.cert_path
    return [
        f"  intercepting: {hosts} -> {where}",
        f"  CA:       {pem}  (how to trust it: chaosstream ca trust-hints)",
        f"  clients:  HTTPS_PROXY={shown}  SSL_CERT_FILE={pem}  NODE_EXTRA_CA_CERTS={pem}",
    ]
