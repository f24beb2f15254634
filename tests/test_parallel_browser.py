"""Visitors at once in a real browser: `python app.py --hosted --parallel N` (each browser context its own user) on
the browser tests' model, whose greedy replies never end early.

With 4 sequences, 4 sessions' replies stream at the same time: sampled every ~0.1 s, every reply keeps growing
while the others do. With 1 sequence, a second visitor's reply bubble shows its place in the queue until the
first reply is stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Page, expect

from moechat.gguf.tiny import write_tiny_gguf
from tests.app_server import StartApp, set_slider
from tests.models import BROWSER_MOE

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("parallel") / "moe.gguf", BROWSER_MOE)


def open_session(browser: Browser, url: str, max_tokens: int) -> Page:
    page = browser.new_context(viewport={"width": 1300, "height": 900}).new_page()
    page.goto(url)
    expect(page.locator("#gallery .thumbnail-item").first).to_be_visible(timeout=60_000)
    page.get_by_text("Persona, format and sampling").click()
    set_slider(page, "max_tok", max_tokens)  # also waits out the accordion's first moment (see set_slider)
    page.get_by_label("Greedy (repeatable)").check()
    page.locator("#gallery .thumbnail-item", has_text="Captain Juno").first.click()
    expect(page.locator("#char_info")).to_contain_text("Captain Juno", timeout=30_000)
    expect(page.get_by_test_id("bot")).to_have_count(1, timeout=30_000)  # the greeting
    return page


def send(page: Page, text: str) -> None:
    page.locator("#msg textarea").fill(text)
    page.locator("#msg textarea").press("Enter")


REPLY_LENGTH = """() => {
    const bots = document.querySelectorAll('[data-testid="bot"]');
    return [bots.length > 1 ? bots[1].innerText.length : 0, document.querySelectorAll('.generating').length];
}"""


def reply_lengths(pages: list[Page], timeout: float = 300) -> Iterator[tuple[float, list[int]]]:
    """(time, length of each page's reply) about every 0.1 s until no page is generating."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        seen = [p.evaluate(REPLY_LENGTH) for p in pages]
        yield now, [length for length, _ in seen]
        if all(length and not generating for length, generating in seen):
            return
        time.sleep(0.1)
    raise AssertionError("the replies did not finish")


def test_four_sessions_stream_at_the_same_time(browser: Browser, model: Path, tmp_path: Path, app_server: StartApp):
    server = app_server(model, tmp_path / "data", "--hosted", "--parallel", "4", "--n-ctx", "1024")
    pages = [open_session(browser, server.url, 160) for _ in range(4)]  # long enough to sample under load
    for i, page in enumerate(pages):
        send(page, f"Tell me a long story, number {i}.")
    samples = list(reply_lengths(pages))
    growth = [
        [t for (t, now), (_, before) in zip(samples[1:], samples, strict=False) if now[i] > before[i]] for i in range(4)
    ]
    assert all(growth), f"a reply never streamed: {[len(g) for g in growth]}"
    start, end = max(g[0] for g in growth), min(g[-1] for g in growth)
    assert start < end, "the replies streamed one after another, not at the same time"
    during = [sum(start <= t <= end for t in g) for g in growth]
    assert min(during) >= 3, f"growth samples per reply while all four streamed: {during}"
    for i, page in enumerate(pages):
        expect(page.get_by_test_id("user").last).to_contain_text(f"number {i}.")  # each its own chat
        expect(page.get_by_test_id("bot")).to_have_count(2)
    pages[0].get_by_role("tab", name="Model").click()
    expect(pages[0].locator("#model_panel")).to_contain_text("of 4 generating")


def test_a_visitor_beyond_the_slots_sees_its_place(browser: Browser, model: Path, tmp_path: Path, app_server: StartApp):
    server = app_server(model, tmp_path / "data", "--hosted", "--parallel", "1", "--n-ctx", "2048")
    first, second = open_session(browser, server.url, 1024), open_session(browser, server.url, 8)
    send(first, "Tell me a very long story.")
    expect(first.get_by_test_id("bot").nth(1)).to_contain_text("aaaaaaaa", timeout=60_000)  # streaming
    send(second, "And me?")
    expect(second.get_by_test_id("bot").nth(1)).to_contain_text("yours is next", timeout=30_000)
    first.locator("#stop").dispatch_event("click")  # no wait for a still frame: the page may be busy drawing
    expect(second.get_by_test_id("bot").nth(1)).to_contain_text("aaaa", timeout=60_000)
    expect(second.get_by_test_id("bot").nth(1)).not_to_contain_text("Waiting")
