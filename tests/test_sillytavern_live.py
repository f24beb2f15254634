"""SillyTavern itself driving moechat, as a user does: opt-in, given a SillyTavern checkout with its npm
dependencies installed (`npm ci`), and Debian's chromium:

    MOECHAT_SILLYTAVERN=/path/to/SillyTavern python -m pytest tests/test_sillytavern_live.py

SillyTavern's server runs on loopback with a throwaway data root; moechat's API serves a tiny model on
another loopback port and records every request. In SillyTavern's own page, through its controls and slash
commands, each connection type is set up and connected, a chat with the bundled Seraphina gets replies
(streaming and not), a swipe, Continue and Impersonate, with the "API" tokenizer where the type has one.
Every request SillyTavern made must have been answered 200, and each reply must show in its chat.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from playwright.sync_api import Error as PlaywrightError

from moechat.api.routes import api_router
from moechat.engine.engine import Engine

ST = os.environ.get("MOECHAT_SILLYTAVERN")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not ST, reason="set MOECHAT_SILLYTAVERN to a SillyTavern checkout"),
]
URL_INPUT = {"ooba": "#textgenerationwebui_api_url_text", "vllm": "#vllm_api_url_text",
             "aphrodite": "#aphrodite_api_url_text", "tabby": "#tabby_api_url_text",
             "koboldcpp": "#koboldcpp_api_url_text", "llamacpp": "#llamacpp_api_url_text",
             "ollama": "#ollama_api_url_text", "huggingface": "#huggingface_api_url_text"}  # fmt: skip
MODEL_SELECT = {"vllm": "#vllm_model", "aphrodite": "#aphrodite_model", "ollama": "#ollama_model"}
API_TOKENIZER = "6"  # "API (WebUI / koboldcpp)"


class Recorder:
    """ASGI middleware keeping (method, path, status, JSON body) of every request."""

    def __init__(self, app: FastAPI) -> None:
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        entry = {"method": scope["method"], "path": scope["path"], "status": None, "body": None}

        async def recv():
            message = await receive()
            chunks.append(message.get("body", b""))
            return message

        async def snd(message):
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                raw = b"".join(chunks)
                entry["body"] = json.loads(raw) if raw.strip().startswith(b"{") else None
                self.seen.append(entry)
            await send(message)

        await self.app(scope, recv, snd)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moechat(tiny_moe_path: Path) -> Iterator[tuple[str, Recorder]]:
    """moechat's API (no key, as on one's own machine) on a loopback port, recording what it is asked."""
    with Engine.load(tiny_moe_path, n_ctx=4096) as engine:
        app = FastAPI()
        app.include_router(api_router(lambda: engine))
        recorder = Recorder(app)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(recorder, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", recorder
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def sillytavern(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port, data = free_port(), tmp_path_factory.mktemp("st-data")
    node = shutil.which("node") or "node"
    cmd = [node, "server.js", "--port", str(port), "--listen", "false", "--dataRoot", str(data), "--autorun", "false"]
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=ST, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            assert proc.poll() is None, (data / "server.log").read_text()[-2000:]
            time.sleep(0.5)
    yield url
    proc.terminate()
    proc.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def page(sillytavern, browser):
    """SillyTavern's page, past its first-run persona question (the persona is "Ann")."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(sillytavern)
    page.wait_for_selector(".popup textarea", timeout=90_000)
    page.fill(".popup textarea", "Ann")
    page.click(".popup .popup-button-ok")
    page.wait_for_function("() => jQuery('#rm_print_characters_block .character_select').length > 0", timeout=60_000)
    yield page
    page.close()


def ui(page, script: str, arg: object = None) -> object:
    return page.evaluate(script, arg)


def set_control(page, selector: str, value: object, event: str = "change") -> None:
    """Set one of SillyTavern's controls and fire the event its own handlers listen to."""
    if isinstance(value, bool):
        ui(page, "([s, v, e]) => jQuery(s).prop('checked', v).trigger(e)", [selector, value, event])
    else:
        ui(page, "([s, v, e]) => jQuery(s).val(v).trigger(e)", [selector, value, event])


def connect_textgen(page, kind: str, url: str) -> None:
    set_control(page, "#main_api", "textgenerationwebui")
    set_control(page, "#textgen_type", kind)
    set_control(page, URL_INPUT[kind], url, "input")
    ui(page, "() => jQuery('#api_button_textgenerationwebui').trigger('click')")
    status = "() => jQuery('#textgenerationwebui_api .online_status_text').first().text()"
    page.wait_for_function(f"() => !/Not connected|No connection|Invalid/i.test(({status})())", timeout=30_000)
    if kind in MODEL_SELECT:
        page.wait_for_function(f"() => jQuery('{MODEL_SELECT[kind]} option').length > 0", timeout=30_000)
        set_control(page, MODEL_SELECT[kind], ui(page, f"() => jQuery('{MODEL_SELECT[kind]} option').last().val()"))


def connect_custom_chat(page, url: str, model: str) -> None:
    set_control(page, "#main_api", "openai")
    set_control(page, "#chat_completion_source", "custom")
    set_control(page, "#custom_api_url_text", f"{url}/v1", "input")
    set_control(page, "#custom_model_id", model, "input")
    ui(page, "() => jQuery('#api_button_openai').trigger('click')")
    status = "() => jQuery('#openai_api .online_status_text').first().text()"
    page.wait_for_function(f"() => !/Not connected|No connection|Invalid/i.test(({status})())", timeout=30_000)


def send(page, text: str) -> None:
    page.fill("#send_textarea", text)
    page.press("#send_textarea", "Enter")


def click(page, selector: str) -> None:
    ui(page, "(s) => jQuery(s).trigger('click')", selector)


def wait_idle(page) -> None:
    page.wait_for_timeout(500)
    page.wait_for_function("() => jQuery('#mes_stop').css('display') === 'none'", timeout=120_000)
    page.wait_for_timeout(300)


def n_messages(page) -> int:
    return int(str(ui(page, "() => jQuery('#chat .mes').length")))


def last_reply(page) -> str:
    return str(ui(page, "() => jQuery('#chat .mes').last().find('.mes_text').text()"))


def open_seraphina(page) -> None:
    click(page, "#rm_print_characters_block .character_select:has(.ch_name:contains('Seraphina'))")
    page.wait_for_function("() => jQuery('#chat .mes').length >= 1", timeout=30_000)
    wait_idle(page)


def toasts(page) -> list[str]:
    return [str(t) for t in ui(page, "() => jQuery('.toast').map((i, e) => jQuery(e).text()).get()") or []]


def chat_round(page, recorder: Recorder, path: str, *, stream: bool, stream_box: str) -> list[dict]:
    """A message and its reply, a swipe, Continue and Impersonate; every request moechat got meanwhile."""
    set_control(page, stream_box, stream, "input")
    before, n = len(recorder.seen), n_messages(page)
    send(page, "Hello there, who are you?")
    try:
        page.wait_for_function(f"() => jQuery('#chat .mes').length >= {n + 2}", timeout=60_000)
    except PlaywrightError as exc:
        answered = [(r["path"], r["status"]) for r in recorder.seen[before:]]
        raise AssertionError(f"no reply: moechat answered {answered}; SillyTavern says {toasts(page)}") from exc
    wait_idle(page)
    assert last_reply(page).strip(), "no reply in SillyTavern's chat"
    click(page, "#chat .mes:last .swipe_right")
    wait_idle(page)
    click(page, "#option_continue")
    wait_idle(page)
    click(page, "#option_impersonate")
    wait_idle(page)
    assert ui(page, "() => jQuery('#send_textarea').val()"), "Impersonate wrote nothing"
    page.fill("#send_textarea", "")
    seen = recorder.seen[before:]
    assert len([r for r in seen if r["path"] == path]) >= 4, [r["path"] for r in seen]
    assert not [(r["path"], r["status"]) for r in seen if r["status"] != 200]
    assert not toasts(page), toasts(page)
    return seen


def test_a_context_larger_than_the_models_is_explained_in_sillytavern(page, moechat):
    url, recorder = moechat
    connect_textgen(page, "ooba", url)
    open_seraphina(page)
    set_control(page, "#max_context", 8192, "input")  # SillyTavern's default for text completion
    send(page, "Hello there")
    page.wait_for_function("() => /Context \\(tokens\\)/.test(jQuery('.toast').text())", timeout=60_000)
    assert recorder.seen[-1]["status"] == 400
    ui(page, "() => jQuery('.toast').remove()")
    set_control(page, "#max_context", 2048, "input")  # the fix the message names


@pytest.mark.parametrize("kind", list(URL_INPUT))
def test_each_text_completion_type_from_sillytavern(page, moechat, kind):
    url, recorder = moechat
    connect_textgen(page, kind, url)
    set_control(page, "#max_context", 2048, "input")
    set_control(page, "#tokenizer", API_TOKENIZER)
    open_seraphina(page)
    path = {"llamacpp": "/completion", "ollama": "/api/generate"}.get(kind, "/v1/completions")
    for stream in (False, True):
        seen = chat_round(page, recorder, path, stream=stream, stream_box="#streaming_textgenerationwebui")
        assert all(r["body"].get("stream", kind == "ollama") == stream for r in seen if r["path"] == path)
        _record(kind, stream, [r for r in seen if r["path"] == path])


def test_chat_completion_custom_from_sillytavern(page, moechat):
    url, recorder = moechat
    connect_custom_chat(page, url, "moe2")
    # SillyTavern counts a custom model's tokens with its own tokenizer, which the tiny model's byte-level
    # vocabulary outnumbers about twice: a context of 1536 by its count fits moechat's 4096
    set_control(page, "#openai_max_context", 1536, "input")
    set_control(page, "#openai_max_tokens", 48, "input")
    open_seraphina(page)
    for stream in (False, True):
        seen = chat_round(page, recorder, "/v1/chat/completions", stream=stream, stream_box="#stream_toggle")
        _record("chat", stream, [r for r in seen if r["path"] == "/v1/chat/completions"])


def _record(kind: str, stream: bool, requests: list[dict]) -> None:
    """With MOECHAT_SILLYTAVERN_RECORD=DIR, keep the first request body of each kind (its prompt text
    replaced: it holds SillyTavern's bundled character) as DIR/<kind>[-stream].json."""
    where = os.environ.get("MOECHAT_SILLYTAVERN_RECORD")
    if not where or not requests:
        return
    body = dict(requests[0]["body"])
    if "prompt" in body:
        body["prompt"] = "<prompt>"
    if "messages" in body:
        body["messages"] = [{**m, "content": f"<{m['role']} message>"} for m in body["messages"]]
    name = f"{kind}{'-stream' if stream else ''}.json"
    Path(where).mkdir(parents=True, exist_ok=True)
    (Path(where) / name).write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
