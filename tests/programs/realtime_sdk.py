"""OpenAI Realtime through openai-python's ``client.realtime.connect`` (its websockets extra),
pointed at the proxy by OPENAI_BASE_URL alone (the SDK swaps http for ws and appends /realtime).

``naive``: prints each ``response.output_text.delta`` and exits 0 when the events end,
whatever ended them. ``careful``: needs ``response.done`` with status ``completed``; an
``error`` event, a closed socket or 2 s without an event is a failure (exit 1).
"""

import asyncio
import sys

from openai import AsyncOpenAI

MODE = sys.argv[1] if len(sys.argv) > 1 else "careful"
ITEM = {
    "type": "message",
    "role": "user",
    "content": [{"type": "input_text", "text": "Tell me about rivers."}],
}


async def main() -> int:
    client = AsyncOpenAI(max_retries=0)
    status = None
    try:
        async with client.realtime.connect(model="gpt-realtime") as conn:
            await conn.session.update(session={"type": "realtime", "output_modalities": ["text"]})
            await conn.conversation.item.create(item=ITEM)  # type: ignore[arg-type]
            await conn.response.create()
            events = conn.__aiter__()
            while True:
                try:
                    # The SDK waits for ever on a silent socket: bound it (careful only).
                    timeout = None if MODE == "naive" else 2
                    event = await asyncio.wait_for(events.__anext__(), timeout)
                except StopAsyncIteration:
                    break
                if event.type == "response.output_text.delta":
                    print(event.delta, end="", flush=True)
                elif event.type == "error":
                    print(f"\nerror: {event.error.type}: {event.error.message}", file=sys.stderr)
                    return 1
                elif event.type == "response.done":
                    status = event.response.status
                    break
    except Exception as e:  # a cut socket: websockets' ConnectionClosedError, a bad event...
        print(f"\nerror: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print()
    if MODE == "careful" and status != "completed":
        print(f"error: the response ended with status {status}", file=sys.stderr)
        return 1
    return 0


sys.exit(asyncio.run(main()))
