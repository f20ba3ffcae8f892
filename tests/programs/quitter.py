"""Reads 3 events, then hangs up mid-stream (the user pressed stop) and exits 2."""

import sys

from _common import chat, out

text, _ = chat(stream=True, timeout=2.0, max_events=3)
out(text)
sys.exit(2)
