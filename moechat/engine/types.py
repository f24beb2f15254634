"""The engine's records, free of llama.cpp: what to sample with, what a stream yields, how a model was loaded.

Importing this module loads no native library, so request parsing (the API's schema) and views can use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypedDict

from moechat.routing.metrics import Routing

# llama.cpp's default order of the samplers that reshape the distribution (common/sampling.cpp)
SAMPLER_ORDER = ("penalties", "dry", "top_n_sigma", "top_k", "typical_p", "top_p", "min_p", "xtc", "temperature")
DRY_BREAKERS = ("\n", ":", '"', "*")


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens, as llama.cpp's samplers (engine/sampler.py builds the chain). temperature <= 0 is
    greedy; seed None is a fresh random seed; every other default leaves its sampler off.

    `repeat_last_n` and `dry_penalty_last_n`: -1 is the whole context, 0 turns the sampler off.
    `logit_bias` adds to token logits (-inf bans), `text_bias` to every token of a text (tokenized by the
    engine); `banned_strings` never appear in the reply (the engine backtracks); `grammar` (GBNF) or
    `json_schema` (JSON text) constrain the output; `ignore_eos` bans the end-of-generation tokens,
    `min_tokens` bans them until that many tokens were generated; `n_probs` > 0 puts the model's own
    log-probabilities (before any sampler) of the chosen and the n_probs most likely tokens on every
    generated Token. `order` is the order of the reshaping samplers (SAMPLER_ORDER names).
    """

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    typical_p: float = 1.0
    top_n_sigma: float = -1.0
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    mirostat: int = 0  # 1: Mirostat, 2: Mirostat 2.0 (replace the truncation samplers)
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_breakers: tuple[str, ...] = DRY_BREAKERS
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    logit_bias: tuple[tuple[int, float], ...] = ()
    text_bias: tuple[tuple[str, float], ...] = ()
    grammar: str | None = None
    json_schema: str | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    n_probs: int = 0
    order: tuple[str, ...] = SAMPLER_ORDER
    banned_strings: tuple[str, ...] = ()  # never in the reply: generation backtracks (engine/banned.py)
    first_bans: tuple[int, ...] = ()  # tokens banned as the first generated token only


@dataclass(frozen=True, slots=True)
class Logprobs:
    """The model's log-probability of the token it produced and of its `top` most likely tokens, best first,
    as (token id, log-probability): the softmax of the raw logits, before any sampler."""

    logprob: float
    top: tuple[tuple[int, float], ...]


@dataclass(frozen=True, slots=True)
class Token:
    """One token read or produced by the model at position `pos`.

    Prompt tokens come first (prompt=True; cached=True when their KV and routing were reused from an
    earlier call), then generated ones. `text` is what this token releases to the reader: stop strings
    are never released, and bytes of a character split over tokens wait for the rest. The last record
    of a stream has `finish` set: "eos", "length", "stop" or "cancelled" (a marker with id -1; "stop"
    with id -1 also ends a stream where no token was allowed any more, e.g. a finished grammar with EOS
    banned). Generated tokens carry `logprobs` when Sampling.n_probs > 0.
    """

    pos: int
    id: int
    text: str
    piece: bytes
    routing: Routing | None
    prompt: bool = False
    cached: bool = False
    finish: str | None = None
    logprobs: Logprobs | None = None


class TemplateTokens(NamedTuple):
    """The texts of a model's special tokens as its chat template writes them."""

    bos: str
    eos: str
    ends: tuple[str, ...]  # the other end-of-generation tokens ("<|im_end|>", "<|eot_id|>"...)


@dataclass(frozen=True, slots=True)
class Waiting:
    """A request that waits for a free sequence slot: `place` 1 is next (Engine.stream_waiting yields these)."""

    place: int


@dataclass(frozen=True)
class Occupancy:
    """How busy an engine is: sequence slots generating or reading a prompt, and requests waiting for one."""

    slots: int
    busy: int
    waiting: int


class LoadOptions(TypedDict, total=False):
    """Engine.load's settings that the app applies to every model it loads (and to their steered variants)."""

    n_ctx: int
    n_threads: int | None
    n_gpu_layers: int | None
    capture: str
    full_prompt_routing: bool
    exact: bool
    n_parallel: int


@dataclass(frozen=True)
class LoadReport:
    gpu_offload_supported: bool
    n_gpu_layers: int
    capture: str  # "fast", "python" or "off"
    n_threads: int
    n_threads_batch: int = 0
    threads_note: str = ""  # why n_threads: "2 physical cores", "requested"
    cpu_extra_buffers: bool = True  # ggml's extra CPU buffer types (AMX, repacking): see engine/cpu_guard.py
    cpu_note: str = ""  # why cpu_extra_buffers
    n_ctx: int = 0  # each reply's context in tokens: prompt and reply together (what API clients must stay under)
    n_parallel: int = 1  # sequences generated together in one context, each with n_ctx tokens
    parallel_note: str = ""  # why n_parallel is lower than asked: the KV caches would not fit in memory
