"""Picking each next token with llama.cpp's samplers, built from a `Sampling` (engine/types.py).

The chain is llama.cpp's own (common/sampling.cpp): penalties, DRY, top-n-sigma, top-k, typical-p, top-p,
min-p, XTC and temperature (dynamic when `dynatemp_range` > 0) in `Sampling.order`, then a seeded draw;
Mirostat replaces the truncation samplers; temperature <= 0 is greedy after the penalties. Samplers left
at their neutral value are not added, so the default chain is the one moechat always used.

Before the chain, in numpy: logit biases (token bans are -inf) and end-of-generation bans (`ignore_eos`,
`min_tokens`), then the candidates no longer allowed are dropped. A grammar is applied as llama.cpp
applies it: the chain draws first, and only when the grammar refuses that token does it draw again among
the tokens the grammar allows. The grammar is only ever told of a token it allowed: llama.cpp's grammar
throws a C++ exception (which ends the process) when it accepts a token it does not allow. When nothing is
allowed any more (a finished grammar with EOS banned), `pick` returns None.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Sequence

import llama_cpp
import llama_cpp._internals as internals
import numpy as np

from moechat.engine import grammar as gbnf
from moechat.engine.types import SAMPLER_ORDER, Logprobs, Sampling
from moechat.errors import SamplingError

TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])  # llama_token_data
MIROSTAT_M = 100  # llama.cpp's sample size for Mirostat 1


class Picker:
    """One generation's token picker: the sampler chain, the biases and the grammar, with their state."""

    def __init__(
        self,
        model: internals.LlamaModel,
        s: Sampling,
        n_ctx: int,
        eog: Sequence[int],
        tokenize: Callable[[str], list[int]],
    ) -> None:
        self._n_vocab = model.n_vocab()
        self._eog = np.asarray(eog, dtype=np.int64)
        self._bias = _bias(s, self._n_vocab, self._eog, tokenize)
        self._min_tokens = s.min_tokens
        self._first_bans = np.asarray(s.first_bans, dtype=np.int64)
        self._grammar = _grammar(model, s)
        try:
            self._chain = _chain(model, s, n_ctx)
        except BaseException:
            self._free_grammar()
            raise
        self._ids = np.arange(self._n_vocab, dtype=np.int32)

    def feed(self, tokens: Sequence[int]) -> None:
        """Tell the penalties and DRY about tokens already in the context (the prompt), as llama.cpp does."""
        for tok in tokens:
            llama_cpp.llama_sampler_accept(self._chain.sampler, tok)

    def pick(self, logits: np.ndarray, generated: int) -> int | None:
        """The next token for these logits (the model's, untouched), after `generated` tokens; None when
        no token is allowed."""
        biased = logits if self._bias is None else logits + self._bias
        if generated == 0 and len(self._first_bans):
            biased = np.array(biased, dtype=np.float32)
            biased[self._first_bans] = -np.inf
        tries = [biased]
        if generated < self._min_tokens and len(self._eog):
            early = np.array(biased, dtype=np.float32)
            early[self._eog] = -np.inf
            tries.insert(0, early)  # min_tokens gives way when only an end token is allowed
        tok = next((t for t in map(self._draw, tries) if t is not None), None)
        if tok is not None:
            llama_cpp.llama_sampler_accept(self._chain.sampler, tok)
            if self._grammar is not None:
                llama_cpp.llama_sampler_accept(self._grammar, tok)
        return tok

    def _draw(self, logits: np.ndarray) -> int | None:
        """A token drawn by the chain among those allowed. With a grammar, as llama.cpp does: a draw without
        it, kept when the grammar allows it, else a draw among the tokens the grammar allows."""
        cand = _finite(self._candidates(logits))
        if cand is None:
            return None
        tok = self._apply_chain(cand)
        if self._grammar is None or self._allows(tok):
            return tok
        allowed = self._candidates(logits)
        _apply(self._grammar, allowed)
        cand = _finite(allowed)
        return None if cand is None else self._apply_chain(cand)

    def _candidates(self, logits: np.ndarray) -> np.ndarray:
        cand = np.empty(self._n_vocab, TOKEN_DATA)
        cand["id"], cand["logit"], cand["p"] = self._ids, logits, 0.0
        return cand

    def _apply_chain(self, cand: np.ndarray) -> int:
        array = _apply(self._chain.sampler, cand)
        if not 0 <= array.selected < array.size:
            raise SamplingError("the sampler chain selected no token")
        return int(array.data[array.selected].id)  # samplers may move `data` (XTC drops the head)

    def _allows(self, tok: int) -> bool:
        one = np.array([(tok, 1.0, 0.0)], dtype=TOKEN_DATA)
        _apply(self._grammar, one)
        return bool(np.isfinite(one["logit"][0]))

    def close(self) -> None:
        self._chain.close()
        self._free_grammar()

    def _free_grammar(self) -> None:
        if self._grammar is not None:
            llama_cpp.llama_sampler_free(self._grammar)
            self._grammar = None


def _apply(sampler: object, cand: np.ndarray) -> llama_cpp.llama_token_data_array:
    """Run a llama.cpp sampler over candidates in place; the array as the sampler left it."""
    data = cand.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
    array = llama_cpp.llama_token_data_array(data=data, size=len(cand), selected=-1, sorted=False)
    llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
    return array


def _finite(cand: np.ndarray) -> np.ndarray | None:
    """The candidates still allowed (a finite logit), or None when there is none."""
    finite = np.isfinite(cand["logit"])
    if not finite.all():
        cand = np.ascontiguousarray(cand[finite])
    return cand if len(cand) else None


def logprobs(logits: np.ndarray, token: int, n: int) -> Logprobs:
    """The model's log-probability of `token` and of its `n` most likely tokens (ties: lower id first)."""
    x = logits.astype(np.float64)
    finite = np.isfinite(x)
    top = x.max(initial=-np.inf, where=finite)
    lse = top + np.log(np.exp(np.where(finite, x - top, -np.inf)).sum())
    n = min(n, len(x))
    best = np.argpartition(-x, n - 1)[:n] if n else np.array([], dtype=np.int64)
    best = best[np.lexsort((best, -x[best]))]
    return Logprobs(float(x[token] - lse), tuple((int(i), float(x[i] - lse)) for i in best))


def grammar_text(s: Sampling) -> str | None:
    """The GBNF grammar of `s`: its `grammar`, or its `json_schema` converted; checked for safe size."""
    if s.grammar is not None and s.json_schema is not None:
        raise SamplingError("send either a grammar or a json_schema, not both")
    if s.json_schema is not None:
        return gbnf.check(gbnf.from_json_schema(s.json_schema))
    return gbnf.check(s.grammar) if s.grammar is not None else None


def _grammar(model: internals.LlamaModel, s: Sampling) -> ctypes.c_void_p | None:
    text = grammar_text(s)
    if text is None:
        return None
    sampler = llama_cpp.llama_sampler_init_grammar(model.vocab, text.encode("utf-8"), b"root")
    if not sampler:
        raise SamplingError("grammar: llama.cpp could not parse it (a syntax error, or no 'root' rule)")
    return sampler


def _bias(s: Sampling, n_vocab: int, eog: np.ndarray, tokenize: Callable[[str], list[int]]) -> np.ndarray | None:
    """The additive bias of every token (-inf: banned), or None when there is none."""
    if not (s.logit_bias or s.text_bias or s.ignore_eos):
        return None
    bias = np.zeros(n_vocab, dtype=np.float32)
    for tok, value in s.logit_bias:
        if not 0 <= tok < n_vocab:
            raise SamplingError(f"logit_bias: token {tok} is not in this model's vocabulary (0..{n_vocab - 1})")
        bias[tok] += value
    for text, value in s.text_bias:
        for tok in dict.fromkeys(tokenize(text)):
            bias[tok] += value
    if s.ignore_eos:
        bias[eog] = -np.inf
    return bias


def _chain(model: internals.LlamaModel, s: Sampling, n_ctx: int) -> internals.LlamaSampler:
    unknown = [name for name in s.order if name not in SAMPLER_ORDER]
    if unknown:
        raise SamplingError(f"samplers: unknown sampler {unknown[0]!r}; known: {', '.join(SAMPLER_ORDER)}")
    seed = llama_cpp.LLAMA_DEFAULT_SEED if s.seed is None else s.seed
    n_vocab = model.n_vocab()
    chain = internals.LlamaSampler()
    try:
        if s.temperature <= 0 or s.mirostat:
            stages = [name for name in s.order if name in ("penalties", "dry")]
        else:
            stages = list(s.order)
        for name in stages:
            _add(chain, name, model, s, n_ctx, seed)
        if s.temperature <= 0:
            chain.add_greedy()
        elif s.mirostat == 1:
            chain.add_temp(s.temperature)
            chain.add_mirostat(n_vocab, seed, s.mirostat_tau, s.mirostat_eta, MIROSTAT_M)
        elif s.mirostat == 2:
            chain.add_temp(s.temperature)
            chain.add_mirostat_v2(seed, s.mirostat_tau, s.mirostat_eta)
        elif s.mirostat:
            raise SamplingError(f"mirostat: 0, 1 or 2, got {s.mirostat}")
        else:
            chain.add_dist(seed)
    except BaseException:
        chain.close()
        raise
    return chain


def _add(
    chain: internals.LlamaSampler, name: str, model: internals.LlamaModel, s: Sampling, n_ctx: int, seed: int
) -> None:
    """Add the stage `name` when its settings make it do anything."""
    if name == "penalties":
        last_n = n_ctx if s.repeat_last_n < 0 else s.repeat_last_n
        if last_n and (s.repeat_penalty != 1 or s.frequency_penalty or s.presence_penalty):
            chain.add_penalties(model.n_vocab(), last_n, s.repeat_penalty, s.frequency_penalty, s.presence_penalty)
    elif name == "dry":
        last_n = n_ctx if s.dry_penalty_last_n < 0 else s.dry_penalty_last_n
        if s.dry_multiplier > 0 and s.dry_base >= 1 and last_n:
            chain.add_dry(model, s.dry_multiplier, s.dry_base, s.dry_allowed_length, last_n, list(s.dry_breakers))
    elif name == "top_n_sigma" and s.top_n_sigma > 0:
        chain.add_top_n_sigma(s.top_n_sigma)
    elif name == "top_k" and s.top_k > 0:
        chain.add_top_k(s.top_k)
    elif name == "typical_p" and s.typical_p < 1:
        chain.add_typical(s.typical_p, 1)
    elif name == "top_p" and s.top_p < 1:
        chain.add_top_p(s.top_p, 1)
    elif name == "min_p" and s.min_p > 0:
        chain.add_min_p(s.min_p, 1)
    elif name == "xtc" and s.xtc_probability > 0 and s.xtc_threshold <= 0.5:
        chain.add_xtc(s.xtc_probability, s.xtc_threshold, 1, seed)
    elif name == "temperature":
        if s.dynatemp_range > 0:
            chain.add_temp_ext(s.temperature, s.dynatemp_range, s.dynatemp_exponent)
        else:
            chain.add_temp(s.temperature)
