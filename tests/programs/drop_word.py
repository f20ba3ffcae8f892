"""Streams the answer and prints it with its tenth word left out, exit 0 (a rendering bug)."""

import sys

from _common import chat, out

text, ok = chat(stream=True)
words = text.split(" ")
out(" ".join(words[:9] + words[10:]))
sys.exit(0 if ok else 1)
