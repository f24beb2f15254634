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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from moechat.api import api_router
from moechat.engine import Engine

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


def serve(app: FastAPI) -> tuple[uvicorn.Server, threading.Thread, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture(scope="module")
def engine(tiny_moe_path: Path) -> Iterator[Engine]:
    with Engine.load(tiny_moe_path, n_ctx=2048) as eng:  # room for long greedy runs
        yield eng


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[Server]:
    app = FastAPI()
    app.include_router(api_router(lambda: engine, api_key=KEY))
    uv, thread, url = serve(app)
    yield Server(url, engine)
    uv.should_exit = True
    thread.join(10)


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
    pytest.skip("the tiny model wrote no alphanumeric pair")


@pytest.mark.parametrize("kind", ["chat", "text"])
def test_stop_strings_end_the_answer_and_never_appear(server, kind):
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


# ---- errors -----------------------------------------------------------------------------------------------
def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/chat/completions", "{not json", None),
        ("/chat/completions", "[1, 2]", None),
        ("/chat/completions", {"messages": "hello"}, "messages"),
        ("/chat/completions", {"messages": []}, "messages"),
        ("/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
        ("/chat/completions", {"messages": CHAT, "n": 2}, "n"),
        ("/chat/completions", {"messages": CHAT, "temperature": "hot"}, "temperature"),
        ("/chat/completions", {"messages": CHAT, "max_tokens": 0}, "max_tokens"),
        ("/chat/completions", {"messages": CHAT, "stop": 5}, "stop"),
        ("/chat/completions", {"messages": CHAT, "moechat": {"format": "klingon"}}, None),
        ("/completions", {}, "prompt"),
        ("/completions", {"prompt": ["a", "b"]}, "prompt"),
        ("/completions", {"prompt": [1, 2, 3]}, "prompt"),
        ("/completions", {"prompt": "x " * 3000}, "prompt"),
        ("/completions", {"prompt": "hi", "stream": "sometimes"}, "stream"),
    ],
)
def test_bad_requests_get_400_with_an_openai_error(server, path, body, param):
    assert_openai_error(server.post(path, body), 400, param)


def test_openai_client_raises_bad_request_for_n_2(server):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(server, n=2)
    assert caught.value.status_code == 400 and "n=1" in caught.value.body["message"]


@pytest.mark.parametrize("key", [None, "sk-wrong"])
def test_a_missing_or_wrong_key_gets_401(server, key):
    error = assert_openai_error(server.post("/chat/completions", {"messages": CHAT}, key=key), 401)
    assert error["code"] == "invalid_api_key"
    if key:  # the openai client refuses to send no key at all
        with pytest.raises(openai.AuthenticationError):
            server.client(key).models.list()


def test_unknown_route_and_health(server):
    assert_openai_error(server.post("/embeddings", {"input": "hi"}), 404)
    health = httpx.get(f"{server.url}/v1/health", timeout=10)  # no key needed
    assert health.json() == {"status": "ok", "model": server.engine.info.path.stem}


def test_no_key_needed_when_none_is_set_and_503_without_a_model(engine):
    app = FastAPI()
    app.include_router(api_router(lambda: engine))
    ok = TestClient(app).post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2
    empty = FastAPI()
    empty.include_router(api_router(lambda: None))
    client = TestClient(empty)
    assert_openai_error(client.post("/v1/completions", json={"prompt": "hi"}), 503)
    assert_openai_error(client.get("/v1/models"), 503)
    assert client.get("/v1/health").json() == {"status": "no model", "model": None}


def test_routing_asked_of_an_engine_without_capture_is_400(tiny_moe_path):
    with Engine.load(tiny_moe_path, n_ctx=128, capture="off") as blind:
        app = FastAPI()
        app.include_router(api_router(lambda: blind))
        body = {"prompt": "hi", "max_tokens": 2, "moechat": {"routing": True}}
        assert_openai_error(TestClient(app).post("/v1/completions", json=body), 400, "moechat.routing")


# ---- queueing and disconnects -----------------------------------------------------------------------------
PROMPTS = ["Once upon a time", "The sailor said", "abc def ghi", "Hello there, friend"]


def ask(server: Server, prompt: str, stream: bool) -> tuple[str, str | None, int]:
    messages = [{"role": "user", "content": prompt}]
    if not stream:
        reply = chat(server, messages=messages, max_tokens=24)
        return reply.choices[0].message.content, reply.choices[0].finish_reason, reply.usage.completion_tokens
    text, chunks = streamed_chat(server, messages=messages, max_tokens=24, stream_options={"include_usage": True})
    finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    return text, finish, chunks[-1].usage.completion_tokens


def test_four_clients_at_once_all_get_complete_answers(server):
    alone = [ask(server, p, stream=False) for p in PROMPTS]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda i: ask(server, PROMPTS[i], stream=i % 2 == 0), range(4)))
    assert together == alone
    assert all(finish == "length" and n == 24 for _, finish, n in together)
    assert httpx.get(f"{server.url}/v1/health", timeout=10).json()["status"] == "ok"
    assert ask(server, PROMPTS[0], stream=True) == alone[0]


LONG = {"prompt": "aaaa", "max_tokens": 2000, **GREEDY}  # greedy: 2000 tokens without an end (seconds)


def released(engine: Engine) -> int:
    """Wait for the engine's lock to be free; the number of tokens then in its cache."""
    deadline = time.monotonic() + 10
    while engine._lock.locked() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine._lock.locked(), "the engine is still held by a request nobody waits for"
    return len(engine._kv)


def test_a_client_leaving_mid_stream_stops_its_generation(server):
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {**LONG, "stream": True}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert next(line for line in response.iter_lines() if line.startswith("data: "))  # generation started
    assert released(server.engine) < 1000  # cancelled long before max_tokens
    reply = complete(server, max_tokens=4)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 4


def test_a_client_giving_up_on_a_whole_answer_stops_its_generation(server):
    with pytest.raises(httpx.ReadTimeout):
        server.post("/completions", LONG, timeout=httpx.Timeout(30, read=0.3))
    assert released(server.engine) < 1000
    assert complete(server, max_tokens=4).usage.completion_tokens == 4
