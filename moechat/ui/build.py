"""The Gradio app: event wiring only. Layout is ui.layout's; handlers live in ui.chat (turns, steered replies),
ui.messages (one message), ui.chats (chat list, export), ui.characters (gallery, import, export, editor) and
ui.models (switching models); the values they show are built by ui.views / ui.live / ui.routing / ui.html. The
chat view's outputs are ui.outputs.ChatOutputs, and a turn's controls reach the handlers as one TurnInputs.

    demo = build_ui(slot, store, settings); launch(demo, settings, on_app=mount_extra_routes)
"""

from __future__ import annotations

import secrets
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypedDict, TypeVar

import gradio as gr
from gradio.components import Component
from gradio.events import Dependency
from gradio.routes import App

from moechat.config import Settings
from moechat.library import avatars_dir, import_bundled
from moechat.models.slot import ModelSlot
from moechat.store.records import LOCAL_OWNER
from moechat.store.store import Store
from moechat.store.worlds import Scope
from moechat.ui.characters import Characters
from moechat.ui.chat import ChatUI
from moechat.ui.chats import ChatList
from moechat.ui.groups import GroupsUI
from moechat.ui.html import CSS
from moechat.ui.layout import CharactersTab, ChatTab, ModelTab, TalkColumn, characters_tab, chat_tab, model_tab
from moechat.ui.messages import MessageActions
from moechat.ui.models import ModelSwitcher, expert_choices
from moechat.ui.outputs import ChatOpened, ChatOutputs
from moechat.ui.personas import PersonasUI
from moechat.ui.session import Session, Stores, Turns
from moechat.ui.turn_inputs import TurnInputs
from moechat.ui.world_info import WorldInfoUI

T = TypeVar("T")


class Private(TypedDict):
    """Event-listener keywords: the event is no API endpoint."""

    api_visibility: Literal["public", "private", "undocumented"]


class OwnQueue(Private):
    """... and it runs in a queue of its own (a turn on the model, a model load, the persona panel)."""

    concurrency_id: str
    concurrency_limit: int


PRIVATE: Private = {"api_visibility": "private"}
MODEL_LOAD: OwnQueue = {"concurrency_id": "model_load", "concurrency_limit": 1, "api_visibility": "private"}
# the persona panel's actions and its refresh when a chat opens, one at a time (a few ms of SQLite each): a lock
# clicked as a chat opens is never overwritten by that chat's older status
PERSONA: OwnQueue = {"concurrency_id": "persona", "concurrency_limit": 1, "api_visibility": "private"}


def on_the_model(parallel: int) -> OwnQueue:
    """Turns: as many run as the engine generates at once, and as many again wait in the engine's own queue
    (where the reply bubble shows their place, and API requests wait too); more wait in Gradio's queue."""
    return {"concurrency_id": "llm", "concurrency_limit": 2 * parallel, "api_visibility": "private"}


def _secret(data_dir: Path) -> str:
    """A fixed secret for the browser-side owner id, so it survives server restarts."""
    path = data_dir / "browser_secret"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


@dataclass(frozen=True)
class Handlers:
    """The handler objects one app shares between all visitors."""

    chat: ChatUI
    chats: ChatList
    characters: Characters
    actions: MessageActions
    models: ModelSwitcher
    worlds: WorldInfoUI
    personas: PersonasUI
    groups: GroupsUI


@dataclass(frozen=True)
class Page:
    """Every component the events use: the per-visitor states and the three tabs."""

    session: gr.State
    owner: gr.BrowserState
    chat: ChatTab
    characters: CharactersTab
    model: ModelTab

    def outputs(self) -> ChatOutputs[Component]:
        talk, routing = self.chat.talk, self.chat.routing
        return ChatOutputs(
            session=self.session,
            chatbot=talk.chatbot,
            tokens=routing.tokens,
            heatmap=routing.heatmap,
            bars=routing.bars,
            metrics=routing.metrics,
            user_tokens=routing.user_tokens,
            drift=routing.drift,
            context=routing.context,
            model_panel=self.model.model_md,
            msg=talk.msg,
        )

    def opened(self) -> list[Component]:
        side = self.chat.chats
        return list(
            ChatOpened(self.outputs(), picker=side.chat_pick, info=side.char_info, title=side.chat_title).flat()
        )


def _handlers(slot: ModelSlot, store: Store, settings: Settings) -> Handlers:
    data_dir = Path(settings.data_dir)
    chat_ui = ChatUI(slot, Stores(store), Turns(), data_dir)
    chats = ChatList(chat_ui, data_dir, Path(tempfile.mkdtemp(prefix="moechat-chats-")))
    return Handlers(
        chat=chat_ui,
        chats=chats,
        characters=Characters(chats, data_dir, settings.max_upload_mb),
        actions=MessageActions(chat_ui),
        worlds=WorldInfoUI(chat_ui.stores),
        models=ModelSwitcher(slot, data_dir),
        personas=PersonasUI(chat_ui.stores, data_dir),
        groups=GroupsUI(chats),
    )


def build_ui(slot: ModelSlot, store: Store, settings: Settings) -> gr.Blocks:
    h = _handlers(slot, store, settings)
    engine = slot.get()
    with gr.Blocks(title="moechat", analytics_enabled=False) as demo:
        session = gr.State(Session())
        owner = gr.BrowserState("", storage_key="moechat_owner", secret=_secret(Path(settings.data_dir)))
        chat = chat_tab(engine.info.n_layers, expert_choices(engine))
        characters = characters_tab()
        model = model_tab(h.models.panel(), h.models.status())
        ui = Page(session, owner, chat, characters, model)
        opening = _wire_chats(demo, ui, h, settings)
        llm = on_the_model(settings.parallel)
        turns = _wire_turns(ui, h, llm)
        _wire_characters(ui, h)
        _wire_personas(ui, h)
        _wire_groups(ui, h, opening, turns, llm)
        switched = [model.model_md, model.model_status, chat.routing.layer, chat.talk.solo_expert]
        model.model_load.click(h.models.load, [model.model_in], switched, **MODEL_LOAD)
        model.tab.select(h.models.refresh, [session], [model.model_md], **PRIVATE)
    demo.queue(default_concurrency_limit=4, max_size=64)
    return demo


def _wire_chats(demo: gr.Blocks, ui: Page, h: Handlers, settings: Settings) -> list[Dependency]:
    """The chat list's events; returns those that open a chat."""
    side, opened = ui.chat.chats, ui.opened()
    data_dir = Path(settings.data_dir)

    def on_load(owner_id: str) -> tuple:
        s = Session(owner=(owner_id or uuid.uuid4().hex) if settings.hosted else LOCAL_OWNER)
        with h.chat.stores.lease(s.owner) as store:
            if settings.hosted:
                import_bundled(store, data_dir)
            latest = store.chats()
        pics = h.characters.gallery(s)
        return (s.owner, pics, *h.chats.open(s, latest[0].id if latest else None))

    panel = ui.chat.talk.personas.values()
    load = demo.load(on_load, [ui.owner], [ui.owner, side.gallery, *opened], **PRIVATE)
    load.then(h.personas.opened, [ui.session], panel, **PERSONA)
    side.chat_pick.change(h.personas.opened, [ui.session, side.chat_pick], panel, **PERSONA)
    opening = [
        load,
        side.gallery.select(h.characters.pick, [ui.session], opened, **PRIVATE),
        side.chat_pick.input(h.chats.pick, [ui.session, side.chat_pick], opened, **PRIVATE),
        side.new_chat.click(h.chats.new, [ui.session, ui.chat.talk.user_name], opened, **PRIVATE),
        side.delete_chat.click(h.chats.delete, [ui.session], opened, **PRIVATE),
        side.branch.click(h.chats.branch, [ui.session], opened, **PRIVATE),
    ]
    side.rename.click(h.chats.rename, [ui.session, side.chat_title], opened, **PRIVATE)
    side.export_jsonl.click(h.chats.export_jsonl, [ui.session], [side.chat_file], **PRIVATE)
    side.export_md.click(h.chats.export_markdown, [ui.session], [side.chat_file], **PRIVATE)
    return opening


def _turn_controls(talk: TalkColumn) -> list[Component]:
    """The controls of TurnInputs' fields, in its order (the controls are named as the fields)."""
    return [getattr(talk, f.name) for f in fields(TurnInputs)]


def _turn_event(handler: Callable[..., Iterator[T]]) -> Callable[..., Iterator[T]]:
    """A turn handler as Gradio calls it. Gradio passes the inputs' values positionally, here the turn controls'
    last (see _turn_controls), and the request to the first parameter, by its annotation (only positional
    parameters are looked at, and only when every annotation resolves). The handler gets (*the other values,
    TurnInputs, request)."""
    n = len(fields(TurnInputs))

    def event(request: gr.Request, *values: Any) -> Iterator[T]:
        yield from handler(*values[:-n], TurnInputs(*values[-n:]), request)

    event.__name__ = event.__qualname__ = handler.__name__  # Gradio names the (private) endpoint after it
    return event


def _wire_turns(ui: Page, h: Handlers, llm: OwnQueue) -> list[Dependency]:
    """The turn events; returns those that change a chat's replies (send, regenerate, continue)."""
    talk, routing = ui.chat.talk, ui.chat.routing
    outputs, turn = list(ui.outputs()), _turn_controls(talk)
    send = _turn_event(h.chat.send)
    # the box empties when the turn begins (ChatOutputs.msg): a send Gradio drops, because this tab's last send is
    # still streaming, or that a turn in progress refuses (ui.chat.BUSY), leaves the message where it was typed
    turns = [on(send, [ui.session, talk.msg, *turn], outputs, **llm) for on in (talk.send.click, talk.msg.submit)]
    turns.append(talk.regen.click(_turn_event(h.chat.regenerate), [ui.session, *turn], outputs, **llm))
    turns.append(talk.cont.click(_turn_event(h.chat.continue_reply), [ui.session, *turn], outputs, **llm))
    talk.imp.click(_turn_event(h.chat.impersonate), [ui.session, *turn], [talk.msg], **llm)
    talk.steer_top1.click(_turn_event(h.chat.steer_top1), [ui.session, *turn], outputs, **llm)
    talk.steer_solo.click(_turn_event(h.chat.steer_solo), [ui.session, talk.solo_expert, *turn], outputs, **llm)
    talk.stop.click(h.chat.stop, None, None, concurrency_limit=None, concurrency_id="stop", **PRIVATE)
    a = h.actions
    talk.swipe_prev.click(a.swipe_left, [ui.session], outputs, **PRIVATE)
    talk.swipe_next.click(a.swipe_right, [ui.session], outputs, **PRIVATE)
    talk.chatbot.select(a.select, [ui.session], [*outputs, talk.edit_box, talk.hidden], **PRIVATE)
    talk.save_edit.click(a.save_edit, [ui.session, talk.edit_box], outputs, **PRIVATE)
    talk.delete_msg.click(a.delete, [ui.session], outputs, **PRIVATE)
    talk.hidden.input(a.set_hidden, [ui.session, talk.hidden], outputs, **PRIVATE)
    routing.layer.change(a.layer, [ui.session, routing.layer], [ui.session, routing.tokens], **PRIVATE)
    return turns


def _wire_groups(ui: Page, h: Handlers, opening: list[Dependency], turns: list[Dependency], llm: OwnQueue) -> None:
    """Group chats: create, open, who speaks next, mute; the group panel after a chat opens, the per-character
    routing after every change."""
    g, panel, talk = h.groups, ui.chat.groups, ui.chat.talk
    views, state = [panel.table, panel.layers, panel.drift], [panel.pick, panel.speaker, panel.muted, panel.status]
    opened = [*ui.opened(), *state]
    for event in opening:
        event.then(g.panel, [ui.session], state, **PRIVATE).then(g.routing, [ui.session], views, **PRIVATE)
    panel.members.focus(g.characters, [ui.session], [panel.members], **PRIVATE)
    inputs = [panel.name, panel.members, panel.strategy, panel.mode, panel.allow_self, talk.user_name]
    for event in (
        panel.create.click(g.create, [ui.session, *inputs], opened, **PRIVATE),
        panel.pick.input(g.pick, [ui.session, panel.pick, talk.user_name], opened, **PRIVATE),
        panel.new_chat.click(g.new_chat, [ui.session, panel.pick, talk.user_name], opened, **PRIVATE),
        panel.speak.click(_turn_event(h.chat.speak), [ui.session, panel.speaker, *_turn_controls(talk)],
                          list(ui.outputs()), **llm),
        *turns,
    ):  # fmt: skip
        event.then(g.routing, [ui.session], views, **PRIVATE)
    panel.muted.input(g.mute, [ui.session, panel.muted], [panel.status], **PRIVATE)


def _wire_characters(ui: Page, h: Handlers) -> None:
    tab, ch = ui.characters, h.characters
    changed = [ui.chat.chats.gallery, *ui.opened()]
    tab.card_file.upload(ch.upload, [ui.session, tab.card_file], changed, **PRIVATE)
    for fmt, button in tab.exports.items():
        button.click(partial(ch.export, fmt=fmt), [ui.session], [tab.card_out], **PRIVATE)
    tab.load_editor.click(ch.editor_values, [ui.session], tab.editor, **PRIVATE)
    tab.save_new.click(ch.save_new, [ui.session, *tab.editor], changed, **PRIVATE)
    tab.save_old.click(ch.save_existing, [ui.session, *tab.editor], changed, **PRIVATE)
    tab.delete_char.click(ch.delete, [ui.session], changed, **PRIVATE)
    w = h.worlds
    tab.world_file.upload(w.upload, [ui.session, tab.world_file], [tab.world_pick, tab.world_status], **PRIVATE)
    tab.world_pick.focus(w.picker, [ui.session], [tab.world_pick, tab.world_status], **PRIVATE)
    scopes: dict[str, Scope] = {"character": "character", "chat": "chat", "global": "global"}
    for name, button in tab.world_buttons.items():
        handler = partial(w.attach, scope=scopes[name]) if name in scopes else w.detach_everywhere
        button.click(handler, [ui.session, tab.world_pick], [tab.world_status], **PRIVATE)
    talk = ui.chat.talk
    for upload in (talk.st_instruct, talk.st_context):
        upload.upload(w.preset, [ui.session, talk.st_instruct, talk.st_context], [talk.fmt, talk.st_status], **PRIVATE)


def _wire_personas(ui: Page, h: Handlers) -> None:
    p, do = ui.chat.talk.personas, h.personas
    panel, session = p.values(), [ui.session]
    events = [
        p.pick.input(do.pick, [ui.session, p.pick], panel, **PERSONA),
        p.new.click(do.create, [ui.session, p.user_name, p.persona], panel, **PERSONA),
        p.save.click(do.save, [ui.session, p.user_name, p.persona], panel, **PERSONA),
        p.avatar.upload(do.upload_avatar, [ui.session, p.avatar], panel, **PERSONA),
    ]
    for button, handler in (
        (p.delete, do.delete),
        (p.default, do.toggle_default),
        (p.lock_chat, do.lock_chat),
        (p.lock_character, do.lock_character),
        (p.unlock, do.unlock),
    ):
        events.append(button.click(handler, session, panel, **PERSONA))
    for event in events:  # the user's messages show the persona the chat's turns now use
        event.then(h.chats.avatars, session, [ui.chat.talk.chatbot], **PRIVATE)


def launch(
    demo: gr.Blocks, settings: Settings, *, block: bool = True, on_app: Callable[[App], None] | None = None
) -> App:
    """Serve the app (no analytics, no run history in the browser). Of the data dir only the avatars are served
    (the database and the browser secret beside them never are); exports are written to temporary folders, and
    Gradio serves its own copies of them.
    `on_app(app)` gets the running FastAPI app before the server blocks: a place to add routes (the /v1 API)."""
    app, _local, _share = demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        allowed_paths=[str(avatars_dir(Path(settings.data_dir)).resolve())],
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
