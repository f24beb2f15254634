"""A group chat in a real browser: create a three-character group, two user turns answered by each member in
list order (each reply wearing its member's picture), a member asked to speak, the per-character routing table
filled; a reload keeps it all; the chat exported as SillyTavern's group JSONL + group JSON imports again
unchanged. Screenshot for the README."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Page, expect

from moechat.commands import chats
from moechat.gguf.tiny import write_tiny_gguf
from moechat.library import avatar_path
from moechat.store.store import Store
from tests.app_server import AppServer, StartApp, app_page, fill_and_hold, send_message, set_slider, wait_idle
from tests.models import BROWSER_MOE

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "<img src=x onerror=alert(1)> Crew"
MEMBERS = ["Operator Ada", "Captain Juno Reyes", "Mira Voss"]  # the chosen order (not the gallery's)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, module_app_server: StartApp) -> AppServer:
    root = tmp_path_factory.mktemp("groups")
    return module_app_server(write_tiny_gguf(root / "moe.gguf", BROWSER_MOE), root / "data", "--n-ctx", "2048")


@pytest.fixture
def page(browser: Browser, server: AppServer) -> Iterator[Page]:
    with app_page(browser, server.url, height=1300) as pg:  # no script from any name may run
        yield pg


def speakers(page: Page) -> list[str]:
    """The name under each character bubble (its footer's bold label)."""
    return [b.inner_text() for b in page.locator("#chatbot .bot sub b").all()]


def test_group_chat_turns_routing_reload_and_export(page: Page, server: AppServer, tmp_path: Path) -> None:
    page.get_by_text("Persona, format and sampling").click()
    set_slider(page, "max_tok", 24)
    fill_and_hold(page.locator("#group_name textarea, #group_name input").first, HOSTILE)
    for name in MEMBERS:
        page.locator("#group_members input").click()
        page.locator("ul[role=listbox] li", has_text=name).first.click()
    page.locator("#group_strategy label", has_text="list").click()
    page.locator("#group_create").click()
    expect(page.locator("#group_status")).to_contain_text("list order", timeout=15_000)
    expect(page.locator("#group_status")).to_contain_text("<img src=x onerror=alert(1)> Crew")
    greeted = speakers(page)
    expect(page.locator('#chatbot img[alt="bot avatar"]')).to_have_count(0)  # not the first member's on every reply
    assert greeted == [n for n in MEMBERS if n in greeted] and len(greeted) >= 2  # each member's greeting, in order
    for turn, text in enumerate(["Hello, crew! Report in.", "Thanks. Anything else?"], 1):
        send_message(page, text)
        expect(page.locator("#chatbot .bot sub b")).to_have_count(len(greeted) + turn * len(MEMBERS), timeout=30_000)
    after_turns = speakers(page)
    assert after_turns[len(greeted) :] == MEMBERS * 2  # list order: every member replies, in the chosen order
    faces = page.locator("#chatbot .bot img.moe-face")  # each reply wears its member's picture, loaded
    assert [(f.get_attribute("alt"), f.evaluate("i => i.naturalWidth > 0")) for f in faces.all()] == [
        (name, True) for name in after_turns
    ]
    with Store.open(server.data_dir) as store:
        (mira,) = [c for c in store.characters() if c.name == "Mira Voss"]
        picture = avatar_path(server.data_dir, store.owner, mira.id).read_bytes()
    assert page.request.get(server.url + (faces.last.get_attribute("src") or "")).body() == picture
    page.locator("#group_speaker input").click()
    page.locator("ul[role=listbox] li", has_text="Mira Voss").first.click()
    page.locator("#group_speak").click()
    expect(page.locator("#chatbot .bot sub b")).to_have_count(len(after_turns) + 1, timeout=30_000)
    wait_idle(page)
    assert speakers(page)[-1] == "Mira Voss"
    table = page.locator("#char_table table")
    expect(table.locator("tbody tr")).to_have_count(3, timeout=30_000)
    rows = [r.inner_text() for r in table.locator("tbody tr").all()]
    assert [r.split("\t")[0] for r in rows] == MEMBERS and all("%" in r for r in rows)
    expect(page.locator("#char_layers .js-plotly-plot")).to_be_visible(timeout=30_000)
    expect(page.locator("#char_drift .js-plotly-plot")).to_be_visible(timeout=30_000)
    page.locator("#char_routing").scroll_into_view_if_needed()
    page.screenshot(path=str(ROOT / "assets" / "screenshot-group-chat.png"), full_page=True)
    before = speakers(page)

    page.reload()
    expect(page.locator("#char_table table tbody tr")).to_have_count(3, timeout=30_000)
    assert [r.inner_text() for r in page.locator("#char_table table tbody tr").all()] == rows
    expect(page.locator("#chatbot .bot sub b")).to_have_count(len(before), timeout=30_000)
    assert speakers(page) == before

    page.locator("#export_jsonl").click()
    links = page.locator("#chat_file a")
    expect(links).to_have_count(2, timeout=15_000)
    files = {}
    for i in range(2):
        with page.expect_download() as download:
            links.nth(i).click()
        files[download.value.suggested_filename] = Path(download.value.path()).read_bytes()
    folder = tmp_path / "st"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    chat_file = next(folder.glob("*.jsonl"))
    group_file = next(folder.glob("*.json"))
    definition = json.loads(group_file.read_text())
    assert definition["name"] == HOSTILE and definition["activation_strategy"] == 1
    assert definition["members"] == [f"{n}.png" for n in MEMBERS]
    lines = [json.loads(line) for line in chat_file.read_text().splitlines()]
    assert [x["name"] for x in lines if not x["is_user"]] == before
    data = str(tmp_path / "again")
    assert chats.main(["--data-dir", data, "import", str(group_file), str(chat_file)]) == 0
    (row,) = json.loads(_out(lambda: chats.main(["--data-dir", data, "list", "--json"])))
    assert row["group"]["members"] == MEMBERS and row["messages"] == len(lines)
    out = tmp_path / "out"
    assert chats.main(["--data-dir", data, "export", str(row["id"]), "-o", str(out)]) == 0
    assert (out / chat_file.name).read_text() == chat_file.read_text()
    assert json.loads((out / group_file.name).read_text()) == definition


def _out(call) -> str:  # type: ignore[no-untyped-def]
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        call()
    return buffer.getvalue()
