"""Reads /sse; after a cut reconnects with Last-Event-ID of the last event it got."""

import http.client
import sys
import time

from _common import ERRORS, connect, out

last_id, pieces = "", []
for _ in range(4):
    conn = connect(2.0)
    try:
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        conn.request("GET", "/sse?prompt=rivers", headers=headers)
        resp = conn.getresponse()
        event, data, eid = "message", None, None
        for raw in resp:
            line = raw.decode("utf-8").rstrip("\r\n")
            if line.startswith("id:"):
                eid = line[3:].lstrip(" ")
            elif line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].removeprefix(" ")
            elif line == "" and data is not None:
                if event == "done":
                    out("".join(pieces))
                    sys.exit(0)
                pieces.append(data)
                last_id = eid or last_id
                event, data, eid = "message", None, None
    except (*ERRORS, http.client.HTTPException):
        pass
    finally:
        conn.close()
    time.sleep(0.1)
sys.exit(1)
