"""The web view (`blackboard serve`): one page that shows a board live, fed by the board's own watch.

`app.py` holds the routes, `feed.py` the live stream, `views.py` what each section of the page is
(one library call each), `static/` the page itself: plain HTML, CSS and JavaScript, no build step,
nothing fetched from the internet. Starlette, uvicorn and sse-starlette come with the `[web]`
extra; this package's `__init__` imports none of them, so `blackboard serve --help` works without.
"""

#: The port `blackboard serve` listens on unless told (`--port 0`: any free one, printed).
DEFAULT_PORT = 8642
DEFAULT_HOST = "127.0.0.1"
