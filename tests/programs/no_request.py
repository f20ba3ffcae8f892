"""Dies before sending anything, as an SDK client does without its API key: stderr, exit 1."""

import sys

print("error: OPENAI_API_KEY is not set", file=sys.stderr)
sys.exit(1)
