"""Gradio layout: the components of each tab, built in Blocks context and returned in a namespace for ui.py to
wire. No event handlers and no logic here."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from moechat.prompt.formats import format_names
from moechat.ui.characters import EDITOR_FIELDS
from moechat.ui.chat import PRESETS
from moechat.ui.html import context_html
from moechat.ui.models import HELP
from moechat.ui.routing import MEAN, layer_choices


def chat_tab(n_layers: int, experts: list[str]) -> SimpleNamespace:
    with gr.Tab("Chat"), gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240):
            side = _chats_column()
        with gr.Column(scale=3, min_width=420):
            talk = _talk_column(experts)
        with gr.Column(scale=2, min_width=360):
            views = _routing_column(n_layers)
    return SimpleNamespace(**vars(side), **vars(talk), **vars(views))


def _chats_column() -> SimpleNamespace:
    c = SimpleNamespace()
    c.gallery = gr.Gallery(
        label="Characters", elem_id="gallery", columns=2, height=330, allow_preview=False, object_fit="cover",
        interactive=False,
    )  # fmt: skip
    c.char_info = gr.Markdown("Pick a character in the gallery to start.", elem_id="char_info")
    c.chat_pick = gr.Dropdown(label="Chats with this character", elem_id="chat_pick", choices=[])
    with gr.Row():
        c.new_chat = gr.Button("New chat", elem_id="new_chat", size="sm")
        c.branch = gr.Button("Branch here", elem_id="branch", size="sm")
        c.delete_chat = gr.Button("Delete chat", elem_id="delete_chat", size="sm", variant="stop")
    c.chat_title = gr.Textbox(label="Chat title", elem_id="chat_title")
    with gr.Row():
        c.rename = gr.Button("Rename", elem_id="rename", size="sm")
        c.export_jsonl = gr.Button("Export SillyTavern JSONL", elem_id="export_jsonl", size="sm")
        c.export_md = gr.Button("Export Markdown", elem_id="export_md", size="sm")
    c.chat_file = gr.File(label="Exported chat", elem_id="chat_file", interactive=False)
    return c


def _talk_column(experts: list[str]) -> SimpleNamespace:
    c = SimpleNamespace()
    c.chatbot = gr.Chatbot(
        elem_id="chatbot", height=520, layout="bubble", buttons=["copy"], sanitize_html=True, label="Chat"
    )
    with gr.Row():
        c.msg = gr.Textbox(elem_id="msg", show_label=False, placeholder="Say something…", scale=5, lines=1, max_lines=8)
        c.send = gr.Button("Send", elem_id="send", variant="primary", scale=1, min_width=70)
        c.stop = gr.Button("Stop", elem_id="stop", variant="stop", scale=1, min_width=70)
    with gr.Row():
        c.regen = gr.Button("↻ Regenerate", elem_id="regen", size="sm")
        c.swipe_prev = gr.Button("←", elem_id="swipe_prev", size="sm")
        c.swipe_next = gr.Button("→", elem_id="swipe_next", size="sm")
        c.cont = gr.Button("Continue", elem_id="continue", size="sm")
        c.imp = gr.Button("Impersonate", elem_id="impersonate", size="sm")
    with gr.Row(equal_height=True):
        c.steer_top1 = gr.Button("↻ with top-1 routing", elem_id="steer_top1", size="sm")
        c.solo_expert = gr.Dropdown(
            experts, value=experts[0] if experts else None, label="Expert", elem_id="solo_expert", scale=1
        )
        c.steer_solo = gr.Button("↻ with this expert only", elem_id="steer_solo", size="sm")
    with gr.Accordion("Selected message (click one in the chat)", open=False, elem_id="msg_tools"):
        c.edit_box = gr.Textbox(label="Text", lines=3, elem_id="edit_box")
        with gr.Row():
            c.save_edit = gr.Button("Save edit", elem_id="save_edit", size="sm")
            c.delete_msg = gr.Button("Delete message", elem_id="delete_msg", size="sm", variant="stop")
            c.hidden = gr.Checkbox(label="Hidden from the model", elem_id="hidden")
    with gr.Accordion("Persona, format and sampling", open=False):
        c.user_name = gr.Textbox("You", label="Your name", elem_id="user_name")
        c.persona = gr.Textbox(label="Your persona (sent to the model)", lines=2, elem_id="persona")
        c.fmt = gr.Dropdown(["auto", *format_names()], value="auto", label="Prompt format", elem_id="fmt")
        c.preset = gr.Radio(list(PRESETS), value="Balanced", label="Sampling preset", elem_id="preset")
        c.max_tokens = gr.Slider(16, 1024, value=200, step=8, label="Max reply tokens", elem_id="max_tok")
        c.seed = gr.Number(-1, label="Seed (-1 = random)", precision=0, elem_id="seed")
    return c


def _routing_column(n_layers: int) -> SimpleNamespace:
    c = SimpleNamespace()
    c.metrics = gr.HTML(elem_id="metrics")
    c.layer = gr.Dropdown(layer_choices(n_layers), value=MEAN, label="Colour tokens by", elem_id="layer")
    c.tokens = gr.HTML(elem_id="tokens")
    c.heat = gr.Plot(elem_id="heatmap", label="Router weight, layers × tokens")
    c.bars = gr.Plot(elem_id="bars", label="Share per layer")
    with gr.Accordion("Your message's routing", open=False):
        c.user_tokens = gr.HTML(elem_id="user_tokens")
    with gr.Accordion("Drift over the chat", open=False):
        c.drift = gr.Plot(elem_id="drift", label="Expert share per reply")
    with gr.Accordion("Context meter", open=False):
        c.context = gr.HTML(context_html(None), elem_id="context")
    return c


def characters_tab() -> SimpleNamespace:
    c = SimpleNamespace()
    with gr.Tab("Characters"):
        c.card_file = gr.File(
            label="Import a card (PNG, JSON, CHARX, YAML)",
            elem_id="card_upload",
            file_types=[".png", ".json", ".charx", ".yaml", ".yml"],
            type="filepath",
        )
        with gr.Row():
            c.exp = {
                f: gr.Button(f"Export {f.upper()}", elem_id=f"export_{f}", size="sm") for f in ("png", "json", "charx")
            }
        c.card_out = gr.File(label="Exported card", elem_id="card_out", interactive=False)
        gr.Markdown("### Create or edit a character")
        c.load_editor = gr.Button("Load the selected character", elem_id="load_editor", size="sm")
        c.editor = [
            gr.Textbox(label=f.replace("_", " "), elem_id=f"card_{f}", lines=1 if f in ("name", "tags") else 3)
            for f in EDITOR_FIELDS
        ]
        with gr.Row():
            c.save_new = gr.Button("Save as new", elem_id="save_new", variant="primary")
            c.save_old = gr.Button("Update selected", elem_id="save_old")
            c.delete_char = gr.Button("Delete character", elem_id="delete_char", variant="stop")
    return c


def model_tab(panel: str, status: str) -> SimpleNamespace:
    c = SimpleNamespace()
    with gr.Tab("Model"):
        c.model_md = gr.Markdown(panel, elem_id="model_panel")
        with gr.Row(equal_height=True):
            c.model_in = gr.Textbox(label="Load another model", info=HELP, elem_id="model_in", scale=4)
            c.model_load = gr.Button("Load", elem_id="model_load", variant="primary", scale=1)
        c.model_status = gr.Markdown(status, elem_id="model_status")
    return c
