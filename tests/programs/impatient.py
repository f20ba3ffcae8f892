"""Retries after 0.1 s whatever Retry-After says."""

import sys
import time

from _common import ERRORS, Refused, chat, out

for _ in range(4):
    try:
        text, ok = chat(stream=True, timeout=2.0)
        if ok:
            out(text)
            sys.exit(0)
    except (Refused, *ERRORS):
        pass
    time.sleep(0.1)
sys.exit(1)
