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

The servers run on an event loop in a background thread, so the same fixtures
serve plain ``def`` tests and ``async def`` tests (pytest-aiohttp, pytest-asyncio)
alike, and a blocking client in a sync test never stalls the proxy.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import pytest

from chaosstream.faults import FaultEvent
from chaosstream.faults.profile import Profile, load_profile, profile_from_data
from chaosstream.mock import MockServer, MockSettings, start_mock
from chaosstream.proxy.record import Exchange
from chaosstream.proxy.server import ChaosProxy

__all__ = [
    "DEFAULT_PROFILE",
    "ChaosHandle",
    "ProfileSpec",
    "assert_verdicts",
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
    exchanges: ChaosHandle | Sequence[Exchange],
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
    listing each one that came out wrong, with its evidence.
    """
    from chaosstream.clients.runner import expected_answer
    from chaosstream.verify.expectations import ClientRun, Evidence, evaluate

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


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker, so ``--strict-markers`` suites accept it."""
    config.addinivalue_line(
        "markers",
        "chaos_profile(*names): run the test once per chaosstream profile; chaos_proxy() uses it",
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
) -> Iterator[Callable[..., ChaosHandle]]:
    """Factory: ``chaos_proxy(profile=None, upstream=None, seed=7)`` -> :class:`ChaosHandle`.

    ``profile`` defaults to the marker's profile, else ``mobile-lossy``;
    ``upstream`` defaults to ``chaos_mock``. Every proxy closes after the test.
    """
    started: list[ChaosProxy] = []

    def make(
        profile: ProfileSpec | None = None, upstream: str | None = None, seed: int | None = 7
    ) -> ChaosHandle:
        resolved = resolve_profile(profile or chaos_profile or DEFAULT_PROFILE)
        mock: MockServer | None = None
        settings: MockSettings | None = None
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
