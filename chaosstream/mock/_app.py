"""The mock model server's aiohttp application."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler

from chaosstream.mock import (
    _anthropic,
    _bedrock,
    _gemini,
    _generic,
    _mcp,
    _ollama,
    _openai,
    _realtime,
    _responses,
    _ui_stream,
)
from chaosstream.mock._guard import GUARDS, watch
from chaosstream.mock._limits import LIMITS, MockLimits
from chaosstream.mock._settings import DEFAULT_SETTINGS, SETTINGS, MockSettings
from chaosstream.mock._stats import STATS, MockStats

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
MAX_BODY_BYTES = 64 * 1024 * 1024


@web.middleware
async def _record(request: web.Request, handler: Handler) -> web.StreamResponse:
    # read() caches the body, so handlers can read it again.
    body = await request.read()
    headers = {name.lower(): value for name, value in request.headers.items()}
    request.app[STATS].history.record(request.method, request.raw_path, headers, body)
    try:
        return await handler(request)
    except ConnectionResetError:
        # The client left before the answer began (prepare() met a closing
        # socket). Not a server error: aiohttp drops this response quietly.
        return web.Response(status=499)


# CORS, so a page on its own origin can call the mock as it calls a provider directly
# (OpenAI's API answers browsers with `Access-Control-Allow-Origin: *`; Anthropic's does
# when the page sends `anthropic-dangerous-direct-browser-access: true`, which this mock
# does not require). Fetch standard 3.2 (CORS protocol): a preflight is an OPTIONS with
# Origin and Access-Control-Request-Method; it gets 204 and leave for the method and
# headers asked. No credentials are allowed, so `*` may stand for any origin and header.
CORS_MAX_AGE_S = 600


@web.middleware
async def _cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    asked = request.headers.get("Access-Control-Request-Method")
    if request.method == "OPTIONS" and asked and "Origin" in request.headers:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": request.headers.get(
                    "Access-Control-Request-Headers", "*"
                ),
                "Access-Control-Max-Age": str(CORS_MAX_AGE_S),
                "Vary": "Access-Control-Request-Headers",
            },
        )
    return await handler(request)


async def _cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    # on_response_prepare runs before any head is sent, streamed answers included.
    if "Origin" in request.headers and "Access-Control-Allow-Origin" not in response.headers:
        response.headers["Access-Control-Allow-Origin"] = "*"
        # Lets the page read Retry-After and the request id, as a person's client would.
        response.headers["Access-Control-Expose-Headers"] = "*"


def create_app(
    settings: MockSettings = DEFAULT_SETTINGS,
    *,
    web_dir: Path | None = WEB_DIR,
    limits: MockLimits | None = None,
) -> web.Application:
    """Build the mock app: OpenAI, Anthropic, ``/sse``, ``/ws`` and test endpoints.

    Every route answers CORS (preflights, and ``Access-Control-Allow-Origin: *`` to a
    request with an ``Origin``), as the providers' APIs do for pages calling them.

    ``web_dir`` (default: the package's ``web/`` folder) is served at ``/`` when it
    exists; pass None to serve no page. ``limits`` (default: ``MockLimits()``) caps
    the /ws socket's messages and queue.
    """
    # A preflight is answered before _record: it is the browser's question, not a request.
    app = web.Application(middlewares=[watch, _cors, _record], client_max_size=MAX_BODY_BYTES)
    app.on_response_prepare.append(_cors_headers)
    app[SETTINGS] = settings
    app[LIMITS] = limits or MockLimits()
    app[GUARDS] = {}
    app[STATS] = MockStats()
    app.router.add_post("/v1/chat/completions", _openai.chat_completions)
    app.router.add_get("/v1/models", _openai.list_models)
    app.router.add_get("/v1/models/{model_id}", _openai.get_model)
    app.router.add_post("/v1/messages", _anthropic.messages)
    app[_responses.REMEMBERED] = OrderedDict()
    app.router.add_post("/v1/responses", _responses.create)
    app.router.add_get("/v1/responses/{response_id}", _responses.retrieve)
    # One route for both methods: aiohttp cannot put a literal ":" after a {model} part.
    # google-genai 3.x calls /v1/..., earlier ones and the REST docs /v1beta/...
    app.router.add_post("/v1beta/models/{model_method}", _gemini.generate)
    app.router.add_post("/v1/models/{model_method}", _gemini.generate)
    # /api/chat is Ollama's, or the AI SDK UI stream when the body is useChat's.
    app.router.add_post("/api/chat", _ui_stream.ollama_or_ui_chat)
    app.router.add_post("/api/generate", _ollama.generate)
    app.router.add_get("/api/tags", _ollama.tags)
    app.router.add_get("/api/version", _ollama.version)
    app.router.add_post("/api/ui/chat", _ui_stream.chat)
    app.router.add_post("/model/{model_id}/converse-stream", _bedrock.converse_stream)
    app.router.add_post("/model/{model_id}/converse", _bedrock.converse)
    _mcp.setup(app)  # POST/GET/DELETE /mcp: a small MCP server on Streamable HTTP
    app.router.add_get(_realtime.PATH, _realtime.realtime)  # OpenAI Realtime (WebSocket)
    app.router.add_get("/sse", _generic.sse)
    app.router.add_get("/ws", _generic.ws)
    app.router.add_get("/bytes", _generic.random_bytes)
    app.router.add_post("/echo", _generic.echo)
    app.router.add_get("/healthz", _generic.healthz)
    if web_dir is not None and web_dir.is_dir():
        _add_static(app, web_dir)
    return app


def _add_static(app: web.Application, web_dir: Path) -> None:
    index = web_dir / "index.html"

    async def index_page(request: web.Request) -> web.StreamResponse:
        if not index.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(index)

    app.router.add_get("/", index_page)
    # Registered last, so the API routes above always win.
    app.router.add_static("/", web_dir)
