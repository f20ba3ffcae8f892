// openai-node with its DEFAULT base URL (https://api.openai.com/v1), reached only through
// HTTPS_PROXY and trusting the intercepting proxy's CA through NODE_EXTRA_CA_CERTS.
//
//   node intercept_chat.mjs [PROMPT]
//
// Node 24 makes fetch read HTTPS_PROXY when NODE_USE_ENV_PROXY=1; Node 20-23's built-in fetch
// ignores it, so an app there installs undici's EnvHttpProxyAgent (which reads HTTPS_PROXY and
// NO_PROXY) as the global dispatcher: the one line below, nothing chaosstream-specific.
// Prints the answer text, then one JSON line on stderr: {"baseURL", "text", "error"}.
import { EnvHttpProxyAgent, setGlobalDispatcher } from "undici";
import OpenAI from "openai";

setGlobalDispatcher(new EnvHttpProxyAgent());

const client = new OpenAI({ maxRetries: 0, timeout: 20_000 });
let text = "";
let error = null;
try {
  const stream = await client.chat.completions.create({
    model: "gpt-test",
    stream: true,
    messages: [{ role: "user", content: process.argv[2] || "hello there" }],
  });
  for await (const chunk of stream) {
    const piece = chunk.choices?.[0]?.delta?.content ?? "";
    text += piece;
    process.stdout.write(piece);
  }
} catch (e) {
  error = { class: e?.constructor?.name ?? null, message: String(e?.message ?? e) };
}
process.stderr.write(JSON.stringify({ baseURL: client.baseURL, text, error }) + "\n");
process.exit(error ? 1 : 0);
