"""What a tool call returns: its result, or an error a model can act on, as MCP `CallToolResult`s.

Every result is JSON twice over, as MCP asks: `structuredContent` for programs and the same object
as text for models. An error is `{"error": {"type", "message", ...the error's data}}` with
`isError` set: the data attributes every `BlackboardError` carries (the current version on a
conflict, the holder and expiry of a held lease, the close names of an unknown agent), never a
traceback.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types import CallToolResult, TextContent

from ..core import codec as _codec
from ..errors import BlackboardError

_JSON = (str, int, float, bool, type(None))


def ok(payload: dict[str, Any]) -> CallToolResult:
    return CallToolResult(content=[_text(payload)], structured_content=payload)


def error(type_: str, message: str, **data: Any) -> CallToolResult:
    payload = {"error": {"type": type_, "message": message, **data}}
    return CallToolResult(content=[_text(payload)], structured_content=payload, is_error=True)


def from_exception(exc: BlackboardError | OSError) -> CallToolResult:
    """The error as a result: its class name, its one-line message, its data attributes."""
    data = {k: v for k, v in vars(exc).items() if k != "message" and _plain(v)}
    return error(type(exc).__name__, str(exc), **data)


def _plain(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return all(isinstance(v, _JSON) for v in value)
    return isinstance(value, _JSON)


def _text(payload: dict[str, Any]) -> TextContent:
    return TextContent(type="text", text=_codec.dumps(payload).decode())


async def structured_errors(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: a failure the SDK reports itself (arguments that do not match a tool's schema, an
    unknown tool) comes as bare text; give it the shape of every other error, so that a model
    reads one kind of error."""
    result = await call_next(ctx)
    # What the chain returns is the result as it goes on the wire: a dict of camelCase fields.
    if ctx.method != "tools/call" or not isinstance(result, dict) or not result.get("isError"):
        return result
    if result.get("structuredContent") is not None:
        return result  # one of ours
    text = " ".join(str(b.get("text")) for b in result.get("content") or () if isinstance(b, dict))
    kind = "InvalidArguments" if "validation error" in text else "ToolError"
    payload = {"error": {"type": kind, "message": text}}
    return {
        **result,
        "content": [{"type": "text", "text": _codec.dumps(payload).decode()}],
        "structuredContent": payload,
    }
