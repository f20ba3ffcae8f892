"""Running the proxy as a long-lived command (``chaosstream proxy``)."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from chaosstream.mock import MockServer, start_mock
from chaosstream.profile import Profile
from chaosstream.proxy import ChaosProxy


async def serve_proxy(
    *,
    upstream: str | None,
    profile: Profile,
    listen: tuple[str, int],
    seed: int | None = None,
    insecure: bool = False,
    ca_file: str | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; with no upstream, start the embedded mock first."""
    mock: MockServer | None = None
    if upstream is None:
        mock = await start_mock()
        upstream = mock.url
    proxy = ChaosProxy(upstream, profile, seed=seed, insecure=insecure, ca_file=ca_file)
    try:
        try:
            url = await proxy.start(*listen)
        except OSError as e:
            raise click.ClickException(
                f"cannot listen on {listen[0]}:{listen[1]}: {e.strerror or e}"
            ) from None
        click.echo(f"chaosstream proxy listening on {url}", err=True)
        click.echo(f"  upstream: {upstream}{' (embedded mock)' if mock else ''}", err=True)
        click.echo(f"  profile:  {profile.name}   seed: {proxy.seed}", err=True)
        click.echo(f"  clients:  OPENAI_BASE_URL={url}/v1  ANTHROPIC_BASE_URL={url}", err=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await proxy.close()
        if mock is not None:
            await mock.close()
