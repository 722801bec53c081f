"""`blackboard serve` as a real child process, for the web tests: started on a free port (`--port 0`,
the address read from its first line), and always stopped (SIGTERM, then SIGKILL) and reaped."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from _workers import cli_env

#: No proxy (urllib honours http_proxy): the tests talk to this machine only.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
#: Seconds a server may take to print its address (a loaded 2-core machine imports slowly).
START_TIMEOUT = 60.0


class Served(NamedTuple):
    url: str  # as printed: http://127.0.0.1:PORT/ (with ?token=... when public)
    proc: subprocess.Popen[str]

    @property
    def base(self) -> str:
        return self.url.split("?")[0]


def serve_args(board: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "blackboard", "serve", "--board", str(board), "--port", "0", *options]


@contextmanager
def served(board: Path, *options: str, env: dict[str, str] | None = None) -> Iterator[Served]:
    """A `blackboard serve` child on `board`; its address is ready when the block starts."""
    proc = subprocess.Popen(
        serve_args(board, *options),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or cli_env(),
        cwd=board.parent,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline() if proc.stdout else ""), daemon=True).start()
    try:
        try:
            first = lines.get(timeout=START_TIMEOUT)
        except queue.Empty:
            first = ""
        if first.startswith("{"):  # --json
            first = json.loads(first)["url"]
        if not first.startswith("http://"):
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"serve printed {first!r}, exit {proc.returncode}: {err}")
        yield Served(first.split()[0], proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=20)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def http(url: str, *, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(status, the JSON body) of one request; an error status is returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json"} if body is not None else {}
    request = urllib.request.Request(url, data=data, method=method, headers={**sent, **(headers or {})})
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"null")


@contextmanager
def sse(url: str, *, timeout: float = 30.0) -> Iterator[Iterator[tuple[str, Any]]]:
    """An open stream of server-sent events: each as (event name, parsed data), keep-alives skipped."""
    with _OPENER.open(url, timeout=timeout) as response:
        assert response.headers["content-type"].startswith("text/event-stream")

        def events() -> Iterator[tuple[str, Any]]:
            name, data = "message", list[str]()
            while True:
                line = response.readline().decode()
                if not line:
                    return
                line = line.rstrip("\r\n")
                if not line and data:
                    yield name, json.loads("\n".join(data))
                    name, data = "message", []
                elif line.startswith("event:"):
                    name = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    data.append(line.split(":", 1)[1].removeprefix(" "))

        yield events()
