"""SillyTavern's sampler fields, per connection type, onto the engine's Sampling (pure: no model)."""

from __future__ import annotations

import math

import pytest

from moechat.api.samplers import Dialect, SamplerFields, Settings, choice_seeds, settings
from moechat.engine.types import SAMPLER_ORDER
from tests import sillytavern as st

N_CTX = 4096


def mapped(kind: str, dialect: Dialect = "openai", **changed: object) -> Settings:
    body = st.textgen_body(kind, "hi", max_tokens=100, **changed)
    return settings(SamplerFields.model_validate(body.get("options", body)), dialect, N_CTX)


@pytest.mark.parametrize("kind", ["ooba", "vllm", "aphrodite", "tabby", "koboldcpp"])
def test_sillytavern_defaults_map_onto_the_same_sampling_for_every_v1_type(kind):
    s = mapped(kind).sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.repeat_penalty) == (0.7, 0.5, 40, 0.0, 1.2)
    assert s.max_tokens == 100 and s.seed is None and s.stop == ("\nUser:",) and s.order[-1] == "temperature"
    assert s.repeat_last_n == -1  # SillyTavern's range 0: the whole context (text-generation-webui)
    assert not (s.grammar or s.json_schema or s.logit_bias or s.ignore_eos or s.mirostat or s.dry_multiplier)


def test_llamacpp_type_keeps_llamacpp_semantics():
    s = mapped("llamacpp", "llamacpp").sampling
    assert s.repeat_last_n == 0 and s.repeat_penalty == 1.2  # llama.cpp: range 0 turns the penalty off
    assert s.max_tokens == 100 and s.order == SAMPLER_ORDER  # ST's list only reorders what it names
    ollama = mapped("ollama", "ollama").sampling
    assert (ollama.temperature, ollama.top_k, ollama.repeat_last_n, ollama.max_tokens) == (0.7, 40, 0, 100)


def test_field_aliases_and_conversions():
    s = settings(
        SamplerFields.model_validate(
            {
                "typical": 0.5,
                "mirostat_mode": 2,
                "dry_multiplier": 0.8,
                "dry_sequence_breakers": '["\\n", ":"]',
                "custom_token_bans": "3, 7",
                "logit_bias": {"5": 2.5, "hello": -1},
                "ban_eos_token": True,
                "min_length": 4,
                "sampler_seed": 42,
                "stopping_strings": ["\nAnn:"],
                "stop": "END",
                "dynamic_temperature": True,
                "dynatemp_low": 0.5,
                "dynatemp_high": 1.5,
                "do_sample": True,
            }
        ),
        "openai",
        N_CTX,
    ).sampling
    assert s.typical_p == 0.5 and s.mirostat == 2 and s.dry_breakers == ("\n", ":")
    assert s.logit_bias == ((5, 2.5), (3, -math.inf), (7, -math.inf)) and s.text_bias == (("hello", -1.0),)
    assert s.ignore_eos and s.min_tokens == 4 and s.seed == 42 and s.stop == ("END", "\nAnn:")
    assert (s.temperature, s.dynatemp_range) == (1.0, 0.5)
    assert settings(SamplerFields(do_sample=False), "openai", N_CTX).sampling.temperature == 0


@pytest.mark.parametrize(
    ("fields", "stages", "expected"),
    [
        ({"samplers": ["min_p", "top_k"]}, ("top_k", "min_p"), ("min_p", "top_k")),
        ({"samplers": "tkm"}, ("top_k", "min_p", "temperature"), ("temperature", "top_k", "min_p")),
        ({"samplers": st.LLAMACPP_ORDER}, ("top_k", "typical_p"), ("top_k", "typical_p")),  # tfs_z: skipped
        ({"sampler_order": st.KOBOLDCPP_ORDER}, ("penalties", "top_k"), ("penalties", "top_k")),
        ({"sampler_order": [5, 0, 6]}, ("penalties", "top_k", "temperature"), ("temperature", "top_k", "penalties")),
        ({"sampler_priority": st.OOBA_ORDER}, ("top_k", "temperature"), ("temperature", "top_k")),
        (
            {"sampler_priority": st.OOBA_ORDER, "temperature_last": True},
            ("top_k", "temperature"),
            ("top_k", "temperature"),
        ),
    ],
)
def test_sampler_order_lists_reorder_only_what_they_name(fields, stages, expected):
    got = settings(SamplerFields.model_validate(fields), "openai", N_CTX).sampling.order
    assert sorted(got) == sorted(SAMPLER_ORDER)
    assert tuple(s for s in got if s in stages) == expected


def test_choice_seeds_follow_the_first():
    assert choice_seeds(7, 3, draw=99) == [7, 8, 9]
    assert choice_seeds(None, 2, draw=99) == [99, 100]
    assert choice_seeds(None, 1, draw=99) == [None]
    assert choice_seeds(2**32 - 2, 2, draw=0) == [2**32 - 2, 0]
