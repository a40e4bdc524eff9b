"""Real-browser helpers for the web app's tests: Debian's chromium driven by Playwright for
Python (never a browser Playwright downloads), with Chromium's fake camera and microphone.

The fixtures are in ``test_browser.py``: one browser per test module, one *context* per
daemon (cookies belong to a host, not to a port: two daemons' sessions on 127.0.0.1 must not
share a cookie jar)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.harness import Daemon, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = os.environ.get("P2PCHAT_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 15_000


def skip_reason() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    if not (os.path.exists(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright for Python is not installed (pip install playwright)"
    return ""


class WebPage:
    """One daemon's web app in its own browser context, logged in through ``web.info``'s
    login URL exactly as a user opens the link ``p2pchat web`` prints."""

    def __init__(
        self,
        browser: Browser,
        daemon: Daemon,
        shots: Path,
        viewport: dict[str, int],
        before_open: Callable[[Any], None] | None = None,
    ):
        self.daemon = daemon
        self.shots = shots
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        info = wait_for(
            lambda: daemon.call("web.info")["login_url"] and daemon.call("web.info"),
            what=f"{daemon.name}'s web app",
        )
        self.url: str = info["url"]
        self.context = browser.new_context(
            viewport=viewport,  # type: ignore[arg-type]
            accept_downloads=True,
            permissions=["camera", "microphone", "clipboard-read", "clipboard-write"],
        )
        self.context.set_default_timeout(TIMEOUT_MS)
        if before_open is not None:  # e.g. routes, which must exist before the page loads
            before_open(self.context)
        self.page: Page = self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)
        self.page.goto(info["login_url"])
        self.page.wait_for_selector("[data-testid=app] [data-testid=side-status]")

    def _console(self, message: Any) -> None:
        # A 401 before logging in, and refused connections while a daemon is down, are the
        # page working as meant; anything else the page logs as an error is a failure.
        expected = (
            "status of 401",
            "ERR_CONNECTION_",
            "ERR_EMPTY_RESPONSE",
            "ERR_SOCKET_NOT_CONNECTED",
            "WebSocket connection to",
        )
        if message.type == "error" and not any(e in message.text for e in expected):
            self.errors.append(message.text)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def shot(self, name: str, clean: bool = False) -> Path:
        """A screenshot into the test's tmp dir; ``clean`` leaves passing notices (toasts)
        out of the picture (for the README's screenshots)."""
        path = self.shots / f"{name}.png"
        # Through the CSSOM: the page's CSP refuses Playwright's injected <style>.
        hide = "v => { const t = document.querySelector('.toasts'); if (t) t.style.display = v; }"
        if clean:
            self.page.evaluate(hide, "none")
        self.page.screenshot(path=str(path))
        if clean:
            self.page.evaluate(hide, "")
        return path

    def close(self) -> None:
        self.context.close()
