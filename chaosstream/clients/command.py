"""A client command under test: its environment, its run, what it printed and when."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import signal
import time
import urllib.parse
from collections.abc import Sequence
from pathlib import Path

from chaosstream.verify.expectations import ClientRun
from chaosstream.yamlfile import InputError

__all__ = ["DUMMY_KEY", "check_command", "client_env", "run_client"]

DUMMY_KEY = "chaosstream-mock-key"
"""The API key clients get when the upstream is the embedded mock (it takes any)."""
OUTPUT_LIMIT = 4 * 1024 * 1024
"""Output kept per stream of the client: past it, its first half (where the answer begins)
and its last half (where the answer ends and the error is printed) are kept, with a mark
saying how many bytes between them were not kept."""
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
    no_proxy = _no_proxy(env, proxy_url)
    env.update(
        CHAOSSTREAM_URL=proxy_url,
        CHAOSSTREAM_SCENARIO=scenario,
        # An HTTP(S)_PROXY inherited from a corporate shell would capture the client's calls
        # to the loopback proxy (urllib, requests, httpx, curl and undici's env agent all
        # send a host not in NO_PROXY to it): loopback and the proxy's host bypass it.
        NO_PROXY=no_proxy,
        no_proxy=no_proxy,
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


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _no_proxy(env: dict[str, str], proxy_url: str) -> str:
    """The user's NO_PROXY entries (either spelling) plus loopback and the proxy's host."""
    entries: list[str] = []
    host = urllib.parse.urlsplit(proxy_url).hostname
    for value in (env.get("NO_PROXY", ""), env.get("no_proxy", ""), *LOOPBACK_HOSTS, host or ""):
        for entry in value.split(","):
            entry = entry.strip()
            if entry and entry not in entries:
                entries.append(entry)
    return ",".join(entries)


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


HEAD_BYTES = OUTPUT_LIMIT // 2
TAIL_BYTES = OUTPUT_LIMIT - HEAD_BYTES


class _Capped:
    """One output stream of the client within :data:`OUTPUT_LIMIT`: a head that fills first,
    then a ring of the latest bytes (the tail), so both ends of the output survive."""

    __slots__ = ("dropped", "head", "seen", "tail")

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.seen = 0

    def add(self, chunk: bytes) -> None:
        self.seen += len(chunk)
        room = HEAD_BYTES - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        self.tail += chunk
        # Trimmed when it holds twice its share: each byte is moved O(1) times.
        if len(self.tail) > 2 * TAIL_BYTES:
            cut = len(self.tail) - TAIL_BYTES
            del self.tail[:cut]
            self.dropped += cut

    def text(self) -> str:
        """What was kept, decoded; a mark stands where bytes were not kept."""
        extra = max(0, len(self.tail) - TAIL_BYTES)
        dropped = self.dropped + extra
        if not dropped:
            return (self.head + self.tail).decode("utf-8", errors="replace")
        # Worded so that no verdict's pattern (INCOMPLETE_WORDS) matches the mark itself.
        mark = f"\n[chaosstream: {dropped:,} bytes of output not kept]\n"
        head = self.head.decode("utf-8", errors="replace")
        return head + mark + self.tail[extra:].decode("utf-8", errors="replace")


async def _read_all(
    stream: asyncio.StreamReader | None,
    into: _Capped,
    stamps: list[tuple[float, int]] | None = None,
) -> None:
    if stream is None:
        return
    # With ``stamps``: when each piece arrived and how many characters the output
    # had then, so the verifier can tell when the answer's first text appeared.
    # They stop at OUTPUT_LIMIT: past it the kept text's positions leave the stream's
    # (the head's still match).
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chars = 0
    while chunk := await stream.read(65536):
        stamp = stamps is not None and into.seen < OUTPUT_LIMIT and len(stamps) < STDOUT_STAMPS
        into.add(chunk)
        if stamp and stamps is not None:
            chars += len(decoder.decode(chunk))
            stamps.append((time.monotonic(), chars))


class _ClientProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """asyncio's own subprocess protocol, plus an event set at the client's exit itself.

    ``Process.wait()`` returns only once the process has exited *and* every pipe is
    closed (``BaseSubprocessTransport._try_finish``): a grandchild holding stdout
    would make a client that exited look like a hang.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2**16, loop=loop)
        self.exited = asyncio.Event()

    def process_exited(self) -> None:
        super().process_exited()
        self.exited.set()


def _kill(proc: asyncio.subprocess.Process) -> None:
    # The client runs in its own session: kill its whole group (a shell's children too).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def run_client(command: Sequence[str], env: dict[str, str], timeout_s: float) -> ClientRun:
    """Run the client to its end, or kill it at ``timeout_s``."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        # asyncio.create_subprocess_exec's own body, with the protocol that says when
        # the client exited (see _ClientProtocol).
        transport, protocol = await loop.subprocess_exec(
            lambda: _ClientProtocol(loop),
            *command,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
    except (FileNotFoundError, PermissionError, NotADirectoryError) as e:
        raise InputError(f"cannot start client command {command[0]!r}: {e.strerror or e}") from None
    proc = asyncio.subprocess.Process(transport, protocol, loop)
    out, err = _Capped(), _Capped()
    stamps: list[tuple[float, int]] = []
    readers = asyncio.gather(_read_all(proc.stdout, out, stamps), _read_all(proc.stderr, err))
    timed_out = False
    try:
        await asyncio.wait_for(protocol.exited.wait(), timeout_s)
    except asyncio.TimeoutError:
        timed_out = True
    finally:
        # On every path -- exit, timeout, cancellation -- the client's whole process group
        # goes: a grandchild of a client that exited by itself would otherwise run on into
        # the next scenario (its requests counted there). A process group outlives its
        # reaped leader while any member lives, and its id stays taken meanwhile (the
        # kernel keeps the pid allocated), so killpg reaches exactly the leftovers; an
        # empty group is ESRCH, ignored.
        _kill(proc)
        await protocol.exited.wait()
        # Grandchildren may keep the pipes open: never wait on them for long.
        try:
            await asyncio.wait_for(readers, 2.0)
        except asyncio.TimeoutError:
            readers.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await readers
        # Pipes still held by a process that left the group (setsid) are closed here.
        transport.close()
    return ClientRun(
        command=list(command),
        # Killed at the limit, the client has no exit code of its own (ClientRun's contract);
        # the signal's -9 could even read 255 if another waiter reaped a reused pid first.
        exit_code=None if timed_out else proc.returncode,
        timed_out=timed_out,
        stdout=out.text(),
        stderr=err.text(),
        duration_s=time.monotonic() - started,
        stdout_times=stamps,
    )
