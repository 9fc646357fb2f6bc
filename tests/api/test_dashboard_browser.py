"""The dashboard in a real browser: Debian's chromium driven by Playwright
(the system browser through ``executable_path``; nothing is downloaded), against
a real collector process and a real watchdog. Screenshots go to each test's
tmp_path. ``deploy/install-test-deps.sh`` (run by ``make test``) installs chromium.

Waits are on page conditions with deadlines (Playwright's wait_for_function),
never sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from deltawire.testing.harness import (
    CollectorProcess,
    collector_process,
    make_samples,
    stream_session,
)

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
DEADLINE_MS = 20_000  # the goal: live data in the browser within 20 s

# The watched application: announces itself with an event, burns some CPU,
# and exits 5 on SIGTERM (which the watchdog forwards).
APP = r"""
import signal, sys, time
from deltawire.watchdog.client import emit
signal.signal(signal.SIGTERM, lambda *a: sys.exit(5))
emit("app.ready", {"version": "1.2"})
while True:
    sum(range(200_000))
    time.sleep(0.01)
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is missing: run deploy/install-test-deps.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, tmp_path: pathlib.Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(DEADLINE_MS)
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
def collector(tmp_path: pathlib.Path) -> Iterator[CollectorProcess]:
    with collector_process(tmp_path, http=True) as cp:
        yield cp


def base(cp: CollectorProcess) -> str:
    return f"http://127.0.0.1:{cp.http_port}"


def points(page: Any, field: str) -> int:
    return int(page.get_attribute(f'.plot[data-field="{field}"]', "data-points") or 0)


def test_a_watched_process_charts_live(
    page: Any, collector: CollectorProcess, tmp_path: pathlib.Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "deltawire.watchdog", "run",
         "--collector", f"127.0.0.1:{collector.port}", "--dashboard", base(collector),
         "--interval", "0.2", "--push-every", "2", "--spool-dir", str(tmp_path / "spool"),
         "--", sys.executable, "-c", APP],
        env=env, stderr=subprocess.PIPE, text=True,
        # Its own process group: a failing test kills the watched app with it,
        # which a SIGKILLed watchdog (rightly) leaves running.
        start_new_session=True,
    )  # fmt: skip
    try:
        assert watchdog.stderr is not None
        # Not a terminal: the announcement is a JSON line with the session's page.
        announced = json.loads(watchdog.stderr.readline())
        url = announced["dashboard"]
        assert url == f"{base(collector)}/ui/sessions/{announced['session']}"

        page.goto(url)
        cpu, rss = "process:cpu.percent", "process:mem.rss"
        page.wait_for_function(
            f"document.querySelector('.plot[data-field=\"{cpu}\"]')?.dataset.points > 0"
        )
        assert page.inner_text("#state") == "● live"
        page.wait_for_function("document.getElementById('live').textContent.includes('streaming')")
        before = points(page, cpu)
        # New samples arrive over GET /stream, not by reloading: the chart grows.
        page.wait_for_function(
            f"document.querySelector('.plot[data-field=\"{cpu}\"]').dataset.points >= {before + 5}"
        )
        assert points(page, rss) >= before + 5
        page.wait_for_selector("#events >> text=app.ready")
        page.screenshot(path=tmp_path / "session-live.png", full_page=True)

        # The end of the session and its exit code reach the open page.
        watchdog.send_signal(signal.SIGTERM)
        assert watchdog.wait(timeout=30) == 5
        page.wait_for_function("document.getElementById('state').textContent === 'exit 5'")
        page.screenshot(path=tmp_path / "session-ended.png", full_page=True)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(watchdog.pid, signal.SIGKILL)
        watchdog.wait()


def test_a_question_in_the_query_box(
    page: Any, collector: CollectorProcess, tmp_path: pathlib.Path
) -> None:
    with httpx.Client(base_url=base(collector), timeout=10) as http:
        for i in range(20):
            r = http.post("/metrics", json={"name": "requests", "value": i, "tags": ["web"]})
            assert r.status_code == 201, r.text
    page.goto(f"{base(collector)}/ui/query")
    page.fill("#prompt", "sum value of name requests last 24h")
    page.press("#prompt", "Enter")
    page.wait_for_selector("#interpreted")
    interpreted = page.inner_text("#interpreted")
    json.loads(interpreted)  # shown as the JSON the API answered
    assert '"sum"' in interpreted and '"requests"' in interpreted
    assert "190" in page.inner_text("#rows")  # 0 + 1 + ... + 19
    page.screenshot(path=tmp_path / "query-table.png", full_page=True)
    page.click("#as-chart")
    page.wait_for_selector("#query-chart")
    page.screenshot(path=tmp_path / "query-chart.png", full_page=True)

    # A question it cannot read says why and offers questions it can.
    page.fill("#prompt", "frobnicate the widgets")
    page.press("#prompt", "Enter")
    page.wait_for_selector("#query-error")
    assert page.locator(".examples a").count() > 4


def test_sessions_list_and_collector_health(
    page: Any, collector: CollectorProcess, tmp_path: pathlib.Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[2])}
    done = subprocess.run(
        [sys.executable, "-m", "deltawire.watchdog", "run", "--quiet",
         "--collector", f"127.0.0.1:{collector.port}", "--tag", "batch", "--interval", "0.2",
         "--spool-dir", str(tmp_path / "spool"), "--", "sh", "-c", "sleep 0.5; exit 3"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    page.goto(f"{base(collector)}/?tag=batch")
    page.wait_for_selector("#sessions tr[data-session] >> text=exit 3")
    assert page.locator("#sessions tr[data-session]").count() == 1
    page.select_option("select[name=state]", "live")  # no live session has this tag
    page.wait_for_function("!document.querySelector('#sessions tr[data-session]')")
    page.screenshot(path=tmp_path / "sessions.png", full_page=True)

    page.goto(f"{base(collector)}/ui/health")
    page.wait_for_function("document.querySelector('#t-conns .tile-value')?.textContent === '0'")
    stored = page.inner_text("#t-ingest .tile-label") + page.inner_text("#t-ingest")
    assert "documents stored" in stored
    page.screenshot(path=tmp_path / "health.png", full_page=True)


def test_a_long_session_is_charted_from_a_rollup_tier(
    page: Any, collector: CollectorProcess, tmp_path: pathlib.Path
) -> None:
    # Two hours of samples, one a second: the whole-session window reads
    # GET /aggregate by the minute (a rollup tier), not 7200 raw rows.
    trio.run(partial(stream_session, collector.port, "two-hours", make_samples(7200), chunk=500))
    page.goto(f"{base(collector)}/ui/sessions/two-hours")
    cpu = "process:cpu.percent"
    page.wait_for_function(f"document.querySelector('.plot[data-field=\"{cpu}\"]')?.dataset.tier")
    assert page.get_attribute(f'.plot[data-field="{cpu}"]', "data-tier") == "1m"
    assert 100 <= points(page, cpu) <= 121
    assert page.input_value("#window") == "session"
    page.screenshot(path=tmp_path / "session-tier.png", full_page=True)
    # A short window of the same session reads raw samples.
    page.select_option("#window", "5m")
    page.wait_for_function(
        f"document.querySelector('.plot[data-field=\"{cpu}\"]').dataset.tier === 'raw'"
    )
