"""The same prompt with the same seed gives the same tokens whatever the engine's prompt cache held: the last
prompt token is always evaluated alone. Always for the same request twice and against a cold cache; in exact
mode also for any other cache state (a chat continued after its own reply, a prompt sharing another's start).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from moechat.engine.engine import Engine
from moechat.engine.types import Sampling
from moechat.gguf.tiny import write_tiny_gguf
from tests.models import Q8_MOE

SAMPLED = Sampling(temperature=1.0, seed=7, max_tokens=40)


@pytest.fixture(scope="module", params=["moe2", "moe2_f16", "q8_0"])
def model(
    request: pytest.FixtureRequest, tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    if request.param == "q8_0":
        return write_tiny_gguf(tmp_path_factory.mktemp("repro") / "q8_0.gguf", Q8_MOE)
    return tiny_models[request.param]


def generated(engine: Engine, prompt: list[int], s: Sampling = SAMPLED) -> list[int]:
    return [t.id for t in engine.stream(prompt, s) if not t.prompt and t.id >= 0]


@pytest.mark.parametrize("exact", [False, True], ids=["default", "exact"])
def test_same_request_twice_and_cold_give_the_same_tokens(model, exact):
    with Engine.load(model, n_ctx=512, exact=exact) as engine:
        prompt = engine.tokenize("Once upon a time, the old sailor said: hello there! And then the cat sat")
        cold = generated(engine, prompt)
        cached = generated(engine, prompt)  # the whole prompt is cached: only its last token is evaluated
        engine.clear()
        assert cold == cached == generated(engine, prompt)
        assert len(set(cold)) > 5  # sampled, not a constant


def test_exact_mode_gives_the_cold_answer_whatever_was_cached(model):
    with Engine.load(model, n_ctx=512, exact=True) as engine:
        first = engine.tokenize("Once upon a time, the old sailor said: hello there! And then the cat sat")
        reply = generated(engine, first)
        follow_up = first + reply + engine.tokenize(" and the user said: tell me more", add_bos=False)
        continued = generated(engine, follow_up)  # its start cached, the reply's tokens decoded one by one
        other = generated(engine, engine.tokenize("Once upon a time, something else entirely"))
        assert other != continued
        after_other = generated(engine, follow_up)  # "Once upon a time," cached from the other prompt
        engine.clear()
        assert continued == after_other == generated(engine, follow_up)
