"""Streams the whole answer, then waits 0.6 s before printing it (lazy imports, a slow UI)."""

import sys
import time

from _common import chat, out

text, ok = chat(stream=True)
time.sleep(0.6)
out(text)
sys.exit(0 if ok else 1)
