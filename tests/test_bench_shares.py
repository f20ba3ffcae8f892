"""bench/shares.py: py-spy's folded stacks become per-library shares of the proxy's CPU."""

from __future__ import annotations

from bench.shares import classify, shares_of

TOP = "<module> (/x/bench/chaos_proxy.py:9);run (/py/asyncio/base_events.py:600)"
RAW = f"""\
{TOP};_handle (/x/chaosstream/proxy/server.py:300) 6
{TOP};write (/site/aiohttp/http_writer.py:80) 3
{TOP} 1
garbage line without a count
"""


def test_the_innermost_frame_decides_the_library() -> None:
    """A sample is charged to the library of its innermost Python frame (self time)."""
    assert classify("_handle (/x/chaosstream/proxy/server.py:300)") == "chaosstream"
    assert classify("write (/site/aiohttp/http_writer.py:80)") == "aiohttp"
    assert classify("run (/site/uvloop/__init__.py:80)") == "loop"
    assert classify("main (/x/bench/client.py:1)") == "other"


def test_shares_sum_the_counts_and_skip_what_is_not_a_sample() -> None:
    """Counts add up per library; a line without a count is ignored, not a crash."""
    got = shares_of(RAW)
    assert got["samples"] == 10
    assert (got["chaosstream"], got["aiohttp"], got["loop"]) == (0.6, 0.3, 0.1)
    assert got["other"] == 0.0
    assert shares_of("")["chaosstream"] is None
