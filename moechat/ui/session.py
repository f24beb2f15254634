"""Per-visitor state of the UI and the shared handles it points into (no gradio here).

A Session lives in a gr.State, so each browser tab has its own; its owner decides which store handle (and so
which characters and chats) it sees. Stop flags are per Gradio session too, so Stop in one tab never stops
another tab's reply.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from moechat.routing.summary import Summary
from moechat.store.records import LOCAL_OWNER
from moechat.store.store import Store
from moechat.ui.routing import Shown


@dataclass
class Session:
    owner: str = LOCAL_OWNER
    character_ids: list[int] = field(default_factory=list)  # in gallery order
    character_id: int | None = None
    chat_id: int | None = None
    message_ids: list[int] = field(default_factory=list)  # in chat-view order
    selected: int | None = None  # message id whose routing is shown / acted on
    layer: int | None = None  # None: mean over layers
    shown: Shown | None = None
    summaries: dict[int, Summary | None] = field(default_factory=dict)  # swipe id -> routing Summary or None (cached)
    last_rate: float | None = None


class Stores:
    """One Store handle per owner on the same database file (opened on first use)."""

    def __init__(self, base: Store) -> None:
        self._base, self._lock = base, threading.Lock()
        self._by_owner: dict[str, Store] = {base.owner: base}

    def get(self, owner: str) -> Store:
        with self._lock:
            store = self._by_owner.get(owner)
            if store is None:
                store = self._by_owner[owner] = self._base.for_owner(owner)
            return store

    def close(self) -> None:
        with self._lock:
            for store in self._by_owner.values():
                store.close()
            self._by_owner.clear()


class StopFlags:
    """A threading.Event per Gradio session: set by the Stop button, read by the engine between tokens."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def get(self, key: str | None) -> threading.Event:
        with self._lock:
            return self._flags.setdefault(key or "_", threading.Event())

    def fresh(self, key: str | None) -> threading.Event:
        flag = self.get(key)
        flag.clear()
        return flag

    def drop(self, key: str | None) -> None:
        with self._lock:
            self._flags.pop(key or "_", None)
