"""The API and the model slot with an engine that generates several streams at once (real uvicorn, tiny MoEs).

Each client's answer and routing must be what it gets alone; a client that leaves frees only its own sequence;
a model switch waits for every answer in flight and a steered variant serves beside the model.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from moechat.engine.engine import Engine
from moechat.engine.types import Sampling, Token
from moechat.models.slot import ModelSlot
from tests.test_api import KEY, Server, complete, running_server

PROMPTS = ["Once upon a time", "The sailor said", "abc def ghi jkl", "Hello there, friend, how are you?"]


def answer(server: Server, prompt: str) -> tuple[str, list[dict], list[float]]:
    """Streamed text, routing tokens and the arrival time of each chunk."""
    text, tokens, stamps = "", [], []
    for chunk in complete(server, prompt=prompt, max_tokens=40, stream=True, extra_body={"moechat": {"routing": True}}):
        stamps.append(time.monotonic())
        if chunk.choices:
            text += chunk.choices[0].text
            routed = getattr(chunk.choices[0], "moechat", None)
            tokens += routed["routing"]["tokens"] if routed else []
    return text, tokens, stamps


def test_four_clients_are_answered_together_each_with_its_own_routing(tiny_models: dict[str, Path]) -> None:
    path = tiny_models["moe8"]  # 8 experts, top-2: every token's chosen pair is its own
    with Engine.load(path, n_ctx=512, exact=True) as solo, running_server(solo) as server:
        alone = [answer(server, p) for p in PROMPTS]

    def until_all_four_came(*_: object) -> None:  # hold the first decode call until every request is in
        deadline = time.monotonic() + 30
        while len(calls) == 1 and eng.occupancy().busy + eng.occupancy().waiting < 4 and time.monotonic() < deadline:
            time.sleep(0.005)

    with (
        Engine.load(path, n_ctx=512, exact=True, n_parallel=4) as eng,
        eng.watch(on_call=until_all_four_came) as calls,
        running_server(eng) as server,
        ThreadPoolExecutor(4) as pool,
    ):
        together = list(pool.map(lambda p: answer(server, p), PROMPTS))
    assert max(len(set(layout.seqs)) for layout, _ in calls) == 4  # all four in one decode call
    spans = [(stamps[0], stamps[-1]) for _, _, stamps in together]
    assert max(s for s, _ in spans) < min(e for _, e in spans)  # every answer streamed while the others did
    for (text, tokens, _), (text_alone, tokens_alone, _) in zip(together, alone, strict=True):
        assert text == text_alone and len(tokens) == 40
        assert [t["id"] for t in tokens] == [t["id"] for t in tokens_alone]
        assert [t["experts"] for t in tokens] == [t["experts"] for t in tokens_alone]
        got, want = (np.array([t["probs"] for t in ts], float) for ts in (tokens, tokens_alone))
        assert np.abs(got - want).max() <= 1e-4 + 1e-6  # both rounded to 4 decimals
    assert len({tuple(t["id"] for t in tokens) for _, tokens, _ in together}) == 4  # four different answers


def test_a_client_leaving_frees_only_its_own_sequence(tiny_moe_path: Path) -> None:
    long = {"prompt": "aaaa", "max_tokens": 1500, "temperature": 0, "stream": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    with Engine.load(tiny_moe_path, n_ctx=2048, n_parallel=2) as eng, running_server(eng) as server:
        others: list[str] = []
        other = threading.Thread(target=lambda: others.append(answer(server, PROMPTS[0])[0]))
        with httpx.stream("POST", f"{server.url}/v1/completions", json=long, headers=headers, timeout=30) as response:
            assert next(line for line in response.iter_lines() if line.startswith("data: "))  # generating
            other.start()
            deadline = time.monotonic() + 10
            while eng.occupancy().busy < 2 and time.monotonic() < deadline:
                time.sleep(0.002)
            assert eng.occupancy().busy == 2 or others  # both ran together (or the short one already finished)
        other.join(30)
        deadline = time.monotonic() + 10
        while eng.occupancy().busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert eng.occupancy().busy == 0  # the long answer nobody reads was stopped
        assert max(eng.cached_tokens()) < 1500
    with Engine.load(tiny_moe_path, n_ctx=2048) as solo, running_server(solo) as server:
        assert others == [answer(server, PROMPTS[0])[0]]  # the other client's answer is whole


def test_a_switch_waits_for_every_answer_in_flight_and_steered_ones_run_beside(tiny_models: dict[str, Path]) -> None:
    old = Engine.load(tiny_models["moe4"], n_ctx=1024, n_parallel=2, exact=True)
    slot = ModelSlot(old, {"n_ctx": 1024, "n_parallel": 2, "exact": True})
    results: dict[str, list[Token]] = {}
    started = threading.Barrier(4)

    def stream(name: str, mode: str | None, prompt: str) -> None:
        lease = slot.use() if mode is None else slot.use_steered(mode)
        with lease as engine:
            tokens = engine.stream(engine.tokenize(prompt), Sampling(temperature=0, max_tokens=200))
            first = next(tokens)
            started.wait(30)
            results[name] = [first, *tokens]

    runs = [("a", None, PROMPTS[0]), ("b", None, PROMPTS[1]), ("top1", "top1", PROMPTS[0])]
    threads = [threading.Thread(target=stream, args=run) for run in runs]
    for t in threads:
        t.start()
    started.wait(30)  # two streams on the model and one on its top-1 variant are under way
    new = Engine.load(tiny_models["moe2"], n_ctx=1024, n_parallel=2)
    slot.switch(new)
    for t in threads:
        t.join(30)
    assert sorted(results) == ["a", "b", "top1"]
    assert old._ctx is None and slot.get() is new
    for (name, _, prompt), experts_used in zip(runs, (None, None, 1), strict=True):
        with Engine.load(tiny_models["moe4"], n_ctx=1024, experts_used=experts_used, exact=True) as solo:
            alone = list(solo.stream(solo.tokenize(prompt), Sampling(temperature=0, max_tokens=200)))
        assert [t.id for t in results[name]] == [t.id for t in alone], name  # whole: none was cut short
        assert results[name][-1].finish in ("length", "eos")
    with slot.use() as engine:
        assert engine.info.n_experts == 2
    slot.close()


def test_n_choices_run_side_by_side_and_each_is_its_seeds_single_answer(tiny_moe_path: Path) -> None:
    body = {"prompt": "Once upon a time", "temperature": 1.0, "seed": 7, "max_tokens": 12}
    with Engine.load(tiny_moe_path, n_ctx=1024, exact=True) as solo, running_server(solo) as server:
        singles = [complete(server, **{**body, "seed": 7 + i}).choices[0].text for i in range(3)]
    with (
        Engine.load(tiny_moe_path, n_ctx=1024, exact=True, n_parallel=3) as eng,
        eng.watch() as calls,
        running_server(eng) as server,
    ):
        three = complete(server, **body, n=3)
    assert [c.text for c in sorted(three.choices, key=lambda c: c.index)] == singles and len(set(singles)) == 3
    assert max(len(set(layout.seqs)) for layout, _ in calls) == 3  # generated side by side
