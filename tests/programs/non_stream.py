"""Asks once with streaming off and prints the answer: a stream-only fault never meets it."""

import sys

from _common import chat, out

text, ok = chat(stream=False)
out(text)
sys.exit(0 if ok else 1)
