"""The OpenAI-compatible API's refusals and its behaviour under load: OpenAI error bodies and never a 500,
401s, 503 without a model, four clients at once, and clients that leave before their answer is done.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from moechat.api.routes import api_router
from moechat.engine.engine import Engine
from moechat.models.slot import ModelSlot
from tests.test_api import CHAT, GREEDY, KEY, Server, chat, complete, running_server, streamed_chat


@pytest.fixture(scope="module")
def server(engine: Engine) -> Iterator[Server]:
    with running_server(engine) as running:
        yield running


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
        ("/chat/completions", {"messages": CHAT, "n": 9}, "n"),
        ("/chat/completions", {"messages": CHAT, "n": 0}, "n"),
        ("/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages"),
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


def test_openai_client_raises_bad_request_for_n_above_the_limit(server):
    with pytest.raises(openai.BadRequestError) as caught:
        chat(server, n=9)
    assert caught.value.status_code == 400 and "8" in caught.value.body["message"]


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
    """Wait for the engine to have no stream running; the number of tokens then in its cache."""
    deadline = time.monotonic() + 10
    while engine.occupancy().busy and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not engine.occupancy().busy, "the engine is still generating for a request nobody waits for"
    return max(engine.cached_tokens())


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
    """The client hangs up once generation has begun (no timing guess): the server stops long before max_tokens."""
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps(LONG).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    server.engine.clear()  # an empty cache: the count below is this request's prompt and reply only
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        deadline = time.monotonic() + 10
        while max(server.engine.cached_tokens()) < 8 and time.monotonic() < deadline:  # prompt read, reply under way
            time.sleep(0.002)
        assert server.engine.occupancy().busy, "the answer should still be generating"
    assert released(server.engine) < LONG["max_tokens"]  # cancelled: it never reached max_tokens
    assert complete(server, max_tokens=4).usage.completion_tokens == 4


def test_a_model_switch_waits_for_the_answer_in_flight(tiny_models):
    old, new = Engine.load(tiny_models["moe2"], n_ctx=2048), Engine.load(tiny_models["moe4"], n_ctx=2048)
    slot = ModelSlot(old)
    with running_server(old, api_router(slot.get, api_key=KEY, lease=slot.use)) as srv:
        body = {**LONG, "max_tokens": 300, "stream": True, "stream_options": {"include_usage": True}}
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.stream("POST", f"{srv.url}/v1/completions", json=body, headers=headers, timeout=30) as response:
            events = (line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: "))
            assert next(events)
            switch = threading.Thread(target=slot.switch, args=(new,))
            switch.start()
            rest = list(events)
        assert rest[-1] == "[DONE]" and json.loads(rest[-2])["usage"]["completion_tokens"] == 300
        switch.join(10)
        assert not switch.is_alive() and old._ctx is None  # closed once the answer was done
        reply = srv.client().completions.create(
            model="x", prompt="hi", max_tokens=3, extra_body={"moechat": {"routing": True}}
        )
        assert reply.model == tiny_models["moe4"].stem and len(reply.choices[0].moechat["routing"]["expert_names"]) == 4
    slot.close()
