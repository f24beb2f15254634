"""ui.session.Turns: one turn per browser tab at a time, each with its own Stop flag; a finished or failed turn
frees its tab; Stop reaches only the tab's running turn."""

from __future__ import annotations

import threading

import pytest

from moechat.ui.session import Turns


def test_a_tab_runs_one_turn_and_stop_reaches_only_it() -> None:
    turns = Turns()
    with turns.run("tab-a") as a, turns.run("tab-b") as b:
        assert a is not None and b is not None
        with turns.run("tab-a") as again:
            assert again is None  # refused: tab-a is busy
        turns.stop("tab-a")
        assert a.is_set() and not b.is_set()
    with turns.run("tab-a") as fresh:  # free again, with a new flag that Stop has not set
        assert fresh is not None and not fresh.is_set()
    turns.stop("tab-a")  # nothing runs: nothing to stop, no error


def test_a_failed_turn_frees_its_tab() -> None:
    turns = Turns()
    with pytest.raises(RuntimeError), turns.run("tab") as flag:
        assert flag is not None
        raise RuntimeError("the turn failed")
    with turns.run("tab") as flag:
        assert flag is not None


def test_two_threads_starting_a_turn_in_one_tab_get_one_turn() -> None:
    turns, got, barrier = Turns(), [], threading.Barrier(8)
    release = threading.Event()

    def start() -> None:
        barrier.wait()
        with turns.run("tab") as flag:
            got.append(flag is not None)
            release.wait(5)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for t in threads:
        t.start()
    for _ in range(500):  # every thread has tried (the one that got the tab holds it until released)
        if len(got) == 8:
            break
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join()
    assert sorted(got) == [False] * 7 + [True]
