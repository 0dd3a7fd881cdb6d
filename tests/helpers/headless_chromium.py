"""Drive Debian's headless Chromium over the DevTools protocol: load a page, wait for text, screenshot it.

Why not just `chromium --dump-dom --virtual-time-budget=...`: a Streamlit page is an empty shell until the
script's output arrives over a websocket, and virtual time does not wait for websocket traffic, so the
one-shot flags capture a blank page. Here we navigate, poll `document.body.innerText` in real time until the
expected text is there and the script has finished, then read the text and take the screenshot.

Also usable by hand (e.g. for the screenshot in docs/):
    python -m tests.helpers.headless_chromium URL OUT.png --wait-for "Verdict" [--width 1400 --height 2600]
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "BrowserPage", "PageCapture", "capture", "chromium_path", "open_page"]

CHROMIUM = "/usr/bin/chromium"
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)


def chromium_path() -> str | None:
    """The Chromium binary, or None when it is not installed."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass(frozen=True)
class PageCapture:
    """What the page showed."""

    text: str
    screenshot: Path | None


class BrowserPage:
    """One DevTools websocket session on one page target."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        """Send one command and return its result (events arriving meanwhile are skipped)."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"DevTools call {method} got no answer within {timeout}s")
            reply = json.loads(self._ws.recv(timeout=left))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools call {method} failed: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return result.get("result", {}).get("value")


@contextmanager
def open_page(width: int = 1400, height: int = 2400, startup_timeout: float = 30.0) -> Iterator[BrowserPage]:
    """Start headless Chromium (own temporary profile) and yield a DevTools session on its first page."""
    from websockets.sync.client import connect

    binary = chromium_path()
    if binary is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    profile = tempfile.mkdtemp(prefix="abflow-chromium-")
    try:
        proc = subprocess.Popen(
            [binary, *_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # its renderer/utility children share the group, so they can be stopped too
        )
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + startup_timeout
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start (exit code {proc.poll()})")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
                targets = json.load(response)
            page = next(t for t in targets if t.get("type") == "page")
            with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
                browser_page = BrowserPage(ws)
                browser_page.call(
                    "Emulation.setDeviceMetricsOverride",
                    {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                )
                yield browser_page
        finally:
            _stop_group(proc)
    finally:
        _remove_profile(Path(profile))


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop Chromium and every child it forked; children outliving the browser keep writing to the profile."""
    _signal_group(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _signal_group(proc.pid, signal.SIGKILL)  # the browser if it hung, and any child still alive
    proc.wait()


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _remove_profile(profile: Path, attempts: int = 20) -> None:
    """Delete the temporary profile; retried because a dying child may still flush a file into it."""
    for _ in range(attempts):
        shutil.rmtree(profile, ignore_errors=True)
        if not profile.exists():
            return
        time.sleep(0.25)
    raise OSError(f"could not remove the Chromium profile {profile}")


_STREAMLIT_IDLE = (
    "(() => { const app = document.querySelector('[data-testid=\"stApp\"]');"
    " return !!app && app.getAttribute('data-test-script-state') === 'notRunning'; })()"
)


def capture(
    url: str,
    *,
    wait_for: Sequence[str],
    screenshot: Path | None = None,
    width: int = 1400,
    height: int = 2400,
    timeout: float = 60.0,
    settle_s: float = 1.5,
) -> PageCapture:
    """Load `url`, wait until every string in `wait_for` is in the page text and Streamlit is idle, capture.

    Raises `TimeoutError` naming the missing strings (and showing the text so far) if they never appear.
    """
    with open_page(width, height) as page:
        page.call("Page.enable")
        page.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        text = ""
        while True:
            text = page.evaluate("document.body ? document.body.innerText : ''") or ""
            missing = [s for s in wait_for if s not in text]
            if not missing and page.evaluate(_STREAMLIT_IDLE):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"page {url} never showed {missing} within {timeout}s; text: {text[:2000]!r}")
            time.sleep(0.25)
        time.sleep(settle_s)  # let charts finish drawing
        text = page.evaluate("document.body.innerText") or text
        if screenshot is not None:
            shot = page.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["data"]))
    return PageCapture(text=text, screenshot=screenshot)


def main() -> None:
    """Command line: capture a page to a PNG and print its text."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--wait-for", action="append", default=[])
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args()
    result = capture(args.url, wait_for=args.wait_for, screenshot=args.out, width=args.width, height=args.height)
    print(result.text)


if __name__ == "__main__":
    main()
