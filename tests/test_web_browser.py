"""The page in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, which
.ci/run installs) driven through WebDriver by selenium, on a `blackboard serve` child process; the
writes come from other processes. Waits are explicit (a condition polled until a generous timeout),
never a fixed sleep. Each test saves a screenshot under the directory it prints."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from _web import served
from _workers import cli_env
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from blackboard import Board
from blackboard.agents import conversations, presence
from blackboard.work import lease, queue, tasks

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None,
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them as root)",
)

#: Seconds any one condition may take to come true on a loaded machine; the page needs milliseconds.
WAIT = 30.0
#: "A write made by another process appears within a second": from the write's return to the row.
WITHIN = 1.0

T = TypeVar("T")


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    # Everything here is on this machine: neither selenium's client nor Chromium goes through a proxy.
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    options = Options()
    assert CHROMIUM is not None and DRIVER is not None
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    # The driver's path given: selenium does not look for (or download) one.
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    out = tmp_path / "artifacts"
    out.mkdir()
    print(f"screenshots in {out}")
    return out


def until(driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = WAIT) -> T:
    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition)


def texts(driver: WebDriver, css: str) -> list[str]:
    """The text of every element `css` selects, read in one script: the page redraws between two
    WebDriver calls, which would make an element found by one stale in the next."""
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)", css
    )
    return found


def attrs(driver: WebDriver, css: str, name: str) -> list[str]:
    found: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((e) => e.getAttribute(arguments[1]))", css, name
    )
    return found


def logged(key: str) -> Callable[[WebDriver], bool]:
    """The condition: the log shows a row of `key`."""
    return lambda d: key in attrs(d, "#log tr.ev", "data-key")


def clear(field: Any) -> None:
    """Empty an input as a person does (WebElement.clear() fires no input event)."""
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE)


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    until(driver, lambda d: d.find_element(By.ID, "status").text == "live")
    until(driver, lambda d: d.find_element(By.ID, "seq").text != "-")


def cli(path: Path, *args: str) -> None:
    """One command by another process."""
    subprocess.run(
        [sys.executable, "-m", "blackboard", "--board", str(path), *args],
        env=cli_env(),
        check=True,
        capture_output=True,
        timeout=60,
    )


@pytest.fixture
def path(tmp_path: Path) -> Path:
    """A board with something in every section, as a person would find it."""
    with Board.init(tmp_path / "board", author="tester") as board:
        presence.register(board, "atlas", capabilities=["search"], description="finds papers", pid=None)
        presence.register(board, "bob", capabilities=["summarize"], pid=None)
        cid, _ = conversations.create(board, "atlas", ["bob"], topic="split the work", turn_limit=10)
        conversations.say(board, "atlas", cid, "I take the search")
        conversations.say(board, "bob", cid, "I summarize")
        for n in range(3):
            board.write(f"research_results/q{n}", {"answer": 40 + n, "by": "atlas"}, author="atlas")
        lease.claim(board, "deploy", "atlas", ttl=300)
        for n in range(3):
            queue.push(board, "jobs/", {"url": f"https://example.org/{n}"})
        with queue.Consumer(board, "jobs/", "crawlers", "w1", lease=300) as consumer:
            assert consumer.take() is not None
        first = tasks.add(board, "collect sources")
        tasks.add(board, "write the summary", blocked_by=[first.id])
        tasks.claim_next(board, "w1")
    return tmp_path / "board"


def test_a_write_by_another_process_appears_within_a_second(browser: WebDriver, path: Path, artifacts: Path) -> None:
    with served(path) as server:
        open_page(browser, server.url)
        assert "research_results/" in texts(browser, "#keys tr.dir td:first-child")
        assert texts(browser, "#agents tr td:first-child") == ["atlas", "bob"]
        assert "collect sources" in texts(browser, "#tasks td")
        delays = []
        for n in range(3):
            cli(path, "write", f"live/k{n}", f'{{"n": {n}}}', "--author", "writer")
            written = time.monotonic()
            until(browser, logged(f"live/k{n}"))
            delays.append(time.monotonic() - written)
        browser.save_screenshot(str(artifacts / "page.png"))
    print("seen after", [f"{d * 1000:.0f} ms" for d in delays])
    assert max(delays) < WITHIN, delays
    assert attrs(browser, "#log tr.ev", "data-key")[:3] == ["live/k2", "live/k1", "live/k0"]  # newest first


def test_a_conversation_shows_its_messages_in_order(browser: WebDriver, path: Path, artifacts: Path) -> None:
    with Board.open(path) as board:
        cid = conversations.all_conversations(board)[0]["id"]
    with served(path) as server:
        open_page(browser, server.url)
        until(browser, lambda d: texts(d, "#chat .turn .text")[-2:] == ["I take the search", "I summarize"])
        cli(path, "--as", "atlas", "say", cid, "then I write it up")
        cli(path, "--as", "bob", "say", cid, "agreed")
        expected = ["split the work", "I take the search", "I summarize", "then I write it up", "agreed"]
        until(browser, lambda d: texts(d, "#chat .turn .text") == expected)
        assert texts(browser, "#chat .turn .from") == ["atlas", "atlas", "bob", "atlas", "bob"]
        assert attrs(browser, "#chat .turn", "data-n") == ["1", "2", "3", "4", "5"]
        browser.save_screenshot(str(artifacts / "conversation.png"))


def test_filtering_the_log_by_prefix_and_author(browser: WebDriver, path: Path, artifacts: Path) -> None:
    with served(path) as server:
        open_page(browser, server.url)
        until(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#log tr.ev")) > 10)
        browser.find_element(By.ID, "log-prefix").send_keys("research_results/")
        until(
            browser, lambda d: set(attrs(d, "#log tr.ev", "data-key")) == {f"research_results/q{n}" for n in range(3)}
        )
        cli(path, "write", "research_results/q9", "1", "--author", "carol")
        cli(path, "write", "other/x", "1", "--author", "carol")
        until(browser, lambda d: "research_results/q9" in attrs(d, "#log tr.ev", "data-key"))
        assert "other/x" not in attrs(browser, "#log tr.ev", "data-key")
        browser.find_element(By.ID, "log-author").send_keys("carol")
        until(browser, lambda d: attrs(d, "#log tr.ev", "data-key") == ["research_results/q9"])
        browser.save_screenshot(str(artifacts / "filtered.png"))
        clear(browser.find_element(By.ID, "log-prefix"))
        until(browser, lambda d: attrs(d, "#log tr.ev", "data-key") == ["other/x", "research_results/q9"])
        assert set(attrs(browser, "#log tr.ev", "data-author")) == {"carol"}


def test_the_key_tree_opens_a_prefix_and_an_entry(browser: WebDriver, path: Path) -> None:
    with served(path) as server:
        open_page(browser, server.url)
        browser.find_element(By.CSS_SELECTOR, '#keys tr.dir[data-prefix="research_results/"]').click()
        until(browser, lambda d: attrs(d, "#keys tr.key", "data-key") == [f"research_results/q{n}" for n in range(3)])
        cli(path, "write", "research_results/q3", '{"answer": 43}', "--author", "atlas")
        until(browser, lambda d: "research_results/q3" in attrs(d, "#keys tr.key", "data-key"))
        cells = texts(browser, '#keys tr.key[data-key="research_results/q3"] td')
        assert cells[:4] == ["q3", '{"answer":43}', "1", "atlas"]
        browser.find_element(By.CSS_SELECTOR, '#keys tr.key[data-key="research_results/q3"]').click()
        until(browser, lambda d: '"answer": 43' in d.find_element(By.ID, "entry").text)


def test_posting_into_a_conversation_when_allowed(browser: WebDriver, path: Path) -> None:
    with served(path, "--allow-post", "--as", "bob") as server:
        open_page(browser, server.url)
        assert browser.find_element(By.ID, "mode").text == "posting as bob"
        until(browser, lambda d: d.find_element(By.ID, "say").is_displayed())
        browser.find_element(By.ID, "say-text").send_keys("posted from the page\n")
        until(browser, lambda d: texts(d, "#chat .turn .text")[-1:] == ["posted from the page"])
    with Board.open(path) as board:
        (meta,) = conversations.all_conversations(board)
        assert [(t.sender, t.text) for t in conversations.turns(board, meta["id"])][-1] == (
            "bob",
            "posted from the page",
        )


def test_answering_a_request_from_the_page(browser: WebDriver, path: Path) -> None:
    with served(path, "--allow-post", "--as", "bob") as server:
        open_page(browser, server.url)
        ask = ["--as", "atlas", "request", "bob", '"ready?"', "--timeout", "60"]
        asker = subprocess.Popen(
            [sys.executable, "-m", "blackboard", "--board", str(path), *ask],
            env=cli_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            field = until(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#inbox form.reply input"))[0]
            field.send_keys('{"ready": true}\n')
            out, _ = asker.communicate(timeout=60)
        finally:
            if asker.poll() is None:
                asker.kill()
                asker.communicate()
        assert asker.returncode == 0
        assert '"ready":true' in out.replace(" ", "")
        until(browser, lambda d: not d.find_elements(By.CSS_SELECTOR, "#inbox tr"))  # acked with the reply


def test_a_read_only_page_offers_no_posting(browser: WebDriver, path: Path) -> None:
    with served(path) as server:
        open_page(browser, server.url)
        until(browser, lambda d: len(texts(d, "#chat .turn")) == 3)
        assert browser.find_element(By.ID, "mode").text == "read-only"
        assert not browser.find_element(By.ID, "say").is_displayed()


WRITER = """
import sys, time
from blackboard import Board
board = Board.open(sys.argv[1], author="burst")
start = time.monotonic()
for n in range(300):  # 100 events/s for 3 s
    board.write(f"burst/{n % 50:02d}", {"n": n})
    time.sleep(max(0.0, start + (n + 1) / 100 - time.monotonic()))
board.write("burst/done", True)
board.close()
"""


def test_10000_keys_and_100_events_per_second(browser: WebDriver, tmp_path: Path, artifacts: Path) -> None:
    with Board.init(tmp_path / "big", author="filler") as board, board.transaction() as tx:
        for i in range(10_000):
            tx.write(f"items/{i // 100:03d}/{i:05d}", {"i": i, "pad": "x" * 50})
    with served(tmp_path / "big") as server:
        started = time.monotonic()
        open_page(browser, server.url)
        until(browser, lambda d: d.find_element(By.ID, "keys-count").text == "10000")
        loaded = time.monotonic() - started
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "big")], env=cli_env())
        try:
            slowest = 0.0
            while writer.poll() is None:  # the page answers while the burst comes in
                asked = time.monotonic()
                browser.execute_script("return document.querySelectorAll('#log tr').length")
                slowest = max(slowest, time.monotonic() - asked)
            assert writer.wait(timeout=60) == 0
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
        until(browser, lambda d: "burst/done" in attrs(d, "#log tr.ev", "data-key")[:1])
        rows = len(browser.find_elements(By.CSS_SELECTOR, "#log tr.ev"))
        browser.save_screenshot(str(artifacts / "big.png"))
    print(f"10,000 keys loaded in {loaded:.2f} s; slowest script round trip during the burst {slowest * 1000:.0f} ms")
    assert rows == 500  # capped
    assert loaded < 15, loaded
    assert slowest < 2.0, slowest
