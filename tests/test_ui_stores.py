"""ui.session.Stores: per-visitor SQLite handles are bounded (LRU + idle timeout), leased handles are never
closed under their user, and every visitor's data survives eviction. Real SQLite files.

Connections are counted as this process's file descriptors on the database file. In WAL mode SQLite keeps a
closed connection's descriptor while another connection of the process has the file open (the base handle
always does) and hands it to the next connection it opens, so that count is the most connections ever open at
once: it stays at the bound only if a handle is closed before the next one opens."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from moechat.store.store import Store
from moechat.ui.session import MAX_OPEN, Stores


def db_fds(path: Path) -> int:
    """This process's open file descriptors on `path` (one per SQLite connection)."""
    target, count = str(path.resolve()), 0
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):  # closed between listdir and readlink
            count += os.readlink(f"/proc/self/fd/{fd}") == target
    return count


@pytest.fixture
def base(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as store:
        yield store


def visit(stores: Stores, i: int) -> None:
    """Visitor i makes a character, a chat and a message."""
    with stores.lease(f"visitor-{i}") as store:
        character = store.add_character(f"char {i}", {"name": f"char {i}"})
        chat = store.create_chat(character.id, title=f"chat {i}")
        store.add_message(chat.id, "user", f"hello from {i}", name="You")


def check(stores: Stores, i: int) -> None:
    """Visitor i sees exactly their own character, chat and message."""
    with stores.lease(f"visitor-{i}") as store:
        assert [c.name for c in store.characters()] == [f"char {i}"]
        chats = store.chats()
        assert [c.title for c in chats] == [f"chat {i}"]
        assert [m.text for m in store.messages(chats[0].id)] == [f"hello from {i}"]


def test_200_visitors_keep_open_connections_bounded_and_data_isolated(base: Store) -> None:
    stores = Stores(base)
    assert db_fds(base.path) == 1  # the base handle
    visit(stores, 0)
    assert db_fds(base.path) == 2  # the count sees a visitor's connection
    for i in range(1, 200):
        visit(stores, i)
        assert stores.open_count == min(i + 1, MAX_OPEN)
        assert db_fds(base.path) == min(i + 1, MAX_OPEN) + 1  # never more than MAX_OPEN at once, plus the base
    for i in range(200):  # visitor 0's handle was closed long ago: reopened, their data intact
        check(stores, i)
    assert db_fds(base.path) == MAX_OPEN + 1
    assert base.characters() == []  # the local owner sees none of the visitors' data
    stores.close()
    assert db_fds(base.path) == 0


def test_a_leased_handle_is_not_closed_while_its_reply_streams(base: Store) -> None:
    """A visitor's reply holds its lease across yields (as ui.chat's turn does) while 100 other visitors come
    and go through a pool of 2: the handle stays open and usable, and is closed once the reply is over."""
    stores = Stores(base, max_open=2)
    visit(stores, 0)
    leased: list[Store] = []

    def reply() -> Iterator[int]:
        with stores.lease("visitor-0") as store:
            leased.append(store)
            chat_id = store.chats()[0].id
            for part in range(3):
                store.add_message(chat_id, "assistant", f"part {part}", name="Bot")
                yield part

    stream = reply()
    next(stream)
    for i in range(1, 101):
        visit(stores, i)
        assert stores.open_count == 2 and db_fds(base.path) == 3
    assert list(stream) == [1, 2]  # writes after the churn: the handle was not closed under the reply
    with stores.lease("visitor-0") as store:
        assert store is leased[0]  # still the same handle
        texts = [m.text for m in store.messages(store.chats()[0].id)]
    assert texts == ["hello from 0", "part 0", "part 1", "part 2"]
    visit(stores, 101)
    visit(stores, 102)
    with pytest.raises(sqlite3.ProgrammingError, match="closed"):  # evicted once nobody used it
        leased[0].characters()
    assert stores.open_count == 2 and db_fds(base.path) == 3


def test_idle_handles_are_closed_and_the_base_never(base: Store) -> None:
    now = [0.0]
    stores = Stores(base, idle_s=300, clock=lambda: now[0])
    handles: dict[int, Store] = {}

    def visit_keeping(i: int) -> None:
        visit(stores, i)
        with stores.lease(f"visitor-{i}") as store:
            handles[i] = store

    def closed(i: int) -> bool:
        try:
            handles[i].characters()
        except sqlite3.ProgrammingError:
            return True
        return False

    visit_keeping(1)
    visit_keeping(2)
    now[0] += 299
    visit_keeping(3)
    assert stores.open_count == 3 and not any(map(closed, (1, 2, 3)))  # not idle long enough yet
    now[0] += 2
    visit_keeping(4)
    assert stores.open_count == 2 and closed(1) and closed(2) and not closed(3) and not closed(4)
    with stores.lease(base.owner) as local:
        assert local is base
    now[0] += 10_000
    visit_keeping(5)
    assert stores.open_count == 1 and closed(3) and closed(4) and not closed(5)
    assert base.characters() == []  # the base handle is never closed
    assert db_fds(base.path) <= 4  # no more than 3 visitors' connections were ever open at once
    for i in range(1, 6):
        check(stores, i)


def test_threads_share_the_pool_safely(base: Store) -> None:
    """8 threads, 25 visitors each, through a pool of 4 (so handles are evicted while others are in use), then
    every visitor revisited from another thread; nothing fails and every visitor's data is intact."""
    n_threads, per_thread, max_open = 8, 25, 4
    stores = Stores(base, max_open=max_open)
    errors: list[BaseException] = []
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], db_fds(base.path))

    def work(t: int, action) -> None:
        try:
            for j in range(per_thread):
                action(stores, t * per_thread + j)
        except BaseException as exc:  # reported below
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    watcher.start()
    for action, shift in ((visit, 0), (check, 3)):
        threads = [threading.Thread(target=work, args=((t + shift) % n_threads, action)) for t in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    done.set()
    watcher.join()
    assert errors == []
    assert stores.open_count <= max_open
    # at most max_open idle handles plus one in use per thread (and the base) were ever open at once
    assert 1 < peak[0] <= max_open + n_threads + 1
