"""Streams; when the stream fails, asks again without streaming."""

import sys

from _common import ERRORS, chat, out

try:
    text, ok = chat(stream=True, timeout=2.0)
except ERRORS:
    ok = False
if not ok:
    text, ok = chat(stream=False, timeout=5.0)
out(text)
sys.exit(0 if ok else 1)
