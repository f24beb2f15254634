"""The Gradio app: event wiring only. Layout is ui_layout's; handlers live in ui_chat (turns, steered replies),
ui_messages (one message), ui_chats (chat list, export), ui_characters (gallery, import, export, editor) and
ui_models (switching models); the values they show are built by ui_views / ui_live / ui_routing / ui_html.

    demo = build_ui(slot, store, settings); launch(demo, settings, on_app=mount_extra_routes)
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from moechat.config import Settings
from moechat.library import import_bundled
from moechat.models.slot import ModelSlot
from moechat.store.records import LOCAL_OWNER
from moechat.store.store import Store
from moechat.ui.characters import Characters
from moechat.ui.chat import ChatUI
from moechat.ui.chats import ChatList
from moechat.ui.html import CSS
from moechat.ui.layout import characters_tab, chat_tab, model_tab
from moechat.ui.messages import MessageActions
from moechat.ui.models import ModelSwitcher, expert_choices
from moechat.ui.session import Session, StopFlags, Stores

LLM = {"concurrency_id": "llm", "concurrency_limit": 1, "api_visibility": "private"}
PRIVATE = {"api_visibility": "private"}


def _secret(data_dir: Path) -> str:
    """A fixed secret for the browser-side owner id, so it survives server restarts."""
    path = data_dir / "browser_secret"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


class Handlers(SimpleNamespace):
    """The handler objects one app shares between all visitors."""


def _handlers(slot: ModelSlot, store: Store, settings: Settings) -> Handlers:
    data_dir = Path(settings.data_dir)
    chat_ui = ChatUI(slot, Stores(store), StopFlags(), data_dir)
    chats = ChatList(chat_ui, data_dir, data_dir / "exports")
    return Handlers(
        chat=chat_ui,
        chats=chats,
        characters=Characters(chats, data_dir, settings.max_upload_mb),
        actions=MessageActions(chat_ui),
        models=ModelSwitcher(slot, data_dir),
    )


def build_ui(slot: ModelSlot, store: Store, settings: Settings) -> gr.Blocks:
    h = _handlers(slot, store, settings)
    engine = slot.get()
    with gr.Blocks(title="moechat", analytics_enabled=False) as demo:
        session = gr.State(Session())
        owner = gr.BrowserState("", storage_key="moechat_owner", secret=_secret(Path(settings.data_dir)))
        pending = gr.State("")
        c = chat_tab(engine.info.n_layers, expert_choices(engine))
        k = characters_tab()
        m = model_tab(h.models.panel(), h.models.status())
        ui = SimpleNamespace(session=session, owner=owner, pending=pending, **vars(c), **vars(k), **vars(m))
        _wire_chats(demo, ui, h, settings)
        _wire_turns(ui, h)
        _wire_characters(ui, h)
        m.model_load.click(h.models.load, [m.model_in], [m.model_md, m.model_status, c.layer, c.solo_expert], **LLM)
    demo.queue(default_concurrency_limit=4, max_size=64)
    return demo


def _outputs(ui: SimpleNamespace) -> list:
    return [ui.session, ui.chatbot, ui.tokens, ui.heat, ui.bars, ui.metrics, ui.user_tokens, ui.drift, ui.context,
            ui.model_md]  # fmt: skip


def _wire_chats(demo: gr.Blocks, ui: SimpleNamespace, h: Handlers, settings: Settings) -> None:
    opened = [*_outputs(ui), ui.chat_pick, ui.char_info, ui.chat_title]
    data_dir = Path(settings.data_dir)

    def on_load(owner_id: str):
        s = Session(owner=(owner_id or uuid.uuid4().hex) if settings.hosted else LOCAL_OWNER)
        store_s = h.chat.stores.get(s.owner)
        if settings.hosted:
            import_bundled(store_s, data_dir)
        latest = store_s.chats()
        pics = h.characters.gallery(s)
        return (s.owner, pics, *h.chats.open(s, latest[0].id if latest else None))

    demo.load(on_load, [ui.owner], [ui.owner, ui.gallery, *opened], **PRIVATE)
    ui.gallery.select(h.characters.pick, [ui.session], opened, **PRIVATE)
    ui.chat_pick.input(h.chats.pick, [ui.session, ui.chat_pick], opened, **PRIVATE)
    ui.new_chat.click(h.chats.new, [ui.session, ui.user_name], opened, **PRIVATE)
    ui.rename.click(h.chats.rename, [ui.session, ui.chat_title], opened, **PRIVATE)
    ui.delete_chat.click(h.chats.delete, [ui.session], opened, **PRIVATE)
    ui.branch.click(h.chats.branch, [ui.session], opened, **PRIVATE)
    ui.export_jsonl.click(h.chats.export_jsonl, [ui.session], [ui.chat_file], **PRIVATE)
    ui.export_md.click(h.chats.export_markdown, [ui.session], [ui.chat_file], **PRIVATE)


def _wire_turns(ui: SimpleNamespace, h: Handlers) -> None:
    outputs = _outputs(ui)
    opts = [ui.preset, ui.max_tokens, ui.seed, ui.fmt, ui.user_name, ui.persona]
    for trigger in (ui.send.click, ui.msg.submit):
        trigger(lambda t: ("", t), [ui.msg], [ui.msg, ui.pending], queue=False, **PRIVATE).then(
            h.chat.send, [ui.session, ui.pending, *opts], outputs, **LLM
        )
    ui.regen.click(h.chat.regenerate, [ui.session, *opts], outputs, **LLM)
    ui.cont.click(h.chat.continue_reply, [ui.session, *opts], outputs, **LLM)
    ui.imp.click(h.chat.impersonate, [ui.session, *opts], [ui.msg], **LLM)
    ui.steer_top1.click(h.chat.steer_top1, [ui.session, *opts], outputs, **LLM)
    ui.steer_solo.click(h.chat.steer_solo, [ui.session, ui.solo_expert, *opts], outputs, **LLM)
    ui.stop.click(h.chat.stop, None, None, concurrency_limit=None, concurrency_id="stop", **PRIVATE)
    a = h.actions
    ui.swipe_prev.click(a.swipe_left, [ui.session], outputs, **PRIVATE)
    ui.swipe_next.click(a.swipe_right, [ui.session], outputs, **PRIVATE)
    ui.chatbot.select(a.select, [ui.session], [*outputs, ui.edit_box, ui.hidden], **PRIVATE)
    ui.save_edit.click(a.save_edit, [ui.session, ui.edit_box], outputs, **PRIVATE)
    ui.delete_msg.click(a.delete, [ui.session], outputs, **PRIVATE)
    ui.hidden.input(a.set_hidden, [ui.session, ui.hidden], outputs, **PRIVATE)
    ui.layer.change(a.layer, [ui.session, ui.layer], [ui.session, ui.tokens], **PRIVATE)


def _wire_characters(ui: SimpleNamespace, h: Handlers) -> None:
    opened = [*_outputs(ui), ui.chat_pick, ui.char_info, ui.chat_title]
    ch = h.characters
    ui.card_file.upload(ch.upload, [ui.session, ui.card_file], [ui.gallery, *opened], **PRIVATE)
    for f, button in ui.exp.items():
        button.click(partial(ch.export, fmt=f), [ui.session], [ui.card_out], **PRIVATE)
    ui.load_editor.click(ch.editor_values, [ui.session], ui.editor, **PRIVATE)
    ui.save_new.click(ch.save_new, [ui.session, *ui.editor], [ui.gallery, *opened], **PRIVATE)
    ui.save_old.click(ch.save_existing, [ui.session, *ui.editor], [ui.gallery, *opened], **PRIVATE)
    ui.delete_char.click(ch.delete, [ui.session], [ui.gallery, *opened], **PRIVATE)


def launch(demo: gr.Blocks, settings: Settings, *, block: bool = True, on_app: Callable[[object], None] | None = None):
    """Serve the app (no analytics, no run history in the browser, avatars served from the data dir).
    `on_app(app)` gets the running FastAPI app before the server blocks: a place to add routes (the /v1 API)."""
    app, _local, _share = demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        allowed_paths=[str(Path(settings.data_dir).resolve())],
        max_file_size=f"{settings.max_upload_mb}mb",
        run_history=False,
        footer_links=["settings"],
        css=CSS,
        prevent_thread_lock=True,
        quiet=True,
        show_error=False,
    )
    if on_app is not None:
        on_app(app)
    if block:
        demo.block_thread()
    return app
