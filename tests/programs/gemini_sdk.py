"""Gemini through google-genai, pointed at the proxy by GOOGLE_GEMINI_BASE_URL alone.

``naive``: prints each chunk's text, exit 0 when the iteration ends.
``careful``: also checks the last chunk's ``finish_reason``; on any failure
asks again with ``generate_content`` (a fallback), exit 1 if that fails too.
"""

import sys

import httpx
from google import genai
from google.genai import errors

MODE = sys.argv[1] if len(sys.argv) > 1 else "careful"
# The API key and the base URL come from the environment chaosstream gives.
client = genai.Client()
MODEL, PROMPT = "gemini-test", "Tell me about rivers."
# What the SDK raises on a cut stream: the HTTP library's own errors (measured).
TRANSPORT = (httpx.HTTPError, OSError)
try:
    import httpx2

    TRANSPORT = (*TRANSPORT, httpx2.HTTPError)
except ImportError:
    pass

if MODE == "naive":
    try:
        for chunk in client.models.generate_content_stream(model=MODEL, contents=PROMPT):
            print(chunk.text or "", end="", flush=True)
    except (errors.APIError, *TRANSPORT) as e:
        print(f"\nerror: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print()
    sys.exit(0)

pieces: list[str] = []
finished = False
try:
    for chunk in client.models.generate_content_stream(model=MODEL, contents=PROMPT):
        pieces.append(chunk.text or "")
        candidates = chunk.candidates or []
        finished = finished or bool(candidates and candidates[0].finish_reason)
    if not finished:
        raise ValueError("the stream ended without a finish_reason")
    text = "".join(pieces)
except (errors.APIError, ValueError, *TRANSPORT) as e:
    print(f"stream failed: {type(e).__name__}: {e}", file=sys.stderr)
    try:
        text = client.models.generate_content(model=MODEL, contents=PROMPT).text or ""
    except errors.APIError as e2:
        print(f"error: {type(e2).__name__}: {e2}", file=sys.stderr)
        sys.exit(1)
print(text)
