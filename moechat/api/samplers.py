"""Sampler settings as the clients send them, in every dialect SillyTavern speaks, mapped onto `Sampling`.

One request model (`SamplerFields`) accepts the field names of OpenAI, text-generation-webui, vLLM,
Aphrodite, TabbyAPI, KoboldCpp, llama.cpp's server and Ollama's options; `settings()` turns them into the
engine's `Sampling` for one dialect (its defaults, its field precedence, what a range of 0 means). A sampler
moechat cannot run is accepted at its neutral value (SillyTavern sends every slider) and refused with a
400 naming the field and the value to set otherwise: nothing a client asks for is dropped silently. Pure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from moechat.api.sampler_values import Bias, SamplerError, bias_entries, breakers, order
from moechat.engine.types import Sampling

Dialect = Literal["openai", "llamacpp", "ollama"]
SEED_RANGE = 2**32 - 1  # llama.cpp reads 0xFFFFFFFF as "random"
MAX_N = 8  # choices per request (side by side as far as the engine has free sequences)
MAX_LOGPROBS = 20


@dataclass(frozen=True)
class Defaults:
    """A dialect's defaults for what a request leaves out, and what a penalty range of 0 means."""

    max_tokens: int | None  # None: until the context is full
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    repeat_penalty: float
    zero_range_is_whole: bool  # text-generation-webui/Tabby: 0 = the whole context; llama.cpp/Ollama: 0 = off


DIALECTS: dict[str, Defaults] = {
    "openai": Defaults(256, 1.0, 1.0, 0, 0.0, 1.0, True),
    "llamacpp": Defaults(None, 0.8, 0.95, 40, 0.05, 1.0, False),
    "ollama": Defaults(None, 0.8, 0.9, 40, 0.0, 1.1, False),
}
# samplers moechat cannot run: (fields, neutral value, what it is)
UNSUPPORTED: tuple[tuple[tuple[str, ...], object, str], ...] = (
    (("tfs", "tfs_z"), 1.0, "tail-free sampling (removed from llama.cpp)"),
    (("top_a",), 0.0, "top-a sampling"),
    (("epsilon_cutoff",), 0.0, "epsilon sampling"),
    (("eta_cutoff",), 0.0, "eta sampling"),
    (("smoothing_factor",), 0.0, "quadratic (smoothing) sampling"),
    (("skew",), 0.0, "skew sampling"),
    (("num_beams",), 1, "beam search"),
    (("use_beam_search",), False, "beam search"),
    (("penalty_alpha",), 0.0, "contrastive search"),
    (("guidance_scale",), 1.0, "classifier-free guidance"),
    (("encoder_repetition_penalty",), 1.0, "the encoder repetition penalty"),
    (("no_repeat_ngram_size",), 0, "n-gram bans"),
    (("max_tokens_second",), 0, "a tokens-per-second limit"),
    (("rep_pen_slope",), 1.0, "a repetition penalty slope"),
    (("repetition_decay",), 0, "a repetition penalty decay"),
    (("skip_special_tokens",), True, "writing special tokens into the text"),
    (("echo",), False, "echoing the prompt"),
    (("include_stop_str_in_output",), False, "keeping the stop string in the text"),
    (("post_sampling_probs",), False, "probabilities after the sampler chain (they are the model's own)"),
)


class SamplerFields(BaseModel):
    """Every sampler field a SillyTavern connection type sends (see `settings` for what each means)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_new_tokens: Annotated[int, Field(ge=1)] | None = None
    n_predict: int | None = None
    num_predict: int | None = None
    temperature: Annotated[float, Field(ge=0, le=100)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    top_k: int | None = None
    min_p: Annotated[float, Field(ge=0, le=1)] | None = None
    typical_p: Annotated[float, Field(ge=0, le=1)] | None = None
    typical: Annotated[float, Field(ge=0, le=1)] | None = None
    top_n_sigma: float | None = None
    repetition_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    rep_pen: Annotated[float, Field(gt=0, le=10)] | None = None
    repetition_penalty_range: int | None = None
    rep_pen_range: int | None = None
    repeat_last_n: int | None = None
    presence_penalty: Annotated[float, Field(ge=-10, le=10)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-10, le=10)] | None = None
    seed: int | None = None
    sampler_seed: int | None = None
    stop: str | list[str] | None = None
    stopping_strings: list[str] | None = None
    dynamic_temperature: bool | None = None
    dynatemp_low: float | None = None
    dynatemp_high: float | None = None
    dynatemp_min: float | None = None
    dynatemp_max: float | None = None
    dynatemp_range: Annotated[float, Field(ge=0)] | None = None
    dynatemp_exponent: Annotated[float, Field(ge=0)] | None = None
    mirostat: Literal[0, 1, 2] | None = None
    mirostat_mode: Literal[0, 1, 2] | None = None
    mirostat_tau: Annotated[float, Field(ge=0)] | None = None
    mirostat_eta: Annotated[float, Field(ge=0)] | None = None
    dry_multiplier: Annotated[float, Field(ge=0)] | None = None
    dry_base: Annotated[float, Field(ge=0)] | None = None
    dry_allowed_length: Annotated[int, Field(ge=0)] | None = None
    dry_penalty_last_n: int | None = None
    dry_sequence_breakers: str | list[str] | None = None
    xtc_threshold: Annotated[float, Field(ge=0, le=1)] | None = None
    xtc_probability: Annotated[float, Field(ge=0, le=1)] | None = None
    logit_bias: dict[str, Bias] | list[list[int | str | float | bool]] | None = None
    custom_token_bans: str | list[int] | None = None
    banned_strings: list[str] | None = None
    grammar: str | None = None
    grammar_string: str | None = None
    guided_grammar: str | None = None
    json_schema: dict[str, Any] | str | None = None
    guided_json: dict[str, Any] | str | None = None
    response_format: dict[str, Any] | None = None
    ignore_eos: bool | None = None
    ban_eos_token: bool | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    min_length: Annotated[int, Field(ge=0)] | None = None
    add_bos_token: bool | None = None
    samplers: list[str] | str | None = None
    sampler_priority: list[str] | None = None
    sampler_order: list[int] | None = None
    temperature_last: bool | None = None
    do_sample: bool | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    best_of: Annotated[int, Field(ge=1, le=MAX_N)] | None = None

    def extra(self, name: str) -> object:
        return (self.model_extra or {}).get(name)


@dataclass(frozen=True)
class Settings:
    """What a request asks of the engine: sampling (seed: the first choice's), choices, BOS, logprobs."""

    sampling: Sampling
    n: int = 1
    add_bos: bool = True
    top_logprobs: int | None = None  # None: no logprobs; 0: the chosen token's only


def settings(
    f: SamplerFields,
    dialect: Dialect,
    n_ctx: int,
    *,
    format_stops: tuple[str, ...] = (),
    max_tokens: int | None = None,
    top_logprobs: int | None = None,
) -> Settings:
    """The request's sampler fields as the engine's settings; SamplerError for what cannot work.
    `max_tokens`/`top_logprobs`: the values of fields the caller read itself (chat's max_completion_tokens,
    OpenAI's logprobs)."""
    d = DIALECTS[dialect]
    _refuse_unsupported(f)
    if f.best_of is not None and f.best_of != f.n:
        raise SamplerError("best_of", f"only best_of = n ({f.n}) is supported (each choice is returned)")
    temperature = _first(f.temperature, default=d.temperature)
    if f.do_sample is False:
        temperature = 0.0
    dyn_range, temperature = _dynatemp(f, temperature)
    grammar, schema = _grammar(f, dialect)
    s = Sampling(
        temperature=temperature,
        top_p=_first(f.top_p, default=d.top_p),
        top_k=_first(f.top_k, default=d.top_k),
        min_p=_first(f.min_p, default=d.min_p),
        typical_p=_first(f.typical_p, f.typical, default=1.0),
        top_n_sigma=_first(f.top_n_sigma, default=-1.0),
        repeat_penalty=_first(f.repetition_penalty, f.repeat_penalty, f.rep_pen, default=d.repeat_penalty),
        repeat_last_n=_range(f, d),
        presence_penalty=_first(f.presence_penalty, default=0.0),
        frequency_penalty=_first(f.frequency_penalty, default=0.0),
        seed=_seed(f),
        max_tokens=_max_tokens(f, dialect, n_ctx, max_tokens),
        stop=tuple(dict.fromkeys(s for s in (*_stops(f), *format_stops) if s)),
        dynatemp_range=dyn_range,
        dynatemp_exponent=_first(f.dynatemp_exponent, default=1.0),
        mirostat=_first(f.mirostat_mode, f.mirostat, default=0),
        mirostat_tau=_first(f.mirostat_tau, default=5.0),
        mirostat_eta=_first(f.mirostat_eta, default=0.1),
        dry_multiplier=_first(f.dry_multiplier, default=0.0),
        dry_base=_first(f.dry_base, default=1.75),
        dry_allowed_length=_first(f.dry_allowed_length, default=2),
        dry_penalty_last_n=_dry_range(f, d),
        dry_breakers=breakers(f.dry_sequence_breakers),
        xtc_threshold=_first(f.xtc_threshold, default=0.1),
        xtc_probability=_first(f.xtc_probability, default=0.0),
        logit_bias=_token_bias(f),
        text_bias=_text_bias(f),
        ignore_eos=bool(f.ignore_eos or f.ban_eos_token),
        min_tokens=_first(f.min_tokens, f.min_length, default=0),
        order=order(f.samplers, f.sampler_priority, f.sampler_order, f.temperature_last),
        grammar=grammar,
        json_schema=schema,
        banned_strings=tuple(b for b in f.banned_strings or () if b),
    )
    if s.banned_strings and (grammar or schema):
        raise SamplerError("banned_strings", "cannot be combined with a grammar or a JSON schema")
    if top_logprobs is not None and not 0 <= top_logprobs <= MAX_LOGPROBS:
        raise SamplerError("logprobs", f"between 0 and {MAX_LOGPROBS}, got {top_logprobs}")
    if top_logprobs is not None:
        s = replace(s, n_probs=max(top_logprobs, 1))
    return Settings(s, n=f.n, add_bos=f.add_bos_token is not False, top_logprobs=top_logprobs)


def choice_seeds(seed: int | None, n: int, draw: int) -> list[int | None]:
    """Seeds of n choices: seed, seed+1, ... (a random `draw` stands in for no seed when n > 1)."""
    if n == 1:
        return [seed]
    base = draw if seed is None else seed
    return [(base + i) % SEED_RANGE for i in range(n)]


# ---- one field at a time ----------------------------------------------------------------------------------
def _first(*values: Any, default: Any) -> Any:
    return next((v for v in values if v is not None), default)


def _refuse_unsupported(f: SamplerFields) -> None:
    for names, neutral, what in UNSUPPORTED:
        for name in names:
            value = getattr(f, name, None) if name in SamplerFields.model_fields else f.extra(name)
            if value is None or value == neutral:
                continue
            if isinstance(neutral, float) and isinstance(value, int | float) and math.isclose(value, neutral):
                continue
            raise SamplerError(name, f"{value!r} asks for {what}, which moechat cannot do; set it to {neutral!r}")
    negative = f.extra("negative_prompt")
    if negative and f.extra("guidance_scale") not in (None, 1, 1.0):
        raise SamplerError("negative_prompt", "classifier-free guidance is not supported; clear it")
    suffix = f.extra("suffix")
    if suffix:
        raise SamplerError("suffix", "inserting text after the completion is not supported")


def _seed(f: SamplerFields) -> int | None:
    seed = _first(f.seed, f.sampler_seed, default=None)
    return None if seed is None or seed < 0 else seed % SEED_RANGE


def _max_tokens(f: SamplerFields, dialect: Dialect, n_ctx: int, given: int | None) -> int:
    if dialect == "llamacpp":
        value = _first(f.n_predict, f.max_tokens, default=-1)
    elif dialect == "ollama":
        value = _first(f.num_predict, f.max_tokens, default=-1)
    else:
        value = _first(given, f.max_tokens, f.max_new_tokens, default=DIALECTS["openai"].max_tokens)
    return n_ctx if value is None or value < 0 else max(value, 1)


def _stops(f: SamplerFields) -> list[str]:
    stop = [f.stop] if isinstance(f.stop, str) else (f.stop or [])
    return [*stop, *(f.stopping_strings or [])]


def _range(f: SamplerFields, d: Defaults) -> int:
    """The repetition penalties' window: -1 is the whole context."""
    if d.zero_range_is_whole:  # no range given: the whole context, as vLLM and Aphrodite (which take none)
        value = _first(f.repetition_penalty_range, f.rep_pen_range, f.repeat_last_n, default=0)
        return -1 if value <= 0 else value
    value = _first(f.repeat_last_n, default=64)
    return -1 if value < 0 else value


def _dry_range(f: SamplerFields, d: Defaults) -> int:
    value = _first(f.dry_penalty_last_n, default=-1)
    if d.zero_range_is_whole:
        return -1 if value <= 0 else value
    return -1 if value < 0 else value


def _dynatemp(f: SamplerFields, temperature: float) -> tuple[float, float]:
    """(range, temperature): llama.cpp's dynatemp_range, or text-generation-webui's low/high (Aphrodite's
    min/max) bounds when dynamic temperature is on."""
    if f.dynatemp_range:
        return f.dynatemp_range, temperature
    low = _first(f.dynatemp_low, f.dynatemp_min, default=None)
    high = _first(f.dynatemp_high, f.dynatemp_max, default=None)
    if (f.dynamic_temperature or f.dynatemp_min is not None) and low is not None and high is not None:
        if high < low:
            raise SamplerError("dynatemp_high", f"must be at least dynatemp_low ({low}), got {high}")
        return (high - low) / 2, (high + low) / 2
    return 0.0, temperature


def _token_bias(f: SamplerFields) -> tuple[tuple[int, float], ...]:
    return tuple((k, v) for k, v in bias_entries(f.logit_bias, f.custom_token_bans) if isinstance(k, int))


def _text_bias(f: SamplerFields) -> tuple[tuple[str, float], ...]:
    return tuple((k, v) for k, v in bias_entries(f.logit_bias, f.custom_token_bans) if isinstance(k, str))


def _grammar(f: SamplerFields, dialect: Dialect) -> tuple[str | None, str | None]:
    """(GBNF grammar, JSON schema as text), at most one of them. An empty schema object is "none" from
    SillyTavern's text-completion types (it sends {} when the box is empty) and "any JSON" on llama.cpp's
    own endpoint, as there."""
    grammar = next((g for g in (f.grammar, f.grammar_string, f.guided_grammar) if g), None)
    schema: object = next((s for s in (f.json_schema, f.guided_json) if s not in (None, "", {})), None)
    if dialect == "llamacpp" and f.json_schema == {}:
        schema = {}
    fmt = f.response_format or {}
    kind = fmt.get("type")
    if kind == "json_object":
        schema = fmt.get("schema") or {}
    elif kind == "json_schema":
        inner = fmt.get("json_schema")
        schema = inner.get("schema", {}) if isinstance(inner, dict) else {}
    elif kind not in (None, "text"):
        raise SamplerError("response_format.type", f"text, json_object or json_schema, got {kind!r}")
    if grammar is not None and schema is not None:
        raise SamplerError("grammar", "send either a grammar or a JSON schema, not both")
    if schema is not None:
        return None, schema if isinstance(schema, str) else json.dumps(schema)
    return grammar, None
