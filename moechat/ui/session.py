"""Per-visitor state of the UI and the shared handles it points into (no gradio here).

A Session lives in a gr.State, so each browser tab has its own; its owner decides which store handle (and so
which characters and chats) it sees; handles are leased from a bounded pool (Stores). A tab runs one turn at a
time and has its own Stop flag (Turns), so Stop in one tab never stops another tab's reply.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic

from moechat.prompt.st_preset import StPreset
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
    st_preset: StPreset | None = None  # SillyTavern instruct/context presets imported in the format picker
    persona_id: int | None = None  # the persona picked in the persona panel (a lock or the default may apply instead)


MAX_OPEN = 32  # visitors' store handles open at once (besides the base), unless more are in use
IDLE_S = 300.0  # a visitor's handle unused for this long is closed at the next use of the pool


@dataclass
class _Handle:
    store: Store
    users: int = 0  # leases not yet returned
    last_used: float = 0.0  # clock time of the last lease or return


class Stores:
    """Store handles per owner on one database file, leased: `with stores.lease(owner) as store: ...`.

    The base handle (the local user's) is always open. A visitor's (hosted mode) is opened on first use, and
    closed when unused for `idle_s` or when more than `max_open` are open (least recently used first), checked
    whenever a lease is taken or returned; a leased handle is never closed, so a reply that streams for minutes
    keeps its handle. A closed handle is reopened at the owner's next lease: the data lives in the file. Closing
    frees the connection (its page cache); its file descriptor SQLite keeps for the next connection to reuse.
    """

    def __init__(
        self, base: Store, *, max_open: int = MAX_OPEN, idle_s: float = IDLE_S, clock: Callable[[], float] = monotonic
    ) -> None:
        self._base, self._max_open, self._idle_s, self._clock = base, max_open, idle_s, clock
        self._lock = threading.Lock()
        self._open: OrderedDict[str, _Handle] = OrderedDict()  # least recently used first

    @contextmanager
    def lease(self, owner: str) -> Iterator[Store]:
        """The owner's handle, kept open until the block ends."""
        if owner == self._base.owner:
            yield self._base
            return
        handle = self._take(owner)
        try:
            yield handle.store
        finally:
            self._give_back(owner, handle)

    @property
    def open_count(self) -> int:
        """Visitors' handles open now (the base not counted)."""
        with self._lock:
            return len(self._open)

    def _take(self, owner: str) -> _Handle:
        with self._lock:
            handle = self._open.get(owner)
            if handle is None:
                self._evict(room=1)
                handle = self._open[owner] = _Handle(self._base.for_owner(owner))
            handle.users += 1
            self._touch(owner, handle)
            return handle

    def _give_back(self, owner: str, handle: _Handle) -> None:
        with self._lock:
            handle.users -= 1
            self._touch(owner, handle)
            self._evict()

    def _touch(self, owner: str, handle: _Handle) -> None:
        handle.last_used = self._clock()
        self._open.move_to_end(owner)

    def _evict(self, room: int = 0) -> None:
        """(Under the lock.) Close the unused handles idle for idle_s, then the least recently used unused ones
        while more than max_open - room are open. Closing first and opening after keeps the connections at
        max_open: SQLite (WAL mode) parks a closed connection's file descriptor while other connections of the
        process have the file open, and reuses it for the next one."""
        now = self._clock()
        for owner, handle in list(self._open.items()):
            crowded = len(self._open) + room > self._max_open
            if handle.users == 0 and (crowded or now - handle.last_used >= self._idle_s):
                self._open.pop(owner).store.close()

    def close(self) -> None:
        """Close every handle, the base included (at shutdown)."""
        with self._lock:
            for handle in self._open.values():
                handle.store.close()
            self._open.clear()
            self._base.close()


class Turns:
    """The turn each browser tab (Gradio session) is running, and its Stop flag. One turn per tab at a time: a
    turn started while another streams (Regenerate pressed during a reply) is refused, so two turns never write
    one chat at once. Stop sets the running turn's flag, which the engine reads between tokens; Stop in one tab
    never stops another tab's reply."""

    def __init__(self) -> None:
        self._running: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @contextmanager
    def run(self, key: str | None) -> Iterator[threading.Event | None]:
        """The new turn's stop flag, the tab's until the block ends; None if the tab is running a turn already."""
        key = key or "_"
        with self._lock:
            flag = None if key in self._running else self._running.setdefault(key, threading.Event())
        if flag is None:
            yield None
            return
        try:
            yield flag
        finally:
            with self._lock:
                del self._running[key]

    def stop(self, key: str | None) -> None:
        """Stop the tab's running turn (nothing if none runs)."""
        with self._lock:
            flag = self._running.get(key or "_")
        if flag is not None:
            flag.set()
