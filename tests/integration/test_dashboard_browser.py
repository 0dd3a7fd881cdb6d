"""The dashboard as a user sees it: `abflow dashboard` serving a real store, loaded in headless Chromium.

Starts the real command (so the CLI, `streamlit run` and the 127.0.0.1 binding are exercised), waits for
Streamlit's health endpoint, then drives Debian's Chromium over the DevTools protocol (see
`tests/helpers/headless_chromium.py` for why not `--dump-dom`), checks the rendered text and saves
screenshots as artefacts under the test's tmp dir.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from experiment.results.store import ResultsStore
from tests.helpers.fill_store import definition_dict, fill_store, make_experiment
from tests.helpers.headless_chromium import capture, chromium_path, open_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(
        chromium_path() is None, reason="chromium is not installed (`apt-get install chromium`; .ci/run does it)"
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _abflow() -> list[str]:
    script = Path(sys.executable).with_name("abflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "experiment.cli.main"]


@contextmanager
def _dashboard(store: Path, root: Path, refresh: str) -> Iterator[tuple[str, int]]:
    """Run `abflow dashboard` on a free port until the block ends; yields (url, port) once it is healthy."""
    port = _free_port()
    log_path = root / f"server-{port}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [*_abflow(), "dashboard", "--port", str(port), "--store", str(store), "--refresh", refresh],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                        if response.read().strip() == b"ok":
                            break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"dashboard did not come up on {url} (exit code {proc.poll()}): {log_path.read_text()[-2000:]}"
                    )
                time.sleep(0.3)
            yield url, port
        finally:
            os.killpg(proc.pid, signal.SIGTERM)  # `abflow dashboard` has become the streamlit server (exec)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """`abflow dashboard` serving a store with two experiments and a few dead letters (no auto-refresh)."""
    root = tmp_path_factory.mktemp("dashboard-browser")
    store = root / "results.duckdb"
    winner = fill_store(store, n_customers=20_000, seed=7)
    fill_store(store, make_experiment(n_customers=2_000, seed=2, definition=definition_dict("cat62-v1")))
    with ResultsStore(store) as results:
        results.record_batch(
            dead_letters=[
                {"source_topic": "sessions", "partition": 0, "offset": k, "raw": "x", "error": "bad json"}
                for k in range(4)
            ]
        )
    with _dashboard(store, root, refresh="0") as (url, port):
        yield {"url": url, "root": root, "winner": winner, "port": port}


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(address)
    return found


def test_server_binds_to_localhost_only(server: dict) -> None:
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc/net/tcp to list listening sockets")
    assert _listeners(server["port"]) == ["0100007F"]  # 127.0.0.1, little-endian hex; nothing else


def test_experiment_page_renders_in_chromium(server: dict, tmp_path: Path) -> None:
    shot = tmp_path / "dashboard-experiment.png"
    page = capture(
        f"{server['url']}/?experiment=cat61-v1",
        wait_for=["Show category 61 (cat61-v1)", "Dead-lettered records", "Export report files"],
        screenshot=shot,
        width=1400,
        height=2600,
    )
    text = page.text
    stats = server["winner"].expected_stats
    c, t = stats["control"], stats["treatment"]
    total = c.users + t.users
    assert f"Sample size: {total:,} of 20,000 planned users" in text
    assert "SHIP treatment" in text
    assert "Ship 'treatment': conversion changes by" in text
    assert f"{(t.conversions / t.users) / (c.conversions / c.users) - 1:.2%}" in text  # relative lift metric
    assert "Sample-ratio mismatch" not in text
    assert "Dead-lettered records\n\n4" in text
    assert shot.stat().st_size > 20_000, "the screenshot should show a rendered page, not a blank one"


def test_experiment_list_renders_in_chromium(server: dict, tmp_path: Path) -> None:
    shot = tmp_path / "dashboard-list.png"
    page = capture(server["url"], wait_for=["Experiments", "Verdicts", "cat62-v1"], screenshot=shot, height=1400)
    text = page.text
    assert "SHIP treatment cat61-v1 — Ship 'treatment': conversion changes by" in text
    assert "KEEP RUNNING cat62-v1 — Keep running, not enough power yet: 2000 of 20000 planned users" in text
    assert "Users in experiments\n\n22,000" in text
    assert "Experiments\n\n2" in text
    assert "Running\n\n2" in text
    assert shot.exists()


def test_running_experiment_refreshes_itself_when_data_arrives(tmp_path: Path) -> None:
    store = tmp_path / "live.duckdb"
    exp = fill_store(store, n_customers=1_000, seed=1)
    with _dashboard(store, tmp_path, refresh="1") as (url, _), open_page(1200, 900) as page:
        page.call("Page.navigate", {"url": url})

        def wait_for(text: str, timeout: float = 30.0) -> float:
            started = time.monotonic()
            while text not in (page.evaluate("document.body ? document.body.innerText : ''") or ""):
                if time.monotonic() - started > timeout:
                    raise AssertionError(f"{text!r} never appeared; page: {page.evaluate('document.body.innerText')!r}")
                time.sleep(0.2)
            return time.monotonic() - started

        wait_for("Users in experiments\n\n1,000")
        assert "Auto-refresh every 1 s" in page.evaluate("document.body.innerText")
        with ResultsStore(store) as results:  # what `abflow collect` does: a short write transaction
            results.record_assignment(
                {**exp.assignments[0], "event_id": "late-1", "customer_id": "late-customer", "first_exposure": True}
            )
        waited = wait_for("Users in experiments\n\n1,001", timeout=15.0)
        assert waited < 15.0  # no reload: the fragment re-ran on its own


def test_model_arms_and_segments_on_demand_in_chromium(tmp_path: Path) -> None:
    """Three arms (two models): the arms table with P(best); the Segments expander loads only when opened."""
    from tests.helpers.arms_segments import three_arm_definition, with_segments

    store = tmp_path / "arms.duckdb"
    exp, _ = with_segments(make_experiment(n_customers=6_000, seed=8, definition=three_arm_definition()))
    fill_store(store, exp)
    with _dashboard(store, tmp_path, refresh="0") as (url, _), open_page(1400, 3200) as page:
        page.call("Page.enable")
        page.call("Page.navigate", {"url": f"{url}/?experiment=champ-v1"})

        def text() -> str:
            return str(page.evaluate("document.body ? document.body.innerText : ''") or "")

        def wait_for(needle: str, timeout: float = 45.0) -> str:
            deadline = time.monotonic() + timeout
            while needle not in (current := text()):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{needle!r} never appeared; page: {current[-3000:]!r}")
                time.sleep(0.25)
            return current

        shown = wait_for("Segments: lift by customer segment")
        # (tables are drawn on a canvas, so the text is the header and the caption under them)
        assert "P(best): the probability that the arm has the highest conversion rate" in wait_for("Arms")
        assert "Dimension" not in shown, "the segments must not load before the expander is opened"
        page.evaluate("[...document.querySelectorAll('summary')].find(s => s.innerText.includes('Segments')).click()")
        wait_for("Dimension")
        # The dimension picker is the page's last select box (the sidebar's experiment picker is the first). Typed
        # keys are lost while the freshly opened expander is still being drawn, so the pick is tried again until the
        # page answers (at most 4 times, 15 s each).
        for attempt in range(4):
            page.evaluate(
                "(() => { const box = [...document.querySelectorAll('[data-testid=\"stSelectbox\"] input')].pop();"
                " box.focus(); box.click(); })()"
            )
            page.call("Input.insertText", {"text": "age_band"})
            for kind in ("keyDown", "keyUp"):
                page.call(
                    "Input.dispatchKeyEvent",
                    {"type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13},
                )
            try:
                shown = wait_for("across age_band (Q=", timeout=15.0)
                break
            except AssertionError:
                if attempt == 3:
                    raise
        assert "the lift of 'challenger'" in shown.lower() and "the lift of 'champion'" in shown.lower()
        assert "35-44" in wait_for("age_band: lift of conversion by segment")  # the forest plot's title and rows
        shot = page.call("Page.captureScreenshot", {"format": "png"})
        (tmp_path / "dashboard-arms-segments.png").write_bytes(base64.b64decode(shot["data"]))
