"""Group chat events: create a group from the characters, open its chats, mute members, and the per-character
routing views (a table of each member's weight split, its per-layer shares, its drift). A member speaks through
ChatUI.speak; names are shown escaped (ui.html.esc, plots' safe_text)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager

import gradio as gr
import numpy as np

from moechat import chat
from moechat.errors import MoechatError
from moechat.plots import Figure, character_drift_figure, character_layers_figure
from moechat.routing.characters import CharacterRouting, by_character
from moechat.store.groups import GroupInfo
from moechat.store.store import Store
from moechat.ui.chats import ChatList
from moechat.ui.html import esc
from moechat.ui.session import Session
from moechat.ui.views import expert_labels_for


def character_table(routing: CharacterRouting, expert_names: Sequence[str]) -> str:
    """One row per character, one column per expert: its weight split over the chat (and its routed tokens)."""
    head = "".join(f"<th>{esc(name)}</th>" for name in expert_names)
    rows = []
    for c, name in enumerate(routing.names):
        shares = routing.share[c] if routing.share.shape[1] else np.zeros(len(expert_names))
        cells = "".join(f"<td>{'–' if np.isnan(v) else f'{v:.0%}'}</td>" for v in shares)
        rows.append(f"<tr><th>{esc(name)}</th><td>{int(routing.tokens[c])}</td>{cells}</tr>")
    return (
        '<table class="char-routing"><thead><tr><th>character</th><th>tokens</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


class GroupsUI:
    def __init__(self, chats: ChatList) -> None:
        self.chats, self.ui = chats, chats.ui

    def _store(self, session: Session) -> AbstractContextManager[Store]:
        return self.ui.stores.lease(session.owner)

    def skip(self) -> tuple:
        return (*self.chats.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip())

    # ---- the panel ----------------------------------------------------------------------------------------
    def characters(self, session: Session) -> gr.Dropdown:
        """The member picker's choices: this owner's characters."""
        with self._store(session) as store:
            return gr.Dropdown(choices=[(c.name, c.id) for c in store.characters()])

    def panel(self, session: Session, status: str = "") -> tuple:
        """Group picker, speaker picker, muted members and status for the open chat's group (if any)."""
        with self._store(session) as store:
            groups = store.groups()
            group = store.chat_group(session.chat_id) if session.chat_id is not None else None
        pick = gr.Dropdown(choices=[(g.name, g.id) for g in groups], value=group.id if group else None)
        if group is None:
            return pick, gr.Dropdown(choices=[], value=None), gr.CheckboxGroup(choices=[], value=[]), status
        members = [(m.name, m.character_id) for m in group.members]
        speaker = gr.Dropdown(choices=members, value=members[0][1])
        muted = gr.CheckboxGroup(choices=members, value=[m.character_id for m in group.members if m.muted])
        return pick, speaker, muted, status or _describe(group)

    # ---- events -------------------------------------------------------------------------------------------
    def create(
        self,
        session: Session,
        name: str,
        members: list[int] | None,
        strategy: str,
        mode: str,
        allow_self: bool,
        user_name: str = "You",
    ) -> tuple:
        try:
            with self._store(session) as store:
                group = store.create_group(
                    name or "", [int(m) for m in members or []], strategy=strategy, generation_mode=mode,
                    allow_self_responses=bool(allow_self),
                )  # fmt: skip
                chat_id = chat.start_group_chat(
                    store, group.id, user_name=user_name or "You", persona_id=session.persona_id
                )
        except MoechatError as exc:
            gr.Warning(str(exc))
            return self.skip()
        return self._open(session, chat_id)

    def pick(self, session: Session, group_id: int | None, user_name: str = "You") -> tuple:
        """Open the group's latest chat (a new one when it has none)."""
        if group_id is None:
            return self.skip()
        with self._store(session) as store:
            try:
                chats = store.group_chats(int(group_id))
                chat_id = (
                    chats[0]
                    if chats
                    else chat.start_group_chat(store, int(group_id), user_name=user_name, persona_id=session.persona_id)
                )
            except MoechatError as exc:
                gr.Warning(str(exc))
                return self.skip()
        if chat_id == session.chat_id:
            return self.skip()
        return self._open(session, chat_id)

    def new_chat(self, session: Session, group_id: int | None, user_name: str = "You") -> tuple:
        if group_id is None:
            gr.Warning("Pick a group first.")
            return self.skip()
        try:
            with self._store(session) as store:
                chat_id = chat.start_group_chat(
                    store, int(group_id), user_name=user_name or "You", persona_id=session.persona_id
                )
        except MoechatError as exc:
            gr.Warning(str(exc))
            return self.skip()
        return self._open(session, chat_id)

    def _open(self, session: Session, chat_id: int) -> tuple:
        return (*self.chats.open(session, chat_id), *self.panel(session))

    def mute(self, session: Session, muted: list[int] | None) -> object:
        """Mute the ticked members of the open chat's group, unmute the others."""
        try:
            with self._store(session) as store:
                group = store.chat_group(session.chat_id) if session.chat_id is not None else None
                if group is None:
                    return "Open a group chat first."
                ticked = {int(m) for m in muted or []}
                for m in group.members:
                    if m.muted != (m.character_id in ticked):
                        group = store.mute_member(group.id, m.character_id, m.character_id in ticked)
        except MoechatError as exc:
            gr.Warning(str(exc))
            return gr.skip()
        return _describe(group)

    def routing(self, session: Session) -> tuple[str, Figure | None, Figure | None]:
        """The per-character table, per-layer shares and drift of the open group chat."""
        if session.chat_id is None:
            return "", None, None
        with self._store(session) as store:
            group = store.chat_group(session.chat_id)
            if group is None:
                return "<p>Per-character routing is for group chats.</p>", None, None
            names = {m.character_id: m.name for m in group.members}
            speakers, n = store.speakers(session.chat_id), len(self.ui.model.expert_names)
            replies = []
            for m in store.messages(session.chat_id):
                who = speakers.get(m.id)
                if m.role == "assistant" and who in names and m.current.has_routing:
                    record = store.routing(m.current.id)
                    if record is not None and record.probs.shape[-1] == n:
                        replies.append((names[who], record.probs.astype(np.float32)))
        result = by_character(replies, [m.name for m in group.members])
        experts = expert_labels_for(n, self.ui.model)
        if not replies:
            return character_table(result, experts), None, None
        figures = character_layers_figure(result.layer_share, result.names, experts)
        return character_table(result, experts), figures, character_drift_figure(result.drift, result.names, experts)


def _describe(group: GroupInfo) -> str:
    muted = [m.name for m in group.members if m.muted]
    who = ", ".join(m.name for m in group.members)
    note = f"; muted: {', '.join(muted)}" if muted else ""
    return esc(f"{group.name}: {who} · {group.strategy} order · {group.generation_mode}{note}")
