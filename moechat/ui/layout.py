"""Gradio layout: the components of each tab, built in Blocks context and returned as a dataclass per tab (and
per column of the chat tab) for ui.build to wire. No event handlers and no logic here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from moechat.prompt.formats import format_names
from moechat.ui.characters import EDITOR_FIELDS
from moechat.ui.html import context_html
from moechat.ui.models import HELP
from moechat.ui.personas import PersonaPanel, persona_panel
from moechat.ui.routing import MEAN, layer_choices
from moechat.ui.turn_inputs import PRESETS, ST_FORMAT


@dataclass(frozen=True)
class ChatsColumn:
    """The chat tab's left column: characters and their chats."""

    gallery: gr.Gallery
    char_info: gr.Markdown
    chat_pick: gr.Dropdown
    new_chat: gr.Button
    branch: gr.Button
    delete_chat: gr.Button
    chat_title: gr.Textbox
    rename: gr.Button
    export_jsonl: gr.Button
    export_md: gr.Button
    chat_file: gr.File


@dataclass(frozen=True)
class TalkColumn:
    """The chat itself, its buttons, the selected message's tools and the turn's controls (preset ... persona:
    named as ui.turn_inputs.TurnInputs' fields)."""

    chatbot: gr.Chatbot
    msg: gr.Textbox
    send: gr.Button
    stop: gr.Button
    regen: gr.Button
    swipe_prev: gr.Button
    swipe_next: gr.Button
    cont: gr.Button
    imp: gr.Button
    steer_top1: gr.Button
    solo_expert: gr.Dropdown
    steer_solo: gr.Button
    edit_box: gr.Textbox
    save_edit: gr.Button
    delete_msg: gr.Button
    hidden: gr.Checkbox
    user_name: gr.Textbox
    persona: gr.Textbox
    personas: PersonaPanel  # the persona panel around user_name and persona
    fmt: gr.Dropdown
    st_instruct: gr.File
    st_context: gr.File
    st_status: gr.Markdown
    preset: gr.Radio
    max_tokens: gr.Slider
    seed: gr.Number


@dataclass(frozen=True)
class RoutingColumn:
    """The routing of the shown message, the user's message, the chat's drift and the context meter."""

    metrics: gr.HTML
    layer: gr.Dropdown
    tokens: gr.HTML
    heatmap: gr.Plot
    bars: gr.Plot
    user_tokens: gr.HTML
    drift: gr.Plot
    context: gr.HTML


@dataclass(frozen=True)
class GroupsPanel:
    """Group chats: create a group, open it, who speaks next, muted members; and the per-character routing."""

    name: gr.Textbox
    members: gr.Dropdown
    strategy: gr.Radio
    mode: gr.Radio
    allow_self: gr.Checkbox
    create: gr.Button
    pick: gr.Dropdown
    new_chat: gr.Button
    speaker: gr.Dropdown
    speak: gr.Button
    muted: gr.CheckboxGroup
    status: gr.Markdown
    table: gr.HTML
    layers: gr.Plot
    drift: gr.Plot


@dataclass(frozen=True)
class ChatTab:
    chats: ChatsColumn
    talk: TalkColumn
    routing: RoutingColumn
    groups: GroupsPanel


@dataclass(frozen=True)
class CharactersTab:
    card_file: gr.File
    exports: dict[str, gr.Button]  # by format: png, json, charx
    card_out: gr.File
    load_editor: gr.Button
    editor: list[gr.Textbox]  # one per ui.characters.EDITOR_FIELDS
    save_new: gr.Button
    save_old: gr.Button
    delete_char: gr.Button
    world_file: gr.File
    world_pick: gr.Dropdown
    world_buttons: dict[str, gr.Button]  # by scope: character, chat, global; and detach
    world_status: gr.HTML


@dataclass(frozen=True)
class ModelTab:
    tab: gr.Tab
    model_md: gr.Markdown
    model_in: gr.Textbox
    model_load: gr.Button
    model_status: gr.Markdown


def chat_tab(n_layers: int, experts: list[str]) -> ChatTab:
    with gr.Tab("Chat"), gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=240):
            side = _chats_column()
            controls = group_controls()
        with gr.Column(scale=3, min_width=420):
            talk = _talk_column(experts)
        with gr.Column(scale=2, min_width=360):
            routing = _routing_column(n_layers)
            with gr.Accordion("Per character (group chats)", open=True, elem_id="char_routing"):
                table, layers, drift = (
                    gr.HTML(elem_id="char_table"),
                    gr.Plot(elem_id="char_layers"),
                    gr.Plot(elem_id="char_drift"),
                )
    groups = GroupsPanel(**controls, table=table, layers=layers, drift=drift)
    return ChatTab(chats=side, talk=talk, routing=routing, groups=groups)


def group_controls() -> dict[str, Any]:
    """The group chat controls of GroupsPanel by field (its three routing views are in the routing column)."""
    with gr.Accordion("Group chats", open=True, elem_id="groups"):
        name = gr.Textbox(label="Group name", elem_id="group_name")
        members = gr.Dropdown([], multiselect=True, label="Members, in order", elem_id="group_members")
        strategy = gr.Radio(
            ["natural", "list", "manual", "pooled"], value="natural", label="Reply order", elem_id="group_strategy"
        )
        mode = gr.Radio(["swap", "join", "join_muted"], value="swap", label="Card definitions", elem_id="group_mode")
        allow_self = gr.Checkbox(label="Allow self-responses", elem_id="group_self")
        create = gr.Button("Create group", elem_id="group_create", size="sm", variant="primary")
        pick = gr.Dropdown([], label="Groups", elem_id="group_pick")
        new_chat = gr.Button("New group chat", elem_id="group_new_chat", size="sm")
        with gr.Row(equal_height=True):
            speaker = gr.Dropdown([], label="Who speaks next", elem_id="group_speaker", scale=2)
            speak = gr.Button("Speak", elem_id="group_speak", size="sm", scale=1)
        muted = gr.CheckboxGroup([], label="Muted members", elem_id="group_muted")
        status = gr.Markdown(elem_id="group_status")
    return {
        "name": name, "members": members, "strategy": strategy, "mode": mode, "allow_self": allow_self,
        "create": create, "pick": pick, "new_chat": new_chat, "speaker": speaker, "speak": speak, "muted": muted,
        "status": status,
    }  # fmt: skip


def _chats_column() -> ChatsColumn:
    gallery = gr.Gallery(
        label="Characters", elem_id="gallery", columns=2, height=330, allow_preview=False, object_fit="cover",
        interactive=False,
    )  # fmt: skip
    char_info = gr.Markdown("Pick a character in the gallery to start.", elem_id="char_info")
    chat_pick = gr.Dropdown(label="Chats with this character", elem_id="chat_pick", choices=[])
    with gr.Row():
        new_chat = gr.Button("New chat", elem_id="new_chat", size="sm")
        branch = gr.Button("Branch here", elem_id="branch", size="sm")
        delete_chat = gr.Button("Delete chat", elem_id="delete_chat", size="sm", variant="stop")
    chat_title = gr.Textbox(label="Chat title", elem_id="chat_title")
    with gr.Row():
        rename = gr.Button("Rename", elem_id="rename", size="sm")
        export_jsonl = gr.Button("Export SillyTavern JSONL", elem_id="export_jsonl", size="sm")
        export_md = gr.Button("Export Markdown", elem_id="export_md", size="sm")
    chat_file = gr.File(label="Exported chat", elem_id="chat_file", interactive=False, file_count="multiple")
    return ChatsColumn(
        gallery=gallery,
        char_info=char_info,
        chat_pick=chat_pick,
        new_chat=new_chat,
        branch=branch,
        delete_chat=delete_chat,
        chat_title=chat_title,
        rename=rename,
        export_jsonl=export_jsonl,
        export_md=export_md,
        chat_file=chat_file,
    )


def _talk_column(experts: list[str]) -> TalkColumn:
    chatbot = gr.Chatbot(
        elem_id="chatbot",
        height=520,
        layout="bubble",
        buttons=["copy"],
        sanitize_html=True,
        label="Chat",
        group_consecutive_messages=False,  # a group chat: each member's reply its own bubble
    )
    with gr.Row():
        msg = gr.Textbox(elem_id="msg", show_label=False, placeholder="Say something…", scale=5, lines=1, max_lines=8)
        send = gr.Button("Send", elem_id="send", variant="primary", scale=1, min_width=70)
        stop = gr.Button("Stop", elem_id="stop", variant="stop", scale=1, min_width=70)
    with gr.Row():
        regen = gr.Button("↻ Regenerate", elem_id="regen", size="sm")
        swipe_prev = gr.Button("←", elem_id="swipe_prev", size="sm")
        swipe_next = gr.Button("→", elem_id="swipe_next", size="sm")
        cont = gr.Button("Continue", elem_id="continue", size="sm")
        imp = gr.Button("Impersonate", elem_id="impersonate", size="sm")
    with gr.Row(equal_height=True):
        steer_top1 = gr.Button("↻ with top-1 routing", elem_id="steer_top1", size="sm")
        solo_expert = gr.Dropdown(
            experts, value=experts[0] if experts else None, label="Expert", elem_id="solo_expert", scale=1
        )
        steer_solo = gr.Button("↻ with this expert only", elem_id="steer_solo", size="sm")
    with gr.Accordion("Selected message (click one in the chat)", open=False, elem_id="msg_tools"):
        edit_box = gr.Textbox(label="Text", lines=3, elem_id="edit_box")
        with gr.Row():
            save_edit = gr.Button("Save edit", elem_id="save_edit", size="sm")
            delete_msg = gr.Button("Delete message", elem_id="delete_msg", size="sm", variant="stop")
            hidden = gr.Checkbox(label="Hidden from the model", elem_id="hidden")
    with gr.Accordion("Persona, format and sampling", open=False):
        personas = persona_panel()
        fmt = gr.Dropdown(["auto", *format_names(), ST_FORMAT], value="auto", label="Prompt format", elem_id="fmt")
        with gr.Row():
            st_instruct = gr.File(label="SillyTavern instruct preset", elem_id="st_instruct", file_types=[".json"])
            st_context = gr.File(label="SillyTavern context template", elem_id="st_context", file_types=[".json"])
        st_status = gr.Markdown(elem_id="st_status")
        preset = gr.Radio(list(PRESETS), value="Balanced", label="Sampling preset", elem_id="preset")
        max_tokens = gr.Slider(16, 1024, value=200, step=8, label="Max reply tokens", elem_id="max_tok")
        seed = gr.Number(-1, label="Seed (-1 = random)", precision=0, elem_id="seed")
    return TalkColumn(
        chatbot=chatbot,
        msg=msg,
        send=send,
        stop=stop,
        regen=regen,
        swipe_prev=swipe_prev,
        swipe_next=swipe_next,
        cont=cont,
        imp=imp,
        steer_top1=steer_top1,
        solo_expert=solo_expert,
        steer_solo=steer_solo,
        edit_box=edit_box,
        save_edit=save_edit,
        delete_msg=delete_msg,
        hidden=hidden,
        user_name=personas.user_name,
        persona=personas.persona,
        personas=personas,
        fmt=fmt,
        st_instruct=st_instruct,
        st_context=st_context,
        st_status=st_status,
        preset=preset,
        max_tokens=max_tokens,
        seed=seed,
    )


def _routing_column(n_layers: int) -> RoutingColumn:
    metrics = gr.HTML(elem_id="metrics")
    layer = gr.Dropdown(layer_choices(n_layers), value=MEAN, label="Colour tokens by", elem_id="layer")
    tokens = gr.HTML(elem_id="tokens")
    heatmap = gr.Plot(elem_id="heatmap", label="Router weight, layers × tokens")
    bars = gr.Plot(elem_id="bars", label="Share per layer")
    with gr.Accordion("Your message's routing", open=False):
        user_tokens = gr.HTML(elem_id="user_tokens")
    with gr.Accordion("Drift over the chat", open=False):
        drift = gr.Plot(elem_id="drift", label="Expert share per reply")
    with gr.Accordion("Context meter", open=False):
        context = gr.HTML(context_html(None), elem_id="context")
    return RoutingColumn(
        metrics=metrics,
        layer=layer,
        tokens=tokens,
        heatmap=heatmap,
        bars=bars,
        user_tokens=user_tokens,
        drift=drift,
        context=context,
    )


def characters_tab() -> CharactersTab:
    with gr.Tab("Characters"):
        card_file = gr.File(
            label="Import a card (PNG, JSON, CHARX, YAML)",
            elem_id="card_upload",
            file_types=[".png", ".json", ".charx", ".yaml", ".yml"],
            type="filepath",
        )
        with gr.Row():
            exports = {
                f: gr.Button(f"Export {f.upper()}", elem_id=f"export_{f}", size="sm") for f in ("png", "json", "charx")
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
        gr.Markdown("### World Info")
        world_file = gr.File(
            label="Import World Info or a lorebook (.json)",
            elem_id="world_upload",
            file_types=[".json"],
            type="filepath",
        )
        world_pick = gr.Dropdown([], label="World Info book", elem_id="world_pick", allow_custom_value=False)
        with gr.Row():
            world_buttons = {
                scope: gr.Button(label, elem_id=f"world_{scope}", size="sm")
                for scope, label in (
                    ("character", "Attach to the character"),
                    ("chat", "Attach to the chat"),
                    ("global", "Attach to every chat"),
                    ("detach", "Detach"),
                )
            }
        world_status = gr.HTML(elem_id="world_status")
    return CharactersTab(
        card_file=card_file,
        exports=exports,
        card_out=card_out,
        load_editor=load_editor,
        editor=editor,
        save_new=save_new,
        save_old=save_old,
        delete_char=delete_char,
        world_file=world_file,
        world_pick=world_pick,
        world_buttons=world_buttons,
        world_status=world_status,
    )


def model_tab(panel: str, status: str) -> ModelTab:
    with gr.Tab("Model", elem_id="model_tab") as tab:
        model_md = gr.Markdown(panel, elem_id="model_panel")
        with gr.Row(equal_height=True):
            model_in = gr.Textbox(label="Load another model", info=HELP, elem_id="model_in", scale=4)
            model_load = gr.Button("Load", elem_id="model_load", variant="primary", scale=1)
        model_status = gr.Markdown(status, elem_id="model_status")
    return ModelTab(tab=tab, model_md=model_md, model_in=model_in, model_load=model_load, model_status=model_status)
