// An app server shaped like the AI SDK docs' chatbot (Next.js App Router's
// app/api/chat/route.ts), on a plain Node http server instead of a Next build:
//
//   export async function POST(req) {
//     const { messages } = await req.json();
//     const result = streamText({ model: openai("gpt-4o-mini"), messages: await convertToModelMessages(messages) });
//     return result.toUIMessageStreamResponse();
//   }
//
// The provider is @ai-sdk/openai pointed at OPENAI_BASE_URL (chaosstream's model-side
// proxy). Responses are gzipped when the client accepts it, as Next does by default
// (its compress option); each chunk is flushed so the stream stays a stream.
// GET / serves PAGE (default ../pages/docs_chat.html) with the chat route at /api/chat.
//
//   PORT=3000 OPENAI_BASE_URL=http://127.0.0.1:9000/v1 node ai_sdk_app.mjs
import { readFileSync } from "node:fs";
import http from "node:http";
import { Readable } from "node:stream";
import zlib from "node:zlib";

import { createOpenAI } from "@ai-sdk/openai";
import { convertToModelMessages, streamText } from "ai";

const page = readFileSync(
  process.env.PAGE || new URL("../pages/docs_chat.html", import.meta.url),
  "utf8",
);
const openai = createOpenAI({
  baseURL: process.env.OPENAI_BASE_URL,
  apiKey: process.env.OPENAI_API_KEY || "chaosstream-mock-key",
});

async function chat(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const { messages } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const result = streamText({
    model: openai.chat("gpt-4o-mini"),
    messages: await convertToModelMessages(messages),
  });
  return result.toUIMessageStreamResponse();
}

async function send(req, res, response) {
  const gzip = /\bgzip\b/.test(req.headers["accept-encoding"] || "");
  const headers = Object.fromEntries(response.headers);
  if (gzip) {
    headers["content-encoding"] = "gzip";
    headers["vary"] = "Accept-Encoding";
    delete headers["content-length"];
  }
  res.writeHead(response.status, headers);
  const body = Readable.fromWeb(response.body);
  if (!gzip) {
    body.pipe(res);
    return;
  }
  const z = zlib.createGzip({ flush: zlib.constants.Z_SYNC_FLUSH });
  body.pipe(z).pipe(res);
}

const server = http.createServer(async (req, res) => {
  try {
    if (req.method === "GET" && (req.url === "/" || req.url.startsWith("/?"))) {
      await send(req, res, new Response(page, { headers: { "content-type": "text/html" } }));
    } else if (req.method === "POST" && req.url === "/api/chat") {
      await send(req, res, await chat(req));
    } else {
      res.writeHead(404).end("not found");
    }
  } catch (e) {
    console.error("route failed", e);
    if (!res.headersSent) res.writeHead(500).end("error");
    else res.destroy();
  }
});
server.listen(Number(process.env.PORT || 3000), "127.0.0.1", () => {
  console.log(`ai_sdk_app ready on ${process.env.PORT || 3000}`);
});
