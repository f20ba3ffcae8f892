"""pytest plugin: a chaos proxy and a mock model inside your own tests (``pytest11``).

Fixtures
    ``chaos_mock``: a running mock model server (:class:`~chaosstream.mock.MockServer`).
    ``chaos_proxy``: a factory, ``chaos_proxy(profile=None, upstream=None, seed=7)``,
    returning a :class:`ChaosHandle` (``.url``, ``.openai_base_url``, ``.exchanges``,
    ``.set_profile(...)``, ``.fault_log``). The proxy forwards to ``chaos_mock``
    unless ``upstream`` is given.
    ``chaos_mock_settings``: override it to pace the mock differently.

Marker
    ``@pytest.mark.chaos_profile("midstream-reset", "midstream-close")`` runs the
    test once per profile; ``chaos_proxy()`` then uses that profile.

Helper
    :func:`assert_verdicts` checks the verdicts ``chaosstream run`` would give.

Cassettes (record once, replay in CI; in the spirit of pytest-recording)
    ``@pytest.mark.chaos_cassette(upstream="https://api.openai.com")`` and the
    ``chaos_cassette`` fixture (a :class:`CassetteHandle`: ``.url``,
    ``.openai_base_url``, ``.path``, ``.recording``) record the test's traffic to
    ``cassettes/<module>/<test>.yaml`` beside the test file when
    ``--chaos-record-mode`` says so (``once``, ``new_episodes``, ``all``) and
    replay it otherwise (default ``none``: replay only). ``chaos_proxy()`` in a
    marked test forwards to the cassette, so faults act on the recorded traffic.
    Without ``upstream`` the marker records ``chaos_mock``. See docs/cassettes.md.

A shared proxy
    ``pytest --chaos-proxy URL --chaos-control URL`` points every ``chaos_proxy()``
    at one running ``chaosstream proxy`` (a CI fleet's, or one per job) instead of
    starting one per test: each call gets its own scope (``URL/~/<scope>/``), so
    tests run in parallel (``pytest -n 4``) without touching each other's request
    counters, seeds or records. The handle is then a :class:`ScopeHandle`: the
    profile and seed are set, and fault log, exchanges and verdicts read, over the
    control API; the scope is deleted after the test.

The servers run on an event loop in a background thread, so the same fixtures
serve plain ``def`` tests and ``async def`` tests (pytest-aiohttp, pytest-asyncio)
alike, and a blocking client in a sync test never stalls the proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest

from chaosstream.faults import FaultEvent
from chaosstream.faults.profile import Profile, load_profile, profile_from_data
from chaosstream.mock import MockServer, MockSettings, start_mock
from chaosstream.proxy.record import Exchange
from chaosstream.proxy.server import ChaosProxy

__all__ = [
    "DEFAULT_PROFILE",
    "CassetteHandle",
    "ChaosHandle",
    "ProfileSpec",
    "ScopeHandle",
    "assert_verdicts",
    "scope_name",
]

T = TypeVar("T")

DEFAULT_PROFILE = "mobile-lossy"
"""The profile ``chaos_proxy()`` uses when neither an argument nor the marker names one."""

ProfileSpec = str | Profile | Mapping[str, Any]
"""A built-in name, a profile file path, a :class:`Profile`, or an inline mapping."""

# Exchanges still closing when a test reads them (the client got its last byte
# a moment before the proxy's bookkeeping ran) are waited for this long at most.
SETTLE_S = 1.0


class _LoopThread:
    """An event loop in a daemon thread, where every server of the session lives."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="chaosstream-pytest", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread (state there is not thread-safe)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper())

    def close(self) -> None:
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def resolve_profile(spec: ProfileSpec) -> Profile:
    """A :class:`Profile` from any :data:`ProfileSpec`."""
    if isinstance(spec, Profile):
        return spec
    if isinstance(spec, str):
        return load_profile(spec)
    return profile_from_data(dict(spec), "<chaos_proxy profile>")


class ChaosHandle:
    """A running chaos proxy, seen from a test. Safe to use from any thread."""

    def __init__(
        self,
        proxy: ChaosProxy,
        loop: _LoopThread,
        mock: MockServer | None = None,
        mock_settings: MockSettings | None = None,
    ) -> None:
        self.proxy = proxy
        self._loop = loop
        self.mock = mock
        """``chaos_mock`` when it is the upstream (None otherwise)."""
        self.mock_settings = mock_settings
        """The mock's pacing when the upstream is ``chaos_mock`` (None otherwise)."""

    @property
    def url(self) -> str:
        """Base URL of the proxy (``CHAOSSTREAM_URL``, ``ANTHROPIC_BASE_URL``)."""
        return self.proxy.url

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for the OpenAI SDK: the proxy plus ``/v1``."""
        return f"{self.proxy.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for the Anthropic SDK."""
        return self.proxy.url

    @property
    def profile(self) -> Profile:
        """The active profile."""
        return self.proxy.profile

    @property
    def seed(self) -> int:
        """The seed in use."""
        return self.proxy.seed

    @property
    def exchanges(self) -> list[Exchange]:
        """Finished exchanges, oldest first.

        Waits up to a second for exchanges still closing, so a test that just got
        its answer sees that exchange; a stream left open (a stall) is not waited for.
        """
        deadline = time.monotonic() + SETTLE_S
        while self._loop.call(lambda: bool(self.proxy.recorder.open)):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        return self._loop.call(lambda: list(self.proxy.recorder.exchanges))

    @property
    def fault_log(self) -> list[FaultEvent]:
        """Every fault event since the proxy started or was last reset."""
        return self._loop.call(lambda: list(self.proxy.fault_log))

    def set_profile(self, profile: ProfileSpec, seed: int | None = None) -> None:
        """Switch profile; request counters start over (``seed`` overrides the profile's)."""
        resolved = resolve_profile(profile)
        self._loop.call(lambda: self.proxy.set_profile(resolved, seed))

    def reset(self, seed: int | None = None, *, exchanges: bool = True) -> None:
        """Start request counters (and the seed) over; forget recorded exchanges too."""

        def do() -> None:
            self.proxy.reset(seed)
            if exchanges:
                self.proxy.recorder.clear()

        self._loop.call(do)


def scope_name(nodeid: str, run: str, nth: int = 1) -> str:
    """A scope name for the ``nth`` ``chaos_proxy()`` of a test: ``run``, a hash of the
    test id, and as much of the test's name as fits (scope names are 1-64 URL-safe
    characters)."""
    digest = hashlib.sha256(f"{nodeid}#{nth}".encode()).hexdigest()[:10]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", nodeid.rpartition("::")[2]).strip("-._")
    return f"{run[:8]}-{digest}-{slug}"[:64].rstrip("-._")


class ScopeHandle:
    """One scope of a shared proxy, seen from a test (``--chaos-proxy``).

    Like :class:`ChaosHandle` but over HTTP: ``exchanges`` are the records the
    control API serves (dicts, as ``--record`` writes them), ``fault_log`` is
    :class:`FaultEvent` objects, and :meth:`verify` asks the proxy for verdicts.
    """

    def __init__(self, proxy_url: str, control_url: str | None, name: str, token: str | None):
        self.proxy_url = proxy_url.rstrip("/")
        self.control_url = control_url.rstrip("/") if control_url else None
        self.name = name
        self._token = token
        self._path_profile: str | None = None

    @property
    def url(self) -> str:
        """Base URL of this scope on the proxy (``CHAOSSTREAM_URL``, ``ANTHROPIC_BASE_URL``)."""
        profile = f"/{self._path_profile}" if self._path_profile else ""
        return f"{self.proxy_url}/~/{self.name}{profile}"

    @property
    def openai_base_url(self) -> str:
        """``base_url`` for the OpenAI SDK: the scope's URL plus ``/v1``."""
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        """``base_url`` for the Anthropic SDK."""
        return self.url

    def _call(self, method: str, route: str, body: Any = None, text: str | None = None) -> Any:
        if self.control_url is None:
            raise RuntimeError(
                f"{method} {route}: the shared proxy's control API is unknown: "
                "run pytest with --chaos-control URL as well as --chaos-proxy"
            )
        data = text.encode() if text is not None else None
        headers = {"Content-Type": "application/yaml"} if text is not None else {}
        if body is not None:
            data = json.dumps(body).encode()
            headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        url = f"{self.control_url}/chaos/scopes/{self.name}{route}"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")[:500]
            raise RuntimeError(f"{method} {url}: {e.code} {detail}") from None

    def set_profile(self, profile: ProfileSpec, seed: int | None = None) -> None:
        """Switch this scope's profile; its request counters start over."""
        if self.control_url is None and isinstance(profile, str) and seed is None:
            # No control API: a built-in profile can still be named in the path.
            self._path_profile = profile
            return
        resolved = resolve_profile(profile)
        data = {"version": 1, **resolved.model_dump(mode="json", exclude_unset=True)}
        query = f"?seed={seed}" if seed is not None else ""
        self._call("PUT", f"/profile{query}", data)

    @property
    def seed(self) -> int:
        """The seed this scope uses."""
        return int(self._call("GET", "/profile")["seed"])

    @property
    def exchanges(self) -> list[dict[str, Any]]:
        """Finished exchanges of this scope, oldest first (the proxy waits for closing ones)."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            summary = self._call("GET", "")
            if not summary["open"] or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        return list(self._call("GET", "/exchanges?limit=1000")["exchanges"])

    @property
    def fault_log(self) -> list[FaultEvent]:
        """Every fault event of this scope since it began or was last reset."""
        return [FaultEvent(**f) for f in self._call("GET", "/fault-log")["faults"]]

    def reset(self, seed: int | None = None, *, exchanges: bool = True) -> None:
        """Start this scope's counters (and the seed) over; forget its exchanges too."""
        body: dict[str, Any] = {"exchanges": exchanges}
        if seed is not None:
            body["seed"] = seed
        self._call("POST", "/reset", body)

    def verify(self, expect: list[Any], client: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The proxy's verdicts over this scope (``POST /chaos/scopes/{id}/verify``)."""
        return dict(self._call("POST", "/verify", {"expect": expect, "client": dict(client or {})}))

    def delete(self) -> None:
        """Forget the scope on the proxy (done after each test)."""
        if self.control_url is not None:
            self._call("DELETE", "")


def _remote_verdicts(handle: ScopeHandle, given: dict[str, Any], client: dict[str, Any]) -> Any:
    expect: list[Any] = []
    musts: list[bool] = []
    for name, value in given.items():
        if isinstance(value, bool):
            expect.append({name: {}})
            musts.append(value)
        elif name == "retries" and isinstance(value, int):
            expect.append({name: {"max_attempts": value}})
            musts.append(True)
        elif isinstance(value, Mapping):
            expect.append({name: dict(value)})
            musts.append(True)
        else:
            raise TypeError(f"{name}= takes True/False or options, got {value!r}")
    result = handle.verify(expect, client)
    verdicts = result["expectations"]
    wrong = [
        f"{v['name']}: expected {'pass' if must else 'fail'}, got {v['verdict']} -- {v['evidence']}"
        for v, must in zip(verdicts, musts, strict=False)
        if (v["verdict"] == "pass") != must
    ]
    if wrong:
        raise AssertionError("chaosstream verdicts:\n  " + "\n  ".join(wrong))
    return verdicts


def _expectation(name: str, value: Any) -> tuple[Any, bool]:
    """An :class:`Expect` and whether it must pass, from one keyword of assert_verdicts."""
    from chaosstream.verify.scenario import Expect

    if isinstance(value, bool):
        return Expect.model_validate({name: {}}), value
    if name == "retries" and isinstance(value, int):
        return Expect.model_validate({name: {"max_attempts": value}}), True
    if isinstance(value, Mapping):
        return Expect.model_validate({name: dict(value)}), True
    raise TypeError(f"{name}= takes True/False or options, got {value!r}")


def assert_verdicts(
    exchanges: ChaosHandle | ScopeHandle | Sequence[Exchange],
    *,
    retries: bool | int | Mapping[str, Any] | None = None,
    falls_back: bool | None = None,
    resumes: bool | None = None,
    cancels_upstream: bool | None = None,
    completes: bool | None = None,
    surfaces_error: bool | None = None,
    text: str | None = None,
    error: BaseException | bool | None = None,
    answer: str | None = None,
) -> list[Any]:
    """Assert the verdicts ``chaosstream run`` would give for these exchanges.

    Each keyword names an expectation: ``True`` means it must pass, ``False``
    that it must fail; ``retries`` also takes ``max_attempts`` (an int) or its
    options (a mapping, e.g. ``{"max_attempts": 3, "within_s": 5}``), meaning pass.
    ``completes`` and ``surfaces_error`` need what the client did: ``text`` (what
    it showed) and ``error`` (the exception it raised, or True). ``answer`` is the
    full answer; with a :class:`ChaosHandle` in front of ``chaos_mock`` it is known.
    Returns the verdicts (``chaosstream.verify.expectations.Verdict``); raises AssertionError
    listing each one that came out wrong, with its evidence. With a :class:`ScopeHandle`
    (a shared proxy) the proxy judges, and the verdicts are its JSON dicts.
    """
    from chaosstream.clients.runner import expected_answer
    from chaosstream.verify.expectations import ClientRun, Evidence, evaluate

    if isinstance(exchanges, ScopeHandle):
        named = {
            "retries": retries,
            "falls_back": falls_back,
            "resumes": resumes,
            "cancels_upstream": cancels_upstream,
            "completes": completes,
            "surfaces_error": surfaces_error,
        }
        asked = {k: v for k, v in named.items() if v is not None}
        if not asked:
            raise TypeError("assert_verdicts needs at least one expectation keyword")
        broke = error is not None and error is not False
        report: dict[str, Any] = {"exit_code": 1 if broke else 0, "stdout": text or ""}
        if broke and error is not True:
            report["error"] = f"{type(error).__name__}: {error}"
        verdicts: list[Any] = _remote_verdicts(exchanges, asked, report)
        return verdicts
    if isinstance(exchanges, ChaosHandle):
        handle: ChaosHandle | None = exchanges
        recorded = exchanges.exchanges
    else:
        handle, recorded = None, list(exchanges)
    wanted = {
        "retries": retries,
        "falls_back": falls_back,
        "resumes": resumes,
        "cancels_upstream": cancels_upstream,
        "completes": completes,
        "surfaces_error": surfaces_error,
    }
    given = {name: value for name, value in wanted.items() if value is not None}
    if not given:
        raise TypeError("assert_verdicts needs at least one expectation keyword")
    if ("completes" in given or "surfaces_error" in given) and text is None and error is None:
        raise TypeError(
            "completes= and surfaces_error= judge the client: pass text= (what it showed) "
            "and/or error= (what it raised)"
        )
    if answer is None:
        answer = expected_answer(recorded, handle.mock_settings if handle else None)
    failed = error is not None and error is not False
    client = ClientRun(
        command=["<pytest>"],
        exit_code=1 if failed else 0,
        timed_out=False,
        stdout=text or "",
        stderr="" if not failed or error is True else f"{type(error).__name__}: {error}",
        duration_s=0.0,
    )
    mock_closed_early = None
    if handle is not None and handle.mock is not None:
        mock = handle.mock
        mock_closed_early = handle._loop.call(lambda: mock.closed_early)
    expects = [_expectation(name, value) for name, value in given.items()]
    _, verdicts = evaluate(
        Evidence(
            client=client, exchanges=recorded, answer=answer, mock_closed_early=mock_closed_early
        ),
        [expect for expect, _ in expects],
    )
    wrong = [
        f"{v.name}: expected {'pass' if must else 'fail'}, got {v.verdict} -- {v.evidence}"
        for v, (_, must) in zip(verdicts, expects, strict=True)
        if (v.verdict == "pass") != must
    ]
    if wrong:
        raise AssertionError("chaosstream verdicts:\n  " + "\n  ".join(wrong))
    return verdicts


# -- pytest hooks and fixtures ---------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--chaos-proxy URL`` / ``--chaos-control URL``: use a shared proxy, one scope per test."""
    group = parser.getgroup("chaosstream")
    group.addoption(
        "--chaos-proxy",
        metavar="URL",
        default=os.environ.get("CHAOSSTREAM_PROXY_URL"),
        help="Use this running chaosstream proxy for chaos_proxy(): each call gets its own "
        "scope (/~/<scope>/), so tests may run in parallel (env CHAOSSTREAM_PROXY_URL).",
    )
    group.addoption(
        "--chaos-control",
        metavar="URL",
        default=os.environ.get("CHAOSSTREAM_CONTROL_URL"),
        help="The shared proxy's control API: sets each scope's profile and seed, reads its "
        "records and verdicts (env CHAOSSTREAM_CONTROL_URL).",
    )
    group.addoption(
        "--chaos-record-mode",
        choices=("once", "new_episodes", "all", "none"),
        default=os.environ.get("CHAOSSTREAM_RECORD_MODE", "none"),
        help="Cassettes of tests marked chaos_cassette: none (default) replays only, once "
        "records a missing cassette, new_episodes adds new requests, all re-records "
        "(env CHAOSSTREAM_RECORD_MODE).",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers, so ``--strict-markers`` suites accept them."""
    config.addinivalue_line(
        "markers",
        "chaos_profile(*names): run the test once per chaosstream profile; chaos_proxy() uses it",
    )
    config.addinivalue_line(
        "markers",
        "chaos_cassette(name=None, upstream=None): record this test's model traffic to a "
        "cassette (--chaos-record-mode) and replay it; chaos_proxy() forwards to it",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize a test marked ``chaos_profile`` over the profiles it names."""
    marker = metafunc.definition.get_closest_marker("chaos_profile")
    if marker is None:
        return
    names = list(marker.args)
    if not names or not all(isinstance(n, str) for n in names):
        pytest.fail(
            f"{metafunc.definition.nodeid}: @pytest.mark.chaos_profile takes profile names, "
            f"e.g. chaos_profile('midstream-reset'); got {marker.args!r}",
            pytrace=False,
        )
    if "chaos_profile" not in metafunc.fixturenames:
        pytest.fail(
            f"{metafunc.definition.nodeid}: @pytest.mark.chaos_profile needs the test to use "
            "the chaos_proxy (or chaos_profile) fixture",
            pytrace=False,
        )
    metafunc.parametrize("chaos_profile", names, indirect=True, ids=names)


@pytest.fixture(scope="session")
def _chaos_loop() -> Iterator[_LoopThread]:
    loop = _LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def chaos_profile(request: pytest.FixtureRequest) -> str | None:
    """The profile name the ``chaos_profile`` marker gives this test run (None if unmarked)."""
    param: str | None = getattr(request, "param", None)
    return param


@pytest.fixture
def chaos_mock_settings() -> MockSettings:
    """Pacing of ``chaos_mock``: fast by default (10 ms TTFT, 1000 tokens/s, 30 tokens)."""
    return MockSettings(ttft_ms=10, tokens_per_s=1000, tokens=30)


@pytest.fixture
def chaos_mock(_chaos_loop: _LoopThread, chaos_mock_settings: MockSettings) -> Iterator[MockServer]:
    """A mock model server on a free loopback port (OpenAI, Anthropic, /sse, /ws)."""
    server = _chaos_loop.run(start_mock("127.0.0.1", 0, chaos_mock_settings))
    yield server
    _chaos_loop.run(server.close())


@pytest.fixture
def chaos_proxy(
    request: pytest.FixtureRequest, _chaos_loop: _LoopThread, chaos_profile: str | None
) -> Iterator[Callable[..., ChaosHandle | ScopeHandle]]:
    """Factory: ``chaos_proxy(profile=None, upstream=None, seed=7)`` -> :class:`ChaosHandle`.

    ``profile`` defaults to the marker's profile, else ``mobile-lossy``;
    ``upstream`` defaults to ``chaos_mock``. Every proxy closes after the test.
    """
    shared = request.config.getoption("chaos_proxy", None)
    if shared:
        yield from _shared_scopes(request, shared, chaos_profile)
        return
    started: list[ChaosProxy] = []

    def make(
        profile: ProfileSpec | None = None, upstream: str | None = None, seed: int | None = 7
    ) -> ChaosHandle:
        resolved = resolve_profile(profile or chaos_profile or DEFAULT_PROFILE)
        mock: MockServer | None = None
        settings: MockSettings | None = None
        if upstream is None and request.node.get_closest_marker("chaos_cassette") is not None:
            upstream = request.getfixturevalue("chaos_cassette").url
        if upstream is None:
            mock = request.getfixturevalue("chaos_mock")
            settings = request.getfixturevalue("chaos_mock_settings")
            upstream = mock.url
        proxy = ChaosProxy(upstream, resolved, seed=seed)
        _chaos_loop.run(proxy.start("127.0.0.1", 0))
        started.append(proxy)
        return ChaosHandle(proxy, _chaos_loop, mock, settings)

    yield make
    for proxy in started:
        _chaos_loop.run(proxy.close())


# One id per test run, the same in every xdist worker (xdist sets PYTEST_XDIST_TESTRUNUID),
# so two CI jobs on one proxy never share a scope; CHAOSSTREAM_RUN_ID pins it (replays).
_RUN = (
    os.environ.get("CHAOSSTREAM_RUN_ID")
    or os.environ.get("PYTEST_XDIST_TESTRUNUID")
    or uuid.uuid4().hex
)


def _shared_scopes(
    request: pytest.FixtureRequest, proxy_url: str, marked: str | None
) -> Iterator[Callable[..., ScopeHandle]]:
    """``chaos_proxy`` on a shared proxy: a new scope per call, deleted after the test."""
    control = request.config.getoption("chaos_control", None)
    token = os.environ.get("CHAOSSTREAM_CONTROL_TOKEN") or None
    made: list[ScopeHandle] = []

    def make(
        profile: ProfileSpec | None = None, upstream: str | None = None, seed: int | None = 7
    ) -> ScopeHandle:
        if upstream is not None:
            raise TypeError("chaos_proxy(upstream=...): a shared proxy has its own upstream")
        name = scope_name(request.node.nodeid, re.sub(r"[^A-Za-z0-9]", "", _RUN), len(made) + 1)
        handle = ScopeHandle(proxy_url, control, name, token)
        handle.set_profile(profile or marked or DEFAULT_PROFILE, seed if control else None)
        made.append(handle)
        return handle

    yield make
    for handle in made:
        # A scope left behind is forgotten under --max-scopes anyway: never fail the test here.
        with contextlib.suppress(RuntimeError, OSError):
            handle.delete()


class CassetteHandle:
    """The ``chaos_cassette`` fixture: where the test's model traffic is recorded or replayed."""

    def __init__(self, url: str, path: Path, mode: str, recording: bool) -> None:
        #: Base URL that answers from the cassette (or records through to the upstream).
        self.url = url
        #: The cassette file.
        self.path = path
        #: The record mode in force (``--chaos-record-mode``).
        self.mode = mode
        #: True when requests reach the upstream and are written to the cassette.
        self.recording = recording

    @property
    def openai_base_url(self) -> str:
        """``url`` + ``/v1``, for ``openai.OpenAI(base_url=...)``."""
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url


def _cassette_file(request: pytest.FixtureRequest, name: str | None) -> Path:
    """``cassettes/<module>/<test>.yaml`` beside the test file (pytest-recording's layout)."""
    node = request.node
    test = name or re.sub(r"[^A-Za-z0-9_.-]", "_", node.name)
    return Path(node.path).parent / "cassettes" / Path(node.path).stem / f"{test}.yaml"


@pytest.fixture
def chaos_cassette(
    request: pytest.FixtureRequest, _chaos_loop: _LoopThread
) -> Iterator[CassetteHandle]:
    """The test's cassette: recorded or replayed per ``--chaos-record-mode`` (marker optional)."""
    from chaosstream.clients.cassette import CassetteOptions, open_cassette
    from chaosstream.yamlfile import InputError

    marker = request.node.get_closest_marker("chaos_cassette")
    kwargs = dict(marker.kwargs) if marker is not None else {}
    name = marker.args[0] if marker is not None and marker.args else kwargs.get("name")
    path = _cassette_file(request, name)
    mode = str(request.config.getoption("chaos_record_mode", "none"))
    upstream = kwargs.get("upstream")
    if upstream is None and (mode != "none" and not (mode == "once" and path.is_file())):
        upstream = request.getfixturevalue("chaos_mock").url
    if mode != "none":
        path.parent.mkdir(parents=True, exist_ok=True)
    problem = ""
    try:
        url, tap, replay = _chaos_loop.run(
            open_cassette(CassetteOptions(str(path), mode), upstream)
        )
    except InputError as e:
        problem = str(e)
    if problem:
        pytest.fail(f"{problem}: record it with --chaos-record-mode once", pytrace=False)
    proxy: ChaosProxy | None = None
    if tap is not None:
        assert url is not None
        proxy = ChaosProxy(url, load_profile("clean"), cassette=tap)
        url = _chaos_loop.run(proxy.start("127.0.0.1", 0))
    assert url is not None
    yield CassetteHandle(url, path, mode, recording=tap is not None)
    if proxy is not None:
        _chaos_loop.run(proxy.close())
    if replay is not None:
        _chaos_loop.run(replay.close())
