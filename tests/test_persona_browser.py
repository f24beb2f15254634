"""The persona panel in a real browser: create a persona with a hostile name (shown as text), a new chat greets it
by name (`{{user}}` in Operator Ada's greeting), lock it to the chat (the lock wins over another pick), unlock,
make a default, delete."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Page, expect

from moechat.gguf.tiny import write_tiny_gguf
from moechat.library import persona_avatar_path
from moechat.store.store import Store
from tests.app_server import AppServer, StartApp, app_page, fill_and_hold
from tests.models import BROWSER_MOE

pytestmark = pytest.mark.browser
HOSTILE = "Zed <img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, module_app_server: StartApp) -> AppServer:
    root = tmp_path_factory.mktemp("personas")
    return module_app_server(write_tiny_gguf(root / "moe.gguf", BROWSER_MOE), root / "data", "--n-ctx", "2048")


@pytest.fixture
def page(browser: Browser, server: AppServer) -> Iterator[Page]:
    with app_page(browser, server.url) as pg:  # no script from any text may run
        yield pg


def choose(page: Page, label: str) -> None:
    page.locator("#persona_pick input").click()
    page.get_by_role("option", name=label, exact=True).click()


def test_persona_panel(page: Page) -> None:
    page.locator("#gallery .thumbnail-item", has_text="Operator Ada").first.click()
    expect(page.locator("#char_info")).to_contain_text("Operator Ada")
    page.get_by_text("Persona, format and sampling").click()
    status = page.locator("#persona_status")
    expect(status).to_contain_text("typed below")
    fill_and_hold(page.locator("#user_name textarea, #user_name input").first, HOSTILE)
    fill_and_hold(page.locator("#persona textarea").first, "A night-shift engineer.")
    page.locator("#persona_new").click()
    expect(status).to_contain_text(f"Turns use {HOSTILE} (picked)")
    page.locator("#new_chat").click()
    expect(page.get_by_test_id("bot").first).to_contain_text(f"Tell me what you need, {HOSTILE},")
    page.locator("#persona_lock_chat").click()
    expect(status).to_contain_text("(locked to this chat)")

    fill_and_hold(page.locator("#user_name textarea, #user_name input").first, "Yara")
    page.locator("#persona_new").click()  # picked now, but the chat's lock wins
    expect(status).to_contain_text(f"Turns use {HOSTILE} (locked to this chat). Unlock to use Yara.")
    page.locator("#persona_unlock").click()
    expect(status).to_contain_text("Turns use Yara (picked)")
    page.locator("#persona_default").click()
    expect(page.locator("#persona_pick input")).to_have_value("Yara · default")

    choose(page, f"{HOSTILE}")
    expect(page.locator("#persona textarea").first).to_have_value("A night-shift engineer.")
    page.locator("#persona_delete").click()
    expect(status).to_contain_text("Turns use Yara")
    expect(page.locator("#persona_pick input")).to_have_value("Yara · default")
    expect(page.locator("#persona_avatar img")).to_be_visible()


def test_the_users_messages_show_the_personas_avatar(page: Page, server: AppServer) -> None:
    page.locator("#gallery .thumbnail-item", has_text="Captain Juno").first.click()
    expect(page.locator("#char_info")).to_contain_text("Captain Juno")
    page.get_by_text("Persona, format and sampling").click()
    fill_and_hold(page.locator("#user_name textarea, #user_name input").first, "Quill")
    page.locator("#persona_new").click()
    expect(page.locator("#persona_status")).to_contain_text("Turns use Quill (picked)")
    page.locator("#msg textarea").fill("Who am I?")
    page.locator("#msg textarea").press("Enter")
    expect(page.get_by_test_id("user").last).to_contain_text("Who am I?", timeout=30_000)
    user_avatar = page.locator('#chatbot img[alt="user avatar"]').first  # none before: no persona, no picture
    expect(user_avatar).to_be_visible(timeout=15_000)
    expect(page.locator('#chatbot img[alt="bot avatar"]').first).to_be_visible()  # and Captain Juno's, as before
    with Store.open(server.data_dir) as store:
        (quill,) = [p for p in store.personas() if p.name == "Quill"]
        drawn = persona_avatar_path(server.data_dir, store.owner, quill.id)  # drawn from the name
    assert page.request.get(user_avatar.get_attribute("src") or "").body() == drawn.read_bytes()
