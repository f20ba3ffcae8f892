"""A plain streaming chat client, as most of us write the first one: the demo's "before".

This is the OpenAI SDK quickstart for streaming, nothing more: create the
client, ask for a stream, print each token as it comes. It keeps the SDK's
own defaults (openai-python ``_constants.py``): ``max_retries=2`` with
0.5-8 s backoff, which covers connection errors, 408/409/429/5xx before the
stream and honours ``Retry-After``; and a 600 s read timeout, so a silent
stall waits ten minutes. An error is whatever the SDK raises: a traceback
and exit 1.

What ``chaosstream check`` finds in it (``chaosstream demo`` shows it next to
:mod:`chaosstream.examples.resilient_client`):

* a stream cut after a clean close ends the ``for`` loop quietly, so half an
  answer is printed as if whole (silent truncation);
* a silent stall hangs it for the whole read timeout;
* an error event inside the stream is nothing the loop looks at.

Run it on its own like any OpenAI SDK program (``OPENAI_BASE_URL``,
``OPENAI_API_KEY``)::

    python -m chaosstream.examples.naive_client "Why is the sky blue?"
"""

from __future__ import annotations

import sys

from openai import OpenAI

DEFAULT_PROMPT = "Explain why streaming makes AI answers feel fast."


def main(argv: list[str] | None = None) -> int:
    """Stream one answer to stdout."""
    args = sys.argv[1:] if argv is None else argv
    prompt = " ".join(args) or DEFAULT_PROMPT
    client = OpenAI()
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
    )
    for chunk in stream:
        if chunk.choices:
            print(chunk.choices[0].delta.content or "", end="", flush=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
