"""The flagship's shape in the browser: `python app.py` on tiny_gguf.FLAGSHIP (PygWin-2x7B's structure at width 64:
32 layers, experts "Xwin"/"Pygmalion" top-2, a 32,000-token Llama-2-style vocabulary), driven by Debian's chromium.
A chat turn shows its routing (coloured tokens, a heatmap of all 32 layers, per-expert bars), the Model tab reports
the shape, and a solo swipe replies with one expert and says it has no routing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect, sync_playwright

from moechat.gguf.tiny import FLAGSHIP, write_tiny_gguf
from tests.app_server import ARGS, CHROMIUM, AppServer, send_message, set_slider, wait_idle

pytestmark = [pytest.mark.browser, pytest.mark.slow]
HEATMAP = "#heatmap .js-plotly-plot"

if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    root = tmp_path_factory.mktemp("flagship-ui")
    srv = AppServer(write_tiny_gguf(root / "pygwin-shape.F16.gguf", FLAGSHIP), root / "data")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def page(server: AppServer) -> Iterator[Page]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        pg = browser.new_page(viewport={"width": 1600, "height": 1100})
        pg.goto(server.url)
        expect(pg.locator("#gallery .thumbnail-item").first).to_be_visible(timeout=30_000)
        yield pg
        browser.close()


def test_chat_turn_shows_routing_of_all_32_layers_then_a_solo_swipe(page: Page) -> None:
    page.get_by_text("Persona, format and sampling").click()
    set_slider(page, "max_tok", 16)
    page.locator("#gallery .thumbnail-item", has_text="Captain Juno").first.click()
    expect(page.locator("#char_info")).to_contain_text("Captain Juno")
    wait_idle(page)
    send_message(page, "Hello captain, what is our heading?")
    bots = page.get_by_test_id("bot")
    expect(bots).to_have_count(2)
    expect(bots.last).to_contain_text("% Xwin")  # the reply's routing badge
    n_tokens = page.locator("#tokens .moe-tok").count()
    assert 0 < n_tokens <= 16
    expect(page.locator("#tokens .moe-legend")).to_contain_text("Pygmalion")
    expect(page.locator(HEATMAP)).to_be_visible()
    drawn = (
        f"() => {{ const z = document.querySelector('{HEATMAP}').calcdata[0][0].z; return [z.length, z[0].length]; }}"
    )
    rows, cols = page.evaluate(drawn)  # the cells plotly drew: a row per layer, a column per token
    assert (rows, cols) == (32, n_tokens)
    expect(page.locator("#bars .js-plotly-plot")).to_be_visible()
    expect(page.locator("#metrics")).to_contain_text("mutual information")

    page.get_by_role("tab", name="Model").click()
    panel = page.locator("#model_panel")
    expect(panel).to_contain_text("2 (Xwin, Pygmalion), 2 used per token")
    expect(panel.get_by_role("row", name="layers 32", exact=True)).to_be_visible()
    expect(panel.get_by_role("row", name="quant F16", exact=True)).to_be_visible()
    expect(panel).to_contain_text("tokens/s")
    page.get_by_role("tab", name="Chat").click()

    page.locator("#steer_solo").click()
    wait_idle(page)
    expect(bots.last).to_contain_text("solo: Xwin", timeout=30_000)
    expect(page.locator("#tokens")).to_contain_text("no routing", ignore_case=True)
