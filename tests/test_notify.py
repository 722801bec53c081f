"""Wake-ups (blackboard/core/notify.py): one watchfiles thread per board directory, fanned out.

A wake-up is only a hint (watchers re-check on a timer), so what matters here is that every waker is
woken, that none is lost right after `add` returns, that the thread ends with its last waker, and that
a directory watchfiles cannot watch is reported (poll instead) rather than waited on.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from blackboard.core.notify import LINGER, Hub, hub_for

pytestmark = pytest.mark.timeout(60)


def touch(directory: Path, name: str = "log.jsonl") -> None:
    with (directory / name).open("ab") as f:
        f.write(b"{}\n")


def test_every_waker_is_woken(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub(tmp_path)
    woken = [threading.Event() for _ in range(3)]

    def broken() -> None:
        raise RuntimeError("a waker that fails")

    for event in woken:
        assert hub.add(event.set)
    assert hub.add(broken)
    touch(tmp_path)
    for event in woken:
        assert event.wait(10), "a waker was not woken"
    assert "a waker that fails" in caplog.text  # logged; the others were woken all the same
    for waker in [*(e.set for e in woken), broken]:
        hub.remove(waker)


def test_no_wake_up_lost_right_after_add(tmp_path: Path) -> None:
    """add() returns once the watch exists: a change made at once is seen (not just by the timer)."""
    for n in range(100):
        directory = tmp_path / f"d{n}"
        directory.mkdir()
        hub, woken = Hub(directory), threading.Event()
        assert hub.add(woken.set)
        touch(directory)
        assert woken.wait(5), f"round {n}: the change right after add() raised no wake-up"
        hub.remove(woken.set)


def test_a_waker_back_within_the_linger_keeps_the_thread(tmp_path: Path) -> None:
    """A process that waits again and again (request after request) does not restart the watch."""
    hub = Hub(tmp_path)
    hub.linger = 3600.0  # longer than any pause between the two lines below
    first = threading.Event()
    assert hub.add(first.set)
    thread = hub._thread
    hub.remove(first.set)
    again = threading.Event()
    assert hub.add(again.set)
    assert hub._thread is thread and thread is not None and thread.is_alive()
    touch(tmp_path)
    assert again.wait(10)
    hub.remove(again.set)


def test_thread_ends_with_its_last_waker_and_restarts(tmp_path: Path) -> None:
    hub = Hub(tmp_path)
    first, second = threading.Event(), threading.Event()
    assert hub.add(first.set) and hub.add(second.set)
    thread = hub._thread
    assert thread is not None and thread.is_alive()
    assert sum(t.name == "blackboard-notify" and t is thread for t in threading.enumerate()) == 1
    hub.remove(first.set)
    assert thread.is_alive()  # one waker left
    hub.remove(second.set)
    thread.join(LINGER + 5)
    assert not thread.is_alive(), "the thread outlived its last waker (and its linger)"
    again = threading.Event()
    assert hub.add(again.set)  # a later watcher starts a new one
    assert hub._thread is not thread and hub._thread is not None and hub._thread.is_alive()
    touch(tmp_path)
    assert again.wait(10)
    hub.remove(again.set)


def test_unwatchable_directory_fails_over_to_polling(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hub = Hub(tmp_path / "gone")  # watchfiles cannot start on it (as with inotify limits reached)
    with caplog.at_level(logging.WARNING, logger="blackboard"):
        assert hub.add(lambda: None) is False
    assert hub.failed and "polling the log instead" in caplog.text
    assert hub.add(lambda: None) is False  # decided once, no second attempt per watcher


def test_one_hub_per_directory(tmp_path: Path) -> None:
    (tmp_path / "board").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "board")
    hub = hub_for(tmp_path / "board")
    assert hub_for(tmp_path / "alias") is hub and hub_for(tmp_path / "board" / ".." / "board") is hub
    assert hub_for(tmp_path) is not hub
