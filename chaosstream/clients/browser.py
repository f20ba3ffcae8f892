"""The browser client: drive a chat page in headless Chromium and judge what a person saw.

A scenario may name a page instead of a command::

    client:
      browser:
        url: /                      # relative to the proxy, or absolute; {proxy} is replaced
        prompt: Why do streams break on mobile networks?
        selectors: {output: "#answer"}   # the rest default to the reference page's data-testids
        stop_after_ms: 200          # click Stop this long after the first text (cancels_upstream)

:class:`PageDriver` starts one headless Chromium (a fresh profile, every host
but loopback unresolvable; which one: :func:`launch_chromium`) and opens a
fresh browser context per scenario. A script injected before the page's own
code watches the DOM from the first frame: when the typing indicator first
shows, when the first answer text appears, every ``layout-shift`` entry.
:func:`chaosstream.verify.page.judge_page` turns that
:class:`~chaosstream.verify.page.PageObservation` plus the proxy's exchanges
into verdicts; the scenario's ``client: {browser: ...}`` spec is
:class:`~chaosstream.verify.scenario.BrowserSpec`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from chaosstream.verify.expectations import ClientRun
from chaosstream.verify.page import CANCEL_WITHIN_S, PageObservation, PageView
from chaosstream.verify.scenario import (
    DEFAULT_STOP_AFTER_MS,
    BrowserClient,
    BrowserSpec,
    Expect,
    Scenario,
    Selectors,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "CHROMIUM_ENV",
    "CHROMIUM_NAMES",
    "PageDriver",
    "drive_scenario",
    "intercept_args",
    "launch_chromium",
    "page_battery",
    "resolve_url",
    "write_artifacts",
]

CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium; found on PATH as ``chromium`` like any other candidate."""
CHROMIUM_ENV = "CHAOSSTREAM_CHROMIUM"
"""Environment variable naming the browser to drive (as ``--chromium PATH`` does)."""
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
"""Executables looked up on PATH, in this order, when no browser is named."""
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--metrics-recording-only",
    # Every name resolves to nothing but loopback: a page can't leak traffic off the machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
)
# Playwright already gives each launch its own temporary --user-data-dir (and
# refuses one in ``args``), so every PageDriver starts from a fresh profile.

TERMINAL_STATES = ("complete", "stopped", "incomplete", "error")


def resolve_url(url: str, proxy_url: str) -> str:
    """The page address for a proxy: ``{proxy}`` substituted, a bare path put on the proxy."""
    proxy = proxy_url.rstrip("/")
    url = url.replace("{proxy}", proxy)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", url):
        return url
    return proxy + "/" + url.lstrip("/")


# Runs in every frame before the page's own scripts. Timestamps are
# performance.now(); the driver sets `sentAt` right before clicking Send.
# S holds the selectors; S.auto names the parts to find by role and text when
# their selector matches nothing (a page without our data-testids).
_OBSERVER_JS = """
(() => {
  const S = %s;
  // Parts left unnamed are searched for by role and text, except on a page built with
  // the reference page's test ids: there a missing part is missing (bad_chat.html has none).
  const OWN = '[data-testid="input"], [data-testid="output"]';
  const AUTO_PARTS = S.auto || {};
  const AUTO = new Proxy({}, { get: (_, part) => !!AUTO_PARTS[part] && !q(OWN) });
  const cs = { sentAt: null, typingAt: null, textAt: null, changedAt: 0, shifts: [],
               out: null };
  Object.defineProperty(window, "__chaosstream", { value: cs });
  const q = (sel) => { try { return document.querySelector(sel); } catch { return null; } };
  const visible = (el) => {
    if (!el || !el.isConnected) return false;
    const opts = { opacityProperty: true, visibilityProperty: true };
    if (el.checkVisibility && !el.checkVisibility(opts)) return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const norm = (t) => (t || "").replace(/\\s+/g, " ").trim();
  // Controls and form fields never hold the answer, however their text changes.
  const CONTROL = "button,a,label,input,textarea,select,option,script,style,[role=button]";
  const grown = new WeakMap();
  const ERROR_WORDS = /\\b(error|failed|failure|went wrong|try again|could ?n[o']t|unable)\\b/i;
  const blockOf = (node) => {
    let el = node && (node.nodeType === 1 ? node : node.parentElement);
    while (el && el !== document.body && getComputedStyle(el).display.startsWith("inline"))
      el = el.parentElement;
    return el && el !== document.body && el !== document.documentElement ? el : null;
  };
  // The output, when none is named: the last text block that grew after Send.
  const grow = (node) => {
    const start = node && (node.nodeType === 1 ? node : node.parentElement);
    if (!start || start.closest(CONTROL)) return;
    const el = blockOf(start);
    if (!el || el.closest(CONTROL)) return;
    const text = norm(el.textContent);
    // A short notice in error words is the error notice, not the answer.
    if (text.length < 120 && ERROR_WORDS.test(text)) return;
    if (text.length > (grown.get(el) || 0)) {
      grown.set(el, text.length);
      // The person's own message, echoed back, is never the answer.
      if (!text.includes(norm(S.prompt))) cs.out = el;
    }
  };
  const outEl = () => q(S.output) || (AUTO.output ? cs.out : null);
  const related = (el, other) => other && (el.contains(other) || other.contains(el));
  const findError = () => {
    const named = q(S.error);
    if (named || !AUTO.error) return named;
    const out = outEl();
    for (const el of document.querySelectorAll("[role=alert],[aria-live=assertive]"))
      if (visible(el) && norm(el.textContent)) return el;
    if (cs.sentAt === null) return null;
    for (const el of document.body.querySelectorAll("body *")) {
      // The notice itself: a small block holding no control (its Retry button is apart).
      if (el.children.length > 2 || el.closest(CONTROL) || el.querySelector(CONTROL)) continue;
      if (related(el, out) || grown.has(el)) continue;
      const text = norm(el.textContent);
      if (text.length < 200 && ERROR_WORDS.test(text) && visible(el)) return el;
    }
    return null;
  };
  const button = (re) => {
    for (const el of document.querySelectorAll("button,[role=button],input[type=button]")) {
      const label = norm(el.getAttribute("aria-label") || el.value || el.textContent);
      if (re.test(label) && visible(el)) return el;
    }
    return null;
  };
  const findRetry = () =>
    q(S.retry) || (AUTO.retry ? button(/^(retry|try again|regenerate)/i) : null);
  const findStop = () => q(S.stop) || (AUTO.stop ? button(/^(stop|cancel)/i) : null);
  const findTyping = () => {
    const named = q(S.typing);
    if (named || !AUTO.typing) return named;
    for (const el of document.querySelectorAll("[aria-busy=true],[role=status],[role=progressbar]"))
      if (visible(el)) return el;
    return null;
  };
  // A page without data-state says "busy" with aria-busy on the output or its log.
  const stateOf = (out) => {
    if (!out) return "";
    const own = out.getAttribute("data-state");
    if (own) return own;
    const busy = out.closest("[aria-busy]") || document.querySelector("[role=log][aria-busy]");
    return busy && busy.getAttribute("aria-busy") === "true" ? "busy" : "";
  };
  const describe = (el) => {
    if (!el) return null;
    let d = el.tagName.toLowerCase();
    if (el.id) d += "#" + el.id;
    const cls = (el.getAttribute("class") || "").trim().split(/\\s+/).filter(Boolean);
    if (cls.length) d += "." + cls.slice(0, 2).join(".");
    const role = el.getAttribute("role");
    if (role) d += `[role=${role}]`;
    return d;
  };
  const outWhy = () => (q(S.output) ? "" : " (the last text block that grew after Send)");
  cs.describe = () => ({ output: outEl() && describe(outEl()) + outWhy(),
    error: describe(findError()),
    typing: describe(findTyping()), retry: describe(findRetry()), stop: describe(findStop()) });
  let sig = "";
  const check = () => {
    const now = performance.now();
    const out = outEl();
    const text = out ? out.textContent : "";
    if (cs.sentAt !== null) {
      if (cs.textAt === null && text.trim()) cs.textAt = now;
      if (cs.textAt === null && cs.typingAt === null && visible(findTyping())) cs.typingAt = now;
    }
    const next = text.length + "|" + stateOf(out) + "|" + visible(findError());
    if (next !== sig) { sig = next; cs.changedAt = now; }
  };
  cs.view = () => {
    check();
    const out = outEl(), err = findError();
    return {
      state: stateOf(out),
      text: out ? out.textContent : "",
      error_visible: visible(err),
      error_text: err && visible(err) ? norm(err.textContent) : "",
      retry_visible: visible(findRetry()),
      quiet_ms: performance.now() - cs.changedAt,
    };
  };
  new MutationObserver((records) => {
    if (cs.sentAt !== null && AUTO.output) {
      for (const r of records) {
        if (r.type === "characterData") grow(r.target);
        else for (const n of r.addedNodes) grow(n);
      }
    }
    check();
  }).observe(document, {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
  // A backstop for changes no mutation announces (CSS animations, media queries).
  setInterval(check, 50);
  try {
    new PerformanceObserver((list) => {
      for (const e of list.getEntries())
        cs.shifts.push({ value: e.value, at: e.startTime, input: e.hadRecentInput });
    }).observe({ type: "layout-shift", buffered: true });
  } catch {}
})();
"""

# Picks the prompt field and the Send control when their selectors match nothing:
# the focused text field, else the only (or first) visible textarea, else text input;
# Send is the field's form's submit button, else a button labelled Send/Submit/Ask,
# else none (Enter submits). The picks are tagged so Playwright can address them.
_PICK_JS = """
(want) => {
  const visible = (el) => {
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const describe = (el) => {
    let d = el.tagName.toLowerCase();
    if (el.id) d += "#" + el.id;
    if (el.name) d += `[name=${el.name}]`;
    return d;
  };
  const out = {};
  let input = null;
  if (want.input) {
    const TEXT = "textarea, input:not([type]), input[type=text], input[type=search], "
      + "[contenteditable=true]";
    const a = document.activeElement;
    const fields = [...document.querySelectorAll(TEXT)].filter(visible);
    const areas = fields.filter((el) => el.tagName === "TEXTAREA");
    let why;
    if (a && a.matches && a.matches(TEXT)) { input = a; why = "the focused text field"; }
    else if (areas.length === 1) { input = areas[0]; why = "the only textarea"; }
    else if (fields.length === 1) { input = fields[0]; why = "the only text field"; }
    else if (areas.length) { input = areas[0]; why = "the first of several textareas"; }
    else if (fields.length) { input = fields[0]; why = "the first of several text fields"; }
    if (input) {
      input.setAttribute("data-chaosstream-pick", "input");
      out.input = `${describe(input)} (${why})`;
    }
  } else {
    input = document.querySelector(want.inputSelector);
  }
  if (want.send) {
    const form = input && input.closest("form");
    let send = null, why = "";
    if (form) {
      send = form.querySelector("button[type=submit], input[type=submit], button:not([type])");
      why = "the prompt form's submit button";
    }
    if (!send) {
      for (const el of document.querySelectorAll("button,[role=button],input[type=submit]")) {
        const label = (el.getAttribute("aria-label") || el.value || el.textContent || "").trim();
        if (/^(send|submit|ask)/i.test(label) && visible(el)) {
          send = el;
          why = "the button labelled " + JSON.stringify(label);
          break;
        }
      }
    }
    if (send) {
      send.setAttribute("data-chaosstream-pick", "send");
      out.send = `${describe(send)} (${why})`;
    } else out.send = null;
  }
  return out;
}
"""
PICKED_INPUT = '[data-chaosstream-pick="input"]'
PICKED_SEND = '[data-chaosstream-pick="send"]'
AUTO_PARTS = ("output", "error", "typing", "retry", "stop")
"""Parts the page watcher finds by role and text when their selector matches nothing."""


async def launch_chromium(
    browser_type: Any, executable: str | None = None, extra_args: Sequence[str] = ()
) -> tuple[Any, str]:
    """Launch headless Chromium with :data:`CHROMIUM_ARGS` (then ``extra_args``: see
    :func:`intercept_args`); return ``(browser, what ran)``.

    The first of: ``executable`` (``--chromium``), ``$CHAOSSTREAM_CHROMIUM``,
    Playwright's own build (``python -m playwright install chromium``: the
    version Playwright is tested with), then :data:`CHROMIUM_NAMES` on PATH. A
    browser named by the flag or the variable is used or refused, never
    silently swapped for another. ``browser_type`` is Playwright's
    ``playwright.chromium``. Raises :class:`~chaosstream.yamlfile.InputError`
    naming what was tried.
    """
    from chaosstream.yamlfile import InputError, cut_path

    named, source = executable, "--chromium"
    if not named:
        # `run`/`check --chromium` set the variable too, so name both.
        named, source = os.environ.get(CHROMIUM_ENV, ""), f"--chromium/${CHROMIUM_ENV}"
    if named:
        path = _which(named)
        if path is None:
            raise InputError(f"{source} {cut_path(named)}: no such executable file")
        try:
            return await _launch(browser_type, path, extra_args), path
        except Exception as e:
            raise InputError(f"{source} {_cut(path)}: Chromium did not start: {_cut(e)}") from None
    tried = []
    try:
        # Which build it is (full or headless shell) is Playwright's choice: name it, not a path.
        return await _launch(browser_type, None, extra_args), "Playwright's own Chromium"
    except Exception as e:
        # Playwright's "Executable doesn't exist at ..." is the usual case: nothing installed.
        missing = "Executable doesn't exist" in str(e)
        tried.append(f"Playwright's own ({'not installed' if missing else _cut(e)})")
    absent = []
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path is None:
            absent.append(name)
            continue
        try:
            return await _launch(browser_type, path, extra_args), path
        except Exception as e:
            tried.append(f"{path} ({_cut(e)})")
    if absent:
        tried.append(f"{', '.join(absent)} on PATH (not found)")
    raise InputError(
        "no Chromium to drive the page; tried " + "; ".join(tried) + ". Install one "
        "(apt-get install --no-install-recommends chromium, or python -m playwright install "
        f"chromium) or name it with --chromium PATH or ${CHROMIUM_ENV}"
    )


def intercept_args(proxy_url: str, hosts: Sequence[str], spki_pin: str) -> list[str]:
    """Chromium flags that send the ``hosts`` (globs) through the intercepting front.

    A PAC script (given inline as a ``data:`` URL) answers ``PROXY`` for an
    intercepted host and ``DIRECT`` for any other, so those still meet
    :data:`CHROMIUM_ARGS`' resolver rule and fail to resolve: with a plain
    ``--proxy-server`` every host would go to the front, which tunnels the ones
    it does not intercept to the network. Chromium asks no DNS for a proxied
    host (the front answers it), and accepts the front's certificates by the CA's
    SPKI pin (``--ignore-certificate-errors-spki-list``: a chain holding a key of
    that hash is trusted), so nothing goes into a trust store.
    """
    front = proxy_url.split("://", 1)[-1].rstrip("/")
    # Chromium lower-cases the host it hands FindProxyForURL, as the globs are.
    pattern = "|".join(_glob_regex(h) for h in hosts) or "(?!)"
    pac = (
        "function FindProxyForURL(url, host) {"
        f" return /^(?:{pattern})$/.test(host) ? {json.dumps('PROXY ' + front)} : 'DIRECT'; }}"
    )
    data = base64.b64encode(pac.encode()).decode()
    return [
        f"--proxy-pac-url=data:application/x-ns-proxy-autoconfig;base64,{data}",
        f"--ignore-certificate-errors-spki-list={spki_pin}",
    ]


def _glob_regex(glob: str) -> str:
    """An fnmatch glob (``*``, ``?``, ``[seq]``, ``[!seq]``) as a JavaScript regex body."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        end = glob.find("]", i + 2) if c == "[" else -1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif end > 0:
            body = glob[i + 1 : end]
            neg = body.startswith("!")
            body = re.sub(r"([\\\]^/])", r"\\\1", body[1:] if neg else body)
            out.append(f"[{'^' if neg else ''}{body}]")
            i = end
        else:  # a JS identity escape for anything but a letter, digit, - or _ ("/" too)
            out.append(c if c.isalnum() or c in "-_" else "\\" + c)
        i += 1
    return "".join(out)


def _which(named: str) -> str | None:
    """``named`` as an executable: a path as given, else a name on PATH or in the cwd."""
    return shutil.which(named) or shutil.which(os.path.abspath(named))


async def _launch(browser_type: Any, path: str | None, extra_args: Sequence[str]) -> Any:
    # Playwright gives each launch its own temporary --user-data-dir: a fresh profile.
    args = [*CHROMIUM_ARGS, *extra_args]
    return await browser_type.launch(executable_path=path, args=args, headless=True)


def _cut(what: object, n: int = 80) -> str:
    """The first line of ``what``, at most ``n`` chars: user input and errors quoted short."""
    text = _first_line(what) if isinstance(what, BaseException) else str(what)
    return text if len(text) <= n else text[: n - 1] + "…"


class PageDriver:
    """One headless Chromium, reused for many page runs (a fresh context each).

    Use as ``async with PageDriver() as driver: obs = await driver.drive(...)``.
    """

    def __init__(
        self,
        executable: str | None = None,
        viewport: tuple[int, int] = (900, 820),
        extra_args: Sequence[str] = (),
    ) -> None:
        self.executable = executable
        """The browser to drive (None: see :func:`launch_chromium`); after start, the one used."""
        self.viewport = viewport
        self.extra_args = tuple(extra_args)
        """Flags after :data:`CHROMIUM_ARGS` (``--intercept``: :func:`intercept_args`)."""
        self._pw: Any = None
        self._browser: Any = None
        self._tmp: str | None = None

    async def start(self) -> None:
        """Launch Chromium as :func:`launch_chromium` picks it (never downloads one).

        Raises :class:`~chaosstream.yamlfile.InputError` (exit 2) when Playwright
        or a browser is missing.
        """
        from chaosstream.yamlfile import InputError

        try:
            from playwright.async_api import async_playwright
        except ImportError:
            raise InputError(
                "browser clients need Playwright: pip install 'chaosstream[browser]'"
            ) from None
        # Playwright's driver (1.65) leaves two empty folders in the temporary folder on
        # every launch, though its cleanup reports them gone: it and its Chromium get one
        # of ours instead, removed on close. The driver copies the environment as it
        # starts, so TMPDIR is ours only that long (this process's tempfile has its own
        # folder cached already: mkdtemp looked it up). A short name: Chromium's socket
        # paths under it must stay within a Unix socket's 108 bytes.
        self._tmp = tempfile.mkdtemp(prefix="cs-browser-")
        saved = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = self._tmp
        try:
            self._pw = await async_playwright().start()
        except BaseException:
            self._remove_tmp()
            raise
        finally:
            if saved is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = saved
        try:
            self._browser, self.executable = await launch_chromium(
                self._pw.chromium, self.executable, self.extra_args
            )
        except BaseException:
            await self._pw.stop()
            self._pw = None
            self._remove_tmp()
            raise

    @property
    def browser(self) -> Any:
        """The running Playwright ``Browser``, for a caller that drives pages of its own."""
        if self._browser is None:
            raise RuntimeError("the PageDriver is not started")
        return self._browser

    async def close(self) -> None:
        """Close the browser and Playwright, and remove their temporary folder."""
        if self._browser is not None:
            await self._browser.close()
            self._browser = None
        if self._pw is not None:
            await self._pw.stop()
            self._pw = None
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    async def __aenter__(self) -> PageDriver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def drive(
        self,
        proxy_url: str,
        client: BrowserClient,
        *,
        timeout_s: float = 30.0,
        stop_after_ms: float | None = None,
        click_retry: bool = False,
        before_send: Callable[[], None] | None = None,
    ) -> PageObservation:
        """Open the page, ask ``client.prompt``, watch until it settles.

        ``stop_after_ms`` (or the client's own) clicks Stop that long after the
        first text; ``click_retry`` clicks Retry once if the page settles on a
        failure showing it. ``before_send`` runs once the page has loaded, right
        before Send: the runner arms the profile there, so the page's own files
        are not part of the scenario (a fault on "request 1" hits the first
        model request, not ``GET /``). Never raises for a misbehaving page: what
        went wrong is in ``PageObservation.error`` / ``stop_error``.
        """
        assert self._browser is not None, "PageDriver not started"
        obs = PageObservation(url=resolve_url(client.url, proxy_url))
        deadline = time.monotonic() + timeout_s
        width, height = self.viewport
        context = await self._browser.new_context(
            viewport={"width": width, "height": height}, service_workers="block"
        )
        try:
            sel = client.selectors
            named = sel.model_fields_set
            watch = {
                **sel.model_dump(),
                "auto": {part: part not in named for part in AUTO_PARTS},
                "prompt": client.prompt,
            }
            await context.add_init_script(_OBSERVER_JS % json.dumps(watch))
            page = await context.new_page()
            inflight = _watch(page, obs.console)
            if stop_after_ms is None:
                stop_after_ms = client.stop_after_ms
            try:
                await self._run(
                    page, obs, client, inflight, deadline, stop_after_ms, click_retry, before_send
                )
            except Exception as e:  # a page that breaks the driver is an observation too
                obs.error = obs.error or _first_line(e)
            await _collect(page, obs)
        finally:
            await context.close()
        return obs

    async def _run(
        self,
        page: Any,
        obs: PageObservation,
        client: BrowserClient,
        inflight: set[Any],
        deadline: float,
        stop_after_ms: float | None,
        click_retry: bool,
        before_send: Callable[[], None] | None,
    ) -> None:
        sel = client.selectors
        try:
            response = await page.goto(obs.url, wait_until="load", timeout=_left_ms(deadline))
        except Exception as e:
            obs.error = f"cannot open the page: {_first_line(e)}"
            return
        if response is not None and response.status >= 400:
            obs.error = f"the page answered HTTP {response.status}"
            return
        input_sel, send_sel = await _pick_controls(page, sel, obs)
        if input_sel is None:
            obs.error = f"no prompt field: {sel.input} matches nothing and no text field is visible"
            return
        try:
            await page.locator(input_sel).first.fill(client.prompt, timeout=5000)
        except Exception as e:
            obs.error = f"cannot fill the prompt into {input_sel}: {_first_line(e)}"
            return
        if before_send is not None:
            before_send()
        await page.evaluate("window.__chaosstream.sentAt = performance.now()")
        try:
            if send_sel is None:  # no Send control found: Enter submits, as a person would try
                await page.locator(input_sel).first.press("Enter", timeout=5000)
            else:
                await page.locator(send_sel).first.click(timeout=5000)
        except Exception as e:
            obs.error = f"cannot click {send_sel or 'Enter'}: {_first_line(e)}"
            return
        if stop_after_ms is not None:
            await _stop(page, obs, sel, deadline, stop_after_ms)
        obs.views.append(await _settle(page, inflight, deadline, client.settle_ms))
        first = obs.views[0]
        if click_retry and first.retry_visible and first.state != "complete":
            try:
                await page.locator(sel.retry).first.click(timeout=5000)
                obs.retry_clicked = True
            except Exception as e:
                obs.console.append(f"[chaosstream] cannot click {sel.retry}: {_first_line(e)}")
            if obs.retry_clicked:
                # Let the click take effect before asking whether the page is settled.
                await asyncio.sleep(0.2)
                obs.views.append(await _settle(page, inflight, deadline, client.settle_ms))
        if obs.stop_clicked is not None:
            # The proxy must see the upstream closed within CANCEL_WITHIN_S: wait that out
            # (plus a margin) so the exchange is recorded before anyone judges it.
            left = obs.stop_clicked + CANCEL_WITHIN_S + 0.2 - time.monotonic()
            await asyncio.sleep(max(0.0, min(left, deadline - time.monotonic())))


async def _pick_controls(
    page: Any, sel: Selectors, obs: PageObservation
) -> tuple[str | None, str | None]:
    """The prompt field and Send control to use, noting the choice in ``obs.elements``.

    A selector the scenario named is used as given. One left out is the reference
    page's data-testid when the page has it, else found by :data:`_PICK_JS`.
    """
    named = sel.model_fields_set
    want: dict[str, Any] = {"inputSelector": sel.input}
    chosen: dict[str, str] = {}
    for part, selector in (("input", sel.input), ("send", sel.send)):
        if part in named:
            chosen[part] = f"{selector} (named)"
        elif await page.locator(selector).count() > 0:
            chosen[part] = f"{selector} (the reference page's test id)"
        else:
            want[part] = True
    picked: dict[str, Any] = await page.evaluate(_PICK_JS, want) if len(want) > 1 else {}
    input_sel: str | None = sel.input
    send_sel: str | None = sel.send
    if want.get("input"):
        input_sel = PICKED_INPUT if picked.get("input") else None
        chosen["input"] = picked.get("input") or "none found"
    if want.get("send"):
        send_sel = PICKED_SEND if picked.get("send") else None
        chosen["send"] = picked.get("send") or "none found: Enter in the prompt field"
    obs.elements.update(chosen)
    return input_sel, send_sel


async def drive_scenario(
    driver: PageDriver,
    proxy_url: str,
    scenario: Scenario,
    before_send: Callable[[], None] | None = None,
) -> tuple[PageObservation, ClientRun]:
    """Drive a scenario's page; the run as the verifier's :class:`ClientRun` too.

    Stop is clicked when ``cancels_upstream`` is expected, Retry when
    ``retries`` is: the interactions those verdicts are about.
    """

    assert scenario.client is not None
    client = scenario.client.browser
    names = {e.name for e in scenario.expect}
    stop_after = client.stop_after_ms
    if stop_after is None and "cancels_upstream" in names:
        stop_after = DEFAULT_STOP_AFTER_MS
    started = time.monotonic()
    obs = await driver.drive(
        proxy_url,
        client,
        timeout_s=scenario.timeout_s,
        stop_after_ms=stop_after,
        click_retry="retries" in names,
        before_send=before_send,
    )
    last = obs.last
    settled = last is not None and last.settled
    run = ClientRun(
        command=["chromium", obs.url],
        exit_code=0 if settled else None,
        timed_out=not settled and not obs.error,
        stdout=last.text if last else "",
        stderr="\n".join([*([obs.error] if obs.error else []), *obs.console]),
        duration_s=time.monotonic() - started,
    )
    return obs, run


def page_battery(
    scenarios: Sequence[tuple[Scenario, Any]],
    url: str,
    selectors: Mapping[str, str] | None = None,
) -> list[tuple[Scenario, Any]]:
    """The ``check`` battery with the page at ``url`` as the client.

    Where the answer streams in whole (clean, slow first token) the page must
    also show typing and keep its layout still. ``selectors`` (``--selector``)
    name page parts; the others are found as :class:`Selectors` says.
    """

    named = Selectors.model_validate(dict(selectors or {}))
    spec = BrowserSpec(browser=BrowserClient(url=url, selectors=named))
    out = []
    for scenario, profile in scenarios:
        expect = list(scenario.expect)
        if scenario.name in ("clean", "slow-first-token"):
            expect += [Expect(shows_typing={}), Expect(stable_layout={})]
        out.append((scenario.model_copy(update={"client": spec, "expect": expect}), profile))
    return out


def _watch(page: Any, console: list[str]) -> set[Any]:
    """Log console messages and page errors; return the live set of API requests in flight."""
    inflight: set[Any] = set()
    start = time.monotonic()

    def stamp() -> str:
        return f"{(time.monotonic() - start) * 1000:8.1f}ms"

    def on_request(req: Any) -> None:
        if req.resource_type in ("fetch", "xhr", "eventsource", "websocket"):
            inflight.add(req)

    def on_done(req: Any) -> None:
        inflight.discard(req)

    def on_failed(req: Any) -> None:
        inflight.discard(req)
        console.append(f"{stamp()} [network] {req.method} {req.url} failed: {req.failure}")

    page.on("console", lambda m: console.append(f"{stamp()} [{m.type}] {m.text}"))
    page.on("pageerror", lambda e: console.append(f"{stamp()} [pageerror] {e}"))
    page.on("request", on_request)
    page.on("requestfinished", on_done)
    page.on("requestfailed", on_failed)
    return inflight


async def _view(page: Any) -> dict[str, Any]:
    view: dict[str, Any] = await page.evaluate("window.__chaosstream.view()")
    return view


async def _settle(page: Any, inflight: set[Any], deadline: float, settle_ms: float) -> PageView:
    """Poll until the page is done: a terminal data-state, or quiet with nothing in flight."""
    view = await _view(page)
    settled = False
    for _ in range(100_000):  # bounded by the deadline long before this
        if view["state"] in TERMINAL_STATES:
            settled = True
            break
        if not view["state"] and not inflight and view["quiet_ms"] >= settle_ms:
            settled = True
            break
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.05)
        view = await _view(page)
    return PageView(
        state=view["state"],
        text=view["text"],
        error_visible=view["error_visible"],
        error_text=view["error_text"],
        retry_visible=view["retry_visible"],
        settled=settled,
    )


async def _stop(
    page: Any, obs: PageObservation, sel: Selectors, deadline: float, after_ms: float
) -> None:
    """Wait for the first answer text, then ``after_ms``, then click Stop."""
    try:
        await page.wait_for_function(
            "window.__chaosstream.textAt !== null", timeout=_left_ms(deadline), polling=20
        )
    except Exception:
        obs.stop_error = "no answer text appeared, so there was nothing to stop"
        return
    await asyncio.sleep(after_ms / 1000)
    stop = page.locator(sel.stop).first
    try:
        if await stop.count() == 0:
            obs.stop_error = f"the page has no Stop control ({sel.stop})"
            return
        clicked = time.monotonic()
        await stop.click(timeout=2000)
        obs.stop_clicked = clicked
    except Exception as e:
        obs.stop_error = f"cannot click Stop ({sel.stop}): {_first_line(e)}"


async def _collect(page: Any, obs: PageObservation) -> None:
    """Read the watcher's timestamps, layout shifts and chosen parts; take the screenshot."""
    try:
        parts = await page.evaluate("window.__chaosstream.describe()")
        for part, element in parts.items():
            obs.elements.setdefault(part, element or "none found")
    except Exception as e:
        obs.console.append(f"[chaosstream] cannot read the chosen elements: {_first_line(e)}")
    try:
        cs = await page.evaluate(
            "(() => { const c = window.__chaosstream;"
            " return {sent: c.sentAt, typing: c.typingAt, text: c.textAt, shifts: c.shifts}; })()"
        )
    except Exception as e:
        obs.console.append(f"[chaosstream] cannot read the page watcher: {_first_line(e)}")
        return
    sent = cs["sent"]
    if sent is not None:
        obs.typing_ms = None if cs["typing"] is None else cs["typing"] - sent
        obs.first_text_ms = None if cs["text"] is None else cs["text"] - sent
        # Shifts right after a click or keypress are expected (hadRecentInput): CLS leaves them out.
        kept = [s for s in cs["shifts"] if s["at"] >= sent and not s["input"]]
        obs.shifts = [s["value"] for s in kept]
        obs.shift_ms = [s["at"] - sent for s in kept]
    try:
        obs.screenshot = await page.screenshot(timeout=5000)
    except Exception as e:
        obs.console.append(f"[chaosstream] screenshot failed: {_first_line(e)}")


def _left_ms(deadline: float) -> float:
    return max(1.0, (deadline - time.monotonic()) * 1000)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# --------------------------------------------------------------------------- artifacts


def write_artifacts(obs: PageObservation, directory: str | Path, stem: str) -> dict[str, str]:
    """Save the screenshot and console log as ``<stem>.png`` / ``<stem>.console.log``.

    Returns ``{"screenshot": path, "console": path}`` for the report.
    """
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "page"
    saved: dict[str, str] = {}
    if obs.screenshot:
        shot = folder / f"{safe}.png"
        shot.write_bytes(obs.screenshot)
        saved["screenshot"] = str(shot)
    log = folder / f"{safe}.console.log"
    lines = [f"page: {obs.url}"]
    if obs.error:
        lines.append(f"driver: {obs.error}")
    lines += obs.console or ["(the page logged nothing)"]
    log.write_text("\n".join(lines) + "\n", encoding="utf-8")
    saved["console"] = str(log)
    return saved
