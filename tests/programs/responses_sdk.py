"""OpenAI Responses through openai-python, pointed at the proxy by OPENAI_BASE_URL alone.

``naive``: ``responses.create(stream=True)``, prints deltas, exit 0 when the
iteration ends (the SDK does not notice a missing ``response.completed``).
``careful``: ``responses.stream(...)`` and ``get_final_response()``; on any
failure asks again with ``stream=False`` (a fallback), exit 1 if that fails too.
"""

import sys

import openai

MODE = sys.argv[1] if len(sys.argv) > 1 else "careful"
client = openai.OpenAI(max_retries=0, timeout=5.0)
ARGS = {"model": "gpt-test", "input": "Tell me about rivers."}

if MODE == "naive":
    try:
        for event in client.responses.create(**ARGS, stream=True):
            if event.type == "response.output_text.delta":
                print(event.delta, end="", flush=True)
    except openai.APIError as e:
        print(f"\nerror: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print()
    sys.exit(0)

try:
    with client.responses.stream(**ARGS) as stream:
        for _event in stream:
            pass
        text = stream.get_final_response().output_text
except (openai.APIError, RuntimeError, ValueError) as e:
    print(f"stream failed: {type(e).__name__}: {e}", file=sys.stderr)
    try:
        text = client.responses.create(**ARGS).output_text
    except openai.APIError as e2:
        print(f"error: {type(e2).__name__}: {e2}", file=sys.stderr)
        sys.exit(1)
print(text)
