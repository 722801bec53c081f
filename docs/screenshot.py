"""Remake docs/serve.png, the README's picture of `blackboard serve`: a board where two agents
split a survey, served and photographed in headless Chromium (as tests/test_web_browser.py does).

    .venv/bin/python docs/screenshot.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from blackboard import Board
from blackboard.agents import conversations, presence
from blackboard.work import lease, queue, tasks

OUT = Path(__file__).with_name("serve.png")


def fill(path: Path) -> str:
    """The board of the picture; returns its conversation's id."""
    with Board.init(path, author="setup") as board:
        presence.register(board, "atlas", capabilities=["search"], description="finds papers", pid=None)
        presence.register(board, "bob", capabilities=["summarize"], description="writes summaries", pid=None)
        presence.register(board, "w1", capabilities=["crawl"], pid=None)
        cid, _ = conversations.create(board, "atlas", ["bob"], topic="split the survey", turn_limit=10)
        for who, text in [
            ("atlas", "I take the search: attention papers since 2017"),
            ("bob", "I summarize each one as it lands in research_results/"),
            ("atlas", "first three are in"),
            ("bob", "on it"),
        ]:
            conversations.say(board, who, cid, text)
        first = tasks.add(board, "collect sources")
        tasks.add(board, "write the summary", blocked_by=[first.id])
        tasks.claim_next(board, "atlas")
        for n, paper in enumerate(["arxiv:1706.03762", "arxiv:1810.04805", "arxiv:2005.14165"]):
            board.write(f"research_results/q{n}", {"paper": paper, "relevant": True}, author="atlas")
            queue.push(board, "crawl/", {"url": f"https://arxiv.org/abs/{paper[6:]}"}, author="atlas")
        with queue.Consumer(board, "crawl/", "crawlers", "w1", lease=300) as consumer:
            consumer.take()
        lease.claim(board, "summary-draft", "bob", ttl=300)
        board.write("analysis/q0", {"verdict": "plausible", "by": "bob"}, author="bob")
    return cid


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "board"
        cid = fill(path)
        server = subprocess.Popen(
            [sys.executable, "-m", "blackboard", "serve", "--board", str(path), "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = server.stdout.readline().split()[0]
            options = Options()
            options.binary_location = "/usr/bin/chromium"
            for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,860"):
                options.add_argument(flag)
            options.add_argument(f"--user-data-dir={tmp}/profile")
            driver = webdriver.Chrome(options=options, service=Service(executable_path="/usr/bin/chromedriver"))
            try:
                driver.get(url)
                WebDriverWait(driver, 30).until(lambda d: d.find_element("id", "status").text == "live")
                subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "blackboard",
                        "--board",
                        str(path),
                        "--as",
                        "bob",
                        "say",
                        cid,
                        "the summary is up",
                    ],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                time.sleep(1.5)  # a picture, not a test: let the live rows settle
                driver.save_screenshot(str(OUT))
            finally:
                driver.quit()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(OUT)


if __name__ == "__main__":
    main()
