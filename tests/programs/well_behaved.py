"""Streams; retries up to 4 attempts, waiting Retry-After when sent; exit 1 on giving up."""

import sys
import time

from _common import ERRORS, Refused, chat, out

for _ in range(4):
    wait = 0.2
    try:
        text, ok = chat(stream=True, timeout=2.0)
        if ok:
            out(text)
            sys.exit(0)
    except Refused as e:
        wait = max(wait, float(e.retry_after or 0))
    except ERRORS:
        pass
    time.sleep(wait)
print("error: gave up after 4 attempts", file=sys.stderr)
sys.exit(1)
