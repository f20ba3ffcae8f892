"""Ollama through the ``ollama`` package, pointed at the proxy by OLLAMA_HOST alone.

``naive``: ``chat(stream=True)``, prints each part, exit 0 when the iteration ends
(the package does not notice a missing ``"done": true`` line).
``careful``: a 2 s read timeout, also checks that the last part says ``done``; on
any failure asks once more with ``stream=False`` (a fallback), exit 1 if that
fails too. The package keeps no response headers (``ResponseError`` has only the
text and the status), so after a refusal it waits a fixed 1.5 s instead of
reading Retry-After.
"""

import json
import sys
import time

import httpx
import ollama

MODE = sys.argv[1] if len(sys.argv) > 1 else "careful"
MODEL = "llama-test"
MESSAGES = [{"role": "user", "content": "Tell me about rivers."}]
# What the package raises on a cut or a broken line: httpx's own errors (it wraps only
# connect errors and HTTP statuses) and json's (measured in tests/streams/test_ollama.py).
BROKEN = (ollama.ResponseError, httpx.HTTPError, json.JSONDecodeError)

if MODE == "naive":
    try:
        for part in ollama.Client().chat(model=MODEL, messages=MESSAGES, stream=True):
            print(part.message.content or "", end="", flush=True)
    except BROKEN as e:
        print(f"\nerror: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print()
    sys.exit(0)

client = ollama.Client(timeout=2.0)
pieces: list[str] = []
done = False
try:
    for part in client.chat(model=MODEL, messages=MESSAGES, stream=True):
        pieces.append(part.message.content or "")
        done = done or bool(part.done)
    if not done:
        raise ValueError('the stream ended without a "done": true line')
    text = "".join(pieces)
except (*BROKEN, ValueError) as e:
    print(f"stream failed: {type(e).__name__}: {e}", file=sys.stderr)
    if isinstance(e, ollama.ResponseError) and e.status_code >= 400 and not pieces:
        time.sleep(1.5)
    try:
        text = client.chat(model=MODEL, messages=MESSAGES, stream=False).message.content or ""
    except BROKEN as e2:
        print(f"error: {type(e2).__name__}: {e2}", file=sys.stderr)
        sys.exit(1)
print(text)
