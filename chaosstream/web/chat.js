// chaosstream reference streaming chat client.
//
// Plain browser JavaScript, no build step, no dependencies. It shows how a page
// should stream an OpenAI-style chat completion and survive a bad network:
// typing indicator during the TTFT gap, progressive rendering without layout
// shift, a Stop that really aborts, detection of every way a stream can end
// badly, retries with backoff that honour Retry-After, and a non-streaming
// fallback after repeated mid-stream failures.
//
// Query parameters: ?base=URL (API origin, default this page's origin),
// ?stall_ms=N (no-bytes watchdog, default 10000), ?max_attempts=N (automatic
// attempts per prompt, default 3), ?model=NAME.
"use strict";

(() => {
  const params = new URLSearchParams(location.search);

  function intParam(name, fallback, min) {
    const n = Number.parseInt(params.get(name) ?? "", 10);
    return Number.isFinite(n) && n >= min ? n : fallback;
  }

  const config = Object.freeze({
    base: (params.get("base") || location.origin).replace(/\/+$/, ""),
    model: params.get("model") || "gpt-4o-mini",
    stallMs: intParam("stall_ms", 10000, 1),
    maxAttempts: intParam("max_attempts", 3, 1),
    backoffBaseMs: 500,
    backoffCapMs: 8000,
    // Past this a Retry-After is a "come back later", not a retry we sit through.
    maxRetryAfterMs: 60000,
    // Streaming failures in a row, for one prompt, before we stop streaming it.
    fallbackAfter: 2,
  });

  // HTTP statuses worth retrying: throttling, overload and transient gateway errors.
  const RETRYABLE_STATUS = new Set([408, 409, 429, 500, 502, 503, 504, 529]);

  // ---------------------------------------------------------------------------
  // Incremental SSE parser (https://html.spec.whatwg.org/multipage/server-sent-events.html).
  // Fed decoded text in arbitrary pieces; a line may end in CRLF, LF or CR, and
  // a CRLF may be split across two pieces.

  class SSEParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.line = "";
      this.data = [];
      this.event = "";
      this.skipLF = false;
    }

    push(text) {
      let i = 0;
      if (this.skipLF && text.length > 0) {
        if (text[0] === "\n") i = 1;
        this.skipLF = false;
      }
      while (i < text.length) {
        const cr = text.indexOf("\r", i);
        const lf = text.indexOf("\n", i);
        let end = cr === -1 ? lf : lf === -1 ? cr : Math.min(cr, lf);
        if (end === -1) {
          this.line += text.slice(i);
          return;
        }
        this.processLine(this.line + text.slice(i, end));
        this.line = "";
        i = end + 1;
        if (text[end] === "\r") {
          if (i < text.length) {
            if (text[i] === "\n") i += 1;
          } else {
            this.skipLF = true;
          }
        }
      }
    }

    processLine(line) {
      if (line === "") {
        // As per the spec, a blank line dispatches; no data lines means no event.
        if (this.data.length > 0) {
          this.onEvent({ event: this.event || "message", data: this.data.join("\n") });
        }
        this.data = [];
        this.event = "";
        return;
      }
      if (line[0] === ":") return; // comment / keep-alive
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "event") this.event = value;
      // id and retry only matter for EventSource reconnection, which a chat POST does not do.
    }
  }

  // ---------------------------------------------------------------------------
  // Failures. `midStream` ones count towards the non-streaming fallback.

  class ChatError extends Error {
    constructor(message, { retryable = false, midStream = false, retryAfterMs = null } = {}) {
      super(message);
      this.retryable = retryable;
      this.midStream = midStream;
      this.retryAfterMs = retryAfterMs;
    }
  }

  class StoppedByUser extends Error {}

  // Server messages get embedded in our own sentences; drop their final full stop.
  const clip = (msg) => String(msg).trim().replace(/[.!\s]+$/, "");

  function parseRetryAfter(headers) {
    const ms = Number.parseFloat(headers.get("retry-after-ms") ?? "");
    if (Number.isFinite(ms) && ms >= 0) return ms;
    const raw = headers.get("retry-after");
    if (raw == null || raw.trim() === "") return null;
    const seconds = Number(raw.trim());
    if (Number.isFinite(seconds) && seconds >= 0) return seconds * 1000;
    const date = Date.parse(raw); // RFC 9110 also allows an HTTP-date
    return Number.isNaN(date) ? null : Math.max(0, date - Date.now());
  }

  function backoffMs(retryNumber, retryAfterMs) {
    const exp = Math.min(config.backoffCapMs, config.backoffBaseMs * 2 ** (retryNumber - 1));
    const jittered = exp / 2 + Math.random() * (exp / 2); // "equal jitter"
    if (retryAfterMs == null) return jittered;
    // Never sooner than the server asked; a little jitter on top spreads the herd.
    return retryAfterMs + Math.random() * Math.min(250, config.backoffBaseMs);
  }

  async function errorMessageFrom(response) {
    try {
      const body = await response.json();
      const msg = body?.error?.message ?? body?.message;
      if (typeof msg === "string" && msg) return clip(msg);
    } catch {
      // not JSON: the status line will have to do
    }
    return response.statusText || "";
  }

  // ---------------------------------------------------------------------------
  // The page.

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $("ask"),
    input: $("prompt"),
    send: $("send"),
    stop: $("stop"),
    status: $("status"),
    error: $("error"),
    errorMessage: $("error-message"),
    retry: $("retry"),
    output: $("output"),
    typing: $("typing"),
    badge: $("badge"),
    note: $("note"),
  };

  let state = "idle";
  let current = null; // the running round: {controller, stopped, ...}
  let lastPrompt = null;
  let streamFailures = 0; // mid-stream failures in a row for lastPrompt
  let scrollQueued = false;

  function setState(next) {
    state = next;
    ui.output.dataset.state = next;
    const busy = next === "waiting" || next === "streaming" || next === "retrying";
    ui.output.setAttribute("aria-busy", String(busy));
    ui.send.disabled = busy;
    ui.stop.disabled = !busy;
  }

  function setStatus(text, busy = false) {
    ui.status.textContent = text;
    ui.status.classList.toggle("busy", busy);
  }

  function setBadge(text, kind) {
    ui.badge.textContent = text;
    ui.badge.className = kind ? `badge ${kind}` : "badge";
    ui.badge.hidden = !text;
  }

  function setNote(text) {
    ui.note.textContent = text;
    ui.note.hidden = !text;
  }

  function showError(message) {
    ui.errorMessage.textContent = message;
    ui.error.hidden = false;
    ui.status.hidden = true;
  }

  function clearError() {
    ui.error.hidden = true;
    ui.status.hidden = false;
  }

  function clearOutput() {
    ui.output.textContent = "";
  }

  function appendText(text) {
    const box = ui.output;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
    // A new text node per token: the browser lays out only the tail, never the whole block.
    box.appendChild(document.createTextNode(text));
    if (atBottom && !scrollQueued) {
      scrollQueued = true;
      requestAnimationFrame(() => {
        scrollQueued = false;
        box.scrollTop = box.scrollHeight;
      });
    }
  }

  function sleep(ms, round) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(done, ms);
      function done() {
        round.controller.signal.removeEventListener("abort", onAbort);
        resolve();
      }
      function onAbort() {
        clearTimeout(timer);
        reject(new StoppedByUser("stopped"));
      }
      round.controller.signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  function requestBody(prompt, stream) {
    // Identical apart from `stream`, so a fallback is the same request without streaming.
    return JSON.stringify({
      model: config.model,
      messages: [{ role: "user", content: prompt }],
      stream,
    });
  }

  // One HTTP attempt. Resolves on a complete answer, throws ChatError otherwise.
  async function attempt(round, prompt, stream) {
    const controller = new AbortController();
    round.attemptController = controller;
    const stop = () => controller.abort();
    round.controller.signal.addEventListener("abort", stop, { once: true });

    let cause = null; // why *we* aborted: "stall" | "corrupt"
    let timer = null;
    const limitMs = stream ? config.stallMs : config.stallMs * 6;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        cause = "stall";
        controller.abort();
      }, limitMs);
    };

    const fail = (err) => {
      if (round.stopped) return new StoppedByUser("stopped");
      if (err instanceof ChatError) return err;
      if (cause === "stall") {
        const secs = Math.round(limitMs / 100) / 10;
        return new ChatError(`No data arrived for ${secs} s — the stream stalled.`, {
          retryable: true,
          midStream: round.gotHeaders,
        });
      }
      if (round.gotHeaders) {
        return new ChatError("The network connection was lost in the middle of the answer.", {
          retryable: true,
          midStream: true,
        });
      }
      return new ChatError("Could not reach the server (network error).", { retryable: true });
    };

    round.gotHeaders = false;
    arm();
    try {
      let response;
      try {
        response = await fetch(`${config.base}/v1/chat/completions`, {
          method: "POST",
          headers: {
            "Content-Type": "application/json",
            Accept: stream ? "text/event-stream" : "application/json",
          },
          body: requestBody(prompt, stream),
          signal: controller.signal,
          cache: "no-store",
        });
      } catch (err) {
        throw fail(err);
      }
      round.gotHeaders = true;
      arm();

      if (!response.ok) {
        const retryAfterMs = parseRetryAfter(response.headers);
        const detail = await errorMessageFrom(response).catch(() => "");
        const busy = response.status === 429 || response.status === 503 || response.status === 529;
        const what = busy ? "The server is busy" : "The request failed";
        throw new ChatError(`${what} (HTTP ${response.status}${detail ? `: ${detail}` : ""}).`, {
          retryable: RETRYABLE_STATUS.has(response.status),
          retryAfterMs,
        });
      }

      const type = response.headers.get("content-type") || "";
      if (stream && type.includes("text/event-stream")) {
        await readStream(round, response, arm, (c) => {
          cause = c;
          controller.abort();
        });
      } else {
        // Asked not to stream, or a middlebox/server answered with plain JSON anyway.
        await readWhole(round, response);
      }
    } catch (err) {
      throw fail(err);
    } finally {
      clearTimeout(timer);
      round.controller.signal.removeEventListener("abort", stop);
    }
  }

  async function readWhole(round, response) {
    let body;
    try {
      body = await response.json();
    } catch (err) {
      if (err?.name === "AbortError" || err instanceof TypeError) throw err;
      throw new ChatError("The server sent a response that is not valid JSON.", { retryable: true });
    }
    if (body?.error) {
      throw new ChatError(`The model server reported an error: ${clip(body.error.message || "unknown")}.`, {
        retryable: true,
      });
    }
    const choice = body?.choices?.[0];
    const text = choice?.message?.content;
    if (typeof text !== "string" || !choice.finish_reason) {
      throw new ChatError("The server's answer was incomplete.", { retryable: true });
    }
    clearOutput();
    appendText(text);
    round.finishReason = choice.finish_reason;
  }

  async function readStream(round, response, arm, abortWith) {
    const reader = response.body.getReader();
    // fatal: invalid UTF-8 is corruption, not something to paper over with U+FFFD.
    const decoder = new TextDecoder("utf-8", { fatal: true });
    let finishReason = null;
    let done = false;
    let streamError = null;
    let first = true;

    const parser = new SSEParser(({ event, data }) => {
      if (done || streamError) return;
      if (data === "[DONE]") {
        done = true;
        return;
      }
      let chunk;
      try {
        chunk = JSON.parse(data);
      } catch {
        streamError = new ChatError("Received a corrupted message from the server (malformed JSON).", {
          retryable: true,
          midStream: true,
        });
        return;
      }
      if (event === "error" || chunk?.error) {
        const msg = clip(chunk?.error?.message || chunk?.message || "unknown error");
        streamError = new ChatError(`The model server reported an error mid-answer: ${msg}.`, {
          retryable: true,
          midStream: true,
        });
        return;
      }
      const choice = chunk?.choices?.[0];
      const delta = choice?.delta?.content;
      if (typeof delta === "string" && delta.length > 0) {
        if (first) {
          first = false;
          onFirstToken(round);
        }
        appendText(delta);
      }
      if (choice?.finish_reason) finishReason = choice.finish_reason;
    });

    try {
      for (;;) {
        const { value, done: eof } = await reader.read();
        if (eof) break;
        arm();
        let text;
        try {
          text = decoder.decode(value, { stream: true });
        } catch {
          streamError = new ChatError("Received corrupted bytes from the server (invalid UTF-8).", {
            retryable: true,
            midStream: true,
          });
        }
        if (text) parser.push(text);
        if (streamError) {
          abortWith("corrupt");
          throw streamError;
        }
        if (done) break;
      }
      if (!done) {
        try {
          decoder.decode(); // flush: a dangling partial character is corruption too
        } catch {
          // reported below as an incomplete stream either way
        }
      }
    } finally {
      // After [DONE] (or on error) we are finished with this body; release the connection.
      reader.cancel().catch(() => {});
    }

    if (!done || !finishReason) {
      throw new ChatError(
        done
          ? "The stream ended without a finish reason — the answer may be cut short."
          : "The connection closed before the answer finished.",
        { retryable: true, midStream: true },
      );
    }
    round.finishReason = finishReason;
  }

  function onFirstToken(round) {
    ui.typing.hidden = true;
    if (!round.ttftMs) round.ttftMs = performance.now() - round.attemptStart;
    if (round.replacing) {
      // A retry's first token replaces the partial text of the failed attempt.
      round.replacing = false;
      clearOutput();
      setBadge("", "");
    }
    setStatus("");
    setState("streaming");
  }

  async function run(prompt) {
    if (current) return;
    const round = {
      controller: new AbortController(),
      stopped: false,
      replacing: false,
      attemptStart: 0,
      ttftMs: 0,
      finishReason: null,
      gotHeaders: false,
    };
    current = round;
    if (prompt !== lastPrompt) {
      lastPrompt = prompt;
      streamFailures = 0;
    }

    const startedAt = performance.now();
    clearError();
    clearOutput();
    setBadge("", "");
    setNote("");
    setStatus("");
    setState("waiting");
    ui.typing.hidden = false;
    if (document.activeElement === ui.send || document.activeElement === ui.retry) ui.stop.focus();

    let lastError = null;
    try {
      for (let n = 1; n <= config.maxAttempts; n += 1) {
        const stream = streamFailures < config.fallbackAfter;
        round.attemptStart = performance.now();
        if (!stream) {
          setStatus("Streaming keeps failing — asking for the whole answer at once…", true);
        }
        try {
          await attempt(round, prompt, stream);
          if (stream) streamFailures = 0;
          finish(round, stream, startedAt);
          return;
        } catch (err) {
          if (err instanceof StoppedByUser || round.stopped) throw new StoppedByUser("stopped");
          lastError = err;
          if (err.midStream) streamFailures += 1;
          if (!err.retryable || n === config.maxAttempts) break;
          if (err.retryAfterMs != null && err.retryAfterMs > config.maxRetryAfterMs) break;
          await waitBeforeRetry(round, err, n);
        }
      }
      fail(round, lastError);
    } catch (err) {
      if (err instanceof StoppedByUser || round.stopped) stopped(round);
      else fail(round, new ChatError(`Unexpected client error: ${err?.message || err}.`));
    } finally {
      ui.typing.hidden = true;
      if (current === round) current = null;
    }
  }

  async function waitBeforeRetry(round, err, n) {
    const waitMs = backoffMs(n, err.retryAfterMs);
    // Keep what arrived visible, but never let it pass for a finished answer.
    if (ui.output.textContent) {
      setBadge("Incomplete", "warn");
      round.replacing = true;
    }
    setState("retrying");
    ui.typing.hidden = true;
    const next = n + 1;
    const deadline = performance.now() + waitMs;
    // A countdown in whole seconds, re-rendered once a second at most.
    for (let i = 0; i < 120; i += 1) {
      const left = deadline - performance.now();
      if (left <= 0) break;
      const secs = Math.max(1, Math.ceil(left / 1000));
      setStatus(`${err.message} Retrying in ${secs}s… (attempt ${next} of ${config.maxAttempts})`, true);
      await sleep(left - (secs - 1) * 1000, round); // until the next whole second
    }
    if (!ui.output.textContent) ui.typing.hidden = false;
    setState(ui.output.textContent ? "retrying" : "waiting");
    setStatus(`Retrying… (attempt ${next} of ${config.maxAttempts})`, true);
  }

  function finish(round, streamed, startedAt) {
    ui.output.normalize();
    const total = (performance.now() - startedAt) / 1000;
    setState("complete");
    if (round.finishReason === "length") setBadge("Cut at length limit", "warn");
    else setBadge("Complete", "ok");
    if (!streamed) setNote("(delivered without streaming)");
    const ttft = round.ttftMs ? `first token ${Math.round(round.ttftMs)} ms · ` : "";
    setStatus(`Done — ${ttft}${total.toFixed(1)} s total.`);
    if (document.activeElement === ui.stop || document.activeElement === document.body) {
      ui.input.focus();
    }
  }

  function fail(round, err) {
    const partial = ui.output.textContent.length > 0;
    setState(partial ? "incomplete" : "error");
    setBadge(partial ? "Incomplete" : "Failed", "warn");
    setStatus("");
    const message = err?.message || "Something went wrong.";
    const tail = partial ? " The answer above is incomplete." : "";
    showError(`${message}${tail}`);
    if (document.activeElement === ui.stop || document.activeElement === document.body) {
      ui.retry.focus();
    }
  }

  function stopped(round) {
    ui.output.normalize();
    setState("stopped");
    setBadge("Stopped", "");
    setStatus("Stopped — the answer is incomplete.");
    if (document.activeElement === ui.stop || document.activeElement === document.body) {
      ui.input.focus();
    }
  }

  // ---------------------------------------------------------------------------
  // Wiring.

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = ui.input.value.trim();
    if (!prompt) {
      ui.input.focus();
      return;
    }
    run(prompt);
  });

  ui.input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      ui.form.requestSubmit();
    }
  });

  ui.stop.addEventListener("click", () => {
    if (!current) return;
    current.stopped = true;
    current.controller.abort();
  });

  ui.retry.addEventListener("click", () => {
    if (lastPrompt != null) run(lastPrompt);
  });

  setState("idle");

  // The one global: read-only hooks for tests and the chaosstream page driver.
  window.chaosChat = Object.freeze({
    get state() {
      return state;
    },
    get streamFailures() {
      return streamFailures;
    },
    config,
    SSEParser,
  });
})();
