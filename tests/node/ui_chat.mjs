// A chat client built the way useChat is: the `ai` package's own AbstractChat over its
// DefaultChatTransport (HttpChatTransport + parseJsonEventStream + processUIMessageStream),
// with a plain in-memory state where @ai-sdk/react keeps React state. Nothing here parses
// the stream: every byte goes through the SDK.
//
//   node ui_chat.mjs URL [PROMPT]      (URL defaults to $CHAOSSTREAM_URL + /api/ui/chat)
//
// UI_CHAT_HEADERS (a JSON object) adds request headers, as useChat's `headers` option does.
//
// Prints the answer text as it streams, then one JSON line on stderr:
//   {"status", "error": {"name", "message"} | null, "text", "finishReason",
//    "isAbort", "isDisconnect", "isError", "version"}
// Exit code: 1 when the chat ends in status "error" (what a UI shows as failed), else 0.
import { createRequire } from "node:module";

import { AbstractChat, DefaultChatTransport } from "ai";

const require = createRequire(import.meta.url);
const { version } = require("ai/package.json");

class PlainState {
  constructor() {
    this.status = "ready";
    this.error = undefined;
    this.messages = [];
  }
  pushMessage(message) {
    this.messages = this.messages.concat(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [
      ...this.messages.slice(0, index),
      this.snapshot(message),
      ...this.messages.slice(index + 1),
    ];
  }
  snapshot(value) {
    return structuredClone(value);
  }
}

class Chat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new PlainState() });
  }
}

const url =
  process.argv[2] || `${(process.env.CHAOSSTREAM_URL || "").replace(/\/$/, "")}/api/ui/chat`;
const prompt = process.argv[3] || "Tell me about streaming.";

let shown = "";
let finish = null;
const chat = new Chat({
  transport: new DefaultChatTransport({
    api: url,
    headers: JSON.parse(process.env.UI_CHAT_HEADERS || "{}"),
  }),
  onFinish: (info) => {
    finish = info;
  },
});

// Show text as it arrives, as a page re-rendering on every state change would.
const timer = setInterval(() => {
  const text = answerText(chat.messages);
  if (text.length > shown.length && text.startsWith(shown)) {
    process.stdout.write(text.slice(shown.length));
    shown = text;
  }
}, 5);

function answerText(messages) {
  const last = messages[messages.length - 1];
  if (!last || last.role !== "assistant") return "";
  return last.parts
    .filter((p) => p.type === "text")
    .map((p) => p.text)
    .join("");
}

await chat.sendMessage({ text: prompt });
clearInterval(timer);
const text = answerText(chat.messages);
if (text.startsWith(shown)) process.stdout.write(text.slice(shown.length));
process.stdout.write("\n");
const error = chat.error ? { name: chat.error.name, message: String(chat.error.message) } : null;
process.stderr.write(
  JSON.stringify({
    status: chat.status,
    error,
    text,
    finishReason: finish?.finishReason ?? null,
    isAbort: finish?.isAbort ?? null,
    isDisconnect: finish?.isDisconnect ?? null,
    isError: finish?.isError ?? null,
    version,
  }) + "\n",
);
process.exitCode = chat.status === "error" ? 1 : 0;
