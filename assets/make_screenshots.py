"""Retake the README screenshots with the DEMO model: starts `python app.py --model demo` on a free port with a
fresh data dir, drives Debian's chromium (Playwright) through a chat, and writes assets/screenshot-chat.png.

    python assets/make_screenshots.py [--data-dir DIR]   # the demo model is built once into DIR (then cached)

Not part of the test suite: building and running the demo model takes minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("CHROMIUM_PATH") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-dev-shm-usage"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(data_dir: Path, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "app.py", "--model", "demo", "--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    deadline = time.monotonic() + 900  # the first run builds the demo model
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app.py exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except OSError:
            time.sleep(1)
    proc.terminate()
    raise SystemExit("app.py did not start in 15 minutes")


def shoot(url: str, out: Path) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        page.goto(url)
        page.locator("#gallery .thumbnail-item").first.click()
        page.locator("#msg textarea").fill("Hello! Tell me about yourself.")
        page.locator("#msg textarea").press("Enter")
        expect(page.get_by_test_id("bot")).to_have_count(2, timeout=120_000)
        expect(page.locator(".generating")).to_have_count(0, timeout=300_000)
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="keeps the built demo model between runs")
    args = parser.parse_args()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="moechat-shots-"))
    port = free_port()
    proc = start(data_dir, port)
    try:
        shoot(f"http://127.0.0.1:{port}/", ROOT / "assets" / "screenshot-chat.png")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"wrote {ROOT / 'assets' / 'screenshot-chat.png'}")


if __name__ == "__main__":
    main()
