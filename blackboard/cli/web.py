"""`blackboard serve`: the live web view (blackboard/web/), on the loopback unless told otherwise.

The web stack is imported only when the server starts, and only if the `[web]` extra is installed:
every other command, and this one's --help, work without it.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import click

from ..web import DEFAULT_HOST, DEFAULT_PORT
from .base import agent_option, board_option, emit_json, fail, identity, open_board

INSTALL = "pip install 'blackboard[web]'"


def bind(host: str, port: int, *, public: bool) -> socket.socket:
    """A listening socket on host:port; a host that is not the loopback only when `public`."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise click.BadParameter(f"{host!r}: {exc.strerror}", param_hint="--host") from None
    if not ipaddress.ip_address(address[0]).is_loopback and not public:
        raise click.UsageError(
            f"--host {host} is reachable from other machines: add --public (every request then needs the printed token)"
        )
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on {host}:{port}: {exc.strerror}", 1)
    sock.listen(128)  # connections made from now on wait for the server: the address can be printed
    return sock


@click.command()
@board_option
@agent_option
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True, help="0: any free port."
)
@click.option("--public", is_flag=True, help="Allow a --host other than the loopback; requests then need the token.")
@click.option("--allow-post", is_flag=True, help="Let the page say in conversations and reply to requests, as --as.")
@click.option("--json", "as_json", is_flag=True, help="Print the address as one JSON line.")
def serve(
    board_dir: Path, agent: str | None, host: str, port: int, public: bool, allow_post: bool, as_json: bool
) -> None:
    """A live web view of the board, in a browser (loopback only).

    The log as it happens, the key tree, agents, conversations as chats, leases, queues, tasks
    and stats.

    Prints the address and serves until interrupted; it opens no browser. The page is pushed live
    by the board's own watch (server-sent events), and is read-only unless --allow-post, which
    lets a person post into a conversation or reply to a request in the inbox of --as NAME.

    It listens on the loopback (127.0.0.1) only, unless --public: then any --host, and a random
    token, part of the printed address, that every request must carry. Needs the [web] extra
    (pip install 'blackboard[web]').
    """
    name = identity(agent) if allow_post else None
    if allow_post and name is None:
        raise click.UsageError("--allow-post posts as an agent: give --as NAME or set BLACKBOARD_AGENT")
    try:
        import uvicorn

        from ..web.app import Settings, make_app
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] not in ("uvicorn", "starlette", "sse_starlette", "anyio"):
            raise
        fail(f"`blackboard serve` needs the web extra: {INSTALL} (or pip install -e '.[web]' in a clone)", 1)
    import secrets

    from .live import stop_on_sigterm

    token = secrets.token_urlsafe(24) if public else None
    board = open_board(board_dir, agent=name, read_only=name is None)
    sock = bind(host, port, public=public)
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        url = f"http://{shown}:{bound_port}/" + ("" if token is None else f"?token={token}")
        mode = "read-only" if name is None else f"posting as {name}"
        if as_json:
            emit_json({"url": url, "host": bound_host, "port": bound_port, "read_only": name is None, "agent": name})
        else:
            click.echo(f"{url}  ({mode}; Ctrl-C stops)")
        app = make_app(Settings(board, agent=name, token=token))
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2)
        # uvicorn stops on SIGINT and SIGTERM, then raises the signal again for the handler it found:
        # Ctrl-C's KeyboardInterrupt (exit 130), and for SIGTERM stop_on_sigterm's (exit 143), so
        # that the board below is closed either way (its entry files brought up to the log).
        with stop_on_sigterm():
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        board.close()
