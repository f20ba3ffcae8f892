"""Locust as the engine: one User class per profile of the mix, master/worker as Locust does it.

Importing this module imports Locust, which monkey-patches the process for
gevent (sockets, threads, time.sleep): only ``chaosstream load`` imports it, in
its own process, never the rest of the package.

How the asyncio fault engine runs under gevent: each Locust process starts one
native thread with an asyncio loop (:class:`AsyncBridge`); a user greenlet hands
its attempt to that loop and waits for an async watcher of its hub, which the
loop's thread may wake (gevent's other objects belong to one thread), so the
greenlet yields to the others meanwhile. All sockets, faults and timers of
every user live on that one loop, with the unpatched socket class. We chose it
over a synchronous adapter of the faults (fake clock swapped for gevent sleeps)
because faults run tasks and queues of their own (``prefetched``, ``Feed``): one
loop runs them unchanged.
The bench measures what it costs (``python -m bench --only load``).
"""

# ruff: noqa: E402 -- the warning filter must come before the imports that patch
from __future__ import annotations

import warnings

# The CLI imported ssl before Locust could patch it: harmless here, since the users'
# sockets and TLS run on the asyncio thread with the unpatched classes.
warnings.filterwarnings("ignore", message="Monkey-patching ssl after ssl")

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import random
import signal
import socket
import ssl
import sys
import time
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TextIO, TypeVar

import gevent  # type: ignore[import-untyped]
import gevent.monkey  # type: ignore[import-untyped]
from gevent.event import Event  # type: ignore[import-untyped]
from gevent.hub import Waiter  # type: ignore[import-untyped]
from locust import User, constant, task
from locust.env import Environment
from locust.event import Events
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import PERCENTILES_TO_REPORT, StatsCSVFileWriter, stats_history

from chaosstream.faults.trigger import Injector
from chaosstream.load.client import stream_attempt
from chaosstream.load.metrics import Answer, Attempt, LoadStats
from chaosstream.load.plan import LoadPlan, MixEntry, retryable

__all__ = ["AsyncBridge", "Collector", "EngineOptions", "LoadError", "run_load", "user_classes"]

T = TypeVar("T")
REPORT_KEY = "chaosstream"
"""Key of our totals in a Locust worker's stats report."""
_socket_class: Any = gevent.monkey.get_original("socket", "socket")


class LoadError(Exception):
    """The run could not take place (no workers came, a port is taken...): exit 2."""


class AsyncBridge:
    """An asyncio loop in a native thread; greenlets run coroutines on it and wait cooperatively."""

    def __init__(self) -> None:
        # Unpatched Events: set from the loop's native thread, waited on here briefly.
        native_event = gevent.monkey.get_original("threading", "Event")
        self._ready = native_event()
        self._done = native_event()
        self._new_lock = gevent.monkey.get_original("threading", "Lock")
        self.loop: asyncio.AbstractEventLoop | None = None
        start = gevent.monkey.get_original("_thread", "start_new_thread")
        start(self._run, ())
        if not self._ready.wait(10):
            raise LoadError("the asyncio thread did not start")

    def _run(self) -> None:
        selector_class = gevent.monkey.get_original("selectors", "DefaultSelector")
        loop = asyncio.SelectorEventLoop(selector_class())
        asyncio.set_event_loop(loop)
        self.loop = loop
        self._ready.set()
        try:
            loop.run_forever()
            # Attempts still out when the run ends (users stopped mid-stream) end here,
            # cancelled and awaited. Left pending, each would log "Task was destroyed but
            # it is pending!" as the loop is dropped, from this thread, while the main
            # thread's logging.shutdown (atexit) takes the same handler's lock: a lock
            # gevent patched, taken from two threads, and the process hung at exit.
            tasks = asyncio.all_tasks(loop)
            for t in tasks:
                t.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()
            self._done.set()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop; the calling greenlet yields until it is done.

        Killing the greenlet (Locust stopping a user) cancels the coroutine.
        """
        assert self.loop is not None
        # gevent's objects belong to one thread: an AsyncResult set from the loop's
        # thread is not safe (gevent/gevent#1739: it "has *never* been safe to use from
        # multiple threads"), and a lone greenlet waiting on one failed with LoopExit.
        # What the maintainers name for it is an async watcher: its send() may come
        # from any thread, and it keeps the hub's loop alive while the call is out.
        # Started before the coroutine is handed over, so a send cannot come before
        # it listens (libev's ev_async_start clears a pending send).
        watcher = gevent.get_hub().loop.async_()
        waiter = Waiter()
        watcher.start(waiter.switch, None)
        lock = self._new_lock()
        closed = False

        def wake(_: concurrent.futures.Future[T]) -> None:
            # The loop's thread, or this one when cancel() ends the future: never a
            # send on a watcher this greenlet closed.
            with lock:
                if not closed:
                    watcher.send()

        try:
            try:
                future = asyncio.run_coroutine_threadsafe(coro, self.loop)
            except RuntimeError:  # the loop is closed: the run is over
                coro.close()
                raise gevent.GreenletExit() from None
            future.add_done_callback(wake)
            try:
                waiter.get()
                return future.result()
            except concurrent.futures.CancelledError:
                raise gevent.GreenletExit() from None  # the loop stopped under the user
            except BaseException:
                future.cancel()
                raise
        finally:
            with lock:
                closed = True
                watcher.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop, end what still runs on it, and wait for its thread to finish."""
        if self.loop is not None and self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._done.wait(timeout_s)


@dataclass
class Collector:
    """This process's totals and the streams open right now, per profile."""

    plan: LoadPlan
    stats: LoadStats = field(default_factory=LoadStats)
    open: dict[str, int] = field(default_factory=dict)

    def attempt(self, profile: str, attempt: Attempt) -> None:
        self.stats.of(profile).add_attempt(attempt, time.time())

    def answer(self, profile: str, answer: Answer) -> None:
        self.stats.of(profile).add_answer(answer, self.plan.ttft_slo_ms, self.plan.ttlt_slo_ms)

    def sample(self) -> None:
        now = time.time()
        for entry in self.plan.mix:
            self.stats.of(entry.name).sample_open(now, self.open.get(entry.name, 0))


class StreamUser(User):
    """A person on a bad network asking a model, over and over (base of the generated classes)."""

    abstract = True
    wait_time = constant(0)
    entry: MixEntry
    plan: LoadPlan
    bridge: AsyncBridge
    collector: Collector
    numbers: itertools.count[int]

    address: tuple[int, tuple[Any, ...]] | None = None
    tls: ssl.SSLContext | None = None

    def on_start(self) -> None:
        n = next(self.numbers)
        # Each simulated person is a device of its own: its own request counters and seed
        # (a profile's `requests: [1, 2]` means this user's first two requests).
        seed = zlib.crc32(f"{self.plan.seed}:{self.entry.name}:{os.getpid()}:{n}".encode())
        self.injector = Injector(self.entry.profile.all_faults(), seed)
        self.rng = random.Random(seed)

    @task
    def ask(self) -> None:
        plan, profile = self.plan, self.entry.name
        body = plan.body(self.rng.choice(plan.prompts))
        info, headers, target = plan.request_info(body), plan.headers(), plan.target
        attempts: list[Attempt] = []
        for number in range(1, plan.retry.max_attempts + 1):
            self.collector.open[profile] = self.collector.open.get(profile, 0) + 1
            try:
                attempt = self.bridge.call(
                    stream_attempt(
                        target,
                        headers,
                        body,
                        self.injector,
                        info,
                        timeout_s=plan.timeout_s,
                        sock_factory=_socket_class,
                        address=self.address,
                        ssl_context=self.tls,
                    )
                )
            finally:
                self.collector.open[profile] -= 1
            attempts.append(attempt)
            self.collector.attempt(profile, attempt)
            self.environment.events.request.fire(
                request_type="STREAM",
                name=profile,
                response_time=(attempt.ended - attempt.started) * 1000.0,
                response_length=attempt.nbytes,
                exception=None if attempt.completed else StreamFailure(attempt.outcome),
                context={"ttft_ms": (attempt.ttft_s or 0.0) * 1000.0},
            )
            if attempt.completed or not retryable(attempt.outcome):
                break
            if number < plan.retry.max_attempts:
                gevent.sleep(plan.retry.delay_s(number, attempt.retry_after_s, self.rng))
        self.collector.answer(profile, Answer(attempts))
        if plan.think_s:
            gevent.sleep(plan.think_s)


class StreamFailure(Exception):
    """How Locust's failure table names an attempt that did not complete."""


def user_classes(plan: LoadPlan, bridge: AsyncBridge, collector: Collector) -> list[type[User]]:
    """One User class per profile, named after it, weighted by its share of the mix."""
    classes: list[type[User]] = []
    for entry in plan.mix:
        attrs = {
            "entry": entry,
            "plan": plan,
            "bridge": bridge,
            "collector": collector,
            "numbers": itertools.count(1),
            # Locust spreads users by weight; 1,000ths keep shares like 0.7/0.2/0.1 exact.
            "weight": max(1, round(entry.share * 1000)),
            "abstract": False,
        }
        classes.append(type(entry.name, (StreamUser,), attrs))
    return classes


@dataclass
class EngineOptions:
    """How to run: Locust's own knobs, as ``chaosstream load`` passes them."""

    users: int
    spawn_rate: float
    run_time_s: float
    mode: str = "local"  # local | master | worker
    master_host: str = "127.0.0.1"
    master_port: int = 5557
    master_bind_host: str = "*"
    expect_workers: int = 1
    expect_workers_timeout_s: float = 60.0
    web: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 8089
    csv_prefix: str | None = None
    progress: TextIO | None = field(default_factory=lambda: sys.stderr)
    early_signals: list[int] = field(default_factory=list)
    """Signals the caller noted before the engine's own handlers: the run ends at once."""


@dataclass
class EngineResult:
    stats: LoadStats
    duration_s: float
    started_wall: float
    workers: int = 0
    locust_requests: int = 0
    interrupted: int | None = None
    """The signal (SIGINT, SIGTERM) that ended the run early, if one did."""


def _progress(
    out: TextIO, runner: Any, collector: Collector, started: float, every: float
) -> Callable[[], None]:
    tty = out.isatty()

    def loop() -> None:
        while True:
            gevent.sleep(every)
            total = collector.stats.overall()
            elapsed = time.monotonic() - started
            line = (
                f"{elapsed:6.0f}s  users {runner.user_count:>5}  "
                f"open {sum(collector.open.values()):>5}  streams {total.streams:>7}  "
                f"done {total.completed:>7}  tok/s {total.tokens / max(elapsed, 1e-9):>8.0f}  "
                f"interrupted {total.interrupted:>5}  errors {sum(total.errors.values()):>5}"
            )
            out.write(("\r" + line) if tty else line + "\n")
            out.flush()

    return loop


def _every_second(fn: Callable[[], None]) -> None:
    while True:
        # Half past each wall-clock second: one sample per second per process, so the
        # master can add the workers' samples up second by second.
        now = time.time()
        gevent.sleep(1.5 - (now % 1.0) if now % 1.0 > 0.5 else 0.5 - (now % 1.0))
        fn()


class _Stopper(Event):  # type: ignore[misc]
    """Set by SIGINT or SIGTERM: the run ends early, its report is still written.

    gevent's own signal handlers: Python's would raise KeyboardInterrupt in the hub,
    which does not reach the greenlet that waits for the run's end.
    """

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None
        self._handlers = [
            gevent.signal_handler(sig, self.on_signal, sig)
            for sig in (signal.SIGINT, signal.SIGTERM)
        ]

    def on_signal(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
        self.set()

    def close(self) -> None:
        for handler in self._handlers:
            handler.cancel()


def _start_web_ui(env: Environment, host: str, port: int) -> str:
    """Locust's web UI on ``host:port`` (0: a free port); its URL once it listens."""
    # Locust's page parses sys.argv with its own parser for its "extra arguments"
    # (locust/web.py update_template_args -> argument_parser.ui_extra_args_dict()), and
    # exits on options it does not know, such as ours: click has read them already.
    del sys.argv[1:]
    web_ui = env.create_web_ui(host, port)
    deadline = time.monotonic() + 10.0
    while True:
        server = getattr(web_ui, "server", None)
        if server is not None and server.started:
            return f"http://{host}:{server.address[1]}"
        greenlet = web_ui.greenlet
        if (greenlet is not None and greenlet.dead) or time.monotonic() > deadline:
            raise LoadError(f"the web UI could not listen on {host}:{port}")
        gevent.sleep(0.01)


def run_load(plan: LoadPlan, options: EngineOptions) -> EngineResult:
    """Run the load as ``options.mode`` says and return the totals (empty on a worker)."""
    bridge = AsyncBridge()
    collector = Collector(plan)
    classes = user_classes(plan, bridge, collector)
    if options.mode != "master":
        target = plan.target
        try:  # once, here: gevent's resolver in a greenlet (see stream_attempt)
            infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except OSError as e:
            bridge.stop()
            raise LoadError(f"cannot resolve {target.host}: {e}") from None
        tls = plan.ssl_context()
        for cls in classes:
            cls.address = (int(infos[0][0]), tuple(infos[0][4]))  # type: ignore[attr-defined]
            cls.tls = tls  # type: ignore[attr-defined]
    env = Environment(
        user_classes=classes,
        events=Events(),  # type: ignore[no-untyped-call]
        host=plan.upstream,
        stop_timeout=0,
    )
    workers = 0
    greenlets: list[Any] = []
    stopper = _Stopper()
    if options.early_signals:
        stopper.on_signal(options.early_signals[0])
    started_wall = time.time()
    started = time.monotonic()
    try:
        if options.mode == "worker":
            runner: Any = env.create_worker_runner(options.master_host, options.master_port)

            def report(client_id: str, data: dict[str, Any]) -> None:
                data[REPORT_KEY] = collector.stats.drain().to_wire()

            env.events.report_to_master.add_listener(report)  # type: ignore[no-untyped-call]
            greenlets.append(gevent.spawn(_every_second, collector.sample))
            # A signal quits the worker the Locust way: it tells its master it leaves.
            stopper.rawlink(lambda _: runner.quit())
            runner.greenlet.join()
            return EngineResult(
                LoadStats(), time.monotonic() - started, started_wall, interrupted=stopper.signum
            )
        if options.mode == "master":
            runner = env.create_master_runner(options.master_bind_host, options.master_port)

            def merge(client_id: str, data: dict[str, Any]) -> None:
                if REPORT_KEY in data:
                    collector.stats.merge(LoadStats.from_wire(data[REPORT_KEY]))

            env.events.worker_report.add_listener(merge)  # type: ignore[no-untyped-call]
            deadline = time.monotonic() + options.expect_workers_timeout_s
            while len(runner.clients.ready) < options.expect_workers:
                if time.monotonic() > deadline:
                    raise LoadError(
                        f"{len(runner.clients.ready)} of {options.expect_workers} workers "
                        f"connected within {options.expect_workers_timeout_s:g} s"
                    )
                if stopper.wait(0.1):
                    signum = stopper.signum
                    return EngineResult(collector.stats, 0.0, started_wall, interrupted=signum)
            workers = len(runner.clients.ready)
        else:
            runner = env.create_local_runner()
            greenlets.append(gevent.spawn(_every_second, collector.sample))
        if options.web:
            url = _start_web_ui(env, options.web_host, options.web_port)
            if options.progress is not None:
                options.progress.write(f"Locust web UI: {url}\n")
                options.progress.flush()
            greenlets.append(gevent.spawn(stats_history, runner))
        writer = None
        if options.csv_prefix:
            writer = StatsCSVFileWriter(env, PERCENTILES_TO_REPORT, options.csv_prefix)
            greenlets.append(gevent.spawn(writer.stats_writer))
        if options.progress is not None:
            every = 1.0 if options.progress.isatty() else 5.0
            greenlets.append(
                gevent.spawn(_progress(options.progress, runner, collector, started, every))
            )
        started_wall = time.time()
        started = time.monotonic()
        runner.start(options.users, options.spawn_rate)
        stopper.wait(options.run_time_s)
        duration = time.monotonic() - started
        if isinstance(runner, MasterRunner):
            runner.quit()  # workers stop, send their last report; the master waits 0.5 s for it
        else:
            runner.stop()
            collector.sample()
        if writer is not None:
            gevent.sleep(1.1)  # one more pass of Locust's CSV writer, over the final totals
        if options.progress is not None and options.progress.isatty():
            options.progress.write("\n")
        return EngineResult(
            collector.stats,
            duration,
            started_wall,
            workers,
            env.stats.total.num_requests,
            stopper.signum,
        )
    finally:
        for g in greenlets:
            g.kill(block=False)
        if options.mode != "worker" and not isinstance(env.runner, WorkerRunner):
            with contextlib.suppress(Exception):
                if env.runner is not None and not isinstance(env.runner, MasterRunner):
                    env.runner.quit()
        stopper.close()
        bridge.stop()
