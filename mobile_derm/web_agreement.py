"""The web app in a real browser: Playwright driving Debian's Chromium, headless.

``AppPage`` serves a site written by ``mobile_derm.web_app``, opens it on a phone-sized
viewport, records every request the page makes, and analyses photo files through the
page's own file input. ``web_agreement`` runs the page and ``Predictor`` (what
``mobile-derm predict`` runs) on the same photos and compares the gate verdict, top-1,
abstention and the malignancy decision at every operating point; it also times the
page's load and per-photo inference.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import time
from pathlib import Path

from mobile_derm.errors import ConfigError, DataError

CHROMIUM_ENV = "MOBILE_DERM_CHROMIUM"
# Headless in a closed network: no background connections, no first-run or update traffic
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
PHONE_VIEWPORT = {"width": 360, "height": 780}
LOAD_TIMEOUT_MS = 120_000
PHOTO_TIMEOUT_MS = 120_000
STATES_DONE = ("result", "error")


def chromium_path() -> Path:
    """The Chromium to drive: $MOBILE_DERM_CHROMIUM, else Debian's (``chromium`` on PATH)."""
    named = os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or shutil.which("chromium-browser")
    if not named or not Path(named).is_file():
        raise ConfigError(None, f"no Chromium found (install Debian's package 'chromium', or set {CHROMIUM_ENV})")
    return Path(named)


class AppPage:
    """``with AppPage(site) as page: page.analyse(photo)``: the site on a localhost server,
    one headless Chromium tab on a 360-px-wide viewport, every request recorded in
    ``requests`` (url, and whether it came after the app said it was ready)."""

    def __init__(self, site: str | Path, viewport: dict | None = None):
        from mobile_derm.web_app import SiteServer

        self.server = SiteServer(site)
        self.viewport = viewport or PHONE_VIEWPORT
        self.requests: list[dict] = []
        self.console: list[str] = []
        self.load_ms: float | None = None
        self._ready = False

    def __enter__(self) -> "AppPage":
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise ConfigError(None, "the browser tests need the 'playwright' package (pip install -e '.[test]')") from None
        self.url = self.server.__enter__()
        self._playwright = sync_playwright().start()
        try:
            self.browser = self._playwright.chromium.launch(executable_path=str(chromium_path()),
                                                            args=list(CHROMIUM_FLAGS), headless=True)
            self.page = self.browser.new_page(viewport=self.viewport)
        except Exception:
            self.__exit__(None, None, None)
            raise
        self.page.on("request", lambda r: self.requests.append({"url": r.url, "after_ready": self._ready}))
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        return self

    def open(self) -> dict:
        """Load the app and wait until it is ready or shows an error: {"state", "status", "error", "load_ms"}."""
        started = time.perf_counter()
        self.page.goto(self.url + "index.html")
        self.page.wait_for_function(
            "['ready', 'error'].includes(document.body.dataset.state)", timeout=LOAD_TIMEOUT_MS)
        self.load_ms = (time.perf_counter() - started) * 1000
        self._ready = True
        return {**self.page_state(), "load_ms": self.load_ms}

    def page_state(self) -> dict:
        return self.page.evaluate(
            "() => ({state: document.body.dataset.state, status: document.getElementById('status').textContent,"
            " error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent})")

    def analyse(self, photo: str | Path) -> dict:
        """Give the photo to the page's file input, as a person would; the page's result
        (the keys of ``mobile-derm predict``'s output, or {"error": message}) plus what
        the page shows in its error box."""
        self.page.set_input_files("#file", str(photo))
        self.page.wait_for_function(f"{list(STATES_DONE)}.includes(document.body.dataset.state)",
                                    timeout=PHOTO_TIMEOUT_MS)
        result = self.page.evaluate("() => window.mobileDerm.lastResult")
        return {**result, "shown_error": self.page_state()["error"]}

    def screenshot(self, path: str | Path) -> Path:
        self.page.screenshot(path=str(path), full_page=True)
        return Path(path)

    def __exit__(self, *exc) -> None:
        for close in (lambda: self.browser.close(), lambda: self._playwright.stop()):
            try:
                close()
            except Exception:  # already closed or never started
                pass
        self.server.__exit__(*exc)
