"""Debian's chromium driven by Playwright, for the browser tests and ``make bench``
part ``dashboard``: the system browser through ``executable_path``, never a
downloaded one. ``deploy/install-test-deps.sh`` (run by ``make test`` and
``make bench``) installs it."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

__all__ = ["CHART_DRAWN", "CHROMIUM", "chromium"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip

#: The performance mark the dashboard sets when its first chart is drawn with
#: data (frontend/src/chart.js): its startTime is ms since navigation start.
CHART_DRAWN = "deltawire:chart-drawn"


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium (a Playwright ``Browser``); a clear error when missing."""
    if not os.path.exists(CHROMIUM):
        raise RuntimeError("chromium is missing: run deploy/install-test-deps.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=_FLAGS)
        try:
            yield browser
        finally:
            browser.close()
