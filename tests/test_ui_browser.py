"""Real-browser tests: `python app.py` on a generated MoE model, driven by Debian's chromium (headless).

The model (6 layers, 2 experts "Xwin"/"Pygmalion", top-2) favours one token under greedy decoding, so a greedy
reply never ends early: the stop test can click Stop mid-reply. Screenshots for the README go to assets/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
import json

from playwright.sync_api import Browser, Page, expect

from moechat.cards.card import Card, card_bytes
from moechat.gguf.tiny import write_tiny_gguf
from tests.app_server import AppServer, StartApp, app_page, fill_and_hold, send_message, set_slider, wait_idle
from tests.models import BROWSER_MOE, BROWSER_SECOND_MOE

pytestmark = pytest.mark.browser
HOSTILE = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, module_app_server: StartApp) -> AppServer:
    root = tmp_path_factory.mktemp("ui")
    return module_app_server(write_tiny_gguf(root / "moe.gguf", BROWSER_MOE), root / "data", "--n-ctx", "2048")


@pytest.fixture
def page(browser: Browser, server: AppServer) -> Iterator[Page]:
    with app_page(browser, server.url) as pg:  # no script from any text may run
        set_max_tokens(pg, 48)
        yield pg


def set_max_tokens(page: Page, n: int) -> None:
    page.get_by_text("Persona, format and sampling").click()
    set_slider(page, "max_tok", n)


def pick(page: Page, name: str) -> None:
    page.locator("#gallery .thumbnail-item", has_text=name).first.click()
    expect(page.locator("#char_info")).to_contain_text(name)
    wait_idle(page)


def test_chat_streams_with_coloured_tokens_and_heatmap(page: Page, server: AppServer) -> None:
    pick(page, "Captain Juno")
    expect(page.get_by_test_id("bot").first).to_contain_text("airlock")
    send_message(page, "Hello captain, what is our heading?")
    expect(page.get_by_test_id("user").last).to_contain_text("what is our heading?")
    expect(page.get_by_test_id("bot")).to_have_count(2)
    expect(page.get_by_test_id("bot").last).to_contain_text("% Xwin")  # the routing badge
    assert page.locator("#tokens .moe-tok").count() > 10
    expect(page.locator("#tokens .moe-legend")).to_contain_text("Pygmalion")
    expect(page.locator("#heatmap .js-plotly-plot")).to_be_visible()
    expect(page.locator("#bars .js-plotly-plot")).to_be_visible()
    expect(page.locator("#metrics")).to_contain_text("mutual information")
    page.get_by_role("tab", name="Model").click()
    expect(page.locator("#model_panel")).to_contain_text("tokens/s")
    page.get_by_role("tab", name="Chat").click()
    page.screenshot(path=str(server.data_dir.parent / "screenshot-chat.png"), full_page=True)


def test_regenerate_and_swipe(page: Page) -> None:
    expect(page.get_by_test_id("bot")).to_have_count(2, timeout=15_000)  # the chat is back after a reload
    page.locator("#regen").click()
    wait_idle(page)
    expect(page.get_by_test_id("bot").last).to_contain_text("swipe 2/2")
    page.locator("#swipe_prev").click()
    expect(page.get_by_test_id("bot").last).to_contain_text("swipe 1/2")
    page.locator("#swipe_next").click()
    expect(page.get_by_test_id("bot").last).to_contain_text("swipe 2/2")


def test_stop_mid_reply_and_what_is_pressed_meanwhile(page: Page) -> None:
    """While a reply streams, a second message stays in its box (not sent, not lost) and Regenerate is refused
    with a warning (one turn per tab); Stop ends the reply early."""
    page.get_by_label("Greedy (repeatable)").check()
    set_slider(page, "max_tok", 1024)
    before, users = page.get_by_test_id("bot").count(), page.get_by_test_id("user").count()
    box = page.locator("#msg textarea")
    box.fill("Tell me a very long story.")
    box.press("Enter")
    expect(page.get_by_test_id("bot")).to_have_count(before + 1, timeout=30_000)
    expect(page.get_by_test_id("bot").last).to_contain_text("aaaaaaaa", timeout=60_000)  # streaming has begun
    expect(box).to_have_value("")
    box.fill("And then what happened?")
    box.press("Enter")
    page.locator("#regen").click()
    expect(page.get_by_text("A reply is still being written in this tab")).to_be_visible(timeout=15_000)
    page.locator("#stop").click()
    wait_idle(page)
    n = page.locator("#tokens .moe-tok").count()
    assert 0 < n < 1000, f"{n} tokens: the reply was not stopped"
    expect(page.get_by_test_id("user")).to_have_count(users + 1)
    expect(page.get_by_test_id("user").last).to_contain_text("very long story")
    assert box.input_value() == "And then what happened?"


def test_history_survives_reload_and_restart(page: Page, server: AppServer) -> None:
    expect(page.get_by_test_id("user").first).to_contain_text("what is our heading?", timeout=15_000)
    page.reload()
    expect(page.get_by_test_id("user").first).to_contain_text("what is our heading?", timeout=15_000)
    server.stop()
    server.start()
    page.goto(server.url)
    expect(page.get_by_test_id("user").first).to_contain_text("what is our heading?", timeout=30_000)
    expect(page.get_by_test_id("user").last).to_contain_text("very long story")


def test_import_png_card_hostile_text_stays_text(page: Page, tmp_path: Path, server: AppServer) -> None:
    card = Card(
        name="Hostile Harry <b>bold</b>",
        description=HOSTILE,
        first_mes=f"<script>alert(2)</script> Hi! {HOSTILE}",
        creator_notes=f"notes {HOSTILE}",
        tags=["<b>bold</b>"],
    )
    path = tmp_path / "harry.png"
    path.write_bytes(card_bytes(card, "png"))
    page.get_by_role("tab", name="Characters").click()
    page.locator("#card_upload input[type=file]").set_input_files(str(path))
    toast = page.get_by_test_id("toast-text").filter(has_text="Imported Hostile Harry")
    expect(toast).to_have_text("Imported Hostile Harry <b>bold</b>.", timeout=30_000)  # a toast shows the name as text
    page.get_by_role("tab", name="Chat").click()
    expect(page.locator("#char_info")).to_contain_text(f"notes {HOSTILE}")
    expect(page.get_by_test_id("bot").first).to_contain_text("<script>alert(2)</script> Hi!")
    send_message(page, f"{HOSTILE} <script>alert(3)</script>")
    expect(page.get_by_test_id("user").last).to_contain_text(HOSTILE)
    expect(page.get_by_test_id("bot")).to_have_count(2)
    assert page.locator("#chatbot img[src=x], #char_info img[src=x], #chatbot script").count() == 0
    page.screenshot(path=str(server.data_dir.parent / "screenshot-import.png"), full_page=True)


def bots(page: Page):
    return page.get_by_test_id("bot")


def test_continue_and_impersonate(page: Page) -> None:
    pick(page, "Captain Juno")
    n = bots(page).count()
    before = bots(page).last.inner_text()
    page.locator("#continue").click()
    expect(bots(page).last).not_to_have_text(before, timeout=30_000)
    wait_idle(page)
    expect(bots(page)).to_have_count(n)
    assert len(bots(page).last.inner_text()) > len(before)  # the reply grew in place
    page.locator("#impersonate").click()
    wait_idle(page)
    expect(page.locator("#msg textarea")).not_to_have_value("", timeout=30_000)  # the draft lands in the input


def test_edit_and_delete_a_message(page: Page) -> None:
    pick(page, "Captain Juno")
    users = page.get_by_test_id("user")
    n = users.count()
    users.last.click()
    page.get_by_text("Selected message (click one in the chat)").click()
    expect(page.locator("#edit_box textarea")).not_to_have_value("", timeout=15_000)
    fill_and_hold(page.locator("#edit_box textarea"), "edited by the browser test")
    page.locator("#save_edit").click()
    expect(users.last).to_contain_text("edited by the browser test")
    users.last.click()
    expect(page.locator("#edit_box textarea")).to_have_value("edited by the browser test")
    page.locator("#delete_msg").click()
    expect(users).to_have_count(n - 1)


def test_branch_and_export_sillytavern_jsonl(page: Page) -> None:
    pick(page, "Captain Juno")
    n = bots(page).count()
    page.locator("#branch").click()
    expect(page.get_by_text("Branched: you are now in the new chat.")).to_be_visible(timeout=15_000)
    expect(bots(page)).to_have_count(n)
    page.locator("#export_jsonl").click()
    link = page.locator("#chat_file a").first
    expect(link).to_be_visible(timeout=15_000)
    with page.expect_download() as download:
        link.click()
    lines = [json.loads(line) for line in Path(download.value.path()).read_text().splitlines()]
    assert lines[0]["character_name"].startswith("Captain Juno")
    assert all("mes" in line and "is_user" in line for line in lines[1:]) and len(lines) > 2


def test_steered_swipes_top1_and_solo(page: Page) -> None:
    pick(page, "Captain Juno")
    page.locator("#steer_top1").click()
    wait_idle(page)
    expect(bots(page).last).to_contain_text("top-1 routing")
    expect(bots(page).last).to_contain_text("swipe")
    assert page.locator("#tokens .moe-tok").count() > 5  # top-1 replies have routing
    page.locator("#steer_solo").click()
    wait_idle(page)
    expect(bots(page).last).to_contain_text("solo: Xwin", timeout=30_000)
    expect(page.locator("#tokens")).to_contain_text("no routing", ignore_case=True)  # said, not broken
    page.locator("#swipe_prev").click()
    expect(bots(page).last).to_contain_text("top-1 routing")


def test_switch_to_a_second_model_and_chat(page: Page, server: AppServer) -> None:
    second = write_tiny_gguf(server.data_dir.parent / "second.gguf", BROWSER_SECOND_MOE)
    page.get_by_role("tab", name="Model").click()
    page.locator("#model_in textarea, #model_in input").first.fill(str(second))
    page.locator("#model_load").click()
    expect(page.locator("#model_panel")).to_contain_text("Gamma", timeout=60_000)
    expect(page.locator("#model_status")).to_contain_text("second.gguf")
    page.get_by_role("tab", name="Chat").click()
    pick(page, "Captain Juno")
    n = bots(page).count()
    send_message(page, "And now, with the new model?")
    expect(bots(page)).to_have_count(n + 1)
    expect(page.locator("#tokens .moe-legend")).to_contain_text("Delta")


def test_world_info_and_sillytavern_presets_are_imported(page: Page, tmp_path: Path) -> None:
    pick(page, "Captain Juno")
    world = tmp_path / "Harbor.json"
    entry = {"uid": 0, "key": ["harbor"], "content": "The harbor is old.", "order": 100, "position": 0}
    world.write_text(json.dumps({"entries": {"0": entry}}))
    page.get_by_role("tab", name="Characters").click()
    page.locator("#world_upload input[type=file]").set_input_files(str(world))
    expect(page.get_by_text("Imported World Info 'Harbor' (1 entries).")).to_be_visible(timeout=30_000)
    page.locator("#world_chat").click()
    expect(page.locator("#world_status")).to_contain_text("this chat: Harbor")
    preset = tmp_path / "Brief.json"
    preset.write_text(
        json.dumps(
            {
                "name": "Brief",
                "input_sequence": "## Ask:",
                "wrap": True,
                "output_sequence": "## Answer:",
                "output_suffix": "\n\n",
                "input_suffix": "\n\n",
            }
        )
    )
    page.get_by_role("tab", name="Chat").click()
    page.locator("#st_instruct input[type=file]").set_input_files(str(preset))
    expect(page.locator("#st_status")).to_contain_text("SillyTavern preset in use: Brief + Default", timeout=30_000)
    send_message(page, "Tell me about the harbor.")
    page.get_by_text("Context meter").click()
    expect(page.locator("#context")).to_contain_text("Harbor #0: key 'harbor'")
    expect(page.locator("#context")).to_contain_text("prompt")  # the preset's report: one section
