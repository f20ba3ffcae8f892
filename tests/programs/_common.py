"""Shared plumbing of the test clients: plain http.client, no SDK, so they start fast."""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.parse

URL = urllib.parse.urlsplit(os.environ["CHAOSSTREAM_URL"])
BODY = {"model": "mock", "messages": [{"role": "user", "content": "Tell me about rivers."}]}
ERRORS = (OSError, http.client.HTTPException, ValueError)


class Refused(Exception):
    """An HTTP error status (with its Retry-After, if any)."""

    def __init__(self, status: int, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def connect(timeout: float) -> http.client.HTTPConnection:
    """A connection to the proxy."""
    return http.client.HTTPConnection(URL.hostname, URL.port, timeout=timeout)


def chat(stream: bool, timeout: float = 5.0, max_events: int | None = None) -> tuple[str, bool]:
    """One chat completion: (text received, whether it ended properly)."""
    conn = connect(timeout)
    try:
        body = json.dumps({**BODY, "stream": stream})
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise Refused(resp.status, resp.getheader("Retry-After"))
        if not stream:
            data = json.loads(resp.read())
            return data["choices"][0]["message"]["content"], True
        text, events = "", 0
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\r\n")
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return text, True
            obj = json.loads(data)
            if obj.get("error"):
                return text, False
            for choice in obj.get("choices", []):
                text += (choice.get("delta") or {}).get("content") or ""
            events += 1
            if max_events is not None and events >= max_events:
                return text, False
        return text, False
    finally:
        conn.close()


def out(text: str) -> None:
    """Print the answer."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
