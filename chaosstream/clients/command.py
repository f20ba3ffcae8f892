"""A client command under test: its environment, its run, what it printed and when."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from chaosstream.verify.expectations import ClientRun
from chaosstream.yamlfile import InputError

__all__ = ["DUMMY_KEY", "check_command", "client_env", "run_client"]

DUMMY_KEY = "chaosstream-mock-key"
"""The API key clients get when the upstream is the embedded mock (it takes any)."""
# Output kept per stream of the client; more is cut from the middle.
OUTPUT_LIMIT = 4 * 1024 * 1024
# Arrival times kept for the client's stdout (one per pipe read): enough for any
# answer's first text; a client printing a byte at a time stops being stamped there.
STDOUT_STAMPS = 100_000


def check_command(command: Sequence[str]) -> None:
    """Raise :class:`InputError` unless ``command[0]`` is a program that can be run."""
    if not command:
        raise InputError("no client command: give one after `--` or as `command:` in the file")
    program = command[0]
    if os.sep in program:
        if not Path(program).is_file():
            raise InputError(f"client command not found: {program!r} is not a file")
        if not os.access(program, os.X_OK):
            raise InputError(f"client command not executable: {program!r}")
    elif shutil.which(program) is None:
        raise InputError(f"client command not found: {program!r} is not on PATH")


def client_env(
    proxy_url: str, scenario: str, mock: bool, *, ca: tuple[str, str] | None = None
) -> dict[str, str]:
    """The client's environment: ours plus the variables that point it at the proxy.

    With ``ca`` (the intercepting proxy's certificate and its bundle with the system
    roots) ``proxy_url`` is a forward proxy: the client gets it as HTTPS_PROXY and the
    CA variables instead of base URLs, so it calls the providers' real hostnames.
    """
    env = dict(os.environ)
    if ca is not None:
        for name in BASE_URL_VARIABLES:
            env.pop(name, None)  # one inherited from the shell would skip the proxy
        cert, bundle = ca
        loopback = "localhost,127.0.0.1,::1"
        env.update(
            CHAOSSTREAM_URL=proxy_url,
            CHAOSSTREAM_SCENARIO=scenario,
            # curl reads only the lower-case http_proxy (its man page, ENVIRONMENT); most
            # others read either: give both spellings of each.
            HTTPS_PROXY=proxy_url,
            https_proxy=proxy_url,
            HTTP_PROXY=proxy_url,
            http_proxy=proxy_url,
            NO_PROXY=loopback,
            no_proxy=loopback,
            # Python (ssl, httpx, aiohttp) and requests: these replace the trust store,
            # hence the bundle with the system roots. Node adds NODE_EXTRA_CA_CERTS to its own.
            SSL_CERT_FILE=bundle,
            REQUESTS_CA_BUNDLE=bundle,
            CURL_CA_BUNDLE=bundle,
            NODE_EXTRA_CA_CERTS=cert,
            # Node >= 24 honours HTTPS_PROXY in fetch/undici only when told to.
            NODE_USE_ENV_PROXY="1",
            PYTHONUNBUFFERED="1",
        )
        if mock:
            env.update(_dummy_keys())
        return env
    env.update(
        CHAOSSTREAM_URL=proxy_url,
        CHAOSSTREAM_SCENARIO=scenario,
        OPENAI_BASE_URL=f"{proxy_url}/v1",
        ANTHROPIC_BASE_URL=proxy_url,
        # google-genai reads it when no http_options.base_url is given (_base_url.py);
        # the SDK appends /v1beta/models/...
        GOOGLE_GEMINI_BASE_URL=proxy_url,
        # The ollama package (Client() with no host) and the ollama CLI read it (_client.py
        # `_parse_host(host or os.getenv('OLLAMA_HOST'))`); a full URL keeps the scheme.
        OLLAMA_HOST=proxy_url,
        # boto3/botocore >= 1.34 read the service-specific endpoint variable (the SDKs'
        # "service-specific endpoints" setting): bedrock-runtime calls go to the proxy.
        AWS_ENDPOINT_URL_BEDROCK_RUNTIME=proxy_url,
        # Python clients print as they go, so a killed client's output is not lost.
        PYTHONUNBUFFERED="1",
    )
    if mock:
        env.update(_dummy_keys())
    return env


BASE_URL_VARIABLES = (
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
    "GOOGLE_GEMINI_BASE_URL",
    "OLLAMA_HOST",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
)
"""What points a client at the proxy in reverse mode (and away from it in intercept mode)."""


def _dummy_keys() -> dict[str, str]:
    return dict(
        OPENAI_API_KEY=DUMMY_KEY,
        ANTHROPIC_API_KEY=DUMMY_KEY,
        # google-genai takes GOOGLE_API_KEY over GEMINI_API_KEY; give both.
        GEMINI_API_KEY=DUMMY_KEY,
        GOOGLE_API_KEY=DUMMY_KEY,
        # The mock ignores SigV4, but botocore refuses to sign without credentials
        # and a region.
        AWS_ACCESS_KEY_ID="chaosstream-mock",
        AWS_SECRET_ACCESS_KEY=DUMMY_KEY,
        AWS_DEFAULT_REGION=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    )


async def _read_all(
    stream: asyncio.StreamReader | None,
    into: bytearray,
    stamps: list[tuple[float, int]] | None = None,
) -> None:
    if stream is None:
        return
    # With ``stamps``: when each piece arrived and how many characters the output
    # had then, so the verifier can tell when the answer's first text appeared.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chars = 0
    while chunk := await stream.read(65536):
        if len(into) < OUTPUT_LIMIT:
            into.extend(chunk)
            if stamps is not None and len(stamps) < STDOUT_STAMPS:
                chars += len(decoder.decode(chunk))
                stamps.append((time.monotonic(), chars))


def _kill(proc: asyncio.subprocess.Process) -> None:
    # The client runs in its own session: kill its whole group (a shell's children too).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def run_client(command: Sequence[str], env: dict[str, str], timeout_s: float) -> ClientRun:
    """Run the client to its end, or kill it at ``timeout_s``."""
    started = time.monotonic()
    try:
        proc = await asyncio.create_subprocess_exec(
            *command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as e:
        raise InputError(f"cannot start client command {command[0]!r}: {e.strerror or e}") from None
    out, err = bytearray(), bytearray()
    stamps: list[tuple[float, int]] = []
    readers = asyncio.gather(_read_all(proc.stdout, out, stamps), _read_all(proc.stderr, err))
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except asyncio.TimeoutError:
        timed_out = True
        _kill(proc)
        await proc.wait()
    except BaseException:
        _kill(proc)
        await proc.wait()
        raise
    finally:
        # Grandchildren may keep the pipes open: never wait on them for long.
        try:
            await asyncio.wait_for(readers, 2.0)
        except asyncio.TimeoutError:
            readers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await readers
    return ClientRun(
        command=list(command),
        exit_code=proc.returncode,
        timed_out=timed_out,
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
        duration_s=time.monotonic() - started,
        stdout_times=stamps,
    )
