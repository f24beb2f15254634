"""World Info and SillyTavern presets in the UI: import a book (SillyTavern World Info or a V2/V3 lorebook) and
attach it to the selected character, the open chat or every chat; import an instruct preset and a context template
as the "SillyTavern preset" prompt format (docs/formats.md §2.6.1, §3.10)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import gradio as gr

from moechat.cards.world_info import MAX_WORLD_BYTES, parse_lore
from moechat.errors import MoechatError
from moechat.prompt.st_preset import StPreset, load_preset
from moechat.store.store import Store
from moechat.store.worlds import Scope
from moechat.ui.html import esc
from moechat.ui.session import Session, Stores
from moechat.ui.turn_inputs import ST_FORMAT


class WorldInfoUI:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    def _store(self, session: Session) -> AbstractContextManager[Store]:
        return self.stores.lease(session.owner)

    def names(self, session: Session) -> list[str]:
        with self._store(session) as store:
            return [w.name for w in store.worlds()]

    def picker(self, session: Session) -> tuple[Any, str]:
        """The stored books (for the picker) and what is attached where."""
        return gr.update(choices=self.names(session)), self.status(session)

    def upload(self, session: Session, path: str | None) -> tuple[Any, str]:
        """Store an uploaded book under its name (replacing one of that name). Returns (picker, status)."""
        if not path:
            return gr.skip(), gr.skip()
        file = Path(path)
        try:
            if file.stat().st_size > MAX_WORLD_BYTES:
                raise MoechatError(f"larger than {MAX_WORLD_BYTES // (1024 * 1024)} MiB")
            text = file.read_text(encoding="utf-8")
            lore = parse_lore(text, file.stem)
            with self._store(session) as store:
                store.save_world(lore.name, text)
        except (MoechatError, OSError, UnicodeDecodeError) as exc:
            gr.Warning(esc(f"could not import {file.name}: {exc}"))
            return gr.skip(), gr.skip()
        gr.Info(esc(f"Imported World Info {lore.name!r} ({len(lore.rules)} entries)."))
        return gr.update(choices=self.names(session), value=lore.name), self.status(session)

    def attach(self, session: Session, name: str | None, scope: Scope, attached: bool = True) -> str:
        """Attach (or detach) the picked book; returns the status."""
        target = {"global": None, "character": session.character_id, "chat": session.chat_id}[scope]
        if not name:
            gr.Warning("Import or pick a World Info book first.")
        elif scope != "global" and target is None:
            gr.Warning(f"Open a {scope} first.")
        else:
            try:
                with self._store(session) as store:
                    store.attach_world(name, scope, target, attached=attached)
            except MoechatError as exc:
                gr.Warning(esc(exc))
        return self.status(session)

    def detach_everywhere(self, session: Session, name: str | None) -> str:
        scopes: tuple[tuple[Scope, int | None], ...] = (
            ("global", None),
            ("character", session.character_id),
            ("chat", session.chat_id),
        )
        for scope, target in scopes:
            if name and (scope == "global" or target is not None):
                with self._store(session) as store:
                    store.attach_world(name, scope, target, attached=False)
        return self.status(session)

    def status(self, session: Session) -> str:
        """Which books apply to the open chat, and from where (HTML, escaped)."""
        with self._store(session) as store:
            rows = [("everywhere", store.attached_worlds("global"))]
            if session.character_id is not None:
                rows.append(("this character", store.attached_worlds("character", session.character_id)))
            if session.chat_id is not None:
                rows.append(("this chat", store.attached_worlds("chat", session.chat_id)))
        lines = [f"<li>{esc(where)}: {esc(', '.join(w.name for w in worlds) or 'none')}</li>" for where, worlds in rows]
        return f'<div id="world_attached">World Info attached:<ul>{"".join(lines)}</ul></div>'

    def preset(self, session: Session, instruct: str | None, context: str | None) -> tuple[Any, str]:
        """Import a SillyTavern instruct preset (and a context template) as the prompt format."""
        if not instruct:
            return gr.skip(), "Upload an instruct preset (its context template is optional)."
        try:
            ctx = Path(context).read_text(encoding="utf-8") if context else None
            preset: StPreset = load_preset(Path(instruct).read_text(encoding="utf-8"), ctx)
        except (MoechatError, OSError, UnicodeDecodeError) as exc:
            gr.Warning(esc(f"could not read the preset: {exc}"))
            return gr.skip(), gr.skip()
        session.st_preset = preset
        label = f"{preset.instruct.get('name', 'instruct')} + {preset.context.get('name', 'context')}"
        return gr.update(value=ST_FORMAT), f"SillyTavern preset in use: {esc(label)}"
