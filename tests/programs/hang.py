"""Starts a stream, reads nothing, and never ends (until killed)."""

import time

from _common import connect

conn = connect(60)
conn.request("POST", "/v1/chat/completions", '{"model":"m","stream":true,"messages":[]}')
time.sleep(60)
