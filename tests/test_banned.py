"""Banned strings never reach the reply: the engine backtracks to where one started and draws again there,
and no token it takes back was ever yielded. On a tiny model whose greedy reply is "ththth..."."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from moechat.engine.engine import Engine
from moechat.engine.types import Sampling, Token
from moechat.errors import SamplingError

GREEDY = Sampling(temperature=0, max_tokens=16)
SPECIALS_OUT = ((0, float("-inf")), (1, float("-inf")), (2, float("-inf")))  # the runner-up: a byte, not "" or EOS


@pytest.fixture(scope="module")
def repeater(tiny_models: dict[str, Path]) -> Iterator[Engine]:
    with Engine.load(tiny_models["thth"], n_ctx=256) as eng:  # greedy: "ththth..." forever
        yield eng


def reply(engine: Engine, s: Sampling, prompt: str = "Once upon a time") -> tuple[list[Token], list[Token]]:
    tokens = list(engine.stream(engine.tokenize(prompt), s))
    return [t for t in tokens if t.prompt], [t for t in tokens if not t.prompt]


def test_a_banned_string_never_appears_and_nothing_taken_back_was_sent(repeater):
    prompt, plain = reply(repeater, GREEDY)
    assert "".join(t.text for t in plain) == "th" * 16
    _, gen = reply(repeater, Sampling(temperature=0, max_tokens=16, banned_strings=("thth",), logit_bias=SPECIALS_OUT))
    text = "".join(t.text for t in gen)
    assert "thth" not in text and "th" in text  # each "th" that would start "thth" is drawn again
    assert [t.pos for t in gen] == list(range(len(prompt), len(prompt) + 16))  # one record per position
    assert len(gen) == 16 and gen[-1].finish == "length" and all(t.finish is None for t in gen[:-1])
    assert all(t.routing is not None for t in gen[:-1])


def test_stop_strings_and_several_banned_strings_together(repeater):
    s = Sampling(temperature=0, max_tokens=16, banned_strings=("thth", "hth"), stop=("tht",), logit_bias=SPECIALS_OUT)
    _, gen = reply(repeater, s)
    text = "".join(t.text for t in gen)
    assert "thth" not in text and "hth" not in text and "tht" not in text


def test_a_string_that_never_comes_changes_nothing(engine):
    s = Sampling(temperature=1.0, seed=3, max_tokens=24)
    _, plain = reply(engine, s)
    _, watched = reply(engine, Sampling(temperature=1.0, seed=3, max_tokens=24, banned_strings=("zzzzq",)))
    assert [(t.id, t.text) for t in watched] == [(t.id, t.text) for t in plain]


def test_a_banned_string_cut_from_a_sampled_reply(engine):
    s = Sampling(temperature=1.0, seed=3, max_tokens=24)
    _, plain = reply(engine, s)
    text = "".join(t.text for t in plain)
    word = next(text[i : i + 3] for i in range(len(text) - 3) if text[i : i + 3].isascii() and text[i : i + 3].strip())
    _, cut = reply(engine, Sampling(temperature=1.0, seed=3, max_tokens=24, banned_strings=(word,)))
    assert word not in "".join(t.text for t in cut)
    assert len(cut) == len(plain) or cut[-1].finish == "eos"


def test_banned_strings_with_a_grammar_are_refused(repeater):
    with pytest.raises(SamplingError):
        reply(repeater, Sampling(max_tokens=4, banned_strings=("x",), grammar='root ::= "a"'))
