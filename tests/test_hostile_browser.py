"""Hostile content in a real browser: script/HTML payloads in every card field, names, lorebook entries, creator
notes, messages, chat titles and token texts (the plot hover labels) must stay text.

The data dir is filled through the Store before `python app.py` starts; the page then visits every character.
Execution is detected by an init script (in every frame) that reports alert/confirm/prompt/print/open calls to
Python, plus Playwright `dialog` events; every request to a host other than the app's is counted and aborted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from moechat.cards.card import Card
from moechat.cards.lorebook import read_lorebook
from moechat.cards.png import default_avatar
from moechat.library import avatar_path
from moechat.store.records import RoutingRecord
from moechat.store.store import Store
from tests.app_server import AppServer, StartApp

pytestmark = pytest.mark.browser

EVIL = "https://evil.example"
PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(2)>",
    "<svg onload=alert(3)>",
    "<svg><script>alert(4)</script></svg>",
    '<a href="javascript:alert(5)">click</a>',
    "[link](javascript:alert(6))",
    f"![img]({EVIL}/md.png)",
    '<iframe src="javascript:alert(8)"></iframe>',
    f"<style>body{{background:url({EVIL}/css.png)}}</style>",
    f'<div style="background:url({EVIL}/style.png)">x</div>',
    '"><img src=x onerror=alert(11)>',
    "'><svg/onload=alert(12)>",
    "<details open ontoggle=alert(13)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(14)>",
    f'<img src="{EVIL}/img.png">',
    "<input autofocus onfocus=alert(16)>",
    f"<link rel=stylesheet href={EVIL}/x.css>",
    "javascript:alert(18)",
    "{{char}}<b onmouseover=alert(19)>hover</b>",
    f'<object data="{EVIL}/o.swf"></object><embed src="{EVIL}/e.swf">',
]
CARD_TEXT_FIELDS = ["description", "personality", "scenario", "first_mes", "mes_example", "creator_notes"]
CARD_TEXT_FIELDS += ["system_prompt", "post_history_instructions", "creator", "character_version"]
# where each payload goes: card fields, lists, lorebook, chat title, messages, names, token texts
FIELDS = ["name", *CARD_TEXT_FIELDS, "alternate_greetings", "tags", "lore keys", "lore content", "lore name"]
FIELDS += ["lore comment", "chat title", "user message", "user name", "reply", "reply name", "token texts"]


HOOK = """
(() => {
  const report = (what, args) => { try { window.moeReport(what + ':' + Array.from(args).join(',')); } catch (e) {} };
  for (const name of ['alert', 'confirm', 'prompt', 'print', 'open']) {
    try { window[name] = function () { report(name, arguments); return null; }; } catch (e) {}
  }
})();
"""


@dataclass
class Watch:
    """What the page did that it should not have: script executions and requests to other hosts."""

    app_host: str
    executions: list[str] = field(default_factory=list)
    outbound: list[str] = field(default_factory=list)
    requests: int = 0

    def route(self, route: Route) -> None:
        url = route.request.url
        self.requests += 1
        scheme, host = urlparse(url).scheme, urlparse(url).netloc
        if scheme in ("data", "blob") or host == self.app_host:
            route.continue_()
        else:
            self.outbound.append(url)
            route.abort()


def watched_context(browser: Browser, app_url: str) -> tuple[BrowserContext, Watch]:
    watch = Watch(urlparse(app_url).netloc)
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    context.expose_binding("moeReport", lambda _source, text: watch.executions.append(text))
    context.add_init_script(HOOK)
    context.route("**/*", watch.route)
    context.on(
        "page", lambda p: p.on("dialog", lambda d: (watch.executions.append(f"dialog:{d.message}"), d.dismiss()))
    )
    return context, watch


def tokens_record(pieces: list[str]) -> RoutingRecord:
    """Routing for a reply made of `pieces`, one token each, on the tiny model's 2 layers x 2 experts."""
    n = len(pieces)
    probs = np.tile(np.array([0.7, 0.3], np.float32), (n, 2, 1))
    experts = np.tile(np.array([0, 1], np.int8), (n, 2, 1))
    offsets = np.cumsum([0, *[len(p) for p in pieces[:-1]]])
    return RoutingRecord(probs, experts, np.arange(n) + 3, offsets)


def hostile_card(i: int, payload: str) -> Card:
    text = {f: f"{f} {payload}" for f in CARD_TEXT_FIELDS}
    book = {
        "entries": [
            {"keys": ["ship", payload], "content": f"lore {payload}", "name": payload, "comment": payload},
        ]
    }
    card = Card(name=f"H{i:02d} {payload}", alternate_greetings=[payload], tags=[payload], **text)
    card.character_book = read_lorebook(book)
    return card


def fill_store(data_dir: Path) -> None:
    with Store.open(data_dir) as store:
        for i, payload in enumerate(PAYLOADS):
            card = hostile_card(i, payload)
            character = store.add_character(card.name, card.to_v3_json())
            # as a card import does (a character without an avatar file breaks the gallery: see test_faults)
            avatar = avatar_path(data_dir, store.owner, character.id)
            avatar.parent.mkdir(parents=True, exist_ok=True)
            avatar.write_bytes(default_avatar(card.name))
            chat = store.create_chat(character.id)
            store.update_chat(chat.id, title=f"title {payload}")
            store.add_message(chat.id, "user", f"about the ship {payload}", name=f"user {payload}")
            swipe = store.begin_reply(chat.id, name=f"reply {payload}", model="tiny")
            pieces = ["Reply ", payload, " and ", payload[::-1], " end"]
            store.append_to_swipe(swipe.id, "".join(pieces), tokens_record(pieces))
            store.finish_swipe(swipe.id, stopped=False, n_tokens=len(pieces))


@pytest.fixture(scope="module")
def hostile_app(
    tmp_path_factory: pytest.TempPathFactory, tiny_moe_path: Path, module_app_server: StartApp
) -> AppServer:
    root = tmp_path_factory.mktemp("hostile")
    fill_store(root / "data")
    return module_app_server(tiny_moe_path, root / "data")


def visit_character(page: Page, i: int) -> None:
    """Open character i's chat and touch every place its text is shown: info, picker, chat, tokens, plots."""
    page.locator("#gallery .thumbnail-item", has_text=f"H{i:02d}").first.click()
    expect(page.locator("#char_info")).to_contain_text(f"H{i:02d}", timeout=20_000)
    expect(page.get_by_test_id("bot").last).to_contain_text("Reply", timeout=20_000)
    page.get_by_test_id("bot").last.click()  # selecting the reply shows its routing: token strip and heatmap
    page.wait_for_timeout(300)
    for tok in page.locator("#tokens .moe-tok").all()[:5]:
        tok.hover()
    heat = page.locator("#heatmap .js-plotly-plot .nsewdrag").first
    if heat.count():
        box = heat.bounding_box()
        if box:
            for fx in (0.1, 0.3, 0.5, 0.7, 0.9):
                page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] / 2)
    page.locator("#chat_pick").click()
    page.keyboard.press("Escape")


# Elements that would load something from the hostile host by themselves (a plain link needs a click).
LEAKS_JS = """() => Array.from(document.querySelectorAll(
        '[src*="evil.example"], link[href*="evil.example"], [style*="evil.example"], object, embed, iframe[src]'))
    .map(e => (e.closest('[id]') || {id: '?'}).id + ' ' + e.tagName.toLowerCase())"""
# Links whose target is not a plain web address (javascript:, data:, vbscript: ...).
SCRIPT_LINKS_JS = """() => Array.from(document.querySelectorAll('a[href]'))
    .map(a => a.getAttribute('href')).filter(h => !/^(https?:|#|\\/|mailto:)/i.test(h.trim()))"""


@dataclass
class Visit:
    watch: Watch
    leaky_elements: set[str]
    script_links: set[str]
    shown: str


@pytest.fixture(scope="module")
def visit(browser: Browser, hostile_app: AppServer) -> Visit:
    """Visit every hostile character once; record executions, outbound requests and where remote URLs sit."""
    context, watch = watched_context(browser, hostile_app.url)
    page = context.new_page()
    page.goto(hostile_app.url)
    expect(page.locator("#gallery .thumbnail-item").first).to_be_visible(timeout=30_000)
    leaky: set[str] = set()
    script_links: set[str] = set()
    for i in range(len(PAYLOADS)):
        visit_character(page, i)
        leaky.update(page.evaluate(LEAKS_JS))
        script_links.update(page.evaluate(SCRIPT_LINKS_JS))
    page.get_by_role("tab", name="Characters").click()
    page.locator("#load_editor").click()
    page.wait_for_timeout(1000)
    leaky.update(page.evaluate(LEAKS_JS))
    script_links.update(page.evaluate(SCRIPT_LINKS_JS))
    page.get_by_role("tab", name="Chat").click()
    page.wait_for_timeout(500)
    shown = page.locator("#char_info").inner_text()
    context.close()
    print(f"\nhostile: {len(PAYLOADS)} payloads x {len(FIELDS)} fields = {len(PAYLOADS) * len(FIELDS)} placements")
    print(f"hostile: {watch.requests} requests, {len(watch.outbound)} outbound, {len(watch.executions)} executions")
    print(f"hostile: outbound {sorted(set(watch.outbound))}; remote URLs in the page at {sorted(leaky)}")
    return Visit(watch, leaky, script_links, shown)


def test_no_payload_executes(visit: Visit) -> None:
    assert visit.watch.executions == []
    assert PAYLOADS[-1].split(">")[0] in visit.shown  # the last character's payload is on screen, as text


def test_no_outbound_requests(visit: Visit) -> None:
    assert visit.watch.outbound == []
    assert visit.leaky_elements == set()


def test_links_are_plain_web_links(visit: Visit) -> None:
    """Markdown links stay clickable links, but never javascript:/data: ones."""
    assert visit.script_links == set()


def test_hook_detects_a_real_execution(browser: Browser, hostile_app: AppServer) -> None:
    """The detector itself works: a deliberate alert and an outbound fetch are both caught."""
    context, watch = watched_context(browser, hostile_app.url)
    page = context.new_page()
    page.goto(hostile_app.url)
    page.evaluate("alert('probe')")
    page.evaluate(f"fetch('{EVIL}/probe').catch(() => null)")
    page.wait_for_timeout(500)
    context.close()
    assert watch.executions == ["alert:probe"]
    assert watch.outbound == [f"{EVIL}/probe"]
