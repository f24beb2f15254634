"""`python app.py` as a subprocess on a free port, and Debian's chromium: what the browser tests share."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]
ARGS += ["--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`python app.py` on a free port and a given data dir (conftest's `app_server` fixtures start them)."""

    def __init__(self, model: Path, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.model, self.data_dir, self.extra, self.port = model, data_dir, extra, free_port()
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
        self.url = f"http://127.0.0.1:{self.port}/"
        self.proc: subprocess.Popen | None = None
        self.log = data_dir.parent / f"app-{self.port}.log"

    def start(self, timeout: float = 90) -> None:
        cmd = [sys.executable, "app.py", "--model", str(self.model), "--port", str(self.port)]
        cmd += ["--data-dir", str(self.data_dir), "--threads", "1", "--n-ctx", "1024", *self.extra]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app.py exited: {self.log.read_text()[-2000:]}")
            try:
                urllib.request.urlopen(self.url + "v1/health", timeout=1)  # mounted last: the UI and the API serve
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"app.py did not answer within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


StartApp = Callable[..., AppServer]  # conftest's `app_server(model, data_dir, *app_args, env=…)` fixtures


def fill_and_hold(box: Locator, value: str, enter: bool = False) -> None:
    """Types `value` into a Gradio input and makes sure it stays there. Gradio renders an accordion's controls
    when it opens and may set a control back to its server-side value a moment after it appeared, undoing what
    was typed; so this types until the value has held for a second (the first try usually holds)."""
    from playwright.sync_api import expect

    for _ in range(10):
        box.fill(value)
        if enter:
            box.press("Enter")
        try:
            expect(box).not_to_have_value(value, timeout=1_000)
        except AssertionError:
            return  # held
    raise AssertionError(f"the input kept going back to {box.input_value()!r} instead of {value!r}")


def set_slider(page: Page, elem_id: str, value: int) -> None:
    """Sets a gr.Slider through its number box (Enter commits it), as a user would."""
    fill_and_hold(page.locator(f"#{elem_id} input[type=number]"), str(value), enter=True)


@contextmanager
def app_page(browser: Browser, url: str, height: int = 1100) -> Iterator[Page]:
    """A page of the app in a fresh browser context (its own visitor), once the gallery shows. Any dialog that
    opens (alert, confirm...: a script from some text ran) is dismissed and fails the test when the page closes."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1600, "height": height})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url)
    expect(page.locator("#gallery .thumbnail-item").first).to_be_visible(timeout=30_000)
    yield page
    context.close()
    assert dialogs == [], f"a script ran: {dialogs}"


def wait_idle(page: Page, timeout_ms: int = 90_000) -> None:
    """Until no output of the page is streaming (a turn that has not begun within 2 s counts as none) and no
    event is pending: the events chained after a turn (the per-character routing, the avatars) have run too. Gradio
    shows each output's status in a status tracker, hidden when complete; a chained event turns its outputs'
    trackers to pending in the same update that ends the turn's streaming."""
    from playwright.sync_api import TimeoutError as PWTimeout
    from playwright.sync_api import expect

    with suppress(PWTimeout):
        page.locator(".generating").first.wait_for(state="attached", timeout=2_000)
    expect(page.locator(".generating")).to_have_count(0, timeout=timeout_ms)
    expect(page.locator("[data-testid=status-tracker]:not(.hide)")).to_have_count(0, timeout=timeout_ms)


def send_message(page: Page, text: str, timeout_ms: int = 90_000) -> None:
    """Types a message, presses Enter and waits for the turn to end. The box empties when the turn begins (the
    message joins the chat), so a turn still waiting in Gradio's queue is not mistaken for one that ended."""
    from playwright.sync_api import expect

    box = page.locator("#msg textarea")
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("", timeout=timeout_ms)
    wait_idle(page, timeout_ms)
