"""Token log-probabilities in the three shapes clients read (pure).

- OpenAI completions: {"tokens", "token_logprobs", "top_logprobs": [{text: logprob}], "text_offset"}
  (SillyTavern's Default, vLLM, Aphrodite and TabbyAPI types read this).
- OpenAI chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}.
- llama.cpp's /completion: `completion_probabilities` entries {"id", "token", "bytes", "logprob",
  "top_logprobs"} as llama.cpp writes them today, plus the older {"content", "probs": [{"tok_str", "prob"}]}
  that SillyTavern 1.12 reads, in the same object.

Values are the model's own distribution (softmax of the logits before any sampler), as llama.cpp reports
them; `top` is cut to what was asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from moechat.engine.types import Logprobs

Piece = Callable[[int], bytes]


def text(piece: bytes) -> str:
    return piece.decode("utf-8", "replace")


def completion(entries: Sequence[tuple[int, Logprobs]], piece: Piece, top: int, offset: int = 0) -> dict[str, Any]:
    """OpenAI completions' logprobs of (token id, Logprobs) entries; offsets count from `offset`."""
    tokens, offsets = [], []
    for tok, _ in entries:
        tokens.append(text(piece(tok)))
        offsets.append(offset)
        offset += len(tokens[-1])
    return {
        "tokens": tokens,
        "token_logprobs": [p.logprob for _, p in entries],
        "top_logprobs": [_by_text(p, piece, top) for _, p in entries],
        "text_offset": offsets,
    }


def chat(entries: Sequence[tuple[int, Logprobs]], piece: Piece, top: int) -> dict[str, Any]:
    """OpenAI chat completions' logprobs."""
    items = [_chat_item(tok, p.logprob, piece) | {"top_logprobs": _chat_top(p, piece, top)} for tok, p in entries]
    return {"content": items}


def llamacpp(tok: int, p: Logprobs, piece: Piece, top: int) -> dict[str, Any]:
    """One `completion_probabilities` entry of llama.cpp's /completion."""
    best = p.top[:top]
    return {
        "id": tok,
        "token": text(piece(tok)),
        "bytes": list(piece(tok)),
        "logprob": p.logprob,
        "top_logprobs": [{"id": t, "token": text(piece(t)), "bytes": list(piece(t)), "logprob": lp} for t, lp in best],
        "content": text(piece(tok)),
        "probs": [{"tok_str": text(piece(t)), "prob": math.exp(lp)} for t, lp in best],
    }


def _by_text(p: Logprobs, piece: Piece, top: int) -> dict[str, float]:
    """{text: logprob}, best first; of two tokens with the same text the more likely one is kept."""
    out: dict[str, float] = {}
    for tok, lp in p.top[:top]:
        out.setdefault(text(piece(tok)), lp)
    return out


def _chat_item(tok: int, logprob: float, piece: Piece) -> dict[str, Any]:
    return {"token": text(piece(tok)), "logprob": logprob, "bytes": list(piece(tok))}


def _chat_top(p: Logprobs, piece: Piece, top: int) -> list[dict[str, Any]]:
    return [_chat_item(t, lp, piece) for t, lp in p.top[:top]]
