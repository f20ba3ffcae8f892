"""Bedrock through boto3's bedrock-runtime, pointed at the proxy by the environment alone
(AWS_ENDPOINT_URL_BEDROCK_RUNTIME, dummy AWS keys and region from chaosstream).

``naive``: prints each contentBlockDelta's text, exit 0 when the iteration ends.
``careful``: also needs the ``messageStop`` event; on any failure asks again
with ``converse`` (a fallback), exit 1 if that fails too; an answer stopped by
``max_tokens`` or a filter is printed with a note that it is incomplete.
"""

import sys
import time

import boto3
from botocore.config import Config
from botocore.eventstream import ParserError
from botocore.exceptions import BotoCoreError, ClientError, EventStreamError
from urllib3.exceptions import HTTPError

MODE = sys.argv[1] if len(sys.argv) > 1 else "careful"
# One attempt (botocore's own retries, measured: it retries a 429 after ~0.3 s whatever its
# Retry-After says; `max_attempts` counts retries, `total_max_attempts` attempts): the
# scenarios judge the client's own retries. The careful
# client bounds a silent stream (botocore's default read_timeout is 60 s: measured, a stall
# hangs it that long).
TIMEOUT = 60 if MODE == "naive" else 3
client = boto3.client(
    "bedrock-runtime", config=Config(retries={"total_max_attempts": 1}, read_timeout=TIMEOUT)
)
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "Tell me about rivers."}]}]
# What boto3 raises on a cut or broken stream (measured): urllib3's ProtocolError,
# botocore's ChecksumMismatch (a ParserError), EventStreamError for an exception message.
FAILURES = (BotoCoreError, ClientError, ParserError, HTTPError, OSError)

if MODE == "naive":
    try:
        for event in client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]:
            if "contentBlockDelta" in event:
                print(event["contentBlockDelta"]["delta"].get("text", ""), end="", flush=True)
    except FAILURES as e:
        print(f"\nerror: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print()
    sys.exit(0)

pieces: list[str] = []
stopped = False
reason = "end_turn"
try:
    for event in client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]:
        if "contentBlockDelta" in event:
            pieces.append(event["contentBlockDelta"]["delta"].get("text", ""))
        if "messageStop" in event:
            stopped, reason = True, event["messageStop"].get("stopReason", "end_turn")
    if not stopped:
        raise ValueError("the stream ended without messageStop")
    text = "".join(pieces)
except (EventStreamError, ValueError, *FAILURES) as e:
    print(f"stream failed: {type(e).__name__}: {e}", file=sys.stderr)
    if isinstance(e, ClientError):
        # botocore keeps the refusal's headers; a careful client honours Retry-After.
        wait = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("retry-after")
        time.sleep(float(wait) if wait and wait.replace(".", "", 1).isdigit() else 0)
    try:
        out = client.converse(modelId=MODEL, messages=MESSAGES)
        text = "".join(c.get("text", "") for c in out["output"]["message"]["content"])
    except FAILURES as e2:
        print(f"error: {type(e2).__name__}: {e2}", file=sys.stderr)
        sys.exit(1)
print(text)
if reason not in ("end_turn", "stop_sequence"):
    # A careful client tells its user the answer was cut short (max_tokens, a filter).
    print(f"[note: the answer is incomplete: stopped by {reason}]", file=sys.stderr)
