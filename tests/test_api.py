"""The OpenAI-compatible API through the real `openai` client against a real uvicorn server on a tiny MoE.

The server runs in a background thread on a free loopback port with an API key; a few cases without a
key, without a model or without routing capture use FastAPI's TestClient on their own router.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import uvicorn
from fastapi import APIRouter, FastAPI

from moechat.api.routes import api_router
from moechat.engine.engine import Engine
from moechat.prompt import formats

KEY = "sk-test-moechat"
GREEDY = {"temperature": 0}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Once upon a time"}]


@dataclass
class Server:
    url: str
    engine: Engine

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=30)

    def post(
        self, path: str, body: object, key: str | None = KEY, timeout: float | httpx.Timeout = 30
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        content = body if isinstance(body, str | bytes) else json.dumps(body)
        return httpx.post(f"{self.url}/v1{path}", content=content, headers=headers, timeout=timeout)


@contextmanager
def running_server(engine: Engine, router: APIRouter | None = None) -> Iterator[Server]:
    """A uvicorn server for the API (with KEY) in a background thread on a free loopback port."""
    app = FastAPI()
    app.include_router(router or api_router(lambda: engine, api_key=KEY))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield Server(f"http://127.0.0.1:{sock.getsockname()[1]}", engine)
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[Server]:
    with running_server(engine) as running:
        yield running


@pytest.fixture(scope="module")
def thth_server(tiny_models: dict[str, Path]) -> Iterator[Server]:
    """A server on the model whose greedy answer is always "ththth…" (the stop-string tests' known text)."""
    with Engine.load(tiny_models["thth"], n_ctx=2048) as eng, running_server(eng) as running:
        yield running


def chat(server: Server, **kwargs: object):
    args = {"model": "anything", "messages": CHAT, "max_tokens": 8, **GREEDY, **kwargs}
    return server.client().chat.completions.create(**args)


def complete(server: Server, **kwargs: object):
    args = {"model": "anything", "prompt": "Once upon a time", "max_tokens": 8, **GREEDY, **kwargs}
    return server.client().completions.create(**args)


def streamed_chat(server: Server, **kwargs: object) -> tuple[str, list]:
    chunks = list(chat(server, stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def streamed_text(server: Server, **kwargs: object) -> tuple[str, list]:
    chunks = list(complete(server, stream=True, **kwargs))
    return "".join(c.choices[0].text for c in chunks if c.choices), chunks


# ---- answers ----------------------------------------------------------------------------------------------
def test_models_names_the_loaded_model(server):
    models = server.client().models.list().data
    assert [m.id for m in models] == [server.engine.info.path.stem]
    assert models[0].moechat["expert_names"] == ["Xwin", "Pygmalion"]
    assert models[0].moechat["n_layers"] == server.engine.info.n_layers


def test_chat_completion_counts_tokens_and_stops_at_max_tokens(server):
    reply = chat(server, max_tokens=8)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == server.engine.info.path.stem  # model ignored
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 8 and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8


def test_streamed_chat_equals_the_whole_answer(server):
    whole = chat(server, max_tokens=12).choices[0].message.content
    text, chunks = streamed_chat(server, max_tokens=12, stream_options={"include_usage": True})
    assert text == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert len({c.id for c in chunks}) == 1


def test_text_completion_streamed_and_whole(server):
    whole = complete(server, max_tokens=10)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 10
    text, chunks = streamed_text(server, max_tokens=10)
    assert text == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"


def first_clean_window(text: str) -> tuple[int, str]:
    """A two-character alphanumeric stop string whose first occurrence is not at the start."""
    for i in range(1, len(text) - 1):
        s = text[i : i + 2]
        if s.isascii() and s.isalnum() and text.find(s) == i:
            return i, s
    raise AssertionError(f"no alphanumeric pair after the start of {text!r}")


@pytest.mark.parametrize("kind", ["chat", "text"])
def test_stop_strings_end_the_answer_and_never_appear(thth_server, kind):
    server = thth_server  # greedy "thth…": the stop string is "ht", which spans two tokens
    if kind == "chat":
        full = chat(server, max_tokens=32).choices[0].message.content
    else:
        full = complete(server, max_tokens=32).choices[0].text
    at, stop = first_clean_window(full)
    stops = ["never-written-by-the-model", stop]
    if kind == "chat":
        choice = chat(server, max_tokens=32, stop=stops).choices[0]
        got, finish = choice.message.content, choice.finish_reason
        streamed, chunks = streamed_chat(server, max_tokens=32, stop=stop)
    else:
        choice = complete(server, max_tokens=32, stop=stops).choices[0]
        got, finish = choice.text, choice.finish_reason
        streamed, chunks = streamed_text(server, max_tokens=32, stop=stop)
    assert got == streamed == full[:at]
    assert stop not in got and finish == "stop"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_seed_makes_sampling_reproducible(server):
    def sample(seed: int) -> str:
        return complete(server, max_tokens=16, temperature=1.0, seed=seed).choices[0].text

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


# ---- routing extension ------------------------------------------------------------------------------------
def check_routing_tokens(tokens: list[dict], engine: Engine) -> None:
    info = engine.info
    for tok in tokens:
        probs, experts = np.array(tok["probs"]), np.array(tok["experts"])
        assert probs.shape == (info.n_layers, info.n_experts)
        assert experts.shape == (info.n_layers, info.n_experts_used)
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-3)
        assert (experts[:, 0] == probs.argmax(axis=1)).all() or np.allclose(probs.max(axis=1), 0.5, atol=1e-3)


def test_routing_extension_on_a_whole_answer(server):
    reply = chat(server, max_tokens=10, extra_body={"moechat": {"routing": True}})
    routing = reply.choices[0].moechat["routing"]
    assert routing["expert_names"] == ["Xwin", "Pygmalion"]
    assert len(routing["tokens"]) == reply.usage.completion_tokens == 10
    assert "".join(t["text"] for t in routing["tokens"]) == reply.choices[0].message.content
    check_routing_tokens(routing["tokens"], server.engine)
    assert getattr(chat(server).choices[0], "moechat", None) is None  # only when asked for


def test_routing_extension_per_streamed_chunk(server):
    _, chunks = streamed_text(
        server, max_tokens=10, stream_options={"include_usage": True}, extra_body={"moechat": {"routing": True}}
    )
    routed = [c.choices[0].moechat["routing"] for c in chunks if c.choices and getattr(c.choices[0], "moechat", None)]
    tokens = [t for r in routed for t in r["tokens"]]
    assert all(len(r["tokens"]) == 1 and r["expert_names"] == ["Xwin", "Pygmalion"] for r in routed)
    assert len(tokens) == chunks[-1].usage.completion_tokens == 10
    check_routing_tokens(tokens, server.engine)


def test_chat_is_rendered_with_the_models_format_and_continues_a_last_assistant_message(server):
    info = server.engine.info
    fmt = formats.get_format(formats.default_format(info.name, info.chat_template), info.chat_template)
    messages = [*CHAT, {"role": "assistant", "content": "There was"}]
    turns = [
        formats.Turn("system", "Be brief."),
        formats.Turn("user", CHAT[1]["content"]),
        formats.Turn("model", "There was"),
    ]
    prompt = formats.render(fmt, turns, "continue")
    stops = list(formats.stop_strings(fmt, char="", user="User"))
    reply = chat(server, messages=messages, max_tokens=12)
    same = complete(server, prompt=prompt, max_tokens=12, stop=stops)
    assert reply.choices[0].message.content == same.choices[0].text
    assert reply.usage.prompt_tokens == same.usage.prompt_tokens


def test_chat_format_choice_and_text_parts(server):
    chatml = chat(server, max_tokens=2, extra_body={"moechat": {"format": "chatml"}})
    assert chatml.usage.prompt_tokens != chat(server, max_tokens=2).usage.prompt_tokens
    parts = [{"type": "text", "text": "Once upon"}, {"type": "text", "text": " a time"}]
    split = chat(server, messages=[CHAT[0], {"role": "user", "content": parts}], max_tokens=6)
    assert split.choices[0].message.content == chat(server, max_tokens=6).choices[0].message.content
