// openai-node's Responses API, streaming, as an app would call it. Nothing here parses the
// stream: every byte goes through the SDK.
//
//   node responses_stream.mjs [create|stream] [PROMPT]
//
// The client reads OPENAI_BASE_URL and OPENAI_API_KEY from the environment, as
// `chaosstream run`/`check` set them. `create` (default): client.responses.create({stream:
// true}) and a for-await over its events. `stream`: the client.responses.stream() helper and
// its finalResponse().
//
// Prints the answer text as it streams, then one JSON line on stderr:
//   {"mode", "text", "finalText", "lastType", "events", "error": {"class", "name", "message",
//    "status", "type", "isOpenAIError", "isAPIError"} | null, "version"}
// Exit code: 1 when the SDK threw (what an app shows as failed), else 0.
import OpenAI from "openai";
import { VERSION as version } from "openai/version";

const mode = process.argv[2] || "create";
const prompt = process.argv[3] || "Tell me about rivers.";
// No retries: the test sees what one request does; the Python side arms each fault once.
const client = new OpenAI({ maxRetries: 0, timeout: 10_000 });
const params = { model: "gpt-test", input: prompt };

let text = "";
let finalText = null;
let lastType = null;
let events = 0;
let error = null;

function seen(event) {
  events += 1;
  lastType = event.type;
  if (event.type === "response.output_text.delta") {
    text += event.delta;
    process.stdout.write(event.delta);
  }
}

try {
  if (mode === "stream") {
    const stream = client.responses.stream(params);
    for await (const event of stream) seen(event);
    finalText = (await stream.finalResponse()).output_text;
  } else {
    const stream = await client.responses.create({ ...params, stream: true });
    for await (const event of stream) seen(event);
  }
} catch (e) {
  error = {
    class: e?.constructor?.name ?? null,
    name: e?.name ?? null,
    message: String(e?.message ?? e),
    status: e?.status ?? null,
    type: e?.type ?? null,
    isOpenAIError: e instanceof OpenAI.OpenAIError,
    isAPIError: e instanceof OpenAI.APIError,
  };
}
process.stdout.write("\n");
process.stderr.write(
  JSON.stringify({ mode, text, finalText, lastType, events, error, version }) + "\n",
);
process.exitCode = error ? 1 : 0;
