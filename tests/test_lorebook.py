"""Lore activation (docs/formats.md §2.6): SillyTavern's rules, one table of hand-derived cases per rule."""

import re
import threading
import time
from typing import Any

import pytest

from moechat.cards.lore_scan import LoreSettings, Selection, scan
from moechat.cards.lorebook import Lorebook, read_lorebook
from moechat.cards.lorebook_decorators import parse_decorators
from moechat.cards.lorebook_keys import regex_matches
from moechat.cards.macros import substitute
from moechat.cards.world_info import book_rules
from moechat.errors import CardError


def words(text: str) -> int:
    return len(text.split())


def entry(keys: list[str], content: str, order: int = 100, **extra: Any) -> dict[str, Any]:
    return {"keys": keys, "content": content, "extensions": {}, "enabled": True, "insertion_order": order, **extra}


def book(*entries: dict[str, Any], **fields: Any) -> Lorebook:
    return Lorebook.model_validate({"entries": list(entries), "extensions": {}, **fields})


def select(bk: Lorebook, messages: list[str], count: Any = words, budget: int | None = None, **kw: Any) -> Selection:
    rules = sorted(book_rules(bk), key=lambda r: -r.order)
    macros = lambda t: substitute(t, char="Lumi", user="Ann")  # noqa: E731
    return scan(rules, messages, count, LoreSettings(**kw), budget=budget, substitute=macros)


def fired(bk: Lorebook, messages: list[str], **kw: Any) -> list[str]:
    return [hit.content for hit in select(bk, messages, **kw).fired]


# (name, book, messages, select kwargs, expected fired contents in order)
CASES = [
    ("key fires", book(entry(["dragon"], "D")), ["a dragon!"], {}, ["D"]),
    ("no key no fire", book(entry(["dragon"], "D")), ["a cat"], {}, []),
    ("any of the keys", book(entry(["wyrm", "dragon"], "D")), ["dragon"], {}, ["D"]),
    ("case-insensitive default", book(entry(["Dragon"], "D")), ["DRAGON"], {}, ["D"]),
    ("case_sensitive true", book(entry(["Dragon"], "D", case_sensitive=True)), ["dragon"], {}, []),
    ("case_sensitive true hit", book(entry(["Dragon"], "D", case_sensitive=True)), ["Dragon"], {}, ["D"]),
    (
        "extensions mirror of case_sensitive",
        book(entry(["Dragon"], "D", extensions={"case_sensitive": True})),
        ["dragon"],
        {},
        [],
    ),
    (
        "top-level case_sensitive wins over mirror",
        book(entry(["Dragon"], "D", case_sensitive=False, extensions={"case_sensitive": True})),
        ["dragon"],
        {},
        ["D"],
    ),
    ("disabled never fires", book(entry(["dragon"], "D", enabled=False)), ["dragon"], {}, []),
    ("disabled constant never fires", book(entry([], "C", enabled=False, constant=True)), ["x"], {}, []),
    ("constant always", book(entry([], "C", constant=True)), ["nothing"], {}, ["C"]),
    ("constant with no messages", book(entry([], "C", constant=True)), [], {}, ["C"]),
    (
        "selective needs a secondary key",
        book(entry(["sword"], "S", selective=True, secondary_keys=["fire"])),
        ["a sword"],
        {},
        [],
    ),
    (
        "selective with both keys",
        book(entry(["sword"], "S", selective=True, secondary_keys=["fire", "ice"])),
        ["a sword of ice"],
        {},
        ["S"],
    ),
    (
        "secondary keys ignored without selective",
        book(entry(["sword"], "S", selective=False, secondary_keys=["fire"])),
        ["a sword"],
        {},
        ["S"],
    ),
    (
        "selectiveLogic NOT_ANY",
        book(entry(["sword"], "S", selective=True, secondary_keys=["fire"], extensions={"selectiveLogic": 2})),
        ["a sword of fire"],
        {},
        [],
    ),
    (
        "selectiveLogic AND_ALL",
        book(entry(["sword"], "S", selective=True, secondary_keys=["a", "zz"], extensions={"selectiveLogic": 3})),
        ["a sword"],
        {},
        [],
    ),
    (
        "insertion_order ascending",
        book(entry(["x"], "late", order=300), entry(["x"], "early", order=10), entry(["x"], "mid", order=100)),
        ["x"],
        {},
        ["early", "mid", "late"],
    ),
    (
        "ties keep book order",
        book(entry(["x"], "first"), entry(["x"], "second")),
        ["x"],
        {},
        ["second", "first"],  # ST sorts by order, highest first, then prepends: equal orders come out reversed
    ),
    (
        "default scan depth is 2 messages",
        book(entry(["dragon"], "D")),
        ["dragon", "b", "c"],
        {},
        [],
    ),
    ("book scan depth is ignored (ST)", book(entry(["dragon"], "D"), scan_depth=3), ["dragon", "b", "c"], {}, []),
    ("scan depth setting", book(entry(["dragon"], "D")), ["dragon", "b", "c"], {"depth": 3}, ["D"]),
    (
        "entry scan depth beats the setting",
        book(entry(["dragon"], "D", extensions={"scan_depth": 3})),
        ["dragon", "b", "c"],
        {"depth": 1},
        ["D"],
    ),
    ("scan depth 0 scans nothing", book(entry(["dragon"], "D")), ["dragon"], {"depth": 0}, []),
    ("names are scanned", book(entry(["Ann"], "A")), ["Ann: hello"], {}, ["A"]),
    ("empty content inserts nothing", book(entry(["x"], "")), ["x"], {}, []),
    ("blank key never matches", book(entry(["", "  "], "B")), ["anything"], {}, []),
    (
        "no recursion when switched off",
        book(entry(["dragon"], "the wyrm"), entry(["wyrm"], "W")),
        ["dragon"],
        {"recursive": False},
        ["the wyrm"],
    ),
    (
        "recursion by default, chains of three",
        book(
            entry(["dragon"], "the wyrm", order=1), entry(["wyrm"], "W drake", order=2), entry(["drake"], "K", order=3)
        ),
        ["dragon"],
        {},
        ["the wyrm", "W drake", "K"],
    ),
    (
        "recursion step limit",
        book(
            entry(["dragon"], "the wyrm", order=1), entry(["wyrm"], "W drake", order=2), entry(["drake"], "K", order=3)
        ),
        ["dragon"],
        {"max_recursion_steps": 2},
        ["the wyrm", "W drake"],
    ),
    (
        "prevent_recursion",
        book(entry(["dragon"], "the wyrm", extensions={"prevent_recursion": True}), entry(["wyrm"], "W")),
        ["dragon"],
        {},
        ["the wyrm"],
    ),
    (
        "delay_until_recursion",
        book(
            entry(["dragon"], "the wyrm", 2), entry(["dragon"], "late", 3, extensions={"delay_until_recursion": True})
        ),
        ["dragon"],
        {},
        ["the wyrm", "late"],
    ),
    ("delay: not before N messages", book(entry(["x"], "D", extensions={"delay": 3})), ["x", "x"], {}, []),
    ("delay reached", book(entry(["x"], "D", extensions={"delay": 2})), ["x", "x"], {}, ["D"]),
    (
        "inclusion group: override wins",
        book(
            entry(["x"], "A", order=5, extensions={"group": "g"}),
            entry(["x"], "B", order=1, extensions={"group": "g", "group_override": True}),
        ),
        ["x"],
        {},
        ["B"],
    ),
    (
        "probability 0 never fires",
        book(entry(["x"], "P", extensions={"probability": 0, "useProbability": True})),
        ["x"],
        {},
        [],
    ),
    (
        "recursion via hidden_key, not via comment",
        book(
            entry(["dragon"], "x {{hidden_key:wyrm}} {{// drake}}", order=1),
            entry(["wyrm"], "W", order=2),
            entry(["drake"], "K", order=3),
        ),
        ["dragon"],
        {},
        ["x  ", "W"],  # the prompt gets neither macro; recursion reads the hidden key
    ),
    (
        "exclude_recursion",
        book(
            entry(["dragon"], "the wyrm"),
            entry(["wyrm"], "W", extensions={"exclude_recursion": True}),
        ),
        ["dragon"],
        {},
        ["the wyrm"],
    ),
    ("slash key is a regex", book(entry(["/drag(on|ons)\\b/i"], "D")), ["two DRAGONS"], {}, ["D"]),
    ("slash key: case from its flags", book(entry(["/drag(on|ons)\\b/"], "D")), ["two DRAGONS"], {}, []),
    ("plain key is not a regex", book(entry(["drag(on)"], "D")), ["dragon"], {}, []),
    ("whole words by default", book(entry(["magic"], "M")), ["magical things"], {}, []),
    ("whole word at punctuation", book(entry(["magic"], "M")), ["(magic)!"], {}, ["M"]),
    ("multi-word key is a substring", book(entry(["Moon Court"], "M")), ["the moon courtyard"], {}, ["M"]),
    ("substring per entry", book(entry(["cat"], "C", extensions={"match_whole_words": False})), ["concat"], {}, ["C"]),
    ("substring setting", book(entry(["cat"], "C")), ["concat"], {"match_whole_words": False}, ["C"]),
    ("case-sensitive setting", book(entry(["Cat"], "C")), ["cat"], {"case_sensitive": True}, []),
    ("{{char}} in a key", book(entry(["{{char}}"], "L")), ["lumi waves"], {}, ["L"]),
    ("use_regex key", book(entry(["^hel+o$"], "R", use_regex=True)), ["hellllo"], {}, ["R"]),
    ("use_regex invalid regex = no match", book(entry(["(unclosed"], "R", use_regex=True)), ["(unclosed"], {}, []),
    ("use_regex only keys[0]", book(entry(["zzz", "hello"], "R", use_regex=True)), ["hello"], {}, []),
    ("use_regex ignores constant", book(entry(["zzz"], "R", use_regex=True, constant=True)), ["a"], {}, []),
    (
        "use_regex ignores secondary keys",
        book(entry(["sword"], "R", use_regex=True, selective=True, secondary_keys=["fire"])),
        ["sword"],
        {},
        ["R"],
    ),
    (
        "ST export's use_regex keeps substring keys",
        book(entry(["a.b"], "S", use_regex=True, extensions={"display_index": 0, "position": 0})),
        ["aXb a.b"],
        {},
        ["S"],
    ),
    (
        "ST export's use_regex: dot is literal",
        book(entry(["a.b"], "S", use_regex=True, extensions={"display_index": 0})),
        ["aXb"],
        {},
        [],
    ),
    ("whole words", book(entry(["cat"], "C", extensions={"match_whole_words": True})), ["concatenate"], {}, []),
    ("CRLF text matches", book(entry(["glade"], "G")), ["the\r\nglade\r\n"], {}, ["G"]),
    ("whole words hit", book(entry(["cat"], "C", extensions={"match_whole_words": True})), ["a cat."], {}, ["C"]),
    ("@@activate fires without keys", book(entry(["zzz"], "@@activate\nA")), ["x"], {}, ["A"]),
    ("@@dont_activate never fires", book(entry(["x"], "@@dont_activate\nN", constant=True)), ["x"], {}, []),
    ("unknown decorator stripped", book(entry(["x"], "@@is_greeting 1\nG")), ["x"], {}, ["G"]),
]


@pytest.mark.parametrize(("name", "bk", "messages", "kw", "expected"), CASES, ids=[c[0] for c in CASES])
def test_selection_rules(name: str, bk: Lorebook, messages: list[str], kw: dict, expected: list[str]) -> None:
    assert fired(bk, messages, **kw) == expected


def test_key_and_step_are_reported() -> None:
    bk = book(entry(["wyrm", "dragon"], "D drake"), entry([], "C", constant=True), entry(["drake"], "K"))
    hits = {hit.content: (hit.key, hit.step, hit.why) for hit in select(bk, ["a dragon and a wyrm"]).fired}
    assert hits == {
        "D drake": ("wyrm", 1, "key 'wyrm'"),
        "C": (None, 1, "constant"),
        "K": ("drake", 2, "key 'drake', recursion step 1"),
    }


def test_budget_keeps_the_highest_orders_and_stops_at_the_first_overflow() -> None:
    # ST counts the accepted text plus a newline per entry and stops when it reaches the budget.
    bk = book(entry(["x"], "a a", order=10), entry(["x"], "b b", order=20), entry(["x"], "c c", order=30))
    sel = select(bk, ["x"], budget=5)
    assert [h.content for h in sel.fired] == ["b b", "c c"]
    assert [h.content for h in sel.dropped] == ["a a"]
    assert sel.budget == 5


def test_constant_is_subject_to_budget() -> None:
    bk = book(entry([], "c c c", constant=True, order=1), entry(["x"], "k", order=2))
    sel = select(bk, ["x"], budget=3)
    assert [h.content for h in sel.fired] == ["k"]
    assert [h.content for h in sel.dropped] == ["c c c"]


def test_budget_share_of_the_context() -> None:
    assert LoreSettings().budget(8192 - 350) == 1960
    assert LoreSettings(budget_cap=100).budget(8192) == 100
    assert LoreSettings(budget_percent=0).budget(100) == 1


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ("after_char", None, None)),
        ({"position": "before_char"}, ("before_char", None, None)),
        ({"position": "before_char", "extensions": {"position": 1}}, ("after_char", None, None)),
        ({"extensions": {"position": 4, "depth": 2, "role": 1}}, ("at_depth", 2, "user")),
        ({"extensions": {"position": 4}}, ("at_depth", 4, "system")),
        ({"extensions": {"position": 2}}, ("an_top", None, None)),
        ({"content": "@@depth 3\nX"}, ("at_depth", 3, "system")),
        ({"content": "@@depth 0\n@@role assistant\nX"}, ("at_depth", 0, "assistant")),
        ({"content": "@@position after_desc\nX", "position": "before_char"}, ("after_char", None, None)),
        ({"content": "@@position scenario\nX"}, ("scenario", None, None)),
    ],
)
def test_positions(fields: dict, expected: tuple) -> None:
    data = entry(["x"], fields.pop("content", "X"), **fields)
    (hit,) = select(book(data), ["x"]).fired
    assert (hit.position, hit.depth, hit.role) == expected
    assert hit.content == "X"


def test_decorators_parse_and_fallbacks() -> None:
    dec = parse_decorators("@@depth 2\n@@@position after_desc\n@@unknown 1\n@@@activate\nbody\n@@not top")
    assert dec.values == {"depth": "2", "activate": ""}
    assert dec.content == "body\n@@not top"


def test_decorators_preserved_in_the_book() -> None:
    bk = book(entry(["x"], "@@depth 2\n@@is_greeting 1\nbody"))
    select(bk, ["x"])
    assert bk.to_json()["entries"][0]["content"] == "@@depth 2\n@@is_greeting 1\nbody"


def test_catastrophic_regex_is_time_bounded() -> None:
    bk = book(entry(["(a+)+$"], "R", use_regex=True), entry(["a"], "plain"))
    start = time.monotonic()
    got = fired(bk, ["a" * 60 + "b", "a"], regex_timeout=0.2)
    assert got == ["plain"]
    assert time.monotonic() - start < 5


def test_backtracking_regex_that_matches_runs_in_worker() -> None:
    assert fired(book(entry(["dra.*on"], "D", use_regex=True)), ["a dragon"]) == ["D"]


def test_lorebook_roundtrip_keeps_unknown_fields() -> None:
    raw = {
        "name": "World",
        "weird": {"a": [1, None]},
        "extensions": {"st": 1},
        "entries": [{**entry(["x"], "X"), "extra_field": True, "id": "e1", "extensions": {"sticky": 2}}],
    }
    bk = read_lorebook({"spec": "lorebook_v3", "data": raw})
    assert bk.to_json() == raw
    assert read_lorebook(bk.to_lorebook_v3()).to_json() == raw


@pytest.mark.parametrize("bad", [[], {"entries": "x"}, {"entries": [{"keys": "dragon"}]}, {"spec": "lorebook_v3"}])
def test_bad_lorebooks_raise_card_error(bad: Any) -> None:
    with pytest.raises(CardError):
        read_lorebook(bad)


def test_regex_worker_answers_each_thread_its_own_question() -> None:
    # backtracking patterns go to the one shared worker process: questions from many threads at once must
    # each get their own answer (a shared pipe without a lock hands one thread another's answer)
    cases = [(re.compile(rf"x{i}.*y{i}"), f"x{i} then y{i}" if i % 2 else f"x{i} then z", i % 2 == 1) for i in range(8)]
    wrong: list[str] = []

    def ask(case: tuple[re.Pattern[str], str, bool]) -> None:
        regex, text, expected = case
        for _ in range(40):
            if regex_matches(regex, text, timeout=5) != expected:
                wrong.append(regex.pattern)

    threads = [threading.Thread(target=ask, args=(case,)) for case in cases]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong
