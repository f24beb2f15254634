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


def test_every_api_family_is_served_beside_the_ui(server):
    """llama.cpp's, Ollama's and the token routes answer on the app's port too; unknown API paths get an
    error body, not the UI's bare 404."""
    status, native = get(server + "/completion", {"prompt": "hi", "n_predict": 3, "temperature": 0}, key="sesame")
    assert status == 200 and native["stop"] is True and native["tokens_predicted"] == 3
    assert get(server + "/tokenize", {"content": "hi"}, key="sesame")[1]["tokens"]
    n_ctx = get(server + "/v1/models", key="sesame")[1]["data"][0]["context_length"]
    assert get(server + "/props", key="sesame")[1]["default_generation_settings"]["n_ctx"] == n_ctx > 0
    assert get(server + "/api/tags", key="sesame")[1]["models"][0]["name"] == "moe2"
    for path in ("/api/nothing", "/v1/nothing"):
        status, error = get(server + path, key="sesame")
        assert status == 404 and error["error"]["code"] == "unknown_url"
