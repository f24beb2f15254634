"""Macros (docs/formats.md §3.4) and example-dialogue splitting (§3.5), with hand-derived expected results."""

import random

import pytest

from moechat.cards.macros import comments, scan_text, split_examples, split_turns, substitute


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hi {{user}}, I am {{char}}.", "Hi Ann, I am Seri."),
        ("{{CHAR}} {{Char}} <BOT> <bot> <CHAR> <char>", "Seri Seri Seri Seri Seri Seri"),
        ("{{USER}} <USER> <user>", "Ann Ann Ann"),
        ("[{{original}}] extra", "[Be nice to {{user}}.] extra".replace("{{user}}", "Ann")),
        ("a{{// secret note }}b", "ab"),
        ("a{{comment: shown to the user}}b", "ab"),
        ("a{{hidden_key: dragon}}b", "ab"),
        ("no macros here", "no macros here"),
        ("{{unknown}} stays", "{{unknown}} stays"),
        ("{{random:only}}", "only"),
        ("{{random:a\\,b}}", "a,b"),
        ("{{roll:1}} {{roll:d1}} {{roll:3d1}}", "1 1 3"),
        ("{{roll:0}} {{roll:d0}}", "{{roll:0}} {{roll:d0}}"),
        ("name with $1 \\g<0>", "name with $1 \\g<0>"),
    ],
)
def test_substitute_table(text: str, expected: str) -> None:
    got = substitute(text, char="Seri", user="Ann", original="Be nice to {{user}}.", seed=7)
    assert got == expected


def test_replacement_names_are_literal() -> None:
    assert substitute("{{char}}", char=r"\1 \g<0>", user="u") == r"\1 \g<0>"


def test_random_draws_from_options_with_escapes() -> None:
    seen = {substitute("{{random:a,b\\,c,d}}", char="c", user="u", rng=random.Random(i)) for i in range(60)}
    assert seen == {"a", "b,c", "d"}


def test_random_double_colon_syntax() -> None:
    seen = {substitute("{{random::x, y::z}}", char="c", user="u", rng=random.Random(i)) for i in range(60)}
    assert seen == {"x, y", "z"}


def test_pick_is_stable_per_seed_and_varies_across_seeds() -> None:
    text = "{{pick:red,green,blue,black,white}}"
    first = substitute(text, char="c", user="u", seed="chat-1")
    assert all(substitute(text, char="c", user="u", seed="chat-1") == first for _ in range(5))
    across = {substitute(text, char="c", user="u", seed=f"chat-{i}") for i in range(40)}
    assert len(across) > 2


def test_roll_range() -> None:
    rolls = {int(substitute("{{roll:d6}}", char="c", user="u", rng=random.Random(i))) for i in range(200)}
    assert rolls == {1, 2, 3, 4, 5, 6}
    assert substitute("{{ROLL:20}}", char="c", user="u", rng=random.Random(1)).isdigit()


def test_macros_inside_random() -> None:
    assert substitute("{{random:{{char}}}}", char="Seri", user="u") == "Seri"


def test_scan_text_keeps_hidden_keys_drops_comments() -> None:
    assert scan_text("x {{hidden_key:dragon}} {{// wyrm}} {{comment:drake}}") == "x dragon  "


def test_comments_listed_for_display() -> None:
    assert comments("a {{comment: look here }} b {{Comment:two}}") == ["look here", "two"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("<START>", []),
        ("<START>\n<START>\n", []),
        ("<START>\n{{user}}: hi\n{{char}}: yo", ["{{user}}: hi\n{{char}}: yo"]),
        ("{{user}}: a\n<start>\n{{char}}: b\n<Start>\nc", ["{{user}}: a", "{{char}}: b", "c"]),
        ("  <START>  \n x \n", ["x"]),
    ],
)
def test_split_examples(text: str, expected: list[str]) -> None:
    assert split_examples(text) == expected


def test_split_turns() -> None:
    block = "{{user}}: hi there\n{{char}}: *waves*\nsecond line\nAnn: plain name\n<BOT>: bot"
    assert split_turns(block, char="Seri", user="Ann") == [
        ("user", "hi there"),
        ("char", "*waves*\nsecond line"),
        ("user", "plain name"),
        ("char", "bot"),
    ]


def test_split_turns_narration_before_first_speaker() -> None:
    assert split_turns("The bar is quiet.\nSeri: hello", char="Seri", user="") == [
        ("", "The bar is quiet."),
        ("char", "hello"),
    ]
