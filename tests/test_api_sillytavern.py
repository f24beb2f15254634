"""Every way SillyTavern 1.12.6 connects, in its own request shapes (tests/sillytavern.py), against the real
API on a uvicorn server: each text-completion type connects, counts tokens with the "API" tokenizer and
generates, streaming and not, with multi-swipe choices where it asks for them; Chat Completion "Custom
(OpenAI-compatible)" through the real `openai` client; context length where each client looks for it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from moechat.engine.engine import Engine
from tests import sillytavern as st
from tests.test_api import KEY, Server, running_server

PROMPT = "You are Seraphina.\nUser: Hello there!\nSeraphina:"
N_CTX = 1024
RECORDED = sorted((Path(__file__).parent / "data" / "sillytavern").glob("*.json"))


@pytest.fixture(scope="module")
def server(tiny_moe_path: Path) -> Iterator[Server]:
    with Engine.load(tiny_moe_path, n_ctx=N_CTX) as eng, running_server(eng) as running:
        yield running


def post(server: Server, path: str, body: dict, **headers: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}", **headers}
    return httpx.post(f"{server.url}{path}", json=body, headers=headers, timeout=60)


def get(server: Server, path: str) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)


def generate(server: Server, kind: str, body: dict) -> tuple[str, list[str], list[dict]]:
    """(text, extra swipes, events) as SillyTavern reads them, streaming or not."""
    path = "/v1/chat/completions" if kind == "chat" else st.GENERATE.get(kind, "/v1/completions")
    if not body.get("stream"):
        response = post(server, path, body)
        assert response.status_code == 200, response.text
        data = response.json()
        swipes = st.extra_swipes(data) if "choices" in data else []
        return st.extract(kind, data), swipes, [data]
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{server.url}{path}", json=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        return st.stream_text(kind, response)


# ---- connecting -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", st.TYPES)
def test_each_type_connects_and_sees_the_context_length(server, kind):
    response = get(server, st.STATUS.get(kind, "/v1/models"))
    assert response.status_code == 200, response.text
    data = response.json()
    if kind == "huggingface":  # SillyTavern only needs the answer to be a 200
        assert data["model_id"] == server.engine.info.path.stem and data["max_total_tokens"] == N_CTX
        return
    models = data["models"] if kind == "ollama" else data["data"]  # SillyTavern rewraps Ollama's list
    assert [m.get("id", m.get("name")) for m in models] == [server.engine.info.path.stem]
    if kind != "ollama":
        assert models[0]["context_length"] == models[0]["max_model_len"] == models[0]["meta"]["n_ctx"] == N_CTX


def test_each_server_family_reports_the_model_and_its_context(server):
    stem = server.engine.info.path.stem
    assert get(server, "/v1/internal/model/info").json()["model_name"] == stem  # Default: "API" tokenizer works
    tabby = get(server, "/v1/model").json()
    assert tabby["id"] == stem and tabby["parameters"]["max_seq_len"] == N_CTX
    assert get(server, "/api/extra/true_max_context_length").json() == {"value": N_CTX}
    props = get(server, "/props").json()
    assert props["default_generation_settings"]["n_ctx"] == N_CTX and props["eos_token"] == "</s>"
    assert httpx.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}  # no key needed
    assert post(server, "/api/extra/abort", {}).json()["success"] is True


@pytest.mark.parametrize("kind", [k for k in st.TYPES if k in st.TOKENIZE])
def test_the_api_tokenizer_of_each_type_counts_with_the_models_tokenizer(server, kind):
    path, field = st.TOKENIZE[kind]
    text = "Seraphina smiles <|im_end|> and waves."
    data = post(server, path, {field: text, "model": "x"}).json()
    count = data.get("length", data.get("count", data.get("value", len(data.get("tokens", [])))))  # as SillyTavern
    ids = data.get("tokens", data.get("ids", []))
    plain = server.engine.tokenize(text, add_bos=False)
    assert count == len(ids) and ids[-len(plain) :] == plain
    assert count - len(plain) in (0, 1)  # with or without the start token, as that server does
    back = post(server, "/detokenize", {"tokens": plain}).json()
    assert back["content"] == back["prompt"] == server.engine.detokenize(plain)


def test_decode_endpoints_and_pieces(server):
    ids = server.engine.tokenize("Hello world", add_bos=False)
    assert post(server, "/v1/internal/decode", {"tokens": ids}).json()["text"] == " Hello world"
    assert post(server, "/v1/token/decode", {"tokens": ids}).json()["text"] == " Hello world"
    assert post(server, "/v1/detokenize", {"tokens": ids}).json()["prompt"] == " Hello world"
    pieces = post(server, "/tokenize", {"content": "Hello world", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == " Hello world"
    assert post(server, "/v1/internal/token-count", {"text": "Hello world"}).json()["length"] == len(ids) + 1
    bad = post(server, "/detokenize", {"tokens": [10**9]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


# ---- generating -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("kind", st.TYPES)
def test_each_text_completion_type_generates(server, kind, stream):
    model = server.engine.info.path.stem if kind in ("vllm", "aphrodite", "ollama") else ""
    body = st.textgen_body(kind, PROMPT, stream=stream, max_tokens=12, seed=11, model=model)
    text, swipes, events = generate(server, kind, body)
    assert text and not swipes
    again, _, _ = generate(server, kind, st.textgen_body(kind, PROMPT, stream=not stream, max_tokens=12, seed=11,
                                                         model=model))  # fmt: skip
    assert again == text  # streaming or not, the same answer
    if kind == "llamacpp":
        assert events[-1]["stop"] is True and events[-1]["tokens_evaluated"] > 5
    if kind == "ollama":
        assert events[-1]["done"] is True and events[-1]["eval_count"] >= 1


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("kind", ["vllm", "aphrodite", "tabby"])
def test_multi_swipe_types_get_n_choices(server, kind, stream):
    model = server.engine.info.path.stem
    body = st.textgen_body(kind, PROMPT, stream=stream, max_tokens=8, seed=5, n=3, model=model)
    text, swipes, _ = generate(server, kind, body)
    assert len(swipes) == 2 and len({text, *swipes}) == 3
    single = generate(server, kind, st.textgen_body(kind, PROMPT, max_tokens=8, seed=6, model=model))[0]
    assert swipes[0] == single  # choice i is seed + i


@pytest.mark.parametrize("kind", ["ooba", "llamacpp", "vllm", "tabby", "aphrodite"])
def test_token_probabilities_panel_gets_its_shape(server, kind):
    model = server.engine.info.path.stem
    body = st.textgen_body(kind, PROMPT, stream=True, max_tokens=6, seed=3, logprobs=True, model=model)
    _, _, events = generate(server, kind, body)
    panels = []
    for data in events:  # textgen-settings.js parseTextgenLogprobs
        if kind == "llamacpp":
            if data.get("completion_probabilities"):
                panels.append([(p["tok_str"], p["prob"]) for p in data["completion_probabilities"][0]["probs"]])
        elif data["choices"] and data["choices"][0].get("logprobs"):
            top = data["choices"][0]["logprobs"]["top_logprobs"][0]
            panels.append([(text, math.exp(lp)) for text, lp in top.items()])
    assert len(panels) == 6
    assert all(0 < sum(p for _, p in panel) <= 1 + 1e-6 for panel in panels)


def test_sillytavern_sampler_changes_reach_the_model(server):
    base = st.textgen_body("ooba", PROMPT, max_tokens=16, seed=2)
    text = generate(server, "ooba", base)[0]
    for change in ({"temp": 0.1}, {"top_k": 1}, {"typical_p": 0.2}, {"min_p": 0.5}, {"rep_pen": 1.0},
                   {"mirostat_mode": 2, "mirostat_tau": 0.5}, {"xtc_probability": 1.0, "xtc_threshold": 0.02},
                   {"dynatemp": True, "min_temp": 0.1, "max_temp": 0.3}, {"presence_pen": 2.0}):  # fmt: skip
        changed = st.textgen_body("ooba", PROMPT, max_tokens=16, seed=2, **change)
        if change.get("dynatemp"):
            changed |= {"dynamic_temperature": True, "dynatemp_low": 0.1, "dynatemp_high": 0.3, "temperature": 0.2}
        assert generate(server, "ooba", changed)[0] != text, change


def test_default_type_without_bos_and_with_a_ban(server):
    banned = server.engine.tokenize("the", add_bos=False)[0]
    body = st.textgen_body("ooba", PROMPT, max_tokens=24, seed=1, banned_tokens=str(banned), add_bos_token=False)
    reply = post(server, "/v1/completions", body | {"moechat": {"routing": True}}).json()
    assert banned not in [t["id"] for t in reply["choices"][0]["moechat"]["routing"]["tokens"]]
    with_bos = post(server, "/v1/completions", st.textgen_body("ooba", PROMPT, max_tokens=1)).json()
    assert reply["usage"]["prompt_tokens"] == with_bos["usage"]["prompt_tokens"] - 1


@pytest.mark.parametrize("recorded", RECORDED, ids=[p.stem for p in RECORDED])
def test_requests_recorded_from_sillytavern_are_answered(server, recorded):
    """Bodies SillyTavern 1.12.6 sent in tests/test_sillytavern_live.py (its Default presets; the prompt text
    replaced), replayed with a short length."""
    kind = recorded.stem.removesuffix("-stream")
    body = json.loads(recorded.read_text())
    if kind == "chat":
        body["messages"] = [{**m, "content": f"{m['role']} says hi"} for m in body["messages"]]
        body |= {"max_tokens": 8, "seed": 3}
    elif kind == "ollama":
        body["prompt"] = PROMPT
        body["options"] |= {"num_predict": 8, "seed": 3}
    else:
        body |= {"prompt": PROMPT, "max_tokens": 8, "max_new_tokens": 8, "n_predict": 8, "seed": 3}
    text, swipes, _ = generate(server, kind, body)
    assert text and not swipes


# ---- Chat Completion: Custom (OpenAI-compatible) ------------------------------------------------------------
CHAT = [
    {"role": "system", "content": "Write Seraphina's next reply in a fictional chat between Seraphina and Ann."},
    {"role": "assistant", "content": "Welcome to my glade."},
    {"role": "user", "content": "Where am I?"},
]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_chat_completion_custom_through_the_openai_client(server, stream):
    body = st.chat_body(CHAT, stream=stream, max_tokens=10, seed=4, n=2, logprobs=True)
    sent = ("messages", "model", "temperature", "max_tokens", "presence_penalty", "frequency_penalty", "top_p",
            "logit_bias", "seed", "n", "logprobs", "top_logprobs")  # fmt: skip
    args = {k: body[k] for k in sent}
    reply = server.client().chat.completions.create(**args, stream=stream)
    if stream:
        texts, probs = ["", ""], [[], []]
        for chunk in reply:
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
                probs[choice.index] += choice.logprobs.content if choice.logprobs else []
    else:
        texts = [c.message.content for c in reply.choices]
        probs = [c.logprobs.content for c in reply.choices]
    assert texts[0] and texts[0] != texts[1]
    assert all(len(p) >= 1 and all(len(t.top_logprobs) == 5 for t in p) for p in probs)
    raw = post(server, "/v1/chat/completions", st.chat_body(CHAT, max_tokens=10, seed=4)).json()
    assert st.extract("chat", raw) == texts[0]


def test_chat_continue_and_impersonate_instructions(server):
    partial = [*CHAT, {"role": "assistant", "content": "You are in my glade, and I am determined to"}]
    cont = post(server, "/v1/chat/completions", st.chat_body(partial, max_tokens=6, temperature=0)).json()
    assert cont["choices"][0]["message"]["content"]
    nudge = "[Continue the following message. Do not include ANY parts of the original message.]"
    with_nudge = [*partial, {"role": "system", "content": nudge}]
    reply = post(server, "/v1/chat/completions", st.chat_body(with_nudge, max_tokens=6, temperature=0)).json()
    assert (
        reply["choices"][0]["message"]["content"] and reply["usage"]["prompt_tokens"] > cont["usage"]["prompt_tokens"]
    )


def test_a_prompt_longer_than_the_context_says_which_setting_to_lower(server):
    body = st.textgen_body("ooba", "word " * 1500, max_tokens=8, max_context=8192)
    response = post(server, "/v1/completions", body)
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "context_length_exceeded"
    assert "'Context (tokens)'" in error["message"] and f"{N_CTX} or less" in error["message"]
    assert "(it sent 8192)" in error["message"]
    chat = post(server, "/v1/chat/completions", st.chat_body([{"role": "user", "content": "word " * 1500}]))
    assert chat.status_code == 400 and "'Context Size (tokens)'" in chat.json()["error"]["message"]


def test_tabby_key_header_and_unknown_routes_get_error_bodies(server):
    ok = httpx.get(f"{server.url}/v1/model", headers={"x-api-key": KEY}, timeout=10)
    assert ok.status_code == 200
    for method, path in (("GET", "/v1/nothing"), ("POST", "/api/nothing"), ("POST", "/v1/embeddings")):
        response = httpx.request(method, f"{server.url}{path}", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
        assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"
    assert httpx.get(f"{server.url}/v1/model", timeout=10).status_code == 401


def test_ollama_templated_prompts_and_json_format(server):
    schema = {"type": "string", "enum": ["yes", "no"]}
    body = {"model": "x", "prompt": "Yes or no?", "system": "Answer.", "raw": False, "stream": False,
            "format": schema, "options": {"num_predict": 20, "seed": 1, "temperature": 1.0}}  # fmt: skip
    reply = post(server, "/api/generate", body).json()
    assert json.loads(reply["response"]) in ("yes", "no") and reply["done_reason"] == "stop"
    raw = post(server, "/api/generate", {**body, "raw": True, "format": None}).json()
    assert raw["prompt_eval_count"] < reply["prompt_eval_count"]  # the template's wrapping, not in a raw prompt
    refused = post(server, "/api/generate", {**body, "images": ["aGk="]})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "images"
