"""Retries at once, without any wait, up to 8 attempts: a retry storm."""

import sys

from _common import ERRORS, Refused, chat, out

for _ in range(8):
    try:
        text, ok = chat(stream=True, timeout=2.0)
        if ok:
            out(text)
            sys.exit(0)
    except (Refused, *ERRORS):
        pass
sys.exit(1)
