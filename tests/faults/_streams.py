"""Input streams the fault-family tests share: OpenAI token events and arrival times."""

from __future__ import annotations


def openai_stream(n: int) -> list[bytes]:
    """``n`` OpenAI token events and ``[DONE]``, one write each."""
    events = [
        b'data: {"choices":[{"index":0,"delta":{"content":"t%d "}}]}\n\n' % i for i in range(n)
    ]
    return [*events, b"data: [DONE]\n\n"]


def timed(chunks: list[bytes], every_s: float) -> list[bytes | tuple[float, bytes]]:
    """The chunks arriving ``every_s`` apart, the first at 0."""
    return [(i * every_s, c) for i, c in enumerate(chunks)]


STREAM = openai_stream(10)
"""Ten token events and ``[DONE]``: eleven chunks."""
WHOLE = b"".join(STREAM)
