"""`check --browser URL --intercept`: a page on its own origin that calls
https://api.openai.com directly is driven through the intercepting proxy and judged."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from chaosstream.clients.browser import intercept_args

# A chat page as a person would write one against OpenAI's REST API: fetch + a stream
# reader, nothing of ours. It also asks for an outside host (example.com, not intercepted)
# and tells its own site whether that got anywhere: it must not.
PAGE = """<!doctype html><meta charset="utf-8"><title>direct</title>
<textarea data-testid="input"></textarea><button data-testid="send">Send</button>
<div data-testid="typing" hidden>…</div>
<div data-testid="output" data-state="idle"></div>
<div data-testid="error" role="alert" hidden></div>
<script>
const $ = (id) => document.querySelector(`[data-testid=${id}]`);
const tell = (what) => fetch("/probe", {method: "POST", body: what});
fetch("https://example.com/", {mode: "no-cors"}).then(
  () => tell("reached"), (e) => tell("blocked: " + e));
$("send").onclick = async () => {
  const out = $("output");
  out.dataset.state = "busy"; $("typing").hidden = false;
  try {
    const r = await fetch("https://api.openai.com/v1/chat/completions", {
      method: "POST",
      headers: {"content-type": "application/json", "authorization": "Bearer sk-page"},
      body: JSON.stringify({model: "gpt-4o-mini", stream: true,
                            messages: [{role: "user", content: $("input").value}]})});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", done = false;
    while (!done) {
      const {value, done: end} = await reader.read();
      if (end) break;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\\n\\n")) >= 0) {
        const data = buf.slice(0, cut).replace(/^data: /, ""); buf = buf.slice(cut + 2);
        if (data === "[DONE]") { done = true; break; }
        const delta = JSON.parse(data).choices[0]?.delta?.content;
        if (delta) { $("typing").hidden = true; out.textContent += delta; }
      }
    }
    if (!done) throw new Error("the answer was cut off");
    out.dataset.state = "complete";
  } catch (e) {
    $("typing").hidden = true;
    if (location.search === "?naive") { out.dataset.state = "complete"; return; }
    out.dataset.state = "error";
    $("error").textContent = "Something went wrong: " + e.message; $("error").hidden = false;
  }
};
</script>"""


class Site:
    """The page's own origin on loopback; records what the page told it."""

    def __init__(self) -> None:
        self.probes: list[str] = []
        self.url = ""


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    out = Site()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def probe(request: web.Request) -> web.Response:
        out.probes.append(await request.text())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/chat", page)
    app.router.add_post("/probe", probe)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = runner.addresses[0][1]
    out.url = f"http://127.0.0.1:{port}/chat"
    try:
        yield out
    finally:
        await runner.cleanup()


async def check_page(url: str, tmp_path: Path, *only: str) -> tuple[int, str]:
    """`python -m chaosstream check --browser URL --intercept --only ...`: exit code, output."""
    env = {**os.environ, "CHAOSSTREAM_HOME": str(tmp_path / "home")}
    words = [w for name in only for w in ("--only", name)]
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "chaosstream", "check", "--browser", url, "--intercept"],
        *[*words, "--timeout-s", "20", "--json", str(tmp_path / "report.json")],
        *["--record", str(tmp_path / "exchanges.jsonl")],
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode is not None
    return proc.returncode, (out + err).decode()


async def test_page_calling_the_provider_directly_is_judged_through_the_front(
    site: Site, tmp_path: Path
) -> None:
    """Clean completes, midstream-reset is a surfaced error (the page said so); the chat
    POST went cross-origin (preflight, then POST) through the front, and example.com
    resolved nowhere."""
    report, record = tmp_path / "report.json", tmp_path / "exchanges.jsonl"
    code, output = await check_page(site.url, tmp_path, "clean", "midstream-reset")
    assert code == 0, output[-3000:]
    doc = json.loads(report.read_text())
    seen = {s["name"]: s["observed"] for s in doc["scenarios"]}
    assert seen["clean"]["completed"] and not seen["clean"]["surfaced_error"]
    reset = seen["midstream-reset"]
    assert reset["surfaced_error"] and not reset["completed"] and reset["fault_met"]
    assert not reset["silent_truncation"]
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    chat = [x for x in lines if x.get("path") == "/v1/chat/completions"]
    assert [x["method"] for x in chat] == ["OPTIONS", "POST"] * 2, chat
    # The outside host never got an answer: not resolved by Chromium, not sent to the front.
    assert site.probes and all(p.startswith("blocked") for p in site.probes), site.probes


def test_intercept_args_send_only_the_intercepted_hosts_to_the_front() -> None:
    """The PAC script proxies exactly the hosts the globs match; the pin rides along."""
    import base64

    args = intercept_args("http://127.0.0.1:8080", ["api.openai.com", "*-ai.x.com"], "PIN=")
    assert args[1] == "--ignore-certificate-errors-spki-list=PIN="
    pac = base64.b64decode(args[0].split("base64,", 1)[1]).decode()
    assert "PROXY 127.0.0.1:8080" in pac and "'DIRECT'" in pac
    assert r"/^(?:api\.openai\.com|.*-ai\.x\.com)$/" in pac


async def test_page_showing_a_cut_answer_as_complete_fails_through_the_front(
    site: Site, tmp_path: Path
) -> None:
    """The same page, made to swallow the cut and mark the answer complete, fails
    midstream-reset as a silent truncation: the verdict follows what the page showed."""
    code, output = await check_page(site.url + "?naive", tmp_path, "midstream-reset")
    assert code == 1, output[-3000:]
    (scenario,) = json.loads((tmp_path / "report.json").read_text())["scenarios"]
    seen = scenario["observed"]
    assert seen["silent_truncation"] and seen["fault_met"] and not seen["surfaced_error"]
