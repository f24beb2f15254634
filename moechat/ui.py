"""The Gradio app: layout and event wiring only. Handlers live in ui_chat (turns), ui_messages (one message),
ui_chats (chat list), ui_characters (gallery, import, export, editor); the values they show are built by
ui_routing / ui_html / plots from chat.py's Updates and the store.

    demo = build_ui(engine, store, settings); launch(demo, settings)
"""

from __future__ import annotations

import secrets
import uuid
from functools import partial
from pathlib import Path

import gradio as gr

from moechat.config import Settings
from moechat.engine import Engine
from moechat.formats import format_names
from moechat.gguf_info import expert_labels
from moechat.store import Store
from moechat.store_records import LOCAL_OWNER
from moechat.ui_characters import EDITOR_FIELDS, Characters
from moechat.ui_chat import PRESETS, ChatUI
from moechat.ui_chats import ChatList
from moechat.ui_html import CSS, context_html
from moechat.ui_library import import_bundled
from moechat.ui_messages import MessageActions
from moechat.ui_routing import MEAN, Model, layer_choices
from moechat.ui_session import Session, StopFlags, Stores

LLM = {"concurrency_id": "llm", "concurrency_limit": 1, "api_visibility": "private"}
PRIVATE = {"api_visibility": "private"}


def _secret(data_dir: Path) -> str:
    """A fixed secret for the browser-side owner id, so it survives server restarts."""
    path = data_dir / "browser_secret"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def build_ui(engine: Engine, store: Store, settings: Settings) -> gr.Blocks:
    info = engine.info
    model = Model(expert_labels(info), info.n_layers, info.n_experts_used)
    data_dir = Path(settings.data_dir)
    chat_ui = ChatUI(engine, Stores(store), model, StopFlags(), data_dir)
    chats = ChatList(chat_ui, data_dir, Path(settings.data_dir) / "exports")
    characters = Characters(chats, data_dir, settings.max_upload_mb)
    actions = MessageActions(chat_ui)
    with gr.Blocks(title="moechat", analytics_enabled=False) as demo:
        session = gr.State(Session())
        owner = gr.BrowserState("", storage_key="moechat_owner", secret=_secret(data_dir))
        pending = gr.State("")
        with gr.Tab("Chat"), gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=240):
                gallery = gr.Gallery(
                    label="Characters",
                    elem_id="gallery",
                    columns=2,
                    height=330,
                    allow_preview=False,
                    object_fit="cover",
                    interactive=False,
                )
                char_info = gr.Markdown("Pick a character in the gallery to start.", elem_id="char_info")
                chat_pick = gr.Dropdown(label="Chats with this character", elem_id="chat_pick", choices=[])
                with gr.Row():
                    new_chat = gr.Button("New chat", elem_id="new_chat", size="sm")
                    branch = gr.Button("Branch here", elem_id="branch", size="sm")
                    delete_chat = gr.Button("Delete chat", elem_id="delete_chat", size="sm", variant="stop")
                chat_title = gr.Textbox(label="Chat title", elem_id="chat_title")
                with gr.Row():
                    rename = gr.Button("Rename", elem_id="rename", size="sm")
                    export_chat = gr.Button("Export chat", elem_id="export_chat", size="sm")
                chat_file = gr.File(label="Exported chat", elem_id="chat_file", interactive=False)
            with gr.Column(scale=3, min_width=420):
                chatbot = gr.Chatbot(
                    elem_id="chatbot",
                    height=520,
                    layout="bubble",
                    buttons=["copy"],
                    sanitize_html=True,
                    label="Chat",
                )
                with gr.Row():
                    msg = gr.Textbox(
                        elem_id="msg", show_label=False, placeholder="Say something…", scale=5, lines=1, max_lines=8
                    )
                    send = gr.Button("Send", elem_id="send", variant="primary", scale=1, min_width=70)
                    stop = gr.Button("Stop", elem_id="stop", variant="stop", scale=1, min_width=70)
                with gr.Row():
                    regen = gr.Button("↻ Regenerate", elem_id="regen", size="sm")
                    swipe_prev = gr.Button("←", elem_id="swipe_prev", size="sm")
                    swipe_next = gr.Button("→", elem_id="swipe_next", size="sm")
                    cont = gr.Button("Continue", elem_id="continue", size="sm")
                    imp = gr.Button("Impersonate", elem_id="impersonate", size="sm")
                with gr.Accordion("Selected message (click one in the chat)", open=False, elem_id="msg_tools"):
                    edit_box = gr.Textbox(label="Text", lines=3, elem_id="edit_box")
                    with gr.Row():
                        save_edit = gr.Button("Save edit", elem_id="save_edit", size="sm")
                        delete_msg = gr.Button("Delete message", elem_id="delete_msg", size="sm", variant="stop")
                        hidden = gr.Checkbox(label="Hidden from the model", elem_id="hidden")
                with gr.Accordion("Persona, format and sampling", open=False):
                    user_name = gr.Textbox("You", label="Your name", elem_id="user_name")
                    persona = gr.Textbox(label="Your persona (sent to the model)", lines=2, elem_id="persona")
                    fmt = gr.Dropdown(["auto", *format_names()], value="auto", label="Prompt format", elem_id="fmt")
                    preset = gr.Radio(list(PRESETS), value="Balanced", label="Sampling preset", elem_id="preset")
                    max_tokens = gr.Slider(16, 1024, value=200, step=8, label="Max reply tokens", elem_id="max_tok")
                    seed = gr.Number(-1, label="Seed (-1 = random)", precision=0, elem_id="seed")
            with gr.Column(scale=2, min_width=360):
                metrics = gr.HTML(elem_id="metrics")
                layer = gr.Dropdown(layer_choices(info.n_layers), value=MEAN, label="Colour tokens by", elem_id="layer")
                tokens = gr.HTML(elem_id="tokens")
                heat = gr.Plot(elem_id="heatmap", label="Router weight, layers × tokens")
                bars = gr.Plot(elem_id="bars", label="Share per layer")
                with gr.Accordion("Your message's routing", open=False):
                    user_tokens = gr.HTML(elem_id="user_tokens")
                with gr.Accordion("Drift over the chat", open=False):
                    drift = gr.Plot(elem_id="drift", label="Expert share per reply")
                with gr.Accordion("Context meter", open=False):
                    context = gr.HTML(context_html(None), elem_id="context")
        with gr.Tab("Characters"):
            card_file = gr.File(
                label="Import a card (PNG, JSON, CHARX, YAML)",
                elem_id="card_upload",
                file_types=[".png", ".json", ".charx", ".yaml", ".yml"],
                type="filepath",
            )
            with gr.Row():
                exp = {
                    f: gr.Button(f"Export {f.upper()}", elem_id=f"export_{f}", size="sm")
                    for f in ("png", "json", "charx")
                }
            card_out = gr.File(label="Exported card", elem_id="card_out", interactive=False)
            gr.Markdown("### Create or edit a character")
            load_editor = gr.Button("Load the selected character", elem_id="load_editor", size="sm")
            editor = [
                gr.Textbox(label=f.replace("_", " "), elem_id=f"card_{f}", lines=1 if f in ("name", "tags") else 3)
                for f in EDITOR_FIELDS
            ]
            with gr.Row():
                save_new = gr.Button("Save as new", elem_id="save_new", variant="primary")
                save_old = gr.Button("Update selected", elem_id="save_old")
                delete_char = gr.Button("Delete character", elem_id="delete_char", variant="stop")
        with gr.Tab("Model"):
            model_md = gr.Markdown(chat_ui.model_panel(Session()), elem_id="model_panel")

        outputs = [session, chatbot, tokens, heat, bars, metrics, user_tokens, drift, context, model_md]
        opened = [*outputs, chat_pick, char_info, chat_title]
        opts = [preset, max_tokens, seed, fmt, user_name, persona]

        def on_load(owner_id: str):
            s = Session(owner=(owner_id or uuid.uuid4().hex) if settings.hosted else LOCAL_OWNER)
            store_s = chat_ui.stores.get(s.owner)
            if settings.hosted:
                import_bundled(store_s, data_dir)
            latest = store_s.chats()
            pics = characters.gallery(s)
            return (s.owner, pics, *chats.open(s, latest[0].id if latest else None))

        demo.load(on_load, [owner], [owner, gallery, *opened], **PRIVATE)
        gallery.select(characters.pick, [session], opened, **PRIVATE)
        chat_pick.input(chats.pick, [session, chat_pick], opened, **PRIVATE)
        new_chat.click(chats.new, [session, user_name], opened, **PRIVATE)
        rename.click(chats.rename, [session, chat_title], opened, **PRIVATE)
        delete_chat.click(chats.delete, [session], opened, **PRIVATE)
        branch.click(chats.branch, [session], opened, **PRIVATE)
        export_chat.click(chats.export, [session], [chat_file], **PRIVATE)

        for trigger in (send.click, msg.submit):
            trigger(lambda t: ("", t), [msg], [msg, pending], queue=False, **PRIVATE).then(
                chat_ui.send, [session, pending, *opts], outputs, **LLM
            )
        regen.click(chat_ui.regenerate, [session, *opts], outputs, **LLM)
        cont.click(chat_ui.continue_reply, [session, *opts], outputs, **LLM)
        imp.click(chat_ui.impersonate, [session, *opts], [msg], **LLM)
        stop.click(chat_ui.stop, None, None, concurrency_limit=None, concurrency_id="stop", **PRIVATE)
        swipe_prev.click(actions.swipe_left, [session], outputs, **PRIVATE)
        swipe_next.click(actions.swipe_right, [session], outputs, **PRIVATE)
        chatbot.select(actions.select, [session], [*outputs, edit_box, hidden], **PRIVATE)
        save_edit.click(actions.save_edit, [session, edit_box], outputs, **PRIVATE)
        delete_msg.click(actions.delete, [session], outputs, **PRIVATE)
        hidden.input(actions.set_hidden, [session, hidden], outputs, **PRIVATE)
        layer.change(actions.layer, [session, layer], [session, tokens], **PRIVATE)

        card_file.upload(characters.upload, [session, card_file], [gallery, *opened], **PRIVATE)
        for f, button in exp.items():
            button.click(partial(characters.export, fmt=f), [session], [card_out], **PRIVATE)
        load_editor.click(characters.editor_values, [session], editor, **PRIVATE)
        save_new.click(characters.save_new, [session, *editor], [gallery, *opened], **PRIVATE)
        save_old.click(characters.save_existing, [session, *editor], [gallery, *opened], **PRIVATE)
        delete_char.click(characters.delete, [session], [gallery, *opened], **PRIVATE)
    demo.queue(default_concurrency_limit=4, max_size=64)
    return demo


def launch(demo: gr.Blocks, settings: Settings, *, block: bool = True):
    """Serve the app (no analytics, no run history in the browser, avatars served from the data dir)."""
    return demo.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        allowed_paths=[str(Path(settings.data_dir).resolve())],
        max_file_size=f"{settings.max_upload_mb}mb",
        run_history=False,
        footer_links=["settings"],
        css=CSS,
        prevent_thread_lock=not block,
        quiet=True,
        show_error=False,
    )
