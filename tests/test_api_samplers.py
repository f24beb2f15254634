"""Every sampler a SillyTavern connection sends visibly changes what the model writes, through the real
HTTP API (raw httpx and the real `openai` client) on tiny MoE models; logprobs agree with an independent
probe of the model's logits; n choices, and the same request with the same seed, reproduce.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from moechat.engine.engine import Engine
from tests.test_api import KEY, Server, running_server

PROMPT = "Once upon a time"
PLAIN = {"prompt": PROMPT, "temperature": 0, "max_tokens": 24}  # OpenAI defaults: no truncation, no penalties
SEEDS = range(12)


@pytest.fixture(scope="module")
def server(tiny_moe_path: Path) -> Iterator[Server]:
    with Engine.load(tiny_moe_path, n_ctx=2048, exact=True) as eng, running_server(eng) as running:
        yield running


@pytest.fixture(scope="module")
def repeater(tiny_models: dict[str, Path]) -> Iterator[Server]:
    """A server whose model's greedy reply is "ththth..." forever."""
    with Engine.load(tiny_models["thth"], n_ctx=512) as eng, running_server(eng) as running:
        yield running


@pytest.fixture(scope="module")
def eos_lover(tiny_models: dict[str, Path]) -> Iterator[Server]:
    """A server whose model's greedy reply is </s> at once."""
    with Engine.load(tiny_models["eos"], n_ctx=512) as eng, running_server(eng) as running:
        yield running


def post(server: Server, path: str, body: dict) -> dict:
    response = httpx.post(f"{server.url}{path}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def complete(server: Server, **body: object) -> dict:
    """An OpenAI /v1/completions answer (greedy, 24 tokens unless changed)."""
    return post(server, "/v1/completions", {**PLAIN, **body})


def native(server: Server, **body: object) -> dict:
    """A llama.cpp /completion answer with its token ids (greedy, 24 tokens unless changed)."""
    return post(server, "/completion", {"prompt": PROMPT, "temperature": 0, "n_predict": 24, "return_tokens": True,
                                        "top_k": 0, "top_p": 1, "min_p": 0, **body})  # fmt: skip


def v1_ids(server: Server, **body: object) -> list[int]:
    """The token ids a /v1/completions answer generated (named by the moechat routing extension)."""
    choice = complete(server, moechat={"routing": True}, **body)["choices"][0]
    return [t["id"] for t in choice["moechat"]["routing"]["tokens"]]


def first_tokens(server: Server, **body: object) -> list[int]:
    """The first generated token for each seed (temperature 1 unless given)."""
    body = {"temperature": 1.0, "max_tokens": 1, **body}
    return [v1_ids(server, seed=seed, **body)[0] for seed in SEEDS]


def greedy_top(server: Server) -> int:
    return native(server, n_predict=1)["tokens"][0]


# ---- bans and biases --------------------------------------------------------------------------------------
def test_logit_bias_forbids_and_forces_tokens(server):
    first = native(server)["tokens"][0]
    assert v1_ids(server)[0] == first
    assert native(server, logit_bias=[[first, -100]])["tokens"][0] != first
    assert native(server, logit_bias={str(first): -100})["tokens"][0] != first  # llama.cpp's object form
    assert v1_ids(server, logit_bias={str(first): -100})[0] != first
    forced = server.engine.tokenize("the", add_bos=False)
    assert len(forced) == 1 and server.engine.piece(forced[0]) == b" the"
    assert complete(server, logit_bias={str(forced[0]): 100}, max_tokens=6)["choices"][0]["text"] == " the" * 6
    assert native(server, logit_bias=[[forced[0], 100]], n_predict=6)["content"] == " the" * 6
    assert native(server, logit_bias=[["the", 100]], n_predict=6)["content"] == " the" * 6  # text: its tokens


def test_token_bans_in_every_dialect_keep_a_token_out(server):
    greedy = native(server, n_predict=32)["tokens"]
    common = Counter(greedy).most_common(1)[0][0]
    bans = ({"custom_token_bans": str(common)}, {"custom_token_bans": [common]}, {"logit_bias": {str(common): False}})
    for body in bans:
        got = v1_ids(server, max_tokens=32, **body)
        assert common not in got and got != greedy, body
    banned = native(server, n_predict=32, logit_bias=[[common, False]])["tokens"]
    assert common not in banned and banned != greedy


def test_banned_strings_never_reach_the_reply(repeater):
    # the runner-up of the repeater's "th" is a tie of zeros: ban the specials so it is a byte, not ""
    specials = {"0": False, "1": False, "2": False}
    body = {"banned_strings": ["thth"], "logit_bias": specials, "max_tokens": 16}
    for stream in (False, True):
        if stream:
            with httpx.stream("POST", f"{repeater.url}/v1/completions", json={**PLAIN, **body, "stream": True},
                              headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as response:  # fmt: skip
                events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
            text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
        else:
            answer = complete(repeater, **body)
            text = answer["choices"][0]["text"]
            assert answer["usage"]["completion_tokens"] == 16
        assert "thth" not in text and text.endswith("th")
    native_ = native(repeater, banned_strings=["thth"], logit_bias=[[0, False], [1, False], [2, False]], n_predict=8)
    assert "thth" not in native_["content"] and native_["tokens_predicted"] == 8


def test_ignore_eos_and_min_tokens_hold_the_end_back(eos_lover):
    assert complete(eos_lover)["usage"]["completion_tokens"] == 0  # the model ends at once
    for flag in ("ignore_eos", "ban_eos_token"):
        assert complete(eos_lover, **{flag: True})["usage"]["completion_tokens"] == 24
    assert complete(eos_lover, min_tokens=5)["usage"]["completion_tokens"] == 5
    assert complete(eos_lover, min_length=3)["usage"]["completion_tokens"] == 3  # text-generation-webui's name


# ---- grammars ---------------------------------------------------------------------------------------------
def test_grammar_constrains_the_output_in_each_field_name(server):
    gbnf = 'root ::= ("yes" | "no") ", " [0-9]{2,4}'
    for field in ("grammar", "grammar_string", "guided_grammar"):
        text = complete(server, temperature=1.0, seed=3, max_tokens=40, **{field: gbnf})["choices"][0]["text"]
        assert re.fullmatch(r"(yes|no), [0-9]{2,4}", text), (field, text)
    native_ = native(server, temperature=1.0, seed=3, grammar=gbnf, n_predict=40)
    assert re.fullmatch(r"(yes|no), [0-9]{2,4}", native_["content"]) and native_["stop_type"] == "eos"


def test_json_schema_gives_json_that_follows_it(server):
    schema = {"type": "object", "properties": {"mood": {"enum": ["calm", "angry"]}, "n": {"type": "integer"}},
              "required": ["mood", "n"]}  # fmt: skip
    for body in ({"json_schema": schema}, {"guided_json": schema}, {"response_format": _format(schema)}):
        text = complete(server, temperature=0.8, seed=1, max_tokens=60, **body)["choices"][0]["text"]
        data = json.loads(text)
        assert data["mood"] in ("calm", "angry") and isinstance(data["n"], int)
    assert json.loads(native(server, temperature=0.8, seed=1, n_predict=60, json_schema=schema)["content"])["n"] >= 0
    any_json = server.client().chat.completions.create(
        model="x", messages=[{"role": "user", "content": "hi"}], max_tokens=60, temperature=0.8, seed=2,
        response_format={"type": "json_object"},
    )  # fmt: skip
    json.loads(any_json.choices[0].message.content)


def _format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "mood", "schema": schema}}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"grammar": "root ::= ("}, None),
        ({"grammar": "rot ::= 'x'"}, None),
        ({"grammar": "root ::= " + "(" * 400 + '"x"' + ")" * 400}, None),
        ({"json_schema": {"type": "wat"}}, None),
        ({"json_schema": {"$ref": "https://example.com/schema.json"}}, None),
        ({"grammar": 'root ::= "x"', "json_schema": {"type": "string"}}, "grammar"),
        ({"logit_bias": {"999999": 5}}, None),
        ({"tfs": 0.9}, "tfs"),
        ({"top_a": 0.2}, "top_a"),
        ({"smoothing_factor": 0.3}, "smoothing_factor"),
        ({"num_beams": 3}, "num_beams"),
        ({"banned_strings": ["x"], "grammar": 'root ::= "a"'}, "banned_strings"),
        ({"samplers": ["top_k", "warp_drive"]}, "samplers"),
        ({"n": 2, "best_of": 3}, "best_of"),
        ({"mirostat_mode": 3}, "mirostat_mode"),
    ],
)
def test_what_cannot_work_is_refused_with_a_400_naming_it(server, body, param):
    response = server.post("/completions", {**PLAIN, **body})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


def test_sillytavern_neutral_values_of_unsupported_samplers_are_accepted(server):
    neutral = {"tfs": 1, "tfs_z": 1.0, "top_a": 0, "epsilon_cutoff": 0, "eta_cutoff": 0, "smoothing_factor": 0,
               "skew": 0, "num_beams": 1, "penalty_alpha": 0, "guidance_scale": 1, "negative_prompt": "",
               "encoder_repetition_penalty": 1, "no_repeat_ngram_size": 0, "max_tokens_second": 0,
               "rep_pen_slope": 1, "repetition_decay": 0, "skip_special_tokens": True, "banned_strings": [],
               "grammar_string": ""}  # fmt: skip
    assert complete(server, **neutral)["choices"][0]["text"] == complete(server)["choices"][0]["text"]


# ---- penalties --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "penalty",
    [
        {"repetition_penalty": 1.5},
        {"rep_pen": 1.5, "rep_pen_range": 0},
        {"repeat_penalty": 1.5, "repeat_last_n": 64},
        {"presence_penalty": 1.0},
        {"frequency_penalty": 1.0},
    ],
)
def test_penalties_make_the_most_repeated_token_repeat_less(server, penalty):
    plain = v1_ids(server, max_tokens=48)
    token, count = Counter(plain).most_common(1)[0]
    assert count >= 3
    assert Counter(v1_ids(server, max_tokens=48, **penalty))[token] < count


@pytest.mark.parametrize(
    "penalty",
    [{"presence_penalty": 10.0}, {"frequency_penalty": 2.0}, {"dry_multiplier": 2.0, "dry_allowed_length": 2}],
)
def test_additive_penalties_and_dry_break_a_repetition(repeater, penalty):
    plain = complete(repeater)["choices"][0]["text"]
    assert plain == "th" * 24
    assert complete(repeater, **penalty)["choices"][0]["text"] != plain


def test_penalty_range_follows_each_dialect(repeater):
    # llama.cpp's endpoint: repeat_last_n 0 turns the penalty off, -1 is the whole context; on /v1 a
    # range of 0 is the whole context (text-generation-webui)
    assert native(repeater, presence_penalty=10.0, repeat_last_n=0)["content"] == "th" * 24
    assert native(repeater, presence_penalty=10.0, repeat_last_n=-1)["content"] != "th" * 24
    assert complete(repeater, presence_penalty=10.0, repetition_penalty_range=0)["choices"][0]["text"] != "th" * 24


# ---- truncation and temperature ---------------------------------------------------------------------------
def test_truncation_samplers_narrow_the_choice(server):
    free = first_tokens(server)
    top = greedy_top(server)
    assert len(set(free)) >= 6
    for narrow in ({"top_k": 1}, {"mirostat_mode": 2, "mirostat_tau": 0.1}, {"mirostat": 1, "mirostat_tau": 0.1},
                   {"top_n_sigma": 0.5}, {"min_p": 0.9}, {"top_p": 0.01}, {"do_sample": False}):  # fmt: skip
        assert set(first_tokens(server, **narrow)) == {top}, narrow
    typical = first_tokens(server, typical_p=0.05)
    assert typical != free and len(set(typical)) < len(set(free))


def test_xtc_excludes_the_top_choices(server):
    top = native(server, n_predict=1, n_probs=5)["completion_probabilities"][0]["top_logprobs"]
    above = [q["id"] for q in top if math.exp(q["logprob"]) >= 0.02]  # most likely first
    assert len(above) >= 2
    removed = set(above[:-1])  # XTC keeps the least likely of the tokens above its threshold
    picks = first_tokens(server, xtc_probability=1.0, xtc_threshold=0.02)
    assert not removed & set(picks)
    assert removed & set(first_tokens(server, temperature=0.3))


def test_temperature_order_and_dynamic_temperature(server):
    hot = {"temperature": 5.0, "min_p": 0.3}
    last = first_tokens(server, **hot, temperature_last=True)
    first = first_tokens(server, **hot, samplers=["temperature", "min_p"])
    assert len(set(last)) < len(set(first))  # min_p on the model's sharp distribution keeps fewer
    assert first_tokens(server, sampler_priority=["temperature", "min_p"], **hot) == first
    assert first_tokens(server, sampler_order=[5, 0, 1, 3, 4, 2, 6], **hot) != last
    dynamic = first_tokens(server, dynamic_temperature=True, dynatemp_low=0.0, dynatemp_high=2.0)
    assert dynamic != first_tokens(server)
    assert first_tokens(server, dynatemp_range=1.0, dynatemp_exponent=1.0) == dynamic


# ---- logprobs ---------------------------------------------------------------------------------------------
def probe_logprobs(server: Server, tokens: list[int], n: int) -> np.ndarray:
    """log-softmax of the logits llama.cpp computes for `tokens` in one batch, at the last n positions."""
    logits = server.engine.probe(tokens, ["result_output"])["result_output"][-1][-n:].astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))


def test_logprobs_sum_to_at_most_one_and_match_a_probe(server):
    body = {"temperature": 0.9, "seed": 5, "n_predict": 8, "n_probs": 5}
    answer = native(server, **body)
    generated, probs = answer["tokens"], answer["completion_probabilities"]
    prompt = server.engine.tokenize(PROMPT)
    expected = probe_logprobs(server, prompt + generated[:-1], len(generated))
    for i, (tok, p) in enumerate(zip(generated, probs, strict=True)):
        assert p["id"] == tok and p["logprob"] == pytest.approx(expected[i, tok], abs=1e-4)
        best = np.argsort(-expected[i], kind="stable")[:5]
        assert [q["id"] for q in p["top_logprobs"]] == best.tolist()
        assert [q["logprob"] for q in p["top_logprobs"]] == pytest.approx(expected[i, best].tolist(), abs=1e-4)
        assert sum(q["prob"] for q in p["probs"]) <= 1 + 1e-6
    openai = complete(server, prompt=PROMPT, temperature=0.9, seed=5, max_tokens=8, logprobs=5, top_k=0)
    lp = openai["choices"][0]["logprobs"]
    assert lp["token_logprobs"] == pytest.approx([p["logprob"] for p in probs], abs=1e-9)
    assert lp["tokens"] == [p["token"] for p in probs]
    assert lp["text_offset"] == [sum(len(t) for t in lp["tokens"][:i]) for i in range(8)]
    for top, p in zip(lp["top_logprobs"], probs, strict=True):
        assert sum(math.exp(v) for v in top.values()) <= 1 + 1e-6
        assert max(top.values()) == pytest.approx(p["top_logprobs"][0]["logprob"])


def test_chat_and_llamacpp_logprob_shapes(server):
    chat = server.client().chat.completions.create(
        model="x", messages=[{"role": "user", "content": PROMPT}], max_tokens=4, temperature=0, logprobs=True,
        top_logprobs=3,
    )  # fmt: skip
    content = chat.choices[0].logprobs.content
    assert len(content) == 4 and all(len(c.top_logprobs) == 3 for c in content)
    assert all(c.token == c.top_logprobs[0].token and c.logprob == c.top_logprobs[0].logprob for c in content)
    assert "".join(c.token for c in content) == chat.choices[0].message.content
    probs = native(server, n_predict=4, n_probs=3)["completion_probabilities"]
    assert len(probs) == 4 and [p["id"] for p in probs] == [p["top_logprobs"][0]["id"] for p in probs]
    for p in probs:  # llama.cpp's current shape and the one SillyTavern 1.12 reads, in one object
        assert [q["tok_str"] for q in p["probs"]] == [q["token"] for q in p["top_logprobs"]]
        assert [q["prob"] for q in p["probs"]] == pytest.approx([math.exp(q["logprob"]) for q in p["top_logprobs"]])
        assert sum(q["prob"] for q in p["probs"]) <= 1 + 1e-6 and p["content"] == p["token"]


# ---- n and seeds ------------------------------------------------------------------------------------------
def test_n_choices_are_the_single_answers_of_consecutive_seeds(server):
    body = {**PLAIN, "temperature": 1.0, "seed": 7, "max_tokens": 10}
    three = complete(server, **body, n=3)
    singles = [complete(server, **{**body, "seed": 7 + i}) for i in range(3)]
    texts = [single["choices"][0]["text"] for single in singles]
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    assert [c["text"] for c in three["choices"]] == texts and len(set(texts)) == 3
    assert three["usage"]["completion_tokens"] == sum(single["usage"]["completion_tokens"] for single in singles)
    chat = server.client().chat.completions.create(
        model="x", messages=[{"role": "user", "content": PROMPT}], max_tokens=6, temperature=1.0, seed=7, n=2
    )
    assert [c.index for c in chat.choices] == [0, 1] and chat.choices[0].message.content != chat.choices[
        1
    ].message.content


def test_the_same_request_with_the_same_seed_gives_the_same_text_cached_or_cold(server):
    body = {**PLAIN, "temperature": 1.0, "seed": 7, "max_tokens": 32}
    server.engine.clear()
    cold = complete(server, **body)["choices"][0]["text"]
    cached = complete(server, **body)["choices"][0]["text"]  # the whole prompt is in the cache now
    complete(server, prompt=PROMPT + " there was a", max_tokens=4)  # a longer prompt shares a prefix
    after_other = complete(server, **body)["choices"][0]["text"]
    server.engine.clear()
    cold_again = complete(server, **body)["choices"][0]["text"]
    assert cold == cached == after_other == cold_again
    greedy = [complete(server, **{**body, "temperature": 0})["choices"][0]["text"] for _ in range(2)]
    assert greedy[0] == greedy[1]
