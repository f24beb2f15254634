"""`python app.py` serves the OpenAI-compatible API beside the UI, on the same port and model."""

import json
import urllib.error
import urllib.request

import pytest


def get(url: str, body: dict | None = None, key: str | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    headers = {"content-type": "application/json"} | ({"authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture(scope="module")
def server(tiny_moe_path, tmp_path_factory, module_app_server):
    data_dir = tmp_path_factory.mktemp("app") / "data"
    return module_app_server(tiny_moe_path, data_dir, env={"MOECHAT_API_KEY": "sesame"}).url.rstrip("/")


def test_models_and_chat_through_the_app(server):
    status, models = get(server + "/v1/models", key="sesame")
    assert status == 200 and models["data"][0]["id"] == "moe2"
    assert models["data"][0]["moechat"]["expert_names"] == ["Xwin", "Pygmalion"]
    body = {
        "model": "moe2",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "moechat": {"routing": True},
    }
    status, reply = get(server + "/v1/chat/completions", body, key="sesame")
    assert status == 200 and reply["usage"]["completion_tokens"] == 4
    assert len(reply["choices"][0]["moechat"]["routing"]["tokens"]) == 4


def test_the_key_is_required_and_the_ui_still_serves(server):
    status, error = get(server + "/v1/models")
    assert status == 401 and error["error"]["message"]
    with urllib.request.urlopen(server + "/", timeout=30) as page:
        assert page.status == 200 and b"<html" in page.read(4096).lower()
