"""The web view's routes: the page, its snapshot and live stream, one entry, and the two posts.

Translation only: each route is one call of the library (through `views` and `feed`), its result
as JSON, and a library error as `{"error": {"type", "message"}}` with a status code, never a
traceback. Security is here too, because it is the medium's: a token on every request when the
server is public, a Host header that must name the loopback when it is not (a web page elsewhere
cannot reach the board through DNS rebinding), and posts only when the server was started to
allow them, as the agent named at start.

    GET  /                  the page (static/index.html; its script and style under /static/)
    GET  /api/snapshot      everything the page shows, with the seq its key tree is exact at
    GET  /api/stream        server-sent events: the snapshot, then the board's watch (feed.py)
    GET  /api/entry?key=K   one entry, its value whole
    POST /api/say           {"conversation": CID, "text": TEXT}: a turn (--allow-post only)
    POST /api/reply         {"id": MESSAGE_ID, "body": JSON}: answer a request (--allow-post only)
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..agents import conversations as _conversations
from ..agents import messages as _messages
from ..board import Board
from ..core import codec as _codec
from ..errors import BlackboardError, InvalidKey, InvalidValue, KeyNotFound, NoSuchMessage, Refused, VersionConflict
from . import feed, views

#: The cookie that carries the token after the page was opened with `?token=`: the page's own
#: requests (its script, its stream) then need no token in their address.
COOKIE = "blackboard_token"
#: Host names a loopback server answers to.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
#: Seconds between two keep-alive comments on an idle stream.
PING = 15

_STATUS: dict[type[BlackboardError], int] = {
    InvalidKey: 400,
    InvalidValue: 400,
    KeyNotFound: 404,
    NoSuchMessage: 404,
    Refused: 409,
    VersionConflict: 409,
}


@dataclass(frozen=True)
class Settings:
    """How the server was started: what the routes may do, and what they check."""

    board: Board
    #: the agent posts are made as; None: read-only
    agent: str | None = None
    #: required on every request when not None (a public bind)
    token: str | None = None


def error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}}, status_code=status)


def _json(data: Any) -> Response:
    """A 200 of the board's own compact JSON (orjson, through the codec: a 10,000-key snapshot is
    several times faster to encode than with the standard library)."""
    return Response(_codec.dumps(data), media_type="application/json")


def _failure(exc: BlackboardError) -> JSONResponse:
    status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
    return error(status, type(exc).__name__, str(exc))


def _hostname(header: str) -> str:
    """The host of a Host header, without its port: `127.0.0.1:8000` -> `127.0.0.1`, `[::1]:80` -> `[::1]`."""
    if header.startswith("["):
        return header[: header.find("]") + 1]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI middleware that refuses, with a JSON 403, a request without the token (a public server)
    or one whose Host is not the loopback (a loopback server: DNS rebinding). A plain ASGI class,
    not BaseHTTPMiddleware, which would buffer the live stream's cancellation."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = self.settings.token
        if token is None:
            if _hostname(request.headers.get("host", "")) not in LOOPBACK_HOSTS:
                await error(403, "Forbidden", "this server answers to loopback host names only")(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        given = request.query_params.get("token") or request.cookies.get(COOKIE) or ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            refusal = error(403, "Forbidden", "a token is required: open the address the server printed")
            await refusal(scope, receive, send)
            return
        if "token" not in request.query_params:
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            # The page was opened with ?token=: its own requests (script, stream) carry the cookie.
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.append("set-cookie", f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict")
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _static(name: str) -> Path:
    return Path(str(resources.files(__package__).joinpath("static", name)))


async def page(_request: Request) -> Response:
    return FileResponse(_static("index.html"), headers={"Cache-Control": "no-store"})


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ("app.js", "app.css"):
        return error(404, "NotFound", f"no asset {name!r}")
    return FileResponse(_static(name), headers={"Cache-Control": "no-store"})


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def snapshot(request: Request) -> Response:
    s = _settings(request)
    data = await asyncio.to_thread(views.snapshot, s.board, agent=s.agent, read_only=s.agent is None)
    return _json(data)


async def stream(request: Request) -> Response:
    s = _settings(request)
    return EventSourceResponse(feed.stream(s.board, agent=s.agent, read_only=s.agent is None), ping=PING)


async def entry(request: Request) -> Response:
    key = request.query_params.get("key")
    if key is None:
        return error(400, "InvalidKey", "give the key: /api/entry?key=KEY")
    try:
        found = await asyncio.to_thread(views.entry, _settings(request).board, key)
    except BlackboardError as exc:
        return _failure(exc)
    if found is None:
        return error(404, "KeyNotFound", f"no such key: {key}")
    return _json(found)


async def _body(request: Request) -> dict[str, Any] | JSONResponse:
    # JSON only: a form on another site can post text/plain without asking (no CORS preflight),
    # never application/json.
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return error(415, "InvalidValue", "the body is a JSON object, sent as application/json")
    try:
        body = await request.json()
    except ValueError:
        return error(400, "InvalidValue", "the body is a JSON object")
    if not isinstance(body, dict):
        return error(400, "InvalidValue", "the body is a JSON object")
    return body


async def _post(request: Request) -> tuple[str, dict[str, Any]] | JSONResponse:
    """The serving agent and the request's JSON body, or the error response (read-only, bad body)."""
    agent = _settings(request).agent
    if agent is None:
        return error(403, "ReadOnly", "this server is read-only: start it with --allow-post --as NAME to post")
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    return agent, body


async def say(request: Request) -> Response:
    """POST {"conversation": CID, "text": TEXT}: a turn, as the serving agent."""
    posted = await _post(request)
    if isinstance(posted, JSONResponse):
        return posted
    agent, body = posted
    cid, text = body.get("conversation"), body.get("text")
    if not isinstance(cid, str) or text is None:
        return error(400, "InvalidValue", 'give {"conversation": CID, "text": TEXT}')
    try:
        turn = await asyncio.to_thread(_conversations.say, _settings(request).board, agent, cid, text)
    except BlackboardError as exc:
        return _failure(exc)
    return JSONResponse(turn.as_dict())


async def reply(request: Request) -> Response:
    """POST {"id": MESSAGE_ID, "body": JSON}: answer a request in the serving agent's inbox."""
    posted = await _post(request)
    if isinstance(posted, JSONResponse):
        return posted
    agent, body = posted
    message_id = body.get("id")
    if not isinstance(message_id, str) or "body" not in body:
        return error(400, "InvalidValue", 'give {"id": MESSAGE_ID, "body": JSON}')
    try:
        sent = await asyncio.to_thread(_messages.reply, _settings(request).board, agent, message_id, body["body"])
    except BlackboardError as exc:
        return _failure(exc)
    return JSONResponse(sent.as_dict())


async def not_found(_request: Request, _exc: Exception) -> Response:
    return error(404, "NotFound", "no such page")


async def not_allowed(_request: Request, _exc: Exception) -> Response:
    return error(405, "MethodNotAllowed", "not with this method")


async def crashed(_request: Request, exc: Exception) -> Response:
    return error(500, type(exc).__name__, str(exc) or "internal error")


def make_app(settings: Settings) -> Starlette:
    """The ASGI app of one board (uvicorn runs it; tests may too)."""
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/static/{name}", asset),
            Route("/api/snapshot", snapshot),
            Route("/api/stream", stream),
            Route("/api/entry", entry),
            Route("/api/say", say, methods=["POST"]),
            Route("/api/reply", reply, methods=["POST"]),
        ],
        middleware=[Middleware(Guard, settings=settings)],
        exception_handlers={404: not_found, 405: not_allowed, 500: crashed},
    )
    app.state.settings = settings
    return app
