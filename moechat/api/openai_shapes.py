"""OpenAI's response shapes for completions and chat completions, whole or streamed, with logprobs and the
moechat routing extension (pure: records in, JSON-ready dicts out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from moechat.api import logprobs
from moechat.api.logprobs import Piece
from moechat.api.run import Outcome
from moechat.engine.types import Token

FINISH = {"eos": "stop", "stop": "stop", "length": "length", "cancelled": "stop"}


@dataclass(frozen=True)
class Meta:
    """What every response and chunk of one request repeats. `expert_names` None: routing not asked for;
    `top_logprobs` None: logprobs not asked for."""

    id: str
    created: int
    model: str
    chat: bool
    expert_names: tuple[str, ...] | None = None
    top_logprobs: int | None = None


def routing_entry(tok: Token) -> dict[str, Any]:
    """One token's routing, probabilities rounded to 4 decimals; a layer never observed (NaN) is null."""
    assert tok.routing is not None
    probs = np.round(tok.routing.probs.astype(np.float64), 4).tolist()
    rows = [None if any(np.isnan(v) for v in row) else row for row in probs]
    return {"id": tok.id, "text": tok.text, "probs": rows, "experts": tok.routing.experts.tolist()}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def whole(meta: Meta, outcomes: list[Outcome], use: dict[str, int], piece: Piece) -> dict[str, Any]:
    """The whole answer of a request that did not stream: one choice per outcome."""
    choices = []
    for o in outcomes:
        choice: dict[str, Any] = {"index": o.index, "finish_reason": FINISH[o.finish]}
        if meta.chat:
            choice["message"] = {"role": "assistant", "content": o.text}
        else:
            choice["text"] = o.text
        choice["logprobs"] = _logprobs(meta, [(t.id, t) for t in o.tokens], piece)
        choice |= _extension(meta, [routing_entry(t) for t in o.tokens if t.routing is not None], always=True)
        choices.append(choice)
    kind = "chat.completion" if meta.chat else "text_completion"
    return _envelope(meta, kind, choices) | {"usage": use}


def chunk(meta: Meta, index: int, tok: Token, offset: int, piece: Piece) -> dict[str, Any] | None:
    """The streamed chunk of one generated token (None: it carries nothing); `offset` is where its text
    starts in the choice's text (OpenAI's text_offset)."""
    counted = tok.id >= 0 and tok.finish != "eos"
    routed = [routing_entry(tok)] if counted and tok.routing is not None and meta.expert_names else []
    probs = _logprobs(meta, [(tok.id, tok)] if counted else [], piece, offset)
    if not tok.text and not routed and probs is None:
        return None
    choice: dict[str, Any] = {"index": index, "finish_reason": None, "logprobs": probs}
    choice |= {"delta": {"content": tok.text}} if meta.chat else {"text": tok.text}
    return _envelope(meta, _chunk_kind(meta), [choice | _extension(meta, routed)])


def role_chunk(meta: Meta, index: int) -> dict[str, Any]:
    choice = {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
    return _envelope(meta, _chunk_kind(meta), [choice])


def finish_chunk(meta: Meta, index: int, finish: str) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "logprobs": None, "finish_reason": FINISH[finish]}
    if meta.chat:
        choice["delta"] = {}
    else:
        choice["text"] = ""
    return _envelope(meta, _chunk_kind(meta), [choice])


def usage_chunk(meta: Meta, use: dict[str, int]) -> dict[str, Any]:
    """The extra last chunk of `stream_options.include_usage`: no choices, the usage."""
    return _envelope(meta, _chunk_kind(meta), []) | {"usage": use}


def _chunk_kind(meta: Meta) -> str:
    return "chat.completion.chunk" if meta.chat else "text_completion"


def _envelope(meta: Meta, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": meta.id, "object": kind, "created": meta.created, "model": meta.model, "choices": choices}


def _logprobs(meta: Meta, tokens: list[tuple[int, Token]], piece: Piece, offset: int = 0) -> dict[str, Any] | None:
    if meta.top_logprobs is None or not tokens:
        return None
    entries = [(tok_id, t.logprobs) for tok_id, t in tokens if t.logprobs is not None]
    if meta.chat:
        return logprobs.chat(entries, piece, meta.top_logprobs)
    return logprobs.completion(entries, piece, meta.top_logprobs, offset)


def _extension(meta: Meta, routed: list[dict[str, Any]], always: bool = False) -> dict[str, Any]:
    if meta.expert_names is None or not (routed or always):
        return {}
    return {"moechat": {"routing": {"expert_names": list(meta.expert_names), "tokens": routed}}}
